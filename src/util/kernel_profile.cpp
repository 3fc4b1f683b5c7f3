#include "util/kernel_profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <chrono>

namespace elastic::util {

namespace {

bool has(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

// libkineto::ActivityType values (kineto/ActivityType.h): memcpy 3, memset 4, kernel 5.
constexpr uint8_t kGpuMemcpy = 3, kGpuMemset = 4, kKernel = 5;

}  // namespace

std::string kernel_category(const std::string& kernel_name) {
  std::string n = kernel_name;
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  const bool bwd = has(n, "bwd") || has(n, "backward") || has(n, "dgrad") || has(n, "bprop");
  if (has(n, "elastic") || has(n, "triton")) return "fused";  // ours, or Inductor's
  if (has(n, "nccl")) return "collective";
  if (has(n, "cudnn") || has(n, "sdpa") || has(n, "fmha")) return bwd ? "attention_cudnn_bwd" : "attention_cudnn_fwd";
  if (has(n, "flash")) return bwd ? "attention_flash_bwd" : "attention_flash_fwd";
  if (has(n, "gemm") || has(n, "cutlass") || has(n, "nvjet") || has(n, "xmma") || has(n, "cublas")) return "matmul";
  if (has(n, "norm")) return "norm";
  if (has(n, "reduce") || has(n, "softmax") || has(n, "logsumexp")) return "reduction";
  if (has(n, "index") || has(n, "gather") || has(n, "scatter") || has(n, "cat") || has(n, "embedding")) return "index";
  if (has(n, "memcpy") || has(n, "memset") || has(n, "copy")) return "copy";
  if (has(n, "elementwise") || has(n, "vectorized") || has(n, "unrolled") || has(n, "pointwise")) return "elementwise";
  return "other";
}

KernelProfile profile_kernels(const std::function<void()>& f, const std::string& trace_path) {
  namespace prof = torch::profiler::impl;
  using torch::autograd::profiler::disableProfiler;
  using torch::autograd::profiler::enableProfiler;
  using torch::autograd::profiler::prepareProfiler;
  const bool cuda = torch::cuda::is_available();
  prof::ProfilerConfig cfg(prof::ProfilerState::KINETO);
  std::set<prof::ActivityType> acts{prof::ActivityType::CPU};
  if (cuda) acts.insert(prof::ActivityType::CUDA);
  prepareProfiler(cfg, acts);
  enableProfiler(cfg, acts);
  auto t0 = std::chrono::steady_clock::now();
  f();
  if (cuda) torch::cuda::synchronize();
  KernelProfile p;
  p.wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  auto result = disableProfiler();
  std::map<std::string, KernelStat> by_name;
  for (const auto& e : result->events()) {
    const auto type = e.activityType();
    if (e.deviceType() != c10::DeviceType::CUDA || (type != kKernel && type != kGpuMemcpy && type != kGpuMemset)) {
      continue;
    }
    const double ms = static_cast<double>(e.durationNs()) / 1e6;
    auto& s = by_name[e.name()];
    if (s.calls == 0) {
      s.name = e.name();
      s.category = type == kKernel ? kernel_category(s.name) : "copy";
    }
    s.ms += ms;
    s.calls += 1;
    p.gpu_ms += ms;
    p.category_ms[s.category] += ms;
  }
  for (auto& [n, s] : by_name) p.kernels.push_back(std::move(s));
  std::sort(p.kernels.begin(), p.kernels.end(), [](const KernelStat& a, const KernelStat& b) { return a.ms > b.ms; });
  if (!trace_path.empty()) result->save(trace_path);
  return p;
}

}  // namespace elastic::util
