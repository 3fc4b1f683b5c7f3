#include "attention/hybrid.h"

#include <atomic>
#include <tuple>

#include "attention/hybrid_blend.h"
#include "attention/pair_gather.h"
#include "util/device_copy.h"
#include "util/error.h"
#include "util/host_copy.h"

namespace elastic::attention {

namespace {

// Packs whose longest sample is shorter than this run each branch's backward over every head with
// dO zeroed outside the branch instead of over the selected heads. Off by default: since the full-
// attention branch takes each sample's selected heads in one cuDNN call, selecting wins at every
// measured length (H200, bench-train --gather-min-len 0 vs 1000000, docs/performance.md): Qwen3-8B
// 8% faster steps at 5.5K-token samples and 15% at 10.9K; Qwen3-4B 14% and Llama-3.1-8B 10% at 5.5K.
// Shorter samples were not measured; the switch stays for that A/B.
std::atomic<int64_t> g_gather_min_len{0};

// The (sample, kv head) pairs selected by a [B, Hkv] mask, as one pack of single-KV-head
// sequences: row r of the gathered pack is token tok[r], kv head head[r] of the original.
struct PairSelection {
  torch::Tensor tok, head;
  Packing pack;
  std::vector<torch::indexing::TensorIndex> index() const { return {tok, head}; }
  // x [T, Hkv, ...] -> [N, ...]: each pair is one contiguous run (G * d for q, d for k), moved
  // whole on the GPU (attention/pair_gather.h). contiguous() is a no-op for the model's tensors.
  torch::Tensor gather(const torch::Tensor& x) const { return gather_pairs(x.contiguous(), tok, head); }
  // The pairs are distinct, as scatter_pairs requires: tokens of a sample, and one row per head.
  void scatter(const torch::Tensor& dst, const torch::Tensor& src, bool accumulate) const {
    scatter_pairs(dst, src.contiguous(), tok, head, accumulate);
  }
};

// How many (sample, head) pairs of a branch weight w_host [B, Hkv] (on the host) are non-zero.
int64_t count_selected(const torch::Tensor& w_host) {
  ELASTIC_CHECK(w_host.is_cpu(), "hybrid attention: the branch weights must be on the host, got " << w_host.device());
  return w_host.ne(0).sum().item<int64_t>();
}

// Whether every routing weight of w_host (on the host) is exactly 0 or 1.
bool is_hard(const torch::Tensor& w_host) { return w_host.eq(0).logical_or(w_host.eq(1)).all().item<bool>(); }

// w_host: the branch weights [B, Hkv] on the host (callers copy the routing weights once a layer),
// with some but not all pairs selected (count_selected).
PairSelection select_pairs(const torch::Tensor& w_host, const Packing& pack, torch::Device dev) {
  PairSelection sel;
  auto nz = w_host.ne(0).contiguous();
  std::vector<int64_t> lengths, starts, heads;
  int64_t rows = 0;
  auto acc = nz.accessor<bool, 2>();
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    for (int64_t h = 0; h < nz.size(1); ++h) {
      if (!acc[b][h]) continue;
      lengths.push_back(pack.length(b));
      starts.push_back(pack.begin(b));
      heads.push_back(h);
      rows += pack.length(b);
    }
  }
  // Token and head of every gathered row, built on the device from the pair list.
  auto len_t = util::to_device(lengths, dev);
  auto first_row = len_t.cumsum(0) - len_t;
  auto rep = [&](const torch::Tensor& t) { return t.repeat_interleave(len_t, 0, rows); };
  sel.tok = rep(util::to_device(starts, dev)) + torch::arange(rows, len_t.options()) - rep(first_row);
  sel.head = rep(util::to_device(heads, dev));
  sel.pack = Packing::from_lengths(lengths, dev);
  return sel;
}

// Each sample's KV heads with a non-zero branch weight w_host [B, Hkv] (on the host), for a branch that
// runs one call per sample (per_sample_heads): each call then takes only its sample's selected heads,
// a host list that rides in the copies' launch arguments.
std::vector<torch::Tensor> heads_per_sample(const torch::Tensor& w_host) {
  auto nz = w_host.ne(0).contiguous();
  auto acc = nz.accessor<bool, 2>();
  std::vector<torch::Tensor> heads(static_cast<size_t>(nz.size(0)));
  for (int64_t b = 0; b < nz.size(0); ++b) {
    std::vector<int64_t> h;
    for (int64_t k = 0; k < nz.size(1); ++k)
      if (acc[b][k]) h.push_back(k);
    if (!h.empty()) heads[static_cast<size_t>(b)] = torch::tensor(h, torch::TensorOptions().dtype(torch::kInt64));
  }
  return heads;
}

// Whether a pack's branches run over every head with dO weighted (short packs) rather than
// over the gathered (sample, head) pairs of each branch.
bool every_head(const Packing& pack) { return pack.max_len < g_gather_min_len; }

// Runs the attention backward of one branch, whose weight w [B, Hkv] (on the host) has a non-zero entry,
// for the (sample, kv head) pairs where w is non-zero, accumulating into dq/dk/dv. dout_w is
// dO times the branch weight (hybrid_branch_douts), except for long packs with hard routing
// (`hard`: every weight is 0 or 1), where the pairs of the two branches are disjoint and have
// weight 1: there dout_w is dO itself and gradients are written, not added.
void branch_backward(const torch::Tensor& dout_w, const torch::Tensor& q, const torch::Tensor& k,
                     const torch::Tensor& v, const AttnForward& fwd, const torch::Tensor& w, const Packing& pack,
                     MaskSpec mask, double scale, bool hard, torch::Tensor& dq, torch::Tensor& dk, torch::Tensor& dv) {
  const int64_t T = q.size(0), Hq = q.size(1), Hkv = k.size(1), G = Hq / Hkv, d = q.size(2);
  // Every head at once; exact because heads outside the branch have zero weight, hence zero dO.
  auto all_heads = [&] {
    auto g = attention_backward(dout_w, q, k, v, fwd, pack, mask, scale);
    dq.add_(g.dq);
    dk.add_(g.dk);
    dv.add_(g.dv);
  };
  if (every_head(pack)) return all_heads();
  const int64_t selected = count_selected(w);
  if (selected == 0) return;
  if (selected == w.numel()) return all_heads();
  if (per_sample_heads(q, pack, mask, /*backward=*/true)) {
    // One cuDNN call per sample, as over every head, but on the sample's selected heads only.
    return attention_backward_heads(dout_w, q, k, v, fwd, pack, heads_per_sample(w), mask, scale,
                                    /*accumulate=*/!hard, AttnGrads{dq, dk, dv});
  }
  auto sel = select_pairs(w, pack, q.device());
  auto q_s = sel.gather(q.view({T, Hkv, G, d}));  // [N,G,d]
  auto k_s = sel.gather(k).unsqueeze(1);           // [N,1,d]
  auto v_s = sel.gather(v).unsqueeze(1);
  auto o_s = sel.gather(fwd.out.view({T, Hkv, G, d}));
  auto do_s = sel.gather(dout_w.view({T, Hkv, G, d}));
  auto l_s = fwd.lse.view({Hkv, G, T}).permute({2, 0, 1}).index(sel.index()).t().contiguous();  // [G,N]
  auto g = attention_backward(do_s, q_s, k_s, v_s, AttnForward{o_s, l_s}, sel.pack, mask, scale);
  sel.scatter(dq.view({T, Hkv, G, d}), g.dq, /*accumulate=*/!hard);
  sel.scatter(dk, g.dk.squeeze(1), !hard);
  sel.scatter(dv, g.dv.squeeze(1), !hard);
}

// Hard decisions: each (sample, head) pair runs only one branch, full attention where w_fa (on the host,
// 0 or 1) is 1 and streaming attention where it is 0, all pairs of a branch in one call. Writes each head's
// log-sum-exp too when want_lse.
AttnForward routed_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                           const torch::Tensor& w_fa, const Packing& pack, MaskSpec ssa, double scale, bool want_lse) {
  const int64_t T = q.size(0), Hq = q.size(1), Hkv = k.size(1), G = Hq / Hkv, d = q.size(2);
  AttnForward f{torch::empty(q.sizes(), q.options()), torch::Tensor()};  // contiguous, as scatter_pairs needs
  if (want_lse) {
    f.lse = torch::empty({Hq, T}, q.options().dtype(q.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat));
  }
  for (auto [w, mask] : {std::pair{w_fa, MaskSpec::causal()}, std::pair{1 - w_fa, ssa}}) {
    const int64_t selected = count_selected(w);
    if (selected == 0) continue;
    if (selected == w.numel()) return attention_forward(q, k, v, pack, mask, scale);
    if (per_sample_heads(q, pack, mask, /*backward=*/false)) {
      attention_forward_heads(q, k, v, pack, heads_per_sample(w), mask, scale, f.out, f.lse);
      continue;
    }
    auto sel = select_pairs(w, pack, q.device());
    auto g = attention_forward(sel.gather(q.view({T, Hkv, G, d})), sel.gather(k).unsqueeze(1),
                               sel.gather(v).unsqueeze(1), sel.pack, mask, scale);
    sel.scatter(f.out.view({T, Hkv, G, d}), g.out, /*accumulate=*/false);
    // g.lse [G, N]; the backward reads it back the same way (branch_backward).
    if (want_lse) f.lse.view({Hkv, G, T}).permute({2, 0, 1}).index_put_(sel.index(), g.lse.t());
  }
  return f;
}

