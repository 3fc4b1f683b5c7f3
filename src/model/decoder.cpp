#include "model/decoder.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "attention/attention.h"
#include "attention/hybrid.h"
#include "model/fused_ops.h"
#include "router/gumbel.h"
#include "util/error.h"
#include "util/memory.h"

namespace elastic::model {

SelfAttentionImpl::SelfAttentionImpl(const ModelConfig& cfg, int64_t layer, const torch::TensorOptions& opts)
    : layer_(layer), n_heads_(cfg.num_heads), n_kv_(cfg.num_kv_heads), head_dim_(cfg.head_dim) {
  const int64_t D = cfg.hidden_size, hd = cfg.head_dim;
  q_proj = register_module("q_proj", Linear(D, cfg.num_heads * hd, cfg.attention_bias, opts));
  k_proj = register_module("k_proj", Linear(D, cfg.num_kv_heads * hd, cfg.attention_bias, opts));
  v_proj = register_module("v_proj", Linear(D, cfg.num_kv_heads * hd, cfg.attention_bias, opts));
  o_proj = register_module("o_proj", Linear(cfg.num_heads * hd, D, false, opts));
  if (cfg.qk_norm) {
    q_norm = register_module("q_norm", RMSNorm(hd, cfg.rms_norm_eps, opts));
    k_norm = register_module("k_norm", RMSNorm(hd, cfg.rms_norm_eps, opts));
  }
  scale_ = 1.0 / std::sqrt(static_cast<double>(hd));
}

void SelfAttentionImpl::attach_router(const router::RouterOptions& opt) {
  mask_allocator = register_module("mask_allocator", router::Router(opt));
}

torch::Tensor SelfAttentionImpl::routing_weights(const torch::Tensor& keys, ForwardContext& ctx) {
  torch::Tensor s;
  if (ctx.mode == RoutingMode::fixed) {
    ELASTIC_CHECK(ctx.fixed_decisions, "forward: routing mode 'fixed' without decisions");
    // Always a copy: the checkpoint returns s as its own output and would otherwise give the
    // caller's tensor its autograd history (a second pass over the same decisions then deadlocked).
    s = ctx.fixed_decisions(layer_).to(keys.device(), torch::kFloat32, /*non_blocking=*/false, /*copy=*/true);
  } else {
    ELASTIC_CHECK(mask_allocator, "forward: routing requested but no router is attached to layer " << layer_);
    // The router reads the key states after k_norm and before RoPE (ELASTIC.md §4).
    const bool replay = ctx.recomputing;
    if (ctx.capture_keys && !replay) ctx.capture_keys->push_back(keys.detach());
    if (!ctx.pool_plan) ctx.pool_plan = router::make_pool_plan(mask_allocator->options(), ctx.pack->cu, ctx.prompts, keys.device());
    auto z = mask_allocator->forward(keys, *ctx.pool_plan);
    if (!replay) ctx.router_logits.push_back(z.detach());
    if (ctx.mode == RoutingMode::train) {
      torch::Tensor g;
      if (replay) {
        g = ctx.noise.at(static_cast<size_t>(layer_));
      } else {
        ELASTIC_CHECK(ctx.gen != nullptr, "forward: training-mode routing needs a noise generator");
        g = router::gumbel_noise(z, *ctx.gen);
        if (static_cast<int64_t>(ctx.noise.size()) <= layer_) ctx.noise.resize(static_cast<size_t>(layer_) + 1);
        ctx.noise[static_cast<size_t>(layer_)] = g;
      }
      s = router::fa_weight(router::gumbel_softmax_ste(z, g, ctx.tau));
    } else {
      s = router::hard_decision(z);
    }
  }
  ctx.decisions.push_back(s);
  return s;
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x, ForwardContext& ctx) {
  const int64_t T = x.size(0);
  // Keys and router first: the hybrid attention needs the routing weights on the host, and a copy
  // started here completes while the query and value projections still run.
  const auto k_pre = k_proj->forward(x).view({T, n_kv_, head_dim_});
  auto k = k_norm ? k_norm->forward(k_pre) : k_pre;
  torch::Tensor s;
  c10::intrusive_ptr<util::HostCopy> s_host;
  if (ctx.mode != RoutingMode::off) {
    s = routing_weights(k, ctx);
    s_host = c10::make_intrusive<util::HostCopy>(s);
  }
  const auto q_pre = q_proj->forward(x).view({T, n_heads_, head_dim_});
  auto v = v_proj->forward(x).view({T, n_kv_, head_dim_});
  auto q = apply_rope(q_norm ? q_norm->forward(q_pre) : q_pre, ctx.cos, ctx.sin);
  k = apply_rope(k, ctx.cos, ctx.sin);
  if (ctx.capture_qk) ctx.capture_qk->emplace_back(q.detach(), k.detach());
  // The q/k norms keep their inputs, the projections' outputs, for their backward: the hybrid's
  // backward makes q and k from those again rather than keep copies of its own. Without the norms
  // nothing keeps the projections' outputs, and remaking would only trade one tensor for another.
  attention::Remake remake;
  if (q_norm && k_norm) {
    auto remade = [cos = ctx.cos, sin = ctx.sin](RMSNorm norm, torch::Tensor pre) {
      return [norm = std::move(norm), pre = pre.detach(), cos, sin] { return apply_rope(norm->forward(pre), cos, sin); };
    };
    remake.q = remade(q_norm, q_pre);
    remake.k = remade(k_norm, k_pre);
  }
  auto out = s.defined() ? attention::hybrid_attention(q, k, v, s, *ctx.pack, ctx.ssa, scale_, std::move(s_host),
                                                      ctx.attention_kept, std::move(remake))
                         : attention::attention(q, k, v, *ctx.pack, attention::MaskSpec::causal(), scale_);
  return o_proj->forward(out.reshape({T, n_heads_ * head_dim_}));
}

MLPImpl::MLPImpl(const ModelConfig& cfg, const torch::TensorOptions& opts) {
  gate_proj = register_module("gate_proj", Linear(cfg.hidden_size, cfg.intermediate_size, false, opts));
  up_proj = register_module("up_proj", Linear(cfg.hidden_size, cfg.intermediate_size, false, opts));
  down_proj = register_module("down_proj", Linear(cfg.intermediate_size, cfg.hidden_size, false, opts));
}

torch::Tensor MLPImpl::activation(const torch::Tensor& x) { return swiglu(gate_proj->forward(x), up_proj->forward(x)); }

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  if (torch::GradMode::is_enabled() && x.requires_grad() && frozen()) return frozen_mlp(x, frozen_weights());
  return down_proj->forward(activation(x));
}

