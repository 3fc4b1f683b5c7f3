#include "model/offload.h"

#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "util/error.h"

namespace elastic::model {

namespace {

c10::Stream current_stream(c10::Device device) { return c10::impl::VirtualGuardImpl(device.type()).getStream(device); }

// An event recorded on `from` now, which `to` waits for: `to`'s later work runs after `from`'s
// earlier work.
void order_after(const c10::Stream& from, const c10::Stream& to) {
  c10::Event e(from.device_type());
  e.record(from);
  e.block(to);
}

}  // namespace

c10::Stream CheckpointOffload::side_stream(c10::Device device) {
  if (!side_) side_ = c10::impl::VirtualGuardImpl(device.type()).getStreamFromGlobalPool(device);
  return *side_;
}

int64_t CheckpointOffload::push(const torch::Tensor& x) {
  ELASTIC_CHECK(!x.is_cpu(), "checkpoint offload: a layer input on the host has nothing to offload");
  const auto side = side_stream(x.device());
  Slot s;
  // Pinned memory: a copy into pageable memory would be synchronous.
  s.host = torch::empty(x.sizes(), x.options().device(torch::kCPU).pinned_memory(true));
  order_after(current_stream(x.device()), side);
  {
    c10::StreamGuard on_side(side);
    s.host.copy_(x, /*non_blocking=*/true);
  }
  // x's memory goes back to the allocator when the layer is done with it; this keeps the allocator
  // from handing it out again before the side stream has read it.
  c10::impl::VirtualGuardImpl(x.device().type()).recordDataPtrOnStream(x.storage().data_ptr(), side);
  slots_.push_back(std::move(s));
  return static_cast<int64_t>(slots_.size()) - 1;
}

void CheckpointOffload::fetch(Slot& s) {
  ELASTIC_CHECK(s.host.defined(), "checkpoint offload: a layer input was taken back twice");
  const auto side = *side_;  // set by push
  const auto device = side.device();
  // Allocated on the compute stream, which uses it; the side stream writes it only after the
  // compute stream's earlier work, so memory this block held before is no longer read.
  s.device = torch::empty(s.host.sizes(), s.host.options().device(device));
  order_after(current_stream(device), side);
  {
    c10::StreamGuard on_side(side);
    s.device.copy_(s.host, /*non_blocking=*/true);
  }
  s.ready.emplace(device.type());
  s.ready->record(side);
  s.host = torch::Tensor();
}

torch::Tensor CheckpointOffload::take(int64_t slot) {
  ELASTIC_CHECK(slot >= 0 && slot < static_cast<int64_t>(slots_.size()),
                "checkpoint offload: no layer input in slot " << slot << " of " << slots_.size());
  auto& s = slots_[static_cast<size_t>(slot)];
  if (!s.device.defined()) fetch(s);
  s.ready->block(current_stream(s.device.device()));
  auto x = std::move(s.device);
  s = Slot{};
  if (slot > 0 && slots_[static_cast<size_t>(slot) - 1].host.defined()) fetch(slots_[static_cast<size_t>(slot) - 1]);
  return x;
}

void CheckpointOffload::prefetch_last() {
  if (!slots_.empty() && slots_.back().host.defined()) fetch(slots_.back());
}

}  // namespace elastic::model
