#include "attention/sink_rows.h"

#include <limits>

#include "util/device_copy.h"

namespace elastic::attention {

namespace {

// Samples longer than the window, in groups; each sample has P = sink - 1 row slots t (position
// window + t, present iff window + t < length) and P sink-key slots j, and slot t sees key j iff
// j <= t. Slots past a sample's end read its last row (clamped) and are masked and never written.
struct PrefixGroup {
  int64_t samples = 0, slots = 0;
  torch::Tensor qrow;    // [samples * P] pack row of every row slot
  torch::Tensor krow;    // [samples * P] pack row of every key slot
  torch::Tensor hidden;  // [samples, 1, 1, P, P] bool: key hidden from the slot
  torch::Tensor present; // [R] flat indices (sample * P + t) of the slots that exist
  torch::Tensor rows;    // [R] their pack rows
};

std::vector<PrefixGroup> prefix_groups(const Packing& pack, MaskSpec mask, int64_t q_heads, torch::Device dev) {
  std::vector<PrefixGroup> out;
  if (mask.full() || mask.sink <= 1) return out;
  const int64_t W = mask.window, P = mask.sink - 1;
  // Scores of a group stay under ~64M fp32 elements.
  const int64_t per_group = std::max<int64_t>(1, (int64_t{64} << 20) / (q_heads * P * P));
  std::vector<int64_t> samples;
  for (int64_t b = 0; b < pack.num_samples(); ++b)
    if (pack.length(b) > W) samples.push_back(b);
  for (size_t g0 = 0; g0 < samples.size(); g0 += per_group) {
    const size_t g1 = std::min(samples.size(), g0 + static_cast<size_t>(per_group));
    std::vector<int64_t> qrow, krow, count, present, rows;
    for (size_t i = g0; i < g1; ++i) {
      const int64_t b = samples[i], s0 = pack.begin(b), n = pack.length(b), c = std::min(P, n - W);
      for (int64_t t = 0; t < P; ++t) {
        qrow.push_back(s0 + std::min(W + t, n - 1));
        krow.push_back(s0 + std::min(t, n - 1));
        if (t < c) {
          present.push_back(static_cast<int64_t>(i - g0) * P + t);
          rows.push_back(s0 + W + t);
        }
      }
      count.push_back(c);
    }
    PrefixGroup g;
    g.samples = static_cast<int64_t>(g1 - g0);
    g.slots = P;
    g.qrow = util::to_device(qrow, dev);
    g.krow = util::to_device(krow, dev);
    g.present = util::to_device(present, dev);
    g.rows = util::to_device(rows, dev);
    auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(dev);
    auto t = torch::arange(P, i64).view({1, P, 1}), j = torch::arange(P, i64).view({1, 1, P});
    auto cnt = util::to_device(count, dev).view({-1, 1, 1});
    g.hidden = (j > t).logical_or(t >= cnt).view({g.samples, 1, 1, P, P});
    out.push_back(std::move(g));
  }
  return out;
}

torch::ScalarType compute_type(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// Rows rows_of [B*P] of x [T, Hq, d] as [B, Hkv, G*P, d] in the compute type.
torch::Tensor slot_heads(const torch::Tensor& x, const torch::Tensor& rows_of, int64_t B, int64_t P, int64_t Hkv,
                         int64_t G) {
  const int64_t d = x.size(2);
  return x.index_select(0, rows_of).view({B, P, Hkv, G, d}).permute({0, 2, 3, 1, 4}).to(compute_type(x))
      .reshape({B, Hkv, G * P, d});
}

// The keys or values of the sink slots, [B, Hkv, P, d].
torch::Tensor slot_keys(const torch::Tensor& x, const torch::Tensor& rows_of, int64_t B, int64_t P) {
  return x.index_select(0, rows_of).view({B, P, x.size(1), x.size(2)}).permute({0, 2, 1, 3}).to(compute_type(x));
}

// [B, Hkv, G*P, d] per-slot values back to the present slots' rows, [R, Hq, d].
torch::Tensor present_rows(const torch::Tensor& x, const PrefixGroup& g, int64_t Hq) {
  const int64_t B = g.samples, P = g.slots, d = x.size(-1);
  return x.view({B, Hq, P, d}).permute({0, 2, 1, 3}).reshape({B * P, Hq, d}).index_select(0, g.present);
}

torch::Tensor masked_scores(const torch::Tensor& qs, const torch::Tensor& ks, const PrefixGroup& g, int64_t G,
                            double scale) {
  const int64_t B = g.samples, P = g.slots, Hkv = ks.size(1);
  auto sc = torch::matmul(qs, ks.transpose(-1, -2)).mul_(scale).view({B, Hkv, G, P, P});
  return sc.masked_fill_(g.hidden, -std::numeric_limits<double>::infinity()).view({B, Hkv, G * P, P});
}

}  // namespace

void merge_sink_prefix_rows(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const Packing& pack, MaskSpec mask, double scale, AttnForward& f) {
  const int64_t Hq = q.size(1), Hkv = k.size(1), G = Hq / Hkv;
  for (const auto& g : prefix_groups(pack, mask, Hq, q.device())) {
    const int64_t B = g.samples, P = g.slots;
    auto sc = masked_scores(slot_heads(q, g.qrow, B, P, Hkv, G), slot_keys(k, g.krow, B, P), g, G, scale);
    auto ls = torch::logsumexp(sc, -1, true);                     // [B,Hkv,G*P,1]; -inf on absent slots
    auto os = torch::matmul(torch::exp(sc - ls), slot_keys(v, g.krow, B, P));  // absent slots: NaN, dropped
    auto o_s = present_rows(os, g, Hq);                           // [R,Hq,d]
    auto l_s = present_rows(ls, g, Hq).squeeze(-1);               // [R,Hq]
    auto l_w = f.lse.index_select(1, g.rows).t().to(l_s.scalar_type());
    auto o_w = f.out.index_select(0, g.rows).to(o_s.scalar_type());
    auto l = torch::logaddexp(l_w, l_s);
    auto o = o_w * torch::exp(l_w - l).unsqueeze(-1) + o_s * torch::exp(l_s - l).unsqueeze(-1);
    f.out.index_copy_(0, g.rows, o.to(f.out.scalar_type()));
    f.lse.index_copy_(1, g.rows, l.t().to(f.lse.scalar_type()));
  }
}

void sink_prefix_rows_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const AttnForward& fwd, const Packing& pack, MaskSpec mask,
                               double scale, AttnGrads& grads) {
  const int64_t Hq = q.size(1), Hkv = k.size(1), G = Hq / Hkv, d = q.size(2);
  for (const auto& g : prefix_groups(pack, mask, Hq, q.device())) {
    const int64_t B = g.samples, P = g.slots;
    auto qs = slot_heads(q, g.qrow, B, P, Hkv, G);
    auto ks = slot_keys(k, g.krow, B, P), vs = slot_keys(v, g.krow, B, P);
    auto sc = masked_scores(qs, ks, g, G, scale);
    // The merged log-sum-exp of each slot's row (clamped rows: finite), so hidden keys get p = 0.
    auto l = fwd.lse.index_select(1, g.qrow).view({Hkv, G, B, P}).permute({2, 0, 1, 3}).to(sc.scalar_type())
                 .reshape({B, Hkv, G * P, 1});
    auto p = torch::exp(sc - l);
    auto dos = slot_heads(dout, g.qrow, B, P, Hkv, G), os = slot_heads(fwd.out, g.qrow, B, P, Hkv, G);
    auto ds = p * (torch::matmul(dos, vs.transpose(-1, -2)) - (dos * os).sum(-1, true));
    auto dq = present_rows(torch::matmul(ds, ks).mul_(scale), g, Hq);
    grads.dq.index_add_(0, g.rows, dq.to(grads.dq.scalar_type()));
    // Key slots past a sample's end are clamped duplicates; only absent row slots see them, so
    // they add exact zeros.
    auto keys = [&](const torch::Tensor& x) { return x.permute({0, 2, 1, 3}).reshape({B * P, Hkv, d}); };
    grads.dk.index_add_(0, g.krow, keys(torch::matmul(ds.transpose(-1, -2), qs).mul_(scale)).to(grads.dk.scalar_type()));
    grads.dv.index_add_(0, g.krow, keys(torch::matmul(p.transpose(-1, -2), dos)).to(grads.dv.scalar_type()));
  }
}

}  // namespace elastic::attention
