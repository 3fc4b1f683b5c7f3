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
  // The measured peak already holds one layer's activations, the recompute's, in the backward of
  // the last layer; with k layers kept that recompute never runs while they are held, so k layers
  // add k - 1 layers to it (H200, Qwen3-8B at 64K: 118.9 GB with 12 kept against 132 GB for k).
  return std::clamp<int64_t>(static_cast<int64_t>(std::floor(room / per_layer)) + 1, 0, num_layers);
}

StepMemoryProbe::StepMemoryProbe(torch::Device device) : device_(device) {
  reset_peak_memory(device_);
  static_bytes_ = static_cast<double>(allocated_bytes(device_));
}

StepMemory StepMemoryProbe::finish(int64_t layer_bytes, int64_t tokens) const {
  return StepMemory{static_bytes_, peak_memory_gb(device_) * 1e9, static_cast<double>(layer_bytes), tokens};
}

double keep_layers_budget_bytes(torch::Device device) {
  return kKeepLayersMemoryShare * static_cast<double>(device_memory_bytes(device));
}

}  // namespace elastic::train
