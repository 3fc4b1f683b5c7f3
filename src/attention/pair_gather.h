// Gather and scatter of the (token, kv head) pairs that hybrid attention's backward selects
// (src/attention/hybrid.cpp): with x viewed as [T, Hkv, ...], row r is x[tok[r], head[r], ...].
// On CUDA bf16/fp32 one kernel moves whole rows with 16-byte accesses (kernels/pair_gather.cu);
// everywhere else the ATen advanced-indexing composition, x.index({tok, head}) and index_put_,
// so CPU results are those of the composition.
//
// Not differentiable: for custom backward code and inference. The results carry no autograd
// history on any device (the composition runs under NoGradGuard too).
//
// Arguments, checked on every device: x / dst contiguous with at least 2 dims; tok and head
// contiguous int64 [N] on the same device. Unchecked preconditions (a check would synchronise):
// 0 <= tok < T and 0 <= head < Hkv (the kernel traps otherwise), and for the scatters the pairs
// are distinct, so every destination row has one writer (the kernel uses no atomics).
#pragma once
#include <torch/torch.h>

namespace elastic::attention {

// [N, x.sizes()[2:]...] contiguous: out[r] = x[tok[r], head[r]].
torch::Tensor gather_pairs(const torch::Tensor& x, const torch::Tensor& tok, const torch::Tensor& head);

// The same into `out`, a contiguous tensor of that shape with x's dtype and device.
void gather_pairs_out(const torch::Tensor& out, const torch::Tensor& x, const torch::Tensor& tok,
                      const torch::Tensor& head);

// dst[tok[r], head[r]] = src[r], or += with `accumulate` (bf16 summed in fp32, rounded once).
// src: contiguous [N, dst.sizes()[2:]...] with dst's dtype and device. Other rows of dst keep
// their values.
void scatter_pairs(const torch::Tensor& dst, const torch::Tensor& src, const torch::Tensor& tok,
                   const torch::Tensor& head, bool accumulate);

// The ATen compositions the kernel replaces (the non-kernel path; bench-kernels' baseline).
// No argument checks beyond ATen's own.
torch::Tensor gather_pairs_composed(const torch::Tensor& x, const torch::Tensor& tok, const torch::Tensor& head);
void scatter_pairs_composed(const torch::Tensor& dst, const torch::Tensor& src, const torch::Tensor& tok,
                            const torch::Tensor& head, bool accumulate);

}  // namespace elastic::attention
