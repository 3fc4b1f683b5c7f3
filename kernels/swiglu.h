// SwiGLU of the MLP, silu(g) * u, and its backward, each in one pass over contiguous tensors
// of n elements (bf16 when `bf16`, else fp32), computed in fp32 and rounded once.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace elastic::kernels {

// y = silu(g) * u.
void swiglu_forward(const void* g, const void* u, void* y, int64_t n, bool bf16, cudaStream_t stream);

// dg = dy * u * sig(g) * (1 + g * (1 - sig(g))), du = dy * silu(g).
void swiglu_backward(const void* dy, const void* g, const void* u, void* dg, void* du, int64_t n, bool bf16,
                     cudaStream_t stream);

// The same backward written over its inputs: g becomes dg and u becomes du. A frozen MLP's
// backward needs g and u only for this, so their buffers take the gradients (no new [T, I] pair).
void swiglu_backward_inplace(const void* dy, void* g, void* u, int64_t n, bool bf16, cudaStream_t stream);

}  // namespace elastic::kernels
