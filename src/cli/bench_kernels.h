// bench-kernels: each fused CUDA kernel of kernels/ timed against the ATen composition it
// replaces, at real model shapes. Cases are contributed by bench_kernels_*.cpp files.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace elastic::cli {

struct KernelCase {
  std::string name;    // e.g. "rope_forward"
  std::string shape;   // human-readable, e.g. "T=65536 H=32 d=128 bf16"
  double bytes = 0;    // minimum HBM traffic of the fused kernel (reads + writes), for bandwidth
  std::function<void()> fused;     // the kernel (through its C++ entry point)
  std::function<void()> composed;  // the ATen composition it replaces
};

struct KernelShape {
  int64_t tokens = 65536, q_heads = 32, kv_heads = 8, head_dim = 128, intermediate = 12288, samples = 3;
  int64_t sink = 128, window = 2048;
  torch::Device device{torch::kCUDA};
  torch::ScalarType dtype = torch::kBFloat16;
};

// RoPE, SwiGLU, hybrid blend (bench_kernels_elementwise.cpp).
std::vector<KernelCase> elementwise_kernel_cases(const KernelShape& s);
// Streaming attention's sink part (bench_kernels_sink.cpp).
std::vector<KernelCase> sink_kernel_cases(const KernelShape& s);
// RMSNorm and the residual add in front of it (bench_kernels_norm.cpp).
std::vector<KernelCase> norm_kernel_cases(const KernelShape& s);
// Pair gather and scatter of hybrid attention's backward (bench_kernels_gather.cpp).
std::vector<KernelCase> gather_kernel_cases(const KernelShape& s);

}  // namespace elastic::cli
