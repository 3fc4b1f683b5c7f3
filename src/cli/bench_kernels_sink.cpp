// bench-kernels cases for streaming attention: the fused log-sum-exp merge (kernels/sink_merge.cu)
// and the streaming backward, each against the gather-based implementation they replaced, kept
// below as the baseline; and the one-launch streaming forward (kernels/streaming_attention.cu)
// against the FlashAttention-2 composition it replaced, and its backward
// (kernels/streaming_attention_bwd.cu) against attention_backward's flash composition. The first
// (warm-up) run of each streaming case also logs how far the two implementations' results differ.
#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>

#include "attention/attention.h"
#include "attention/sink_merge.h"
#include "attention/streaming_kernel.h"
#include "cli/bench_kernels.h"
#include "cli/bench_util.h"
#include "util/log.h"

namespace elastic::cli {
namespace {

using attention::AttnForward;
using attention::AttnGrads;
using attention::MaskSpec;
using attention::Packing;

// ============================================================================================
// BASELINE ONLY: streaming attention's sink part as src/attention/attention.cpp had it before
// kernels/sink_merge.cu (flash_forward / flash_backward), not used by the library. The windowed
// flash pass goes through the public API with sink 0; the dense rows [window, window + sink - 1)
// are unchanged in the new code; the rows >= window + sink - 1 are gathered (q, and dout/out/q
// in the backward) and merged through a chain of full-size ATen ops.
// ============================================================================================

struct OldSinkRows {
  int64_t s0, row0, rows, nsink;
};

std::vector<OldSinkRows> old_sink_rows(const Packing& pack, MaskSpec mask) {
  std::vector<OldSinkRows> out;
  if (mask.full() || mask.sink <= 0) return out;
  constexpr int64_t kChunk = 4096;
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const int64_t n = pack.length(b);
    const int64_t end = std::min(n, mask.window + mask.sink - 1);
    for (int64_t r = mask.window; r < end; r += kChunk) {
      const int64_t e = std::min(end, r + kChunk);
      out.push_back({pack.begin(b), r, e - r, std::min(mask.sink, e - mask.window)});
    }
  }
  return out;
}

struct OldSinkFull {
  torch::Tensor rows, keys;  // query rows and sink key rows in the pack, int64
  torch::Tensor cu_q, cu_k;  // int32 varlen boundaries of the sub-batch
  int64_t max_q = 0, nk = 0;
  bool empty() const { return !rows.defined(); }
};

OldSinkFull old_sink_full(const Packing& pack, MaskSpec mask, torch::Device dev) {
  OldSinkFull f;
  if (mask.full() || mask.sink <= 0) return f;
  std::vector<int64_t> rows, keys, cu_q{0}, cu_k{0};
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const int64_t n = pack.length(b), first = mask.window + mask.sink - 1;
    if (n <= first) continue;
    for (int64_t i = first; i < n; ++i) rows.push_back(pack.begin(b) + i);
    for (int64_t j = 0; j < mask.sink; ++j) keys.push_back(pack.begin(b) + j);
    cu_q.push_back(cu_q.back() + n - first);
    cu_k.push_back(cu_k.back() + mask.sink);
    f.max_q = std::max(f.max_q, n - first);
  }
  if (rows.empty()) return f;
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  f.rows = torch::tensor(rows, i64).to(dev);
  f.keys = torch::tensor(keys, i64).to(dev);
  f.cu_q = torch::tensor(cu_q, i64).to(torch::kInt32).to(dev);
  f.cu_k = torch::tensor(cu_k, i64).to(torch::kInt32).to(dev);
  f.nk = mask.sink;
  return f;
}

