// Helpers shared by the GPU kernel tests: tolerances, NaN poisoning and misaligned copies that send
// a kernel down its one-element path.
#pragma once
#include <torch/torch.h>

#include <limits>
#include <string>

namespace elastic::testing {

// Relative error a kernel may have against an fp64 reference.
inline double tolerance(torch::ScalarType t) { return t == torch::kBFloat16 ? 1e-2 : 1e-5; }

inline std::string dtype_name(torch::ScalarType t) { return t == torch::kBFloat16 ? "bf16" : "fp32"; }

// An output poisoned with NaN, so an element the kernel fails to write shows.
inline torch::Tensor nan_like(const torch::Tensor& t) {
  return torch::full_like(t, std::numeric_limits<double>::quiet_NaN());
}

// A contiguous copy of t whose data starts `offset` elements into its storage: offset 1 leaves the
// pointer unaligned for 16-byte accesses, so the kernels take their one-element path.
inline torch::Tensor placed(const torch::Tensor& t, int64_t offset) {
  if (offset == 0) return t.clone();
  auto buf = torch::empty({t.numel() + offset}, t.options());
  auto v = buf.narrow(0, offset, t.numel()).view(t.sizes());
  v.copy_(t);
  return v;
}

// Standard normal values on the GPU, rounded to dtype.
inline torch::Tensor randn_cuda(at::IntArrayRef shape, torch::ScalarType dtype) {
  return torch::randn(shape, torch::TensorOptions().device(torch::kCUDA)).to(dtype);
}

}  // namespace elastic::testing