// The attention backward of both branches for the routing-aware hybrid: each branch over the pairs
// where its weight (w_host for full attention, 1 - w_host for streaming) is non-zero, from that branch's
// forward (fa, sa; with hard weights both may be one tensor of each pair's selected branch, the only
// entries a branch reads). dout_fa/dout_sa: dO weighted per branch, or dO itself with hard weights
// (branch_backward). Returns {dq, dk, dv}.
AttnGrads branches_backward(const torch::Tensor& dout_fa, const torch::Tensor& dout_sa, const torch::Tensor& q,
                            const torch::Tensor& k, const torch::Tensor& v, const AttnForward& fa,
                            const AttnForward& sa, const torch::Tensor& w_host, const Packing& pack, MaskSpec ssa,
                            double scale, bool hard) {
  AttnGrads g{torch::zeros_like(q), torch::zeros_like(k), torch::zeros_like(v)};
  if (w_host.ne(0).any().item<bool>())
    branch_backward(dout_fa, q, k, v, fa, w_host, pack, MaskSpec::causal(), scale, hard, g.dq, g.dk, g.dv);
  if (w_host.ne(1).any().item<bool>())
    branch_backward(dout_sa, q, k, v, sa, 1 - w_host, pack, ssa, scale, hard, g.dq, g.dk, g.dv);
  return g;
}

