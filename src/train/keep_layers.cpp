#include "train/keep_layers.h"

#include <algorithm>
#include <cmath>

#include "util/memory.h"

namespace elastic::train {

KeepPlan StepMemory::plan(int64_t pack_tokens, double budget_bytes, int64_t num_layers) const {
  if (tokens <= 0 || layer_bytes <= 0 || pack_tokens <= 0) return {};
  const double scale = static_cast<double>(pack_tokens) / static_cast<double>(tokens);
  // The step's activation peak (no layer kept), then one kept layer's bytes, at this pack.
  const double activations = std::max(0.0, peak_bytes - static_bytes) * scale;
  const double per_layer = layer_bytes * scale;
  const double room = budget_bytes - static_bytes - activations;
  if (room < 0) return {};
  // With the layer inputs on the GPU, k kept layers add k - 1 layers to the measured peak: it
  // already holds one layer's worth, the recompute's (H200, Qwen3-8B at 64K: 118.9 GB with 12 kept
  // against 132 GB for k). With the inputs in host memory they add k: 17 kept by the k - 1 count
  // peaked at 140.9 GB there, 7.6 GB above the plan (on an 80 GB card, out of memory).
  const int64_t held = inputs_offloaded ? 0 : 1;
  auto clamp = [&](double layers) {
    return std::clamp<int64_t>(static_cast<int64_t>(std::floor(layers)), 0, num_layers);
  };
  const double attention = attention_bytes * scale;
  if (attention <= 0 || attention >= per_layer) return {clamp(room / per_layer + held), 0};
  const auto n = static_cast<double>(num_layers);
  if (n * attention > room) {
    // Not every layer's attention fits: the free kept layers, and attention for as many others as fit.
    const int64_t k = std::min<int64_t>(held, num_layers);
    return {k, std::min(num_layers - k, clamp(room / attention))};
  }
  // Every layer keeps at least its attention; a kept layer holds per_layer - attention more:
  // (k - held) * per_layer + (n - k) * attention <= room.
  const int64_t k = clamp((room - n * attention + held * per_layer) / (per_layer - attention));
  return {k, num_layers - k};
}

double attention_kept_bytes(int64_t tokens, int64_t heads, int64_t head_dim, torch::ScalarType dtype) {
  return static_cast<double>(tokens * heads) *
         static_cast<double>(head_dim * static_cast<int64_t>(c10::elementSize(dtype)) + 4);
}

StepMemoryProbe::StepMemoryProbe(torch::Device device) : device_(device) {
  reset_peak_memory(device_);
  static_bytes_ = static_cast<double>(allocated_bytes(device_));
}

StepMemory StepMemoryProbe::finish(int64_t layer_bytes, int64_t tokens, bool inputs_offloaded,
                                   double attention_bytes) const {
  return StepMemory{static_bytes_, peak_memory_gb(device_) * 1e9, static_cast<double>(layer_bytes), tokens,
                    inputs_offloaded, attention_bytes};
}

double keep_layers_budget_bytes(torch::Device device) {
  return kKeepLayersMemoryShare * static_cast<double>(device_memory_bytes(device));
}

}  // namespace elastic::train
