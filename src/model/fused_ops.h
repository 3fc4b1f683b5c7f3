// Fused elementwise ops of the decoder, differentiable: on CUDA tensors of bf16 or fp32 one
// kernel each way (kernels/rope.cu, kernels/swiglu.cu; fp32 math, one rounding), otherwise the
// ATen composition, whose CPU numerics the golden tests pin.
#pragma once
#include <torch/torch.h>

namespace elastic::model {

// x [T, H, d] rotated by the tables cos/sin [T, d] (fp32, built as cat(freqs, freqs) like
// Rope::tables: the CUDA kernel reads only their first halves). Rotate-half convention.
torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// silu(g) * u, g and u of one shape.
torch::Tensor swiglu(const torch::Tensor& g, const torch::Tensor& u);

// The ATen compositions (not differentiable through the fused path): the CPU and fp64 forward,
// and the baseline of tests and benchmarks.
torch::Tensor rope_composed(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
torch::Tensor swiglu_composed(const torch::Tensor& g, const torch::Tensor& u);

// The CUDA kernels writing into preallocated contiguous outputs of the inputs' shape and dtype
// (bf16 or fp32 CUDA tensors only): tests and benchmarks. `inverse` rotates by the negated
// angle, which is the backward of rope.
void rope_out(const torch::Tensor& y, const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
              bool inverse);
void swiglu_out(const torch::Tensor& y, const torch::Tensor& g, const torch::Tensor& u);
void swiglu_backward_out(const torch::Tensor& dg, const torch::Tensor& du, const torch::Tensor& dy,
                         const torch::Tensor& g, const torch::Tensor& u);

}  // namespace elastic::model