// The caller's recipe for q and k, kept with the call.
struct RemakeHolder : torch::CustomClassHolder {
  explicit RemakeHolder(Remake r) : remake(std::move(r)) {}
  Remake remake;
};

// What both hybrid functions keep for their backward: q and k (unless the caller can make them again,
// Remake), the function's other tensors (`rest`, v first), and the call's other arguments. The backward
// picks its branches on the host, from the copy of the routing weights started behind the router.
struct HybridCall {
  std::vector<torch::Tensor> rest;
  Packing pack;
  MaskSpec ssa;
  double scale = 0;
  c10::intrusive_ptr<util::HostCopy> s_host;

  static void save(torch::autograd::AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                   std::vector<torch::Tensor> rest, const Packing& pack, int64_t sink, int64_t window, double scale,
                   c10::intrusive_ptr<util::HostCopy> s_host, Remake remake) {
    rest.insert(rest.begin(), {remake.q ? torch::Tensor() : q, remake.k ? torch::Tensor() : k});
    ctx->save_for_backward(rest);
    ctx->saved_data["s_host"] = c10::IValue::make_capsule(std::move(s_host));
    ctx->saved_data["remake"] = c10::IValue::make_capsule(c10::make_intrusive<RemakeHolder>(std::move(remake)));
    ctx->saved_data["cu"] = pack.cu;
    ctx->saved_data["sink"] = sink;
    ctx->saved_data["window"] = window;
    ctx->saved_data["scale"] = scale;
  }
  static HybridCall load(torch::autograd::AutogradContext* ctx) {
    auto sv = ctx->get_saved_variables();
    HybridCall call;
    call.q_ = sv[0];
    call.k_ = sv[1];
    call.rest.assign(sv.begin() + 2, sv.end());
    call.pack = Packing::from_cu(ctx->saved_data["cu"].toIntVector(), call.rest[0].device());
    call.ssa = MaskSpec{ctx->saved_data["sink"].toInt(), ctx->saved_data["window"].toInt()};
    call.scale = ctx->saved_data["scale"].toDouble();
    call.s_host = c10::static_intrusive_pointer_cast<util::HostCopy>(ctx->saved_data["s_host"].toCapsule());
    call.remake_ = c10::static_intrusive_pointer_cast<RemakeHolder>(ctx->saved_data["remake"].toCapsule());
    return call;
  }
  // The routing weights on the host, in fp64.
  torch::Tensor weights() const { return s_host->wait().to(torch::kFloat64); }
  // q and k for the backward: the saved tensors, or made again.
  torch::Tensor q() const { return input(q_, remake_->remake.q); }
  torch::Tensor k() const { return input(k_, remake_->remake.k); }