torch::Tensor old_sink_scores(const torch::Tensor& q, const torch::Tensor& k, const OldSinkRows& c, MaskSpec mask,
                              double scale, int64_t G) {
  const int64_t Hkv = k.size(1), d = q.size(2);
  auto qr = q.narrow(0, c.s0 + c.row0, c.rows).view({c.rows, Hkv, G, d}).permute({1, 2, 0, 3}).to(torch::kFloat32);
  auto kr = k.narrow(0, c.s0, c.nsink).permute({1, 0, 2}).to(torch::kFloat32);
  auto sc = torch::matmul(qr.reshape({Hkv, G * c.rows, d}), kr.transpose(1, 2)).mul_(scale);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(q.device());
  auto i = torch::arange(c.row0, c.row0 + c.rows, i64).unsqueeze(1);
  auto j = torch::arange(0, c.nsink, i64).unsqueeze(0);
  auto vis = j <= (i - mask.window);
  return sc.view({Hkv, G, c.rows, c.nsink}).masked_fill(vis.logical_not(), -std::numeric_limits<double>::infinity());
}

// The merge of the gathered rows: the ATen composition kernels/sink_merge.cu replaces.
void old_merge(AttnForward& f, const torch::Tensor& rows, const torch::Tensor& os_rows, const torch::Tensor& ls_rows) {
  auto os = os_rows.to(torch::kFloat32);  // [NA,Hq,d]
  auto lw = f.lse.index_select(1, rows);
  auto ow = f.out.index_select(0, rows).to(torch::kFloat32);
  auto l = torch::logaddexp(lw, ls_rows);
  auto o = ow * torch::exp(lw - l).t().unsqueeze(-1) + os * torch::exp(ls_rows - l).t().unsqueeze(-1);
  f.out.index_copy_(0, rows, o.to(f.out.scalar_type()));
  f.lse.index_copy_(1, rows, l);
}

AttnGrads old_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                       const torch::Tensor& v, const AttnForward& fwd, const Packing& pack, MaskSpec mask,
                       double scale) {
  auto out = attention::attention_backward(dout, q, k, v, fwd, pack, MaskSpec::streaming(0, mask.window), scale);
  const int64_t Hq = q.size(1), Hkv = k.size(1), G = Hq / Hkv, d = q.size(2);
  for (const auto& c : old_sink_rows(pack, mask)) {
    auto sc = old_sink_scores(q, k, c, mask, scale, G);
    auto l = fwd.lse.narrow(1, c.s0 + c.row0, c.rows).view({Hkv, G, c.rows, 1});
    auto p = torch::exp(sc - l).view({Hkv, G * c.rows, c.nsink});
    auto heads = [&](const torch::Tensor& t) {
      return t.narrow(0, c.s0 + c.row0, c.rows).view({c.rows, Hkv, G, d}).permute({1, 2, 0, 3})
          .to(torch::kFloat32).reshape({Hkv, G * c.rows, d});
    };
    auto dob = heads(dout), ob = heads(fwd.out), qb = heads(q);
    auto kr = k.narrow(0, c.s0, c.nsink).permute({1, 0, 2}).to(torch::kFloat32);
    auto vr = v.narrow(0, c.s0, c.nsink).permute({1, 0, 2}).to(torch::kFloat32);
    auto dp = torch::bmm(dob, vr.transpose(1, 2));
    auto ds = p * (dp - (dob * ob).sum(-1, true));
    auto dq = torch::bmm(ds, kr).mul_(scale).view({Hkv, G, c.rows, d}).permute({2, 0, 1, 3}).reshape({c.rows, Hq, d});
    out.dq.narrow(0, c.s0 + c.row0, c.rows).add_(dq.to(out.dq.scalar_type()));
    auto dk = torch::bmm(ds.transpose(1, 2), qb).mul_(scale).permute({1, 0, 2});
    auto dv = torch::bmm(p.transpose(1, 2), dob).permute({1, 0, 2});
    out.dk.narrow(0, c.s0, c.nsink).add_(dk.to(out.dk.scalar_type()));
    out.dv.narrow(0, c.s0, c.nsink).add_(dv.to(out.dv.scalar_type()));
  }
  auto sf = old_sink_full(pack, mask, q.device());
  if (!sf.empty()) {
    auto empty = torch::empty({0}, q.options().dtype(torch::kInt64));
    auto qa = q.index_select(0, sf.rows), ks = k.index_select(0, sf.keys), vs = v.index_select(0, sf.keys);
    auto doa = dout.index_select(0, sf.rows), oa = fwd.out.index_select(0, sf.rows);
    auto la = fwd.lse.index_select(1, sf.rows).contiguous();
    auto gs = at::_flash_attention_backward(doa, qa, ks, vs, oa, la, sf.cu_q, sf.cu_k, sf.max_q, sf.nk, 0.0,
                                            /*is_causal=*/false, empty, empty, scale);
    out.dq.index_add_(0, sf.rows, std::get<0>(gs));
    out.dk.index_add_(0, sf.keys, std::get<1>(gs));
    out.dv.index_add_(0, sf.keys, std::get<2>(gs));
  }
  return out;
}

