// Bytes the CPU allocator hands out while a CpuMemoryCounter lives: what is held now and the most held
// since the last reset. Lets CPU tests assert what an op keeps or builds, which the GPU allocator's
// statistics measure on the device. One counter at a time.
#pragma once
#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cstdint>
#include <cstring>

namespace elastic::testing {

class CpuMemoryCounter final : public c10::Allocator {
 public:
  CpuMemoryCounter() : inner_(c10::GetCPUAllocator()) { c10::SetCPUAllocator(this, kPriority); }
  ~CpuMemoryCounter() override { c10::SetCPUAllocator(inner_, kPriority); }
  CpuMemoryCounter(const CpuMemoryCounter&) = delete;
  CpuMemoryCounter& operator=(const CpuMemoryCounter&) = delete;

  int64_t now() const { return state().now; }
  int64_t peak() const { return state().peak; }
  void reset_peak() { state().peak = state().now.load(); }

  c10::DataPtr allocate(size_t n) override {
    auto inner = inner_->allocate(n);
    void* data = inner.get();
    const auto device = inner.device();
    auto* r = new Record{std::move(inner), static_cast<int64_t>(n)};
    auto& s = state();
    const int64_t held = s.now += r->bytes;
    int64_t p = s.peak.load();
    while (held > p && !s.peak.compare_exchange_weak(p, held)) {
    }
    return {data, r, &release, device};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }

 private:
  // Blocks outlive the counter (a tensor freed after it): their records count against static state.
  struct Record {
    c10::DataPtr inner;
    int64_t bytes;
  };
  struct State {
    std::atomic<int64_t> now{0}, peak{0};
  };
  static State& state() {
    static State s;
    return s;
  }
  static void release(void* ctx) {
    auto* r = static_cast<Record*>(ctx);
    state().now -= r->bytes;
    delete r;
  }
  static constexpr uint8_t kPriority = 100;
  c10::Allocator* inner_;
};

}  // namespace elastic::testing