 private:
  torch::Tensor q_, k_;
  c10::intrusive_ptr<RemakeHolder> remake_;
  static torch::Tensor input(const torch::Tensor& saved, const std::function<torch::Tensor()>& make) {
    if (saved.defined()) return saved;
    torch::NoGradGuard ng;
    return make();
  }
};

class HybridFn : public torch::autograd::Function<HybridFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor q,
                                                torch::Tensor k, torch::Tensor v, torch::Tensor s,
                                                const Packing* pack, int64_t sink, int64_t window, double scale,
                                                c10::intrusive_ptr<util::HostCopy> s_host, Remake remake) {
    MaskSpec full = MaskSpec::causal(), ssa{sink, window};
    auto fa = attention_forward(q, k, v, *pack, full, scale);
    auto sa = attention_forward(q, k, v, *pack, ssa, scale);
    auto out = hybrid_blend(fa.out, sa.out, s, *pack);
    HybridCall::save(ctx, q, k, {v, s, fa.out, fa.lse, sa.out, sa.lse}, *pack, sink, window, scale, std::move(s_host),
                     std::move(remake));
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto call = HybridCall::load(ctx);
    const auto &v = call.rest[0], &s = call.rest[1];
    const AttnForward fa{call.rest[2], call.rest[3]}, sa{call.rest[4], call.rest[5]};
    const auto& pack = call.pack;
    auto dout = grads[0].contiguous();

    torch::Tensor ds;
    // dL/ds[b,h] = sum over the sample's tokens, the group's query heads and d of (FA - SSA) * dO.
    if (ctx->needs_input_grad(3)) ds = hybrid_ds(fa.out, sa.out, dout, s, pack);
    AttnGrads g;
    if (ctx->needs_input_grad(0) || ctx->needs_input_grad(1) || ctx->needs_input_grad(2)) {
      // The host copy of the weights says which branches have work and whether routing is hard.
      const auto s_host = call.weights();
      const bool hard = is_hard(s_host);
      // Both branches' weighted dO in one pass where any is needed.
      torch::Tensor dout_fa = dout, dout_sa = dout;
      if (every_head(pack) || !hard) {
        std::tie(dout_fa, dout_sa) = hybrid_branch_douts(dout, s, pack, s_host.ne(0).any().item<bool>(),
                                                         s_host.ne(1).any().item<bool>());
      }
      g = branches_backward(dout_fa, dout_sa, call.q(), call.k(), v, fa, sa, s_host, pack, call.ssa, call.scale, hard);
    }
    return {g.dq, g.dk, g.dv, ds, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

// The routing-aware hybrid with hard weights, given each head's selected branch (output and
// log-sum-exp; with hard weights that output is the hybrid's): the forward that made it ran only those
// branches, or it is a checkpointed layer's kept output and no attention runs. The backward runs the
// unselected branch of each pair as a forward, for the router gradient (FA - SSA = (2s - 1)(selected -
// other)), then the selected branches' backward, as HybridFn does. The same attention as running both
// branches in the forward, but the step holds one branch's output per head, not two.
class HybridSelectedFn : public torch::autograd::Function<HybridSelectedFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor q,
                                                torch::Tensor k, torch::Tensor v, torch::Tensor s,
                                                torch::Tensor kept_out, torch::Tensor kept_lse, const Packing* pack,
                                                int64_t sink, int64_t window, double scale,
                                                c10::intrusive_ptr<util::HostCopy> s_host, Remake remake) {
    HybridCall::save(ctx, q, k, {v, s, kept_out, kept_lse}, *pack, sink, window, scale, std::move(s_host),
                     std::move(remake));
    return {kept_out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto call = HybridCall::load(ctx);
    const auto &v = call.rest[0], &s = call.rest[1];
    const AttnForward kept{call.rest[2], call.rest[3]};
    const auto q = call.q(), k = call.k();
    const auto& pack = call.pack;
    auto dout = grads[0].contiguous();
    const auto w = call.weights();
    torch::Tensor ds;
    if (ctx->needs_input_grad(3)) {
      auto other = routed_forward(q, k, v, 1 - w, pack, call.ssa, call.scale, /*want_lse=*/false).out;
      ds = hybrid_ds(kept.out, other, dout, s, pack).mul_(s.detach() * 2 - 1);
    }
    AttnGrads g;
    if (ctx->needs_input_grad(0) || ctx->needs_input_grad(1) || ctx->needs_input_grad(2))
      g = branches_backward(dout, dout, q, k, v, kept, kept, w, pack, call.ssa, call.scale, /*hard=*/true);
    return {g.dq, g.dk, g.dv, ds, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

void set_gather_min_len(int64_t tokens) { g_gather_min_len = tokens; }
int64_t gather_min_len() { return g_gather_min_len; }

torch::Tensor hybrid_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& s, const Packing& pack, MaskSpec ssa, double scale,
                               c10::intrusive_ptr<util::HostCopy> s_host, AttnForward* kept, Remake remake) {
  ELASTIC_CHECK(s.dim() == 2 && s.size(0) == pack.num_samples() && s.size(1) == k.size(1),
                "hybrid_attention: routing weights must be [samples=" << pack.num_samples()
                                                                      << ", kv_heads=" << k.size(1) << "], got "
                                                                      << s.sizes());
  ELASTIC_CHECK(!ssa.full(), "hybrid_attention: the streaming branch needs a window");
  const bool needs_grad = torch::GradMode::is_enabled() &&
                          (q.requires_grad() || k.requires_grad() || v.requires_grad() || s.requires_grad());
  if (!needs_grad && every_head(pack)) {
    // Short samples: both branches over every head, blended on the device. Running only the selected
    // branches needs the weights on the host, a stream synchronisation per layer, after which the GPU
    // idles while the host builds the pair lists (most of a 16K Qwen3-8B step's idle time).
    return hybrid_blend(attention_forward(q, k, v, pack, MaskSpec::causal(), scale).out,
                        attention_forward(q, k, v, pack, ssa, scale).out, s, pack);
  }
  if (!s_host) s_host = c10::make_intrusive<util::HostCopy>(s);
  if (!every_head(pack)) {
    if (needs_grad && kept && kept->out.defined()) {
      return HybridSelectedFn::apply(q, k, v, s, kept->out, kept->lse, &pack, ssa.sink, ssa.window, scale,
                                     std::move(s_host), std::move(remake))[0];
    }
    // One host copy serves the hardness check and both branches' pair lists.
    const auto w = s_host->wait().to(torch::kFloat64);
    if (is_hard(w)) {
      AttnForward f;
      {
        torch::NoGradGuard ng;  // HybridSelectedFn is the graph
        f = routed_forward(q, k, v, w, pack, ssa, scale, /*want_lse=*/needs_grad || kept != nullptr);
      }
      if (!needs_grad) {
        if (kept) *kept = f;
        return f.out;
      }
      return HybridSelectedFn::apply(q, k, v, s, f.out, f.lse, &pack, ssa.sink, ssa.window, scale, std::move(s_host),
                                     std::move(remake))[0];
    }
  }
  return HybridFn::apply(q, k, v, s, &pack, ssa.sink, ssa.window, scale, std::move(s_host), std::move(remake))[0];
}

torch::Tensor hybrid_attention_autograd_both(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                             const torch::Tensor& s, const Packing& pack, MaskSpec ssa, double scale) {
  return hybrid_blend_composed(attention(q, k, v, pack, MaskSpec::causal(), scale),
                               attention(q, k, v, pack, ssa, scale), s, pack);
}

}  // namespace elastic::attention
