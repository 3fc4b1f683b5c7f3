#include "util/memory.h"

#include <sys/resource.h>

#ifdef ELASTIC_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include "kernels/cuda_check.h"
#endif

namespace elastic {

#ifdef ELASTIC_WITH_CUDA
namespace {
// The CUDA device a torch::Device names; "cuda" without an index is device 0.
c10::DeviceIndex cuda_index(torch::Device device) { return device.index() < 0 ? 0 : device.index(); }
c10::CachingDeviceAllocator::DeviceStats allocator_stats(torch::Device device) {
  return c10::cuda::CUDACachingAllocator::getDeviceStats(cuda_index(device));
}
cudaDeviceProp device_properties(torch::Device device) {
  cudaDeviceProp prop{};
  ELASTIC_CUDA_CHECK(cudaGetDeviceProperties(&prop, cuda_index(device)));
  return prop;
}
}  // namespace
#endif

double peak_memory_gb(torch::Device device) {
#ifdef ELASTIC_WITH_CUDA
  if (device.is_cuda()) return static_cast<double>(allocator_stats(device).allocated_bytes[0].peak) / 1e9;
#endif
  struct rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) * 1024.0 / 1e9;
}

double peak_reserved_gb(torch::Device device) {
#ifdef ELASTIC_WITH_CUDA
  if (device.is_cuda()) return static_cast<double>(allocator_stats(device).reserved_bytes[0].peak) / 1e9;
#endif
  (void)device;
  return 0;
}

void reset_peak_memory(torch::Device device) {
#ifdef ELASTIC_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(cuda_index(device));
#endif
}

int64_t allocated_bytes(torch::Device device) {
#ifdef ELASTIC_WITH_CUDA
  if (device.is_cuda()) return allocator_stats(device).allocated_bytes[0].current;
#endif
  (void)device;
  return 0;
}

int64_t device_memory_bytes(torch::Device device) {
#ifdef ELASTIC_WITH_CUDA
  if (device.is_cuda()) return static_cast<int64_t>(device_properties(device).totalGlobalMem);
#endif
  (void)device;
  return 0;
}

std::string device_name(torch::Device device) {
#ifdef ELASTIC_WITH_CUDA
  if (device.is_cuda()) return device_properties(device).name;
#endif
  return device.is_cuda() ? "cuda" : "cpu";
}

void release_cached_memory(torch::Device device) {
#ifdef ELASTIC_WITH_CUDA
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::emptyCache();
#else
  (void)device;
#endif
}

}  // namespace elastic
