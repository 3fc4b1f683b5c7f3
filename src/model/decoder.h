// The decoder-only LM (Qwen3, Llama 3, Qwen2) over packed batches, parameters named
// exactly as in Hugging Face checkpoints (model.layers.{i}.self_attn.q_proj.weight, ...).
#pragma once
#include <torch/torch.h>

#include "model/config.h"
#include "model/forward_context.h"
#include "model/frozen_mlp.h"
#include "model/layers.h"
#include "router/router.h"

namespace elastic::model {

class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(const ModelConfig& cfg, int64_t layer, const torch::TensorOptions& opts);
  // Routing decisions come from ctx.mode and are appended to ctx.decisions.
  torch::Tensor forward(const torch::Tensor& x, ForwardContext& ctx);
  void attach_router(const router::RouterOptions& opt);

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};
  router::Router mask_allocator{nullptr};  // registered only once routers are attached

 private:
  int64_t layer_, n_heads_, n_kv_, head_dim_;
  double scale_;
  torch::Tensor routing_weights(const torch::Tensor& keys, ForwardContext& ctx);
};
TORCH_MODULE(SelfAttention);

class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const ModelConfig& cfg, const torch::TensorOptions& opts);
  // With grad and no trainable MLP weight, model::frozen_mlp (model/frozen_mlp.h).
  torch::Tensor forward(const torch::Tensor& x);
  // swiglu(gate_proj(x), up_proj(x)): the down projection's input.
  torch::Tensor activation(const torch::Tensor& x);
  // No weight or bias of the MLP trains: its backward needs only the gate and up projections.
  bool frozen() const;
  FrozenMlpWeights frozen_weights() const;
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& cfg, int64_t layer, const torch::TensorOptions& opts);
  // With ctx.checkpoint and grad enabled, activations inside the layer (its router's included)
  // are not kept: the backward recomputes the layer with the same Gumbel noise. keep_attention: its
  // attention's output is kept for that recompute (ForwardContext::keep_attention).
  torch::Tensor forward(const torch::Tensor& x, ForwardContext& ctx, bool keep_attention = false);
  torch::Tensor forward_plain(const torch::Tensor& x, ForwardContext& ctx);
  // Everything but the MLP: {h, y} with output = h + mlp(y).
  std::pair<torch::Tensor, torch::Tensor> forward_to_mlp(const torch::Tensor& x, ForwardContext& ctx);
  // Everything but the down projection: {h, act} with output = h + mlp->down_proj(act).
  std::pair<torch::Tensor, torch::Tensor> forward_to_down_proj(const torch::Tensor& x, ForwardContext& ctx);
  SelfAttention self_attn{nullptr};
  MLP mlp{nullptr};
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

class DecoderModelImpl : public torch::nn::Module {
 public:
  DecoderModelImpl(const ModelConfig& cfg, const torch::TensorOptions& opts);
  Embedding embed_tokens{nullptr};
  std::vector<DecoderLayer> layers;
  RMSNorm norm{nullptr};
};
TORCH_MODULE(DecoderModel);

class CausalLMImpl : public torch::nn::Module {
 public:
  CausalLMImpl(const ModelConfig& cfg, const torch::TensorOptions& opts);

  // ids [T] int64 of a packed batch; returns the final-normed hidden states [T, hidden].
  torch::Tensor forward_hidden(const torch::Tensor& ids, ForwardContext& ctx);
  // Logits for the given hidden rows only: [n, hidden] -> [n, vocab].
  torch::Tensor logits(const torch::Tensor& hidden_rows) const;
  const torch::Tensor& lm_head_weight() const;

  // Inserts one router per layer (trainable; backbone stays frozen).
  void attach_routers(const router::RouterOptions& opt);
  bool has_routers() const { return has_routers_; }
  std::vector<router::Router> routers() const;
  // Router parameters with their Hugging Face export names.
  std::vector<std::pair<std::string, torch::Tensor>> router_parameters() const;

  // Fills `ctx.cos/sin` for the packing's positions.
  void prepare(ForwardContext& ctx) const;

  const ModelConfig& config() const { return cfg_; }
  torch::TensorOptions options() const { return opts_; }

  DecoderModel model{nullptr};
  Linear lm_head{nullptr};  // absent when tie_word_embeddings

 private:
  ModelConfig cfg_;
  torch::TensorOptions opts_;
  Rope rope_;
  bool has_routers_ = false;
};
TORCH_MODULE(CausalLM);

}  // namespace elastic::model
