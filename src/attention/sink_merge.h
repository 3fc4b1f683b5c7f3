// Streaming attention's sink keys reach the rows that see all of them through a separate flash
// pass; this merges that pass into the windowed one through the log-sum-exp (kernels/sink_merge.cu).
#pragma once
#include <torch/torch.h>

namespace elastic::attention {

// For every token t with positions[t] >= first and every head h:
//   lse[h,t] = logaddexp(lse_w[h,t], lse_s[h,t])
//   out[t,h] = out_w[t,h] * exp(lse_w[h,t] - lse[h,t]) + out_s[t,h] * exp(lse_s[h,t] - lse[h,t])
// in fp32, rounded once to the output type. Other tokens of out and lse are not written. out/lse
// may be out_w/lse_w (in place). Shapes: out* [T, H, d] contiguous, fp32/fp16/bf16, all the same
// dtype; lse* [H, T] contiguous fp32; positions [T] int64 (Packing::positions). CUDA builds only.
void sink_merge(const torch::Tensor& out, const torch::Tensor& lse, const torch::Tensor& out_w,
                const torch::Tensor& lse_w, const torch::Tensor& out_s, const torch::Tensor& lse_s,
                const torch::Tensor& positions, int64_t first);

}  // namespace elastic::attention
