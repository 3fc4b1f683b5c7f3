// Streaming attention's forward in one launch (kernels/streaming_attention.cu): exact sink + window
// attention over a packed batch, with the output and log-sum-exp layout of attention_forward's
// flash path, so that attention_backward consumes them unchanged; and its backward as our own
// kernels (kernels/streaming_attention_bwd.cu).
#pragma once
#include <torch/torch.h>

#include "attention/attention.h"
#include "attention/packing.h"

namespace elastic::attention {

// Whether the kernel takes this call: a CUDA build, q a CUDA tensor [T, Hq, d] in bf16 or fp16 with
// d 64 or 128, and a streaming mask (window >= 1, sink >= 0). Callers fall back to
// attention_forward otherwise.
bool streaming_kernel_supports(const torch::Tensor& q, MaskSpec mask);

// q [T, Hq, d], k and v [T, Hkv, d] contiguous, one dtype, Hq a multiple of Hkv; scale > 0.
// Returns out [T, Hq, d] (dtype of q) and lse [Hq, T] fp32.
AttnForward streaming_attention_kernel(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const Packing& pack, MaskSpec mask, double scale);

// The same into preallocated outputs: out contiguous like q, lse contiguous fp32 [Hq, T].
void streaming_attention_kernel_out(const torch::Tensor& out, const torch::Tensor& lse, const torch::Tensor& q,
                                    const torch::Tensor& k, const torch::Tensor& v, const Packing& pack,
                                    MaskSpec mask, double scale);

// The backward of the same attention (kernels/streaming_attention_bwd.cu): fwd is the forward's
// (out, lse) for these q, k, v, dout is like q. Returns dq like q, dk and dv like k (contiguous).
// Exact and tested, but attention_backward does not use it: 0.75x the FlashAttention-2 composition
// at 64K on the H100 (182 against 242 TFLOP/s; docs/performance.md).
AttnGrads streaming_attention_kernel_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                                             const torch::Tensor& v, const AttnForward& fwd, const Packing& pack,
                                             MaskSpec mask, double scale);

}  // namespace elastic::attention
