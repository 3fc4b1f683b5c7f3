// train.keep_layers: auto. Keeping a decoder layer's activations skips its recompute in the backward
// (its forward again: about a third of the layer's share of the step) at a memory cost that grows
// with the pack.
// One step with the last layer kept measures what a step needs; every pack then keeps as many layers
// as fit in a share of the GPU's memory.
#pragma once
#include <cstdint>

namespace elastic::train {

// Share of the GPU's memory a step may plan to fill: the rest absorbs allocator fragmentation and
// packs whose samples split differently from the measured one.
inline constexpr double kKeepLayersMemoryShare = 0.9;

struct StepMemory {
  double static_bytes = 0;  // allocated before the forward: weights, optimizer state, the batch
  double peak_bytes = 0;    // the measured step's peak, one layer kept
  double layer_bytes = 0;   // what the kept layer held from its forward to its backward
  int64_t tokens = 0;       // the measured pack

  // Layers (0..num_layers) that can keep their activations on a pack of `tokens` within
  // `budget_bytes`; activations scale with the pack's tokens, the static part does not.
  int64_t layers_that_fit(int64_t tokens, double budget_bytes, int64_t num_layers) const;
};

}  // namespace elastic::train
