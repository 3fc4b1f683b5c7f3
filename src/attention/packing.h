// A packed micro-batch: whole samples concatenated along the token axis (ELASTIC.md §3).
// Each sample restarts its positions at 0 and attends only inside itself.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elastic::attention {

struct Packing {
  std::vector<int64_t> cu;  // cumulative sample lengths, size B+1, cu[0] = 0
  int64_t max_len = 0;
  torch::Tensor cu_i32;      // the same on the compute device (flash kernels want int32)
  torch::Tensor sample_id;   // [T] int64: which sample each token belongs to
  torch::Tensor positions;   // [T] int64: position inside its sample

  int64_t num_samples() const { return static_cast<int64_t>(cu.size()) - 1; }
  int64_t tokens() const { return cu.empty() ? 0 : cu.back(); }
  int64_t begin(int64_t b) const { return cu[b]; }
  int64_t length(int64_t b) const { return cu[b + 1] - cu[b]; }

  static Packing from_lengths(const std::vector<int64_t>& lengths, torch::Device device);
  static Packing from_cu(const std::vector<int64_t>& cu, torch::Device device);
};

// Sink + window visibility. window < 0 means full causal attention.
// Query i sees key j (j <= i) iff window < 0, or j < sink, or i - j < window.
struct MaskSpec {
  int64_t sink = 0;
  int64_t window = -1;
  bool full() const { return window < 0; }
  static MaskSpec causal() { return {}; }
  static MaskSpec streaming(int64_t sink, int64_t window) { return {sink, window}; }
};

}  // namespace elastic::attention
