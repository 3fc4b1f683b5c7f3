// A small device tensor's copy on the host, started now and waited for later. The wait covers only
// the work queued before the copy, so the GPU keeps running what was queued after it; a blocking
// copy drains the stream and the GPU idles while the host queues the next kernels. The hybrid
// attention's backward needs the routing weights on the host: copying them when the forward
// computes them made the backward's wait free of such drains (docs/performance.md).
#pragma once
#include <torch/torch.h>

#include <optional>

namespace elastic::util {

class HostCopy : public torch::CustomClassHolder {
 public:
  explicit HostCopy(const torch::Tensor& t);
  // The host tensor, once the copy has run.
  const torch::Tensor& wait();

 private:
  torch::Tensor host_;
  std::optional<c10::Event> event_;  // recorded on the device stream after the copy; none for host tensors
};

}  // namespace elastic::util
