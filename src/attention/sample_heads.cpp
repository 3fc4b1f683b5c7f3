// Attention over some of each sample's KV heads, one call per sample (attention.h).
#include <atomic>
#include <limits>

#include "attention/attention.h"
#include "attention/cudnn_sample.h"
#include "attention/head_rows.h"
#include "util/error.h"

namespace elastic::attention {

namespace {

// Samples at least this long run a subset of their KV heads one KV head a call (set_head_split_min_len).
std::atomic<int64_t> g_head_split_min_len{std::numeric_limits<int64_t>::max()};

// One sample's n rows as a pack of their own. The blocked path reads only the host offsets; flash's
// streaming path also needs the device-side positions.
Packing one_sample(const torch::Tensor& q, int64_t n) {
  if (uses_flash(q)) return Packing::from_lengths({n}, q.device());
  Packing p;
  p.cu = {0, n};
  p.max_len = n;
  return p;
}

// Full attention on the GPU runs each sample through cuDNN at its padded length; anything else runs
// the sample's rows as a pack of their own.
bool heads_on_cudnn(const torch::Tensor& q, MaskSpec mask) { return mask.full() && uses_flash(q); }

void check_heads(const Packing& pack, const std::vector<torch::Tensor>& heads) {
  ELASTIC_CHECK(static_cast<int64_t>(heads.size()) == pack.num_samples(),
                "attention: " << heads.size() << " head lists for " << pack.num_samples() << " samples");
}

// Rows of sample [s0, s0 + n) at the KV heads `idx` (with their G query heads each): [n, m * G, d].
torch::Tensor sample_heads(const torch::Tensor& t, int64_t s0, int64_t n, const torch::Tensor& idx, int64_t Hkv) {
  return every_head_in_order(idx, Hkv) ? t.narrow(0, s0, n) : gather_heads(t, s0, n, n, idx, Hkv);
}

// Writes (or adds) src [n, m * G, d] into dst's rows [s0, s0 + n) at the KV heads `idx`.
void put_sample_heads(const torch::Tensor& dst, const torch::Tensor& src, int64_t s0, int64_t n,
                      const torch::Tensor& idx, int64_t Hkv, bool accumulate) {
  if (every_head_in_order(idx, Hkv)) {
    auto rows = dst.narrow(0, s0, n);
    accumulate ? rows.add_(src) : rows.copy_(src);
    return;
  }
  scatter_heads(dst, src, s0, n, idx, Hkv, accumulate);
}

bool no_heads(const torch::Tensor& idx) { return !idx.defined() || idx.numel() == 0; }

// Whether a sample of n tokens runs its KV heads `idx` one KV head a call.
bool split_heads(const torch::Tensor& idx, int64_t n, int64_t Hkv) {
  return idx.numel() > 1 && idx.numel() < Hkv && n >= g_head_split_min_len;
}

// Rows [s0, s0 + n) of t [T, Hkv * G, d] at the KV heads idx, head-major: [m, rows, G, d] with zero rows
// after n, so that each head's [rows, G, d] is a contiguous tensor of the same shape and strides
// whichever heads and how many were selected (cuDNN's plan key).
torch::Tensor head_major_rows(const torch::Tensor& t, int64_t s0, int64_t n, const torch::Tensor& idx, int64_t Hkv,
                              int64_t rows) {
  return gather_heads(t, s0, n, rows, idx, Hkv, /*head_major=*/true);
}

// Per-head results [n, G', d] in selection order, as one [n, m * G', d] tensor for put_sample_heads.
torch::Tensor by_heads(const std::vector<torch::Tensor>& per_head) {
  auto x = torch::stack(per_head, 1);  // [n, m, G', d]
  return x.view({x.size(0), x.size(1) * x.size(2), x.size(3)});
}

}  // namespace

void set_head_split_min_len(int64_t tokens) { g_head_split_min_len = tokens; }
int64_t head_split_min_len() { return g_head_split_min_len; }

void attention_forward_heads(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const Packing& pack, const std::vector<torch::Tensor>& heads, MaskSpec mask,
                             double scale, const torch::Tensor& out, const torch::Tensor& lse) {
  check_attention_inputs(q, k, v, pack);
  check_heads(pack, heads);
  const int64_t Hkv = k.size(1);
  // Writes a sample's log-sum-exp l [m * G, n] (selection order) at its heads.
  auto put_lse = [&](const torch::Tensor& l, int64_t s0, int64_t n, const torch::Tensor& idx) {
    if (lse.defined()) scatter_lse_heads(lse, l, s0, n, idx, Hkv);
  };
  const bool cudnn = heads_on_cudnn(q, mask);
  auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const auto& idx = heads[static_cast<size_t>(b)];
    if (no_heads(idx)) continue;
    const int64_t s0 = pack.begin(b), n = pack.length(b);
    auto run = [&](const torch::Tensor& qs, const torch::Tensor& ks, const torch::Tensor& vs) {
      if (cudnn) return cudnn_sample_forward(qs, ks, vs, n, scale);
      return attention_forward(qs.narrow(0, 0, n), ks.narrow(0, 0, n), vs.narrow(0, 0, n), one_sample(q, n), mask, scale);
    };
    if (split_heads(idx, n, Hkv)) {
      const int64_t rows = cudnn ? cudnn_sample_length(n) : n;
      auto major = [&](const torch::Tensor& t) { return head_major_rows(t, s0, n, idx, Hkv, rows); };
      auto qh = major(qc), kh = major(kc), vh = major(vc);
      std::vector<torch::Tensor> outs, lses;
      for (int64_t j = 0; j < idx.numel(); ++j) {
        auto f = run(qh[j], kh[j], vh[j]);
        outs.push_back(f.out);
        lses.push_back(f.lse);
      }
      put_sample_heads(out, by_heads(outs), s0, n, idx, Hkv, /*accumulate=*/false);
      put_lse(torch::cat(lses, 0), s0, n, idx);
      continue;
    }
    auto sel = [&](const torch::Tensor& t) {
      return cudnn ? cudnn_sample_rows(t, s0, n, idx, Hkv) : sample_heads(t, s0, n, idx, Hkv);
    };
    auto f = run(sel(qc), sel(kc), sel(vc));
    put_sample_heads(out, f.out, s0, n, idx, Hkv, /*accumulate=*/false);
    put_lse(f.lse, s0, n, idx);
  }
}

