// Which tensors the fused CUDA kernels of kernels/ take: bf16 or fp32 on a GPU, in a CUDA build.
// Everything else (CPU, fp64, fp16) keeps the ATen composition the kernel replaces. Also the
// argument checks the kernels' C++ entry points share.
#pragma once
#include <torch/torch.h>

#include <string>

#include "util/error.h"

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

// What an error message says a tensor argument was: type and shape, or "undefined".
inline std::string describe(const torch::Tensor& t) {
  return t.defined() ? t.toString() + " " + c10::str(t.sizes()) : std::string("undefined");
}

// `t` (an output or a companion input of a kernel) must be contiguous with the shape, dtype and
// device of `like`.
inline void check_like(const char* fn, const torch::Tensor& t, const torch::Tensor& like, const char* name) {
  ELASTIC_CHECK(t.defined() && t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type() &&
                    t.device() == like.device() && t.is_contiguous(),
                fn << ": " << name << " must be a contiguous " << like.scalar_type() << " tensor of shape "
                   << like.sizes() << " on " << like.device() << ", got " << describe(t));
}

[[noreturn]] inline void no_cuda_kernels(const char* fn) {
  ELASTIC_FAIL(fn << ": this build has no CUDA kernels (configure with -DELASTIC_CUDA=ON)");
}

}  // namespace elastic::util
