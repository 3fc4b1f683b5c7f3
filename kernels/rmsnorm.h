// RMSNorm over the last dimension of contiguous [rows, n] tensors (bf16 when `bf16`, else fp32,
// the weight [n] of the same dtype): fp32 statistics and one rounding of each output; the
// residual add in front of it fused; the backward with respect to the input only (the weight is
// frozen wherever these run: model/fused_ops.h keeps trainable weights on ATen). Outputs never
// alias inputs. rows == 0 or n == 0 launches nothing.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace elastic::kernels {

// y = x * rsqrt(mean(x^2) + eps) * w.
void rmsnorm_forward(const void* x, const void* w, void* y, int64_t rows, int64_t n, float eps, bool bf16,
                     cudaStream_t stream);

// h = a + b, rounded to the storage dtype exactly as a separate add rounds it, and y = the
// forward above of h.
void add_rmsnorm_forward(const void* a, const void* b, const void* w, void* h, void* y, int64_t rows, int64_t n,
                         float eps, bool bf16, cudaStream_t stream);

// dx = rstd * (w*dy - x_hat * mean(w*dy * x_hat)) + dres with x_hat = x * rstd; rstd comes from
// x again. dres (the residual's gradient) may be null.
void rmsnorm_backward(const void* dy, const void* x, const void* w, const void* dres, void* dx, int64_t rows,
                      int64_t n, float eps, bool bf16, cudaStream_t stream);

}  // namespace elastic::kernels
