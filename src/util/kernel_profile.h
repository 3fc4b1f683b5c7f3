// GPU kernel time of a piece of work, by kernel and by category, from LibTorch's built-in
// Kineto/CUPTI profiler (the GPU machine has no Nsight Systems). Used by bench-train --profile.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace elastic::util {

struct KernelStat {
  std::string name;
  std::string category;
  double ms = 0;
  int64_t calls = 0;
};

struct KernelProfile {
  double wall_ms = 0;     // host time of the profiled work, synchronised
  double gpu_ms = 0;      // sum of kernel, copy and set durations on the device
  std::map<std::string, double> category_ms;
  std::vector<KernelStat> kernels;  // by total time, longest first
};

// Coarse class of a CUDA kernel from its (demangled) name: matmul, attention_flash_fwd/bwd,
// attention_cudnn_fwd/bwd, norm, elementwise, reduction, index, copy, collective, fused (ours or Inductor's), other.
std::string kernel_category(const std::string& kernel_name);

// Runs f once under the profiler (CPU + CUDA activities) and summarises device time.
// trace_path non-empty: also writes the Chrome trace there.
KernelProfile profile_kernels(const std::function<void()>& f, const std::string& trace_path = "");

}  // namespace elastic::util