// ============================================================================================

double rel_diff(const torch::Tensor& a, const torch::Tensor& b) {
  auto a32 = a.to(torch::kFloat32), b32 = b.to(torch::kFloat32);
  return ((a32 - b32).norm() / b32.norm().clamp_min(1e-30)).item<double>();
}

struct Setup {
  Packing pack;
  MaskSpec mask;
  int64_t first = 0;  // rows at positions >= first see every sink key beyond the window
  std::string shape;
};

Setup make_setup(const KernelShape& s) {
  Setup u{Packing::from_lengths(mixed_lengths(s.tokens, std::vector<int64_t>(s.samples, 1)), s.device),
          MaskSpec::streaming(s.sink, s.window), s.window + s.sink - 1, ""};
  std::ostringstream os;
  os << "T=" << s.tokens << " samples=" << s.samples << " Hq=" << s.q_heads << " Hkv=" << s.kv_heads
     << " d=" << s.head_dim << " sink=" << s.sink << " window=" << s.window << " " << c10::toString(s.dtype);
  u.shape = os.str();
  return u;
}

struct MergeState {
  torch::Tensor positions, out_s, lse_s;
  AttnForward fused, composed;           // separate buffers: both merge in place
  torch::Tensor rows, os_rows, ls_rows;  // the gathered rows the old flash call produced
};

// Inputs are random (the merge does not care where they come from); both sides merge in place
// on every run, which keeps the values finite (a convex combination, lse grows by < log 2).
KernelCase merge_case(const KernelShape& s, const Setup& u) {
  const int64_t T = s.tokens, H = s.q_heads, d = s.head_dim;
  auto od = torch::TensorOptions().device(s.device).dtype(s.dtype);
  auto of = torch::TensorOptions().device(s.device).dtype(torch::kFloat32);
  auto st = std::make_shared<MergeState>();
  st->positions = u.pack.positions;
  st->out_s = torch::randn({T, H, d}, od);
  st->lse_s = torch::randn({H, T}, of);
  st->fused = {torch::randn({T, H, d}, od), torch::randn({H, T}, of)};
  st->composed = {st->fused.out.clone(), st->fused.lse.clone()};
  st->rows = torch::nonzero(u.pack.positions >= u.first).flatten();
  st->os_rows = st->out_s.index_select(0, st->rows);
  st->ls_rows = st->lse_s.index_select(1, st->rows).contiguous();
  const double merged = static_cast<double>(st->rows.size(0));
  KernelCase c;
  c.name = "sink_merge";
  c.shape = u.shape;
  // Merged rows: out_w and out_s read, out written; lse_w and lse_s read, lse written; positions.
  c.bytes = merged * H * (3.0 * d * c10::elementSize(s.dtype) + 3.0 * 4) + 8.0 * T;
  const int64_t first = u.first;
  c.fused = [st, first] {
    attention::sink_merge(st->fused.out, st->fused.lse, st->fused.out, st->fused.lse, st->out_s, st->lse_s,
                          st->positions, first);
  };
  c.composed = [st] { old_merge(st->composed, st->rows, st->os_rows, st->ls_rows); };
  return c;
}

