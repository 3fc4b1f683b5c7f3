// Band-causal attention of one sequence through cuDNN's fused SDPA (frontend graph API), forward
// and backward: query row i sees keys j with i - window + 1 <= j <= i (FlashAttention-2's
// window_size_left = window - 1, right = 0). Streaming attention's window part; its sink keys are
// merged by the caller through the log-sum-exp. Plans are cached per shape.
//
// Tensors are views of packed [T, H, d] buffers: each needs stride(2) == 1, the other strides are
// free. GQA: query head h reads kv head h / (Hq / Hkv). Without the cuDNN frontend in the build
// (ELASTIC_HAVE_CUDNN_FRONTEND unset: CPU builds) cudnn_band_supported is false and the others throw.
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace elastic::attention {

// Whether this build has the cuDNN frontend and q is a CUDA bf16/fp16 tensor [n, H, d] with
// d % 8 == 0 and d <= 128.
bool cudnn_band_supported(const torch::Tensor& q);

// q [n, Hq, d], k/v [n, Hkv, d] (Hq % Hkv == 0). Writes out [n, Hq, d] (dtype of q) and lse [Hq, n]
// fp32 (stride(1) == 1, e.g. a narrow of a [Hq, T] buffer) in place: lse is the natural-log
// log-sum-exp of scale * q.k over the visible keys. window >= 1 (window >= n: plain causal);
// scale > 0.
void cudnn_band_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t window, double scale,
                        const torch::Tensor& out, const torch::Tensor& lse);

// The backward given the forward's out and lse. These may be those of a larger attention (the band
// merged with sink keys): the gradients are then the band keys' share, with P = exp(scale q.k - lse)
// and D = rowsum(dout * out), which is what the merged attention's gradient needs from the band.
// Overwrites dq [n, Hq, d], dk/dv [n, Hkv, d] (strided views like q/k).
void cudnn_band_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                         const torch::Tensor& out, const torch::Tensor& lse, int64_t window, double scale,
                         const torch::Tensor& dq, const torch::Tensor& dk, const torch::Tensor& dv);

}  // namespace elastic::attention