void attention_backward_heads(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v, const AttnForward& fwd, const Packing& pack,
                              const std::vector<torch::Tensor>& heads, MaskSpec mask, double scale, bool accumulate,
                              const AttnGrads& into) {
  check_attention_inputs(q, k, v, pack);
  check_heads(pack, heads);
  const int64_t Hkv = k.size(1), G = q.size(1) / Hkv;
  const bool cudnn = heads_on_cudnn(q, mask);
  auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous(), oc = fwd.out.contiguous(),
       dc = dout.contiguous();
  auto lse = fwd.lse.stride(1) == 1 ? fwd.lse : fwd.lse.contiguous();
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const auto& idx = heads[static_cast<size_t>(b)];
    if (no_heads(idx)) continue;
    const int64_t s0 = pack.begin(b), n = pack.length(b);
    auto lse_s = every_head_in_order(idx, Hkv) ? lse.narrow(1, s0, n) : gather_lse_heads(lse, s0, n, idx, Hkv);
    // dO, q, k, v, out as selected; lse [heads * G, n].
    auto run = [&](const torch::Tensor& ds, const torch::Tensor& qs, const torch::Tensor& ks, const torch::Tensor& vs,
                   const torch::Tensor& os, const torch::Tensor& ls) {
      if (cudnn) return cudnn_sample_backward(ds, qs, ks, vs, os, ls, n, scale);
      auto first = [&](const torch::Tensor& t) { return t.narrow(0, 0, n); };
      return attention_backward(first(ds), first(qs), first(ks), first(vs), AttnForward{first(os), ls.contiguous()},
                                one_sample(q, n), mask, scale);
    };
    if (split_heads(idx, n, Hkv)) {
      const int64_t rows = cudnn ? cudnn_sample_length(n) : n;
      auto major = [&](const torch::Tensor& t) { return head_major_rows(t, s0, n, idx, Hkv, rows); };
      auto dh = major(dc), qh = major(qc), kh = major(kc), vh = major(vc), oh = major(oc);
      std::vector<torch::Tensor> dq, dk, dv;
      for (int64_t j = 0; j < idx.numel(); ++j) {
        auto g = run(dh[j], qh[j], kh[j], vh[j], oh[j], lse_s.narrow(0, j * G, G));
        dq.push_back(g.dq);
        dk.push_back(g.dk);
        dv.push_back(g.dv);
      }
      put_sample_heads(into.dq, by_heads(dq), s0, n, idx, Hkv, accumulate);
      put_sample_heads(into.dk, by_heads(dk), s0, n, idx, Hkv, accumulate);
      put_sample_heads(into.dv, by_heads(dv), s0, n, idx, Hkv, accumulate);
      continue;
    }
    auto sel = [&](const torch::Tensor& t) {
      return cudnn ? cudnn_sample_rows(t, s0, n, idx, Hkv) : sample_heads(t, s0, n, idx, Hkv);
    };
    auto g = run(sel(dc), sel(qc), sel(kc), sel(vc), sel(oc), lse_s);
    put_sample_heads(into.dq, g.dq, s0, n, idx, Hkv, accumulate);
    put_sample_heads(into.dk, g.dk, s0, n, idx, Hkv, accumulate);
    put_sample_heads(into.dv, g.dv, s0, n, idx, Hkv, accumulate);
  }
}

}  // namespace elastic::attention
