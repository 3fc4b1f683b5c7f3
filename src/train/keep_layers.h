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

// What a pack keeps for its backward beyond every layer's input: the last `layers` layers keep their
// activations, and the `attention` layers before them keep their attention's output
// (ForwardContext::keep_layers, keep_attention).
struct KeepPlan {
  int64_t layers = 0;
  int64_t attention = 0;
};

struct StepMemory {
  double static_bytes = 0;  // allocated before the forward: weights, optimizer state, the batch
  double peak_bytes = 0;    // the measured step's peak
  double layer_bytes = 0;   // the most one layer's activations held, its output not counted
                            // (ForwardContext::layer_activation_bytes)
  int64_t tokens = 0;       // the measured pack (every layer recomputed)
  bool inputs_offloaded = false;  // the measured step kept its layer inputs in host memory
  // What keeping one layer's attention output takes at the measured pack (attention_kept_bytes); 0:
  // none is kept (no routing).
  double attention_bytes = 0;

  // What a pack of `tokens` keeps within `budget_bytes`; activations scale with the pack's tokens,
  // the static part does not. A kept attention output saves about a third of what a kept layer saves
  // (the selected branches' forward against the whole layer's recompute: on Qwen3-8B at 64K on the
  // H100 about 11 ms against 45 ms) for a twelfth of its memory, so every layer keeps that first, and
  // layers keep their activations with what is left.
  KeepPlan plan(int64_t tokens, double budget_bytes, int64_t num_layers) const;
};

// Bytes a layer's kept attention output takes on a pack of `tokens`: [tokens, heads, head_dim] in
// the model's dtype and a [heads, tokens] fp32 log-sum-exp.
double attention_kept_bytes(int64_t tokens, int64_t heads, int64_t head_dim, torch::ScalarType dtype);

// Measures one step, every layer recomputed: made before its forward (resets the allocator's peak
// and reads the static bytes), finished after its backward.
class StepMemoryProbe {
 public:
  explicit StepMemoryProbe(torch::Device device);
  // layer_bytes: the step's ForwardContext::layer_activation_bytes; tokens: its pack's;
  // inputs_offloaded: its ForwardContext::offload_checkpoints; attention_bytes: attention_kept_bytes at its
// pack, or 0 where no attention output can be kept.
  StepMemory finish(int64_t layer_bytes, int64_t tokens, bool inputs_offloaded, double attention_bytes) const;

 private:
  torch::Device device_;
  double static_bytes_;
};

// kKeepLayersMemoryShare of the device's memory (0 on the CPU).
double keep_layers_budget_bytes(torch::Device device);

}  // namespace elastic::train
