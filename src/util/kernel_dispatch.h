// Which tensors the fused CUDA kernels of kernels/ take: bf16 or fp32 on a GPU, in a CUDA build.
// Everything else (CPU, fp64, fp16) keeps the ATen composition the kernel replaces.
#pragma once
#include <torch/torch.h>

namespace elastic::util {

inline bool kernel_dtype(const torch::Tensor& t) {
  return t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kFloat32;
}

inline bool uses_fused_kernels(const torch::Tensor& t) {
#ifdef ELASTIC_WITH_CUDA
  return t.is_cuda() && kernel_dtype(t);
#else
  return false;
#endif
}

inline bool is_bf16(const torch::Tensor& t) { return t.scalar_type() == torch::kBFloat16; }

}  // namespace elastic::util
