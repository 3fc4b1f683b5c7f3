// Shared helpers for the core tests.
#pragma once
#include <torch/torch.h>

#include <filesystem>
#include <functional>
#include <string>

#include "attention/packing.h"

namespace elastic::testing {

// A fresh temporary directory, removed at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir();
  ~TempDir();
  std::string str(const std::string& name = "") const { return name.empty() ? path.string() : (path / name).string(); }
};

// One sample of a packed batch, rows [s0, s0 + n), in fp64 and heads first: q, k, v [Hq, n, d] (k and
// v repeated for the query heads that share them), the probabilities p [Hq, n, n] and lse [Hq, n].
// Small sizes only: builds n x n per head.
struct SampleAttention {
  torch::Tensor q, k, v, p, lse;
};
SampleAttention reference_sample_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                           int64_t s0, int64_t n, attention::MaskSpec mask, double scale);

// Dense reference attention for one packed batch in fp64 (small sizes only: builds n x n per sample).
torch::Tensor reference_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const attention::Packing& pack, attention::MaskSpec mask, double scale);

double rel_err(const torch::Tensor& a, const torch::Tensor& b);

// Expects fn to throw an elastic::Error whose message contains every needle.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles);

}  // namespace elastic::testing
