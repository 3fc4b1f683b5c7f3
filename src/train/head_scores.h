// Retrieval head scores (DuoAttention / PruLong-style static masks, paper Appendix C): for
// every (layer, KV head), the attention mass that the answer rows of retrieval samples put on
// the planted needle (the queried KEY k v.. pairs), averaged over samples and over the query heads of
// the GQA group. The top heads become full-attention heads of a static mask.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "data/dataset.h"
#include "model/decoder.h"

namespace elastic::train {

struct HeadScoreOptions {
  std::vector<int64_t> tasks = {0};  // task ids whose samples are scored (0 = retrieval)
  int64_t max_packs = -1;            // -1: all packs
  int64_t max_samples = -1;          // -1: all scored samples
};

struct HeadScoreResult {
  torch::Tensor scores;  // [L, Hkv] float64: mean needle mass in [0, 1]
  int64_t samples = 0;   // samples that had a needle and answer rows
  int64_t rows = 0;      // answer rows scored
};

// Needle positions of one sample (positions inside the sample): the KEY k v.. pair of the key that
// ends the question, and for multihop every pair on the chain from it (data/synthetic.h layout).
std::vector<int64_t> needle_positions(const std::vector<int64_t>& tokens, int64_t prompt_end, int64_t answer_len);

// Attention probabilities of the given query rows over keys 0..row (causal, one sample), summed
// over the `needle` keys: q [T, Hq, d], k [T, Hkv, d] of one sample; returns [Hkv] (mean over
// rows and over the G query heads of each group). Only [rows, T] scores are formed per head.
torch::Tensor needle_mass(const torch::Tensor& q, const torch::Tensor& k, const std::vector<int64_t>& rows,
                          const std::vector<int64_t>& needle, double scale);

HeadScoreResult compute_head_scores(model::CausalLM& m, const data::Dataset& ds, const HeadScoreOptions& opt);

// Static mask [L, Hkv] (1 = FA) keeping the round((1 - omega) * L * Hkv) highest-scoring heads
// as full attention (ties broken by lower layer, then lower head).
torch::Tensor mask_from_scores(const torch::Tensor& scores, double omega);

}  // namespace elastic::train
