// Host data to the compute device without a stream synchronisation. A blocking copy from pageable
// memory makes PyTorch wait for every kernel queued before it; the GPU then idles while the host
// queues the next ones (about 0.4 s of a Qwen3-8B training step, docs/performance.md, came from such
// waits). Pinned memory and a non-blocking copy keep the queue full; the caching host allocator
// keeps the pinned block until the copy has run.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace elastic::util {

inline torch::Tensor to_device(const torch::Tensor& host, torch::Device dev) {
  if (!dev.is_cuda() || !host.is_cpu()) return host.to(dev);
  return host.pin_memory().to(dev, /*non_blocking=*/true);
}

inline torch::Tensor to_device(const std::vector<int64_t>& v, torch::Device dev,
                               torch::ScalarType dtype = torch::kInt64) {
  return to_device(torch::tensor(v, torch::TensorOptions().dtype(torch::kInt64)).to(dtype), dev);
}

}  // namespace elastic::util
