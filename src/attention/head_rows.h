// Some KV heads of one sample's rows, in and out of a per-sample attention call
// (attention_forward_heads / attention_backward_heads, cudnn_sample_rows). The heads are a host
// list: on CUDA (bf16, fp32) one kernel moves whole 16-byte words with the heads in its launch
// arguments (kernels/head_rows.cu), so no index tensor goes to the device; everywhere else ATen's
// index_select / index_copy_ / index_add_ do the same on strided views.
//
// Tensors are [T, Hkv * G, d] with stride(2) == 1 and stride(1) == d (a row's heads in one run);
// `heads` is a contiguous int64 CPU tensor [m] of distinct KV heads in [0, Hkv). Not
// differentiable: for custom autograd code.
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace elastic::attention {

// Whether `heads` is every KV head in order, 0 .. Hkv - 1 (undefined counts as every head).
bool every_head_in_order(const torch::Tensor& heads, int64_t Hkv);

// Rows [s0, s0 + n) of t at `heads` (each with its G query heads), followed by zero rows up to
// `rows` (>= n): [rows, m * G, d] contiguous, heads in list order. head_major: [m, rows, G, d].
torch::Tensor gather_heads(const torch::Tensor& t, int64_t s0, int64_t n, int64_t rows, const torch::Tensor& heads,
                           int64_t Hkv, bool head_major = false);

// dst's rows [s0, s0 + n) at `heads` = src [n, m * G, d] (or += with accumulate: bf16 summed in
// fp32 and rounded once on CUDA). Other heads and rows of dst are not touched.
void scatter_heads(const torch::Tensor& dst, const torch::Tensor& src, int64_t s0, int64_t n,
                   const torch::Tensor& heads, int64_t Hkv, bool accumulate);

// The same for a log-sum-exp [Hkv * G, T] (stride(1) == 1): columns [s0, s0 + n) at `heads` as
// [m * G, n] contiguous, and back from [m * G, n] (stride(1) == 1).
torch::Tensor gather_lse_heads(const torch::Tensor& lse, int64_t s0, int64_t n, const torch::Tensor& heads, int64_t Hkv);
void scatter_lse_heads(const torch::Tensor& lse, const torch::Tensor& src, int64_t s0, int64_t n,
                       const torch::Tensor& heads, int64_t Hkv);

}  // namespace elastic::attention
