// Rotary position embedding of a contiguous [T, H, d] tensor in one pass (rotate-half
// convention of transformers' Llama/Qwen). The tables are fp32 rows of d entries built as
// cat(freqs, freqs), so only their first d/2 entries are read: with equal halves the rotation
// of the pair (x[i], x[i + d/2]) is by one angle, and its inverse (the backward) is the same
// rotation with sin negated.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace elastic::kernels {

// y[t,h,:] = x*cos + rotate_half(x)*sin (sin negated when `inverse`); cos/sin row t starts at
// t * table_stride. x and y: bf16 when `bf16`, else fp32; head_dim even.
void rope(const void* x, void* y, const float* cos, const float* sin, int64_t table_stride, int64_t tokens,
          int64_t heads, int64_t head_dim, bool inverse, bool bf16, cudaStream_t stream);

}  // namespace elastic::kernels
