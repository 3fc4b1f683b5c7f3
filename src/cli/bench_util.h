// Shared by the bench-* subcommands: median timing with device synchronisation, and packs
// split into samples by relative lengths.
#pragma once
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace elastic::cli {

struct Timer {
  torch::Device dev;
  void sync() const {
    if (dev.is_cuda()) torch::cuda::synchronize();
  }
  // Wall times of `reps` runs of f after one warm-up run, in milliseconds, in run order.
  template <class F>
  std::vector<double> times_ms(F&& f, int reps) const {
    std::vector<double> t;
    f();
    for (int i = 0; i < reps; ++i) {
      sync();
      auto s = std::chrono::steady_clock::now();
      f();
      sync();
      t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count());
    }
    return t;
  }
  // The middle time; the mean of the two middle ones for an even count.
  static double median(std::vector<double> t) {
    std::sort(t.begin(), t.end());
    const size_t h = t.size() / 2;
    return t.size() % 2 ? t[h] : (t[h - 1] + t[h]) / 2;
  }
  template <class F>
  double median_ms(F&& f, int reps) const {
    return median(times_ms(f, reps));
  }
};

// `tokens` split into samples with relative lengths `mix` (the last takes the rounding remainder;
// equal weights give lengths that differ by at most the number of samples).
inline std::vector<int64_t> mixed_lengths(int64_t tokens, const std::vector<int64_t>& mix) {
  int64_t total = 0, used = 0;
  for (auto w : mix) total += w;
  std::vector<int64_t> out;
  for (size_t i = 0; i + 1 < mix.size(); ++i) {
    out.push_back(tokens * mix[i] / total);
    used += out.back();
  }
  out.push_back(tokens - used);
  return out;
}

}  // namespace elastic::cli
