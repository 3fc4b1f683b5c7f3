// Fused log-sum-exp merge for streaming attention's sink keys. The windowed flash pass (w) and
// the pass over the sink keys (s) each give an output and a log-sum-exp per (token, head); for a
// token that sees every sink key beyond its window the exact result is
//   l = logaddexp(lse_w, lse_s),  out = out_w * exp(lse_w - l) + out_s * exp(lse_s - l),
// computed here in one pass (fp32 maths, one rounding to the output type) instead of a chain of
// full-size ATen ops. Plain CUDA: the C++ side (src/attention/sink_merge.cpp) checks the tensors.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace elastic::kernels {

enum class SinkMergeDtype { kFloat32, kFloat16, kBFloat16 };

// Layouts are contiguous: outputs [tokens, heads, head_dim], log-sum-exps [heads, tokens] fp32
// (FlashAttention varlen). out may be out_w and lse may be lse_w (in place, what attention does).
// Tokens at positions < first are not written at all. A log-sum-exp of -inf means "no key": it
// gets weight 0, and a row with both at -inf becomes 0 with lse -inf (never NaN).
struct SinkMergeArgs {
  void* out = nullptr;
  float* lse = nullptr;
  const void* out_w = nullptr;
  const float* lse_w = nullptr;
  const void* out_s = nullptr;
  const float* lse_s = nullptr;
  const int64_t* positions = nullptr;  // [tokens]: each token's position inside its sample
  int64_t first = 0;                   // tokens at positions >= first are merged
  int64_t tokens = 0, heads = 0, head_dim = 0;
  SinkMergeDtype dtype = SinkMergeDtype::kBFloat16;
};

// Enqueues the merge on `stream`; throws std::runtime_error on a launch error.
void sink_merge(const SinkMergeArgs& args, cudaStream_t stream);

}  // namespace elastic::kernels
