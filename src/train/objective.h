// The training objective (ELASTIC.md §7-8): token cross-entropy on labelled positions,
// model sparsity per sample, and the Lagrangian sparsity term with per-task multipliers
// that are maximised (gradient ascent).
#pragma once
#include <torch/torch.h>

#include <vector>

#include "attention/packing.h"
#include "model/decoder.h"
#include "train/config.h"

namespace elastic::train {

// Sum of token cross-entropies over labelled positions and their count. Label t means
// token t is predicted from the hidden state at t - 1 of the same sample; logits are
// computed only for those rows, `chunk` rows at a time. With a frozen output projection and grad,
// nothing of the logits outlives its chunk (train/linear_cross_entropy.h).
struct LmLoss {
  torch::Tensor sum;  // fp32 scalar, differentiable
  int64_t tokens = 0;
};
LmLoss lm_loss(model::CausalLM& model, const torch::Tensor& hidden, const torch::Tensor& ids,
               const torch::Tensor& labels, const attention::Packing& pack, int64_t chunk);

// Ω_MSR per sample: 1 - mean over layers and KV heads of the FA weight s. [B]
torch::Tensor model_sparsity(const std::vector<torch::Tensor>& decisions);

// The Ω_MSR that training-time routing (Gumbel-softmax, any τ) gives each sample in expectation, from
// the router logits z [B, Hkv, 2] of each layer: 1 - mean of softmax(z)[FA]. Hard routing (argmax)
// reaches the same Ω only where the router is sure of its decisions. [B]
torch::Tensor sampled_sparsity(const std::vector<torch::Tensor>& router_logits);

// Ω_ESR of one sample: the fraction of causal (query, key) pairs skipped, given its length,
// sink, window and its hard decisions [layers, kv_heads] (1 = FA).
double effective_sparsity(int64_t length, int64_t sink, int64_t window, const torch::Tensor& decisions);

// λ1, λ2 for each configured task plus one slot for tasks not in the config.
class LagrangianImpl : public torch::nn::Module {
 public:
  LagrangianImpl(const TrainConfig& cfg, uint64_t seed);
  int64_t slot(int64_t task_id) const;  // row of `lambdas` for a task id
  // Σ_k mean_{i in k} (λ1[k] f1(Ω_i - t_k) + λ2[k] (Ω_i - t_k)²) / K, where the means and K
  // come from `task_counts` (samples per slot in the whole global batch), so that micro-
  // batches and ranks add up to exactly the global objective.
  torch::Tensor loss(const torch::Tensor& omega, const std::vector<int64_t>& task_ids,
                     const std::vector<int64_t>& task_counts) const;
  torch::Tensor lambdas;  // [slots, 2]
  std::vector<double> targets;
  std::vector<int64_t> ids;  // task id of each slot (-1 for the default slot)
  bool signed_form = false;
};
TORCH_MODULE(Lagrangian);

}  // namespace elastic::train
