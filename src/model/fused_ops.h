// Fused elementwise and normalisation ops of the decoder, differentiable: on CUDA tensors of bf16
// or fp32 one kernel each way (kernels/rope.cu, kernels/swiglu.cu, kernels/rmsnorm.cu; fp32 math,
// one rounding), otherwise the ATen composition, whose CPU numerics the golden tests pin.
#pragma once
#include <torch/torch.h>

namespace elastic::model {

// x [T, H, d] rotated by the tables cos/sin [T, d] (fp32, built as cat(freqs, freqs) like
// Rope::tables: the CUDA kernel reads only their first halves). Rotate-half convention.
torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// silu(g) * u, g and u of one shape.
torch::Tensor swiglu(const torch::Tensor& g, const torch::Tensor& u);

// The SwiGLU backward written over its inputs: g becomes dL/dg and u dL/du, given dy = dL/d(silu(g) * u).
// One kernel on CUDA (bf16/fp32, contiguous), the composition of swiglu's backward elsewhere. Not
// differentiable: for a backward that owns g and u and needs them for nothing else.
void swiglu_backward_inplace(const torch::Tensor& dy, const torch::Tensor& g, const torch::Tensor& u);

// RMSNorm over the last dimension with weight w [n]: fp32 statistics, the input dtype out. The
// kernel (kernels/rmsnorm.cu, rounding once) only where w is frozen and of x's dtype and device:
// its backward gives no weight gradient. Otherwise today's ops: at::rms_norm on CUDA (weight
// gradient included), rms_norm_composed elsewhere.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps);

// The residual sum and its norm, {h = a + b, rms_norm(h)}, both differentiable. In one kernel
// where rms_norm takes it (and a, b agree in shape, dtype and device); h then equals the separate
// add bit for bit, and the backward gives a and b the same gradient dh + d(norm)/dh in one kernel.
std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& a, const torch::Tensor& b,
                                                      const torch::Tensor& w, double eps);

// The ATen compositions (not differentiable through the fused path): the CPU and fp64 forward,
// and the baseline of tests and benchmarks.
torch::Tensor rope_composed(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
torch::Tensor swiglu_composed(const torch::Tensor& g, const torch::Tensor& u);
// transformers' sequence: normalised in fp32, rounded to x's dtype, then times w.
torch::Tensor rms_norm_composed(const torch::Tensor& x, const torch::Tensor& w, double eps);

// The CUDA kernels writing into preallocated contiguous outputs of the inputs' shape and dtype
// (bf16 or fp32 CUDA tensors only): tests and benchmarks. `inverse` rotates by the negated
// angle, which is the backward of rope.
void rope_out(const torch::Tensor& y, const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
              bool inverse);
void swiglu_out(const torch::Tensor& y, const torch::Tensor& g, const torch::Tensor& u);
void swiglu_backward_out(const torch::Tensor& dg, const torch::Tensor& du, const torch::Tensor& dy,
                         const torch::Tensor& g, const torch::Tensor& u);
// RMSNorm over the last dimension of x (rows of n = x.size(-1)), w contiguous [n] of x's dtype;
// dres (may be undefined) is added to dx, the backward of the norm with respect to x only.
void rms_norm_out(const torch::Tensor& y, const torch::Tensor& x, const torch::Tensor& w, double eps);
void add_rms_norm_out(const torch::Tensor& h, const torch::Tensor& y, const torch::Tensor& a, const torch::Tensor& b,
                      const torch::Tensor& w, double eps);
void rms_norm_backward_out(const torch::Tensor& dx, const torch::Tensor& dy, const torch::Tensor& x,
                           const torch::Tensor& w, double eps, const torch::Tensor& dres);

}  // namespace elastic::model
