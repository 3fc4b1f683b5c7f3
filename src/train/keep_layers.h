// train.keep_layers: auto. Keeping a decoder layer's activations skips its recompute in the backward
// (its forward again: about a third of the layer's share of the step) at a memory cost that grows
// with the pack. One ordinary step, every layer recomputed, measures what a step needs and what a
// layer's activations take (its recompute holds exactly those); every pack then keeps as many
// layers as fit in a share of the GPU's memory.
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace elastic::train {

// Share of the GPU's memory a step may plan to fill: the rest absorbs allocator fragmentation and
// packs whose samples split differently from the measured one.
inline constexpr double kKeepLayersMemoryShare = 0.9;

struct StepMemory {
  double static_bytes = 0;  // allocated before the forward: weights, optimizer state, the batch
  double peak_bytes = 0;    // the measured step's peak
  double layer_bytes = 0;   // the most one layer's activations held, its output not counted
                            // (ForwardContext::layer_activation_bytes)
  int64_t tokens = 0;       // the measured pack (every layer recomputed)
  bool inputs_offloaded = false;  // the measured step kept its layer inputs in host memory

  // Layers (0..num_layers) that can keep their activations on a pack of `tokens` within
  // `budget_bytes`; activations scale with the pack's tokens, the static part does not.
  int64_t layers_that_fit(int64_t tokens, double budget_bytes, int64_t num_layers) const;
};

// Measures one step, every layer recomputed: made before its forward (resets the allocator's peak
// and reads the static bytes), finished after its backward.
class StepMemoryProbe {
 public:
  explicit StepMemoryProbe(torch::Device device);
  // layer_bytes: the step's ForwardContext::layer_activation_bytes; tokens: its pack's;
  // inputs_offloaded: its ForwardContext::offload_checkpoints.
  StepMemory finish(int64_t layer_bytes, int64_t tokens, bool inputs_offloaded) const;

 private:
  torch::Device device_;
  double static_bytes_;
};

// kKeepLayersMemoryShare of the device's memory (0 on the CPU).
double keep_layers_budget_bytes(torch::Device device);

}  // namespace elastic::train
