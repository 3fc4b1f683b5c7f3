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

}  // namespace elastic::kernels