struct SsaState {
  Setup u;
  double scale = 1.0;
  torch::Tensor q, k, v, dout;
  AttnForward fwd;  // the library's forward, made on first use (backward only)
  bool fwd_checked = false, bwd_checked = false;
  void ensure_fwd() {
    if (!fwd.out.defined()) fwd = attention::attention_forward(q, k, v, u.pack, u.mask, scale);
  }
};

std::shared_ptr<SsaState> ssa_state(const KernelShape& s, const Setup& u) {
  auto st = std::make_shared<SsaState>();
  st->u = u;
  st->scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  auto o = torch::TensorOptions().device(s.device).dtype(s.dtype);
  st->q = torch::randn({s.tokens, s.q_heads, s.head_dim}, o);
  st->k = torch::randn({s.tokens, s.kv_heads, s.head_dim}, o);
  st->v = torch::randn({s.tokens, s.kv_heads, s.head_dim}, o);
  st->dout = torch::randn({s.tokens, s.q_heads, s.head_dim}, o);
  return st;
}

// The first run is the timer's warm-up: compare with the baseline there, outside the timing.
void check_backward(SsaState& st, const AttnGrads& g) {
  if (st.bwd_checked) return;
  st.bwd_checked = true;
  auto r = old_backward(st.dout, st.q, st.k, st.v, st.fwd, st.u.pack, st.u.mask, st.scale);
  LOG_INFO("ssa_backward: fused vs previous implementation: rel diff dq " << rel_diff(g.dq, r.dq) << ", dk "
                                                                          << rel_diff(g.dk, r.dk) << ", dv "
                                                                          << rel_diff(g.dv, r.dv));
}

std::vector<KernelCase> ssa_cases(const KernelShape& s, const Setup& u) {
  auto st = ssa_state(s, u);
  KernelCase b;
  b.name = "ssa_backward";
  b.shape = u.shape;
  b.bytes = 0;  // flash compute dominates: a bandwidth figure would mean nothing
  b.fused = [st] {
    st->ensure_fwd();
    auto g = attention::attention_backward(st->dout, st->q, st->k, st->v, st->fwd, st->u.pack, st->u.mask, st->scale);
    check_backward(*st, g);
  };
  b.composed = [st] {
    st->ensure_fwd();
    old_backward(st->dout, st->q, st->k, st->v, st->fwd, st->u.pack, st->u.mask, st->scale);
  };
  return {b};
}

// (query, key) pairs the mask lets see each other: row i sees min(i + 1, window) keys of its window
// and the sink keys left of it.
double visible_pairs(const Packing& pack, MaskSpec mask) {
  double pairs = 0;
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    for (int64_t i = 0; i < pack.length(b); ++i) {
      pairs += static_cast<double>(std::min(i + 1, mask.window) +
                                   std::max<int64_t>(0, std::min(mask.sink, i + 1 - mask.window)));
    }
  }
  return pairs;
}

AttnForward one_launch_forward(const SsaState& st) {
  return attention::streaming_attention_kernel(st.q, st.k, st.v, st.u.pack, st.u.mask, st.scale);
}

AttnForward composed_forward(const SsaState& st) {
  return attention::flash_streaming_forward(st.q, st.k, st.v, st.u.pack, st.u.mask, st.scale);
}

double max_rel_diff(const torch::Tensor& a, const torch::Tensor& ref) {
  auto a32 = a.to(torch::kFloat32), r32 = ref.to(torch::kFloat32);
  return ((a32 - r32).abs().max() / r32.abs().max().clamp_min(1e-30)).item<double>();
}

// bench-kernels reports times and bandwidth only: the warm-up of a compute-bound case also times
// both sides briefly and logs their TFLOP/s.
void log_tflops(const char* name, const SsaState& st, double flop, const std::function<void()>& kernel,
                const std::function<void()>& composition) {
  const Timer timer{st.q.device()};
  const double kernel_ms = timer.median_ms(kernel, 5);
  const double flash_ms = timer.median_ms(composition, 5);
  LOG_INFO(name << ": " << flop / 1e12 << " TFLOP: kernel " << kernel_ms << " ms, " << flop / (kernel_ms * 1e-3) / 1e12
                << " TFLOP/s; flash composition " << flash_ms << " ms, " << flop / (flash_ms * 1e-3) / 1e12
                << " TFLOP/s; speed-up " << flash_ms / kernel_ms << "x");
}

