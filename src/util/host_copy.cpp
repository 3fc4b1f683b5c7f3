#include "util/host_copy.h"

#include <c10/core/impl/VirtualGuardImpl.h>

namespace elastic::util {

HostCopy::HostCopy(const torch::Tensor& t) {
  const auto src = t.detach();
  if (src.is_cpu()) {
    host_ = src.clone();
    return;
  }
  // Pinned memory: a non-blocking copy into pageable memory would still synchronise.
  host_ = torch::empty(src.sizes(), src.options().device(torch::kCPU).pinned_memory(true));
  host_.copy_(src, /*non_blocking=*/true);
  event_.emplace(src.device().type());
  event_->record(c10::impl::VirtualGuardImpl(src.device().type()).getStream(src.device()));
}

const torch::Tensor& HostCopy::wait() {
  if (event_) {
    event_->synchronize();
    event_.reset();
  }
  return host_;
}

}  // namespace elastic::util