bool MLPImpl::frozen() const {
  for (const auto* l : {&gate_proj, &up_proj, &down_proj}) {
    if ((*l)->weight.requires_grad() || (*l)->bias.defined()) return false;
  }
  return true;
}

FrozenMlpWeights MLPImpl::frozen_weights() const { return {gate_proj->weight, up_proj->weight, down_proj->weight}; }

DecoderLayerImpl::DecoderLayerImpl(const ModelConfig& cfg, int64_t layer, const torch::TensorOptions& opts) {
  self_attn = register_module("self_attn", SelfAttention(cfg, layer, opts));
  mlp = register_module("mlp", MLP(cfg, opts));
  input_layernorm = register_module("input_layernorm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, opts));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, opts));
}

std::pair<torch::Tensor, torch::Tensor> DecoderLayerImpl::forward_to_mlp(const torch::Tensor& x, ForwardContext& ctx) {
  // The attention's residual add goes into the second norm's kernel. The layer's last add stays
  // apart: its sum is the next layer's input, the tensor the checkpoint keeps and the next layer's
  // recompute starts from, so fusing it with that layer's first norm would cross the boundary.
  return post_attention_layernorm->forward_add(x, self_attn->forward(input_layernorm->forward(x), ctx));
}

std::pair<torch::Tensor, torch::Tensor> DecoderLayerImpl::forward_to_down_proj(const torch::Tensor& x,
                                                                              ForwardContext& ctx) {
  auto [h, y] = forward_to_mlp(x, ctx);
  return {h, mlp->activation(y)};
}

torch::Tensor DecoderLayerImpl::forward_plain(const torch::Tensor& x, ForwardContext& ctx) {
  auto [h, y] = forward_to_mlp(x, ctx);
  return h + mlp->forward(y);
}

namespace {

// Runs a layer's forward with grad; when asked, records the most any layer's activations held
// (ForwardContext::layer_activation_bytes; what keeping a layer costs). not_kept(result): bytes the
// allocation grew by that a kept layer does not add to the step. Its output is one of them: that
// tensor is the next layer's input, which the step holds anyway (as that layer's checkpoint). Counted,
// it made auto's plan 8-15% too large per kept layer on the H100 (docs/performance.md, session 16).
template <class Forward, class NotKept>
auto measure_held(const torch::Tensor& x, ForwardContext& ctx, Forward forward, NotKept not_kept) {
  if (!ctx.measure_layer_activations) return forward();
  const auto before = allocated_bytes(x.device());
  auto r = forward();
  ctx.layer_activation_bytes = std::max(ctx.layer_activation_bytes, allocated_bytes(x.device()) - before - not_kept(r));
  return r;
}

torch::Tensor forward_holding_activations(DecoderLayerImpl& layer, const torch::Tensor& x, ForwardContext& ctx) {
  return measure_held(x, ctx, [&] { return layer.forward_plain(x, ctx); },
                      [](const torch::Tensor& out) { return static_cast<int64_t>(out.nbytes()); });
}

// The recompute of a layer whose down projection is frozen (its gate or up projection not) stops before
// it: the backward needs only dL/d(act) = dL/d(out) · W_down, never the projection's output, so its
// matmul (a sixth of the layer's linear FLOPs at Qwen3-8B's shapes) would be thrown away. Returns {h, act}, out = h + down_proj(act).
// h is the second norm's input, which the layer holds either way; act is the down projection's input,
// which a kept layer with a frozen projection does not hold.
std::pair<torch::Tensor, torch::Tensor> recompute_to_down_proj(DecoderLayerImpl& layer, const torch::Tensor& x,
                                                               ForwardContext& ctx) {
  using Result = std::pair<torch::Tensor, torch::Tensor>;
  return measure_held(x, ctx, [&] { return layer.forward_to_down_proj(x, ctx); },
                      [](const Result& r) { return static_cast<int64_t>(r.second.nbytes()); });
}

// The recompute of a layer whose MLP is frozen stops at the MLP's input y: the gate and up projections
// run without grad, and the backward forms dL/dy from them directly (frozen_mlp_backward), writing the
// gradients over g and u. Nothing of the down projection, the activation or its gradient is built whole.
// y is not what a kept layer holds (its frozen_mlp keeps g and u only).
struct MlpRecompute {
  torch::Tensor h, y, g, u;
};
MlpRecompute recompute_to_mlp(DecoderLayerImpl& layer, const torch::Tensor& x, ForwardContext& ctx) {
  return measure_held(
      x, ctx,
      [&] {
        auto [h, y] = layer.forward_to_mlp(x, ctx);
        auto [g, u] = frozen_mlp_gate_up(y, layer.mlp->frozen_weights());
        return MlpRecompute{h, y, g, u};
      },
      [](const MlpRecompute& r) { return static_cast<int64_t>(r.y.nbytes()); });
}

bool down_proj_frozen(const DecoderLayerImpl& layer) {
  const auto& d = layer.mlp->down_proj;
  return !d->weight.requires_grad() && !(d->bias.defined() && d->bias.requires_grad());
}

// Points ctx.attention_kept at a store while a layer runs.
class AttentionStore {
 public:
  AttentionStore(ForwardContext& ctx, attention::AttnForward* store) : ctx_(ctx) { ctx_.attention_kept = store; }
  ~AttentionStore() { ctx_.attention_kept = nullptr; }
  AttentionStore(const AttentionStore&) = delete;
  AttentionStore& operator=(const AttentionStore&) = delete;

 private:
  ForwardContext& ctx_;
};

// Activation checkpointing of one decoder layer: the forward keeps only the layer input (on the
// GPU or in pinned host memory), the Gumbel noise its router drew and, with keep_attention, its
// attention's output (ForwardContext::keep_attention); the backward recomputes
// the layer, router included, with grad enabled and backpropagates through it (parameter
// gradients accumulate as usual). Outputs: the layer output and the routing weights s, so the
// sparsity objective's gradient reaches the router through the recompute.
class CheckpointFn : public torch::autograd::Function<CheckpointFn> {
 public:
  // input_grad: whether the caller needs dL/dx. The first layer's input (frozen embeddings) does
  // not; it is handed in requiring grad only so that this backward runs for the layer's router.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* actx, torch::Tensor x,
                                                DecoderLayerImpl* layer, ForwardContext* ctx, bool input_grad,
                                                bool keep_attention) {
    std::vector<torch::Tensor> saved;
    // The input's copy to the host starts first, so it overlaps this layer's forward.
    if (ctx->offload_checkpoints && x.is_cuda()) {
      if (!ctx->offload) ctx->offload = c10::make_intrusive<CheckpointOffload>();
      actx->saved_data["offload_slot"] = ctx->offload->push(x);
      actx->saved_data["offload"] = c10::IValue::make_capsule(ctx->offload);
    } else {
      saved.push_back(x);
    }
    torch::Tensor out, s;
    attention::AttnForward kept;
    {
      torch::NoGradGuard ng;
      AttentionStore store(*ctx, keep_attention ? &kept : nullptr);
      out = layer->forward_plain(x, *ctx);
      if (ctx->mode != RoutingMode::off) s = ctx->decisions.back();
    }
    actx->saved_data["kept_attention"] = kept.out.defined();
    if (kept.out.defined()) {
      saved.push_back(kept.out);
      saved.push_back(kept.lse);
    }
    actx->save_for_backward(saved);
    actx->saved_data["layer"] = reinterpret_cast<int64_t>(layer);
    actx->saved_data["input_grad"] = input_grad;
    actx->saved_data["ctx"] = reinterpret_cast<int64_t>(ctx);
    // Autograd functions return defined tensors only: "no routing" travels as an empty tensor.
    if (!s.defined()) {
      s = torch::empty({0}, x.options().dtype(torch::kFloat32));
      actx->mark_non_differentiable({s});
    }
    return {out, s};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* actx,
                                                 torch::autograd::variable_list grads) {
    auto* layer = reinterpret_cast<DecoderLayerImpl*>(actx->saved_data["layer"].toInt());
    auto* ctx = reinterpret_cast<ForwardContext*>(actx->saved_data["ctx"].toInt());
    torch::Tensor x;
    const auto saved = actx->get_saved_variables();
    size_t next = 0;
    if (actx->saved_data.count("offload_slot")) {
      // This pass's offload, not ctx's: a later forward on the same context starts a new one.
      const auto offload =
          c10::static_intrusive_pointer_cast<CheckpointOffload>(actx->saved_data["offload"].toCapsule());
      x = offload->take(actx->saved_data["offload_slot"].toInt());
    } else {
      x = saved[next++].detach();
    }
    attention::AttnForward kept;
    if (actx->saved_data["kept_attention"].toBool()) kept = {saved[next].detach(), saved[next + 1].detach()};
    // Without an input gradient the recompute's backward reaches only the router: no q/k/v
    // gradients, no attention backward over either branch.
    x.requires_grad_(actx->needs_input_grad(0) && actx->saved_data["input_grad"].toBool());
    const bool mlp_frozen = layer->mlp->frozen();
    const bool skip_down = !mlp_frozen && down_proj_frozen(*layer);
    torch::Tensor out, act, s;
    MlpRecompute mr;
    {
      torch::AutoGradMode on(true);
      AttentionStore store(*ctx, kept.out.defined() ? &kept : nullptr);
      ctx->recomputing = true;
      if (mlp_frozen) {
        mr = recompute_to_mlp(*layer, x, *ctx);
        out = mr.h;
      } else if (skip_down) {
        std::tie(out, act) = recompute_to_down_proj(*layer, x, *ctx);  // out holds h here
      } else {
        out = forward_holding_activations(*layer, x, *ctx);
      }
      ctx->recomputing = false;
      // The recomputed decisions are this backward's, not the pass's record: take them back off.
      if (ctx->mode != RoutingMode::off) {
        s = ctx->decisions.back();
        ctx->decisions.pop_back();
      }
    }
    std::vector<torch::Tensor> outs, gs;
    if (grads[0].defined()) {
      if (out.requires_grad()) {
        outs.push_back(out);
        gs.push_back(grads[0]);
      }
      if (skip_down && act.requires_grad()) {
        outs.push_back(act);
        gs.push_back(grads[0].matmul(layer->mlp->down_proj->weight));
      }
      if (mlp_frozen && mr.y.requires_grad()) {
        outs.push_back(mr.y);
        gs.push_back(frozen_mlp_backward(grads[0], mr.g, mr.u, layer->mlp->frozen_weights()));
      }
    }
    mr.g = mr.u = torch::Tensor();  // spent (they hold the MLP's gradients now): free before the attention's backward
    if (s.defined() && s.requires_grad() && grads[1].defined() && grads[1].numel() > 0) {
      outs.push_back(s);
      gs.push_back(grads[1]);
    }
    if (!outs.empty()) torch::autograd::backward(outs, gs);
    torch::Tensor gx = x.requires_grad() ? x.grad() : torch::Tensor();
    return {gx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, ForwardContext& ctx, bool keep_attention) {
  if (!ctx.checkpoint || !torch::GradMode::is_enabled()) return forward_plain(x, ctx);
  torch::Tensor in = x;
  const bool input_grad = x.requires_grad();
  if (!input_grad) {
    // Trainable parameters inside the layer (its router's too) get gradients only if the
    // checkpoint's backward runs, which needs an input that requires grad.
    for (const auto& p : parameters()) {
      if (p.requires_grad()) {
        in = x.detach().requires_grad_();
        break;
      }
    }
  }
  auto r = CheckpointFn::apply(in, this, &ctx, input_grad, keep_attention);
  // The recorded decisions become the differentiable ones.
  if (ctx.mode != RoutingMode::off) ctx.decisions.back() = r[1];
  return r[0];
}

DecoderModelImpl::DecoderModelImpl(const ModelConfig& cfg, const torch::TensorOptions& opts) {
  embed_tokens = register_module("embed_tokens", Embedding(cfg.vocab_size, cfg.hidden_size, opts));
  auto list = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.num_layers; ++i) {
    layers.push_back(DecoderLayer(cfg, i, opts));
    list->push_back(layers.back());
  }
  norm = register_module("norm", RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, opts));
}

CausalLMImpl::CausalLMImpl(const ModelConfig& cfg, const torch::TensorOptions& opts)
    : cfg_(cfg), opts_(opts), rope_(Rope::make(cfg, opts.device())) {
  model = register_module("model", DecoderModel(cfg, opts));
  if (!cfg.tie_word_embeddings) {
    lm_head = register_module("lm_head", Linear(cfg.hidden_size, cfg.vocab_size, false, opts));
  }
}

void CausalLMImpl::prepare(ForwardContext& ctx) const {
  ELASTIC_CHECK(ctx.pack != nullptr, "forward: no packing given");
  std::tie(ctx.cos, ctx.sin) = rope_.tables(ctx.pack->positions);
  if (ctx.prompts.empty()) {
    // Without prompt ranges the router pools over whole samples.
    for (int64_t b = 0; b < ctx.pack->num_samples(); ++b) ctx.prompts.push_back({0, ctx.pack->length(b)});
  }
}

torch::Tensor CausalLMImpl::forward_hidden(const torch::Tensor& ids, ForwardContext& ctx) {
  ELASTIC_CHECK(ids.dim() == 1 && ids.size(0) == ctx.pack->tokens(),
                "forward: token ids must be [" << ctx.pack->tokens() << "], got " << ids.sizes());
  if (!ctx.cos.defined()) prepare(ctx);
  ctx.decisions.clear();
  ctx.pool_plan.reset();  // a new pass may carry another pack
  ctx.offload.reset();    // the last pass's nodes hold their own
  ctx.router_logits.clear();
  auto h = model->embed_tokens->forward(ids.to(opts_.device()));
  const auto num_layers = static_cast<int64_t>(model->layers.size());
  ELASTIC_CHECK(ctx.keep_layers >= 0 && ctx.keep_layers <= num_layers,
                "forward: keep_layers must be in [0, " << num_layers << "], got " << ctx.keep_layers);
  ELASTIC_CHECK(ctx.keep_attention >= 0 && ctx.keep_attention <= num_layers,
                "forward: keep_attention must be in [0, " << num_layers << "], got " << ctx.keep_attention);
  const int64_t first_kept = ctx.checkpoint && torch::GradMode::is_enabled() ? num_layers - ctx.keep_layers : num_layers;
  // The layers just before the kept ones keep their attention's output (the plan gives them the rest).
  const int64_t first_attention_kept = std::max<int64_t>(0, first_kept - ctx.keep_attention);
  for (int64_t i = 0; i < num_layers; ++i) {
    auto& layer = model->layers[static_cast<size_t>(i)];
    h = i < first_kept ? layer->forward(h, ctx, i >= first_attention_kept) : forward_holding_activations(*layer, h, ctx);
  }
  if (ctx.offload && first_kept < num_layers && h.requires_grad()) {
    // The last offloaded input comes back while the kept layers' backward runs: h's gradient is
    // ready just before that backward starts.
    h.register_hook([offload = ctx.offload](const torch::Tensor&) { offload->prefetch_last(); });
  }
  return model->norm->forward(h);
}

const torch::Tensor& CausalLMImpl::lm_head_weight() const {
  return cfg_.tie_word_embeddings ? model->embed_tokens->weight : lm_head->weight;
}

torch::Tensor CausalLMImpl::logits(const torch::Tensor& hidden_rows) const {
  return torch::nn::functional::linear(hidden_rows, lm_head_weight());
}

void CausalLMImpl::attach_routers(const router::RouterOptions& opt) {
  ELASTIC_CHECK(opt.head_dim == cfg_.head_dim,
                "router: head_dim " << opt.head_dim << " differs from the model's " << cfg_.head_dim);
  for (auto& layer : model->layers) {
    layer->self_attn->attach_router(opt);
    layer->self_attn->mask_allocator->to(opts_.device(), torch::kFloat32);
  }
  has_routers_ = true;
}

std::vector<router::Router> CausalLMImpl::routers() const {
  std::vector<router::Router> out;
  for (const auto& layer : model->layers) out.push_back(layer->self_attn->mask_allocator);
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> CausalLMImpl::router_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t i = 0; i < model->layers.size(); ++i) {
    const auto& r = model->layers[i]->self_attn->mask_allocator;
    if (!r) continue;
    for (const auto& p : r->named_parameters()) {
      out.emplace_back("model.layers." + std::to_string(i) + ".self_attn.mask_allocator." + p.key(), p.value());
    }
  }
  return out;
}

}  // namespace elastic::model
