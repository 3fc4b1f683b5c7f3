// Everything a forward pass over one packed micro-batch needs besides the weights:
// the packing, rotary tables, and how attention heads are routed.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <vector>

#include "attention/attention.h"
#include "attention/packing.h"
#include "model/offload.h"
#include "router/router.h"

namespace elastic::model {

enum class RoutingMode {
  off,     // full attention everywhere (the frozen backbone as published)
  train,   // Gumbel-softmax + straight-through estimator
  eval,    // argmax of the router logits
  fixed,   // decisions given by `fixed_decisions` (baselines, static masks, tests)
};

struct ForwardContext {
  const attention::Packing* pack = nullptr;
  std::vector<router::PromptRange> prompts;  // one per sample
  torch::Tensor cos, sin;                    // rotary tables for pack positions

  RoutingMode mode = RoutingMode::off;
  attention::MaskSpec ssa = attention::MaskSpec::streaming(128, 2048);
  double tau = 1.0;
  torch::Generator* gen = nullptr;  // Gumbel noise source (train mode)
  std::function<torch::Tensor(int64_t layer)> fixed_decisions;  // [B, Hkv] per layer (fixed mode)

  // Recompute each decoder layer in the backward instead of keeping its activations.
  bool checkpoint = false;
  // With checkpointing on a GPU: keep each layer's saved input in pinned host memory instead of
  // GPU memory (the largest activation term at long packs: layers x tokens x hidden).
  bool offload_checkpoints = false;
  c10::intrusive_ptr<CheckpointOffload> offload;  // this pass's offloaded inputs (model/offload.h)
  // With checkpointing: the last N decoder layers keep their activations and skip the recompute.
  // Their forward runs once, with grad, and costs activation memory that grows with the pack;
  // the last layers are the ones kept because the backward frees them first.
  int64_t keep_layers = 0;
  // With checkpointing and hard routing: the N layers before the kept ones keep their attention's
  // output (each head's selected branch and its log-sum-exp: [T, Hq, d] + [Hq, T]) from the forward,
  // so their recompute runs no attention forward but the unselected branches' one, in the backward,
  // for the router gradient (attention/hybrid.h). It saves the selected branches' forward a layer,
  // about 11 ms at 64K on Qwen3-8B on the H100, for 0.55 GB.
  int64_t keep_attention = 0;
  // Set for the one step that plans train.keep_layers: auto (train/keep_layers.h); other steps skip
  // the allocator reads around every layer. Then filled on a GPU: the most bytes one layer's
  // activations held from its forward with grad to its backward, measured on the kept layers in the
  // forward and on the recomputed ones in the backward (what keeping a layer costs).
  bool measure_layer_activations = false;
  int64_t layer_activation_bytes = 0;

  // Filled by the forward pass, one entry per layer: FA weight s [B, Hkv] and router logits.
  std::vector<torch::Tensor> decisions;
  std::vector<torch::Tensor> router_logits;
  // Checkpointing internals: the Gumbel noise each layer drew (replayed while the backward
  // recomputes a layer, so the recomputed decisions equal the forward's).
  std::vector<torch::Tensor> noise;
  bool recomputing = false;
  // The store of the layer that runs now, when it keeps its attention (keep_attention): filled by its
  // forward without grad, read by its recompute.
  attention::AttnForward* attention_kept = nullptr;
  std::optional<router::PoolPlan> pool_plan;  // built by the first router of the pass
  // When set, each layer's router input (pre-RoPE keys) is appended here (inspection).
  std::vector<torch::Tensor>* capture_keys = nullptr;
  // When set, each layer's post-RoPE (q, k) are appended here (head scoring, analysis).
  std::vector<std::pair<torch::Tensor, torch::Tensor>>* capture_qk = nullptr;
};

}  // namespace elastic::model
