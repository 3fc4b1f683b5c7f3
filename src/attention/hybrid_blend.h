// The elementwise work of hybrid attention around its two branches (ELASTIC.md §6): the
// forward blend, the router gradient ds and the upstream gradient of each branch. With w the
// routing weight s[b, h] of token t's sample b and of the KV head h of query head hq's group,
// each is one CUDA kernel for bf16/fp32 CUDA tensors (kernels/hybrid_blend.cu), the ATen
// composition otherwise (CPU, fp64).
#pragma once
#include <torch/torch.h>

#include <utility>

#include "attention/packing.h"

namespace elastic::attention {

// out [T,Hq,d] = sa + w * (fa - sa); fa/sa [T,Hq,d], s [B,Hkv].
torch::Tensor hybrid_blend(const torch::Tensor& fa, const torch::Tensor& sa, const torch::Tensor& s,
                           const Packing& pack);

// dL/ds [B,Hkv] in s's dtype: per sample and KV head, the sum over the sample's tokens, the
// group's query heads and d of (fa - sa) * dout (accumulated in fp32, fp64 for fp64 inputs).
torch::Tensor hybrid_ds(const torch::Tensor& fa, const torch::Tensor& sa, const torch::Tensor& dout,
                        const torch::Tensor& s, const Packing& pack);

// {dout * w, dout * (1 - w)}: the upstream gradients of the full and the streaming branch, each
// undefined unless wanted.
std::pair<torch::Tensor, torch::Tensor> hybrid_branch_douts(const torch::Tensor& dout, const torch::Tensor& s,
                                                            const Packing& pack, bool want_fa, bool want_sa);

// The ATen compositions (differentiable): the CPU and fp64 path, and the baseline of tests and
// benchmarks.
torch::Tensor hybrid_blend_composed(const torch::Tensor& fa, const torch::Tensor& sa, const torch::Tensor& s,
                                    const Packing& pack);
torch::Tensor hybrid_ds_composed(const torch::Tensor& fa, const torch::Tensor& sa, const torch::Tensor& dout,
                                 const torch::Tensor& s, const Packing& pack);
std::pair<torch::Tensor, torch::Tensor> hybrid_branch_douts_composed(const torch::Tensor& dout,
                                                                     const torch::Tensor& s, const Packing& pack,
                                                                     bool want_fa, bool want_sa);

// The CUDA kernels writing into preallocated contiguous outputs (bf16/fp32 CUDA tensors only):
// tests and benchmarks. sample_id: int64 [T] on the device (Packing::sample_id); ds: fp32
// [B, Hkv]; an undefined dout_fa or dout_sa is not computed.
void hybrid_blend_out(const torch::Tensor& out, const torch::Tensor& fa, const torch::Tensor& sa,
                      const torch::Tensor& s, const torch::Tensor& sample_id);
void hybrid_ds_out(const torch::Tensor& ds, const torch::Tensor& fa, const torch::Tensor& sa,
                   const torch::Tensor& dout, const torch::Tensor& sample_id);
void hybrid_branch_douts_out(const torch::Tensor& dout_fa, const torch::Tensor& dout_sa, const torch::Tensor& dout,
                             const torch::Tensor& s, const torch::Tensor& sample_id);

}  // namespace elastic::attention