// 4 * head_dim FLOPs per visible pair and query head: Q K^T and P V.
void check_kernel_forward(SsaState& st, const AttnForward& f, double flop) {
  if (st.fwd_checked) return;
  st.fwd_checked = true;
  auto r = composed_forward(st);
  LOG_INFO("ssa_kernel_forward: one-launch kernel vs flash composition: out max rel diff "
           << max_rel_diff(f.out, r.out) << ", rel diff " << rel_diff(f.out, r.out) << ", lse max abs diff "
           << (f.lse - r.lse).abs().max().item<double>());
  log_tflops("ssa_kernel_forward", st, flop, [&] { one_launch_forward(st); }, [&] { composed_forward(st); });
}

KernelCase kernel_forward_case(const KernelShape& s, const Setup& u) {
  auto st = ssa_state(s, u);
  const double flop = 4.0 * static_cast<double>(s.head_dim * s.q_heads) * visible_pairs(u.pack, u.mask);
  KernelCase c;
  c.name = "ssa_kernel_forward";
  c.shape = u.shape;
  c.bytes = 0;  // compute-bound: the warm-up logs TFLOP/s instead
  c.fused = [st, flop] { check_kernel_forward(*st, one_launch_forward(*st), flop); };
  c.composed = [st] { composed_forward(*st); };
  return c;
}

AttnGrads kernel_backward(SsaState& st) {
  st.ensure_fwd();
  return attention::streaming_attention_kernel_backward(st.dout, st.q, st.k, st.v, st.fwd, st.u.pack, st.u.mask,
                                                        st.scale);
}

AttnGrads composed_backward(SsaState& st) {
  st.ensure_fwd();
  return attention::attention_backward(st.dout, st.q, st.k, st.v, st.fwd, st.u.pack, st.u.mask, st.scale);
}

// 10 * head_dim FLOPs per visible pair and query head: the five matmuls S, dP, dV, dK, dQ.
void check_kernel_backward(SsaState& st, const AttnGrads& g, double flop) {
  if (st.bwd_checked) return;
  st.bwd_checked = true;
  const auto r = composed_backward(st);
  LOG_INFO("ssa_kernel_backward: kernel vs flash composition: max rel diff dq " << max_rel_diff(g.dq, r.dq) << ", dk "
                                                                                << max_rel_diff(g.dk, r.dk) << ", dv "
                                                                                << max_rel_diff(g.dv, r.dv));
  log_tflops("ssa_kernel_backward", st, flop, [&] { kernel_backward(st); }, [&] { composed_backward(st); });
}

KernelCase kernel_backward_case(const KernelShape& s, const Setup& u) {
  auto st = ssa_state(s, u);
  const double flop = 10.0 * static_cast<double>(s.head_dim * s.q_heads) * visible_pairs(u.pack, u.mask);
  KernelCase c;
  c.name = "ssa_kernel_backward";
  c.shape = u.shape;
  c.bytes = 0;  // compute-bound: the warm-up logs TFLOP/s instead
  c.fused = [st, flop] { check_kernel_backward(*st, kernel_backward(*st), flop); };
  c.composed = [st] { composed_backward(*st); };
  return c;
}

}  // namespace

std::vector<KernelCase> sink_kernel_cases(const KernelShape& s) {
  const Setup u = make_setup(s);
  std::vector<KernelCase> cases{merge_case(s, u)};
  for (auto& c : ssa_cases(s, u)) cases.push_back(std::move(c));
  cases.push_back(kernel_forward_case(s, u));
  cases.push_back(kernel_backward_case(s, u));
  return cases;
}

}  // namespace elastic::cli
