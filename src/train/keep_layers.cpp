#include "train/keep_layers.h"

#include <algorithm>
#include <cmath>

#include "util/memory.h"

namespace elastic::train {

int64_t StepMemory::layers_that_fit(int64_t pack_tokens, double budget_bytes, int64_t num_layers) const {
  if (tokens <= 0 || layer_bytes <= 0 || pack_tokens <= 0) return 0;
  const double scale = static_cast<double>(pack_tokens) / static_cast<double>(tokens);
  // The step's activation peak (no layer kept), then one kept layer's bytes, at this pack.
  const double activations = std::max(0.0, peak_bytes - static_bytes) * scale;
  const double per_layer = layer_bytes * scale;
  const double room = budget_bytes - static_bytes - activations;
  if (room < 0) return 0;
  // With the layer inputs on the GPU, k kept layers add k - 1 layers to the measured peak: it
  // already holds one layer's worth, the recompute's (H200, Qwen3-8B at 64K: 118.9 GB with 12 kept
  // against 132 GB for k). With the inputs in host memory they add k: 17 kept by the k - 1 count
  // peaked at 140.9 GB there, 7.6 GB above the plan (on an 80 GB card, out of memory).
  const int64_t held = inputs_offloaded ? 0 : 1;
  return std::clamp<int64_t>(static_cast<int64_t>(std::floor(room / per_layer)) + held, 0, num_layers);
}

StepMemoryProbe::StepMemoryProbe(torch::Device device) : device_(device) {
  reset_peak_memory(device_);
  static_bytes_ = static_cast<double>(allocated_bytes(device_));
}

StepMemory StepMemoryProbe::finish(int64_t layer_bytes, int64_t tokens, bool inputs_offloaded) const {
  return StepMemory{static_bytes_, peak_memory_gb(device_) * 1e9, static_cast<double>(layer_bytes), tokens,
                    inputs_offloaded};
}

double keep_layers_budget_bytes(torch::Device device) {
  return kKeepLayersMemoryShare * static_cast<double>(device_memory_bytes(device));
}

}  // namespace elastic::train
