// Varlen attention (full and streaming) against a dense brute-force reference, and the
// routing-aware hybrid backward against plain autograd through both branches.
#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "attention/attention.h"
#include "attention/cudnn_sample.h"
#include "attention/hybrid.h"
#include "attention/sink_rows.h"
#include "cpu_memory.h"
#include "test_util.h"

using namespace elastic;
using namespace elastic::attention;
using elastic::testing::reference_attention;
using elastic::testing::rel_err;

namespace {

struct Case {
  std::vector<int64_t> lengths;
  int64_t hq, hkv, d;
  MaskSpec mask;
};

std::vector<Case> cases() {
  return {
      {{37}, 4, 2, 8, MaskSpec::causal()},
      {{300, 17, 129}, 4, 1, 16, MaskSpec::causal()},
      {{300, 17, 129}, 6, 3, 8, MaskSpec::streaming(4, 32)},
      {{513}, 2, 2, 8, MaskSpec::streaming(16, 100)},
      {{260, 5}, 4, 2, 8, MaskSpec::streaming(0, 7)},
      {{200}, 2, 1, 8, MaskSpec::streaming(150, 128)},  // sink overlapping the window
  };
}

}  // namespace

TEST(Attention, VisibleKeyRangesCoverExactlyTheMask) {
  // Brute force: the union of ranges must contain every visible key of every row.
  for (MaskSpec m : {MaskSpec::causal(), MaskSpec::streaming(3, 5), MaskSpec::streaming(0, 1), MaskSpec::streaming(8, 4)}) {
    for (int64_t a = 0; a < 40; a += 7) {
      const int64_t b = a + 7;
      auto r = visible_key_ranges(a, b, m);
      for (int64_t i = a; i < b; ++i) {
        for (int64_t j = 0; j <= i; ++j) {
          bool vis = m.full() || j < m.sink || i - j < m.window;
          bool covered = false;
          for (auto [r0, r1] : r) covered |= (j >= r0 && j < r1);
          if (vis) EXPECT_TRUE(covered) << "row " << i << " key " << j;
        }
      }
      for (size_t x = 1; x < r.size(); ++x) EXPECT_GE(r[x].first, r[x - 1].second);  // disjoint
    }
  }
}

TEST(Attention, ForwardMatchesDenseReference) {
  torch::manual_seed(0);
  for (const auto& c : cases()) {
    auto pack = Packing::from_lengths(c.lengths, torch::kCPU);
    const int64_t T = pack.tokens();
    auto q = torch::randn({T, c.hq, c.d}, torch::kFloat64);
    auto k = torch::randn({T, c.hkv, c.d}, torch::kFloat64);
    auto v = torch::randn({T, c.hkv, c.d}, torch::kFloat64);
    const double scale = 0.3;
    auto f = attention_forward(q, k, v, pack, c.mask, scale);
    auto ref = reference_attention(q, k, v, pack, c.mask, scale);
    EXPECT_LT(rel_err(f.out, ref), 1e-9) << "window " << c.mask.window;
    EXPECT_EQ(f.lse.sizes(), (std::vector<int64_t>{c.hq, T}));
  }
}

TEST(Attention, BackwardMatchesAutogradThroughDenseReference) {
  torch::manual_seed(1);
  for (const auto& c : cases()) {
    auto pack = Packing::from_lengths(c.lengths, torch::kCPU);
    const int64_t T = pack.tokens();
    auto q = torch::randn({T, c.hq, c.d}, torch::kFloat64).requires_grad_();
    auto k = torch::randn({T, c.hkv, c.d}, torch::kFloat64).requires_grad_();
    auto v = torch::randn({T, c.hkv, c.d}, torch::kFloat64).requires_grad_();
    auto w = torch::randn({T, c.hq, c.d}, torch::kFloat64);
    (elastic::attention::attention(q, k, v, pack, c.mask, 0.25) * w).sum().backward();
    auto gq = q.grad().clone(), gk = k.grad().clone(), gv = v.grad().clone();
    q.mutable_grad().zero_();
    k.mutable_grad().zero_();
    v.mutable_grad().zero_();
    (reference_attention(q, k, v, pack, c.mask, 0.25) * w).sum().backward();
    EXPECT_LT(rel_err(gq, q.grad()), 1e-10);
    EXPECT_LT(rel_err(gk, k.grad()), 1e-10);
    EXPECT_LT(rel_err(gv, v.grad()), 1e-10);
  }
}

// The batched sink-prefix rows (the flash path's exact correction for rows window .. window +
// sink - 2) on top of window-only attention equal streaming attention, forward and backward, for
// packs where no row sees every sink (so nothing else is missing): samples shorter than the window,
// of every length up to window + sink - 1, and sink > window (key slots past a sample's end).
TEST(Attention, SinkPrefixRowsCompleteWindowOnlyAttention) {
  torch::manual_seed(3);
  struct PrefixCase {
    std::vector<int64_t> lengths;
    MaskSpec mask;
  };
  for (const auto& c : std::vector<PrefixCase>{{{5, 8, 9, 11, 13, 2}, MaskSpec::streaming(6, 8)},
                                               {{3, 5, 9, 15, 6, 14}, MaskSpec::streaming(12, 4)}}) {
    SCOPED_TRACE("sink " + std::to_string(c.mask.sink) + " window " + std::to_string(c.mask.window));
    auto pack = Packing::from_lengths(c.lengths, torch::kCPU);
    auto o = torch::TensorOptions().dtype(torch::kFloat64);
    auto q = torch::randn({pack.tokens(), 6, 8}, o), k = torch::randn({pack.tokens(), 3, 8}, o),
         v = torch::randn({pack.tokens(), 3, 8}, o);
    const double scale = 0.3;
    const MaskSpec window_only{0, c.mask.window};
    auto want = attention_forward(q, k, v, pack, c.mask, scale);
    auto got = attention_forward(q, k, v, pack, window_only, scale);
    ASSERT_GT((got.out - want.out).abs().max().item<double>(), 1e-3);  // the prefixes matter here
    merge_sink_prefix_rows(q, k, v, pack, c.mask, scale, got);
    EXPECT_LT(rel_err(got.out, want.out), 1e-12);
    EXPECT_LT((got.lse - want.lse).abs().max().item<double>(), 1e-12);

    auto dout = torch::randn_like(q);
    auto gw = attention_backward(dout, q, k, v, want, pack, c.mask, scale);
    auto g = attention_backward(dout, q, k, v, want, pack, window_only, scale);
    sink_prefix_rows_backward(dout, q, k, v, want, pack, c.mask, scale, g);
    EXPECT_LT(rel_err(g.dq, gw.dq), 1e-12) << "dq";
    EXPECT_LT(rel_err(g.dk, gw.dk), 1e-12) << "dk";
    EXPECT_LT(rel_err(g.dv, gw.dv), 1e-12) << "dv";
  }
}

TEST(Attention, TokensDoNotSeeOtherSamplesOfThePack) {
  torch::manual_seed(2);
  auto pack = Packing::from_lengths({50, 70}, torch::kCPU);
  auto q = torch::randn({120, 4, 8}), k = torch::randn({120, 2, 8}), v = torch::randn({120, 2, 8});
  for (auto mask : {MaskSpec::causal(), MaskSpec::streaming(4, 16)}) {
    auto out = attention_forward(q, k, v, pack, mask, 0.35).out;
    auto k2 = k.clone(), v2 = v.clone();
    k2.narrow(0, 0, 50).normal_();  // change sample 0 entirely
    v2.narrow(0, 0, 50).normal_();
    auto out2 = attention_forward(q, k2, v2, pack, mask, 0.35).out;
    EXPECT_TRUE(torch::equal(out.narrow(0, 50, 70), out2.narrow(0, 50, 70)));
    EXPECT_FALSE(torch::allclose(out.narrow(0, 0, 50), out2.narrow(0, 0, 50)));
    // Alone in its own pack, sample 1 gives the same output.
    auto alone = Packing::from_lengths({70}, torch::kCPU);
    auto solo = attention_forward(q.narrow(0, 50, 70), k.narrow(0, 50, 70), v.narrow(0, 50, 70), alone, mask, 0.35).out;
    EXPECT_LT(rel_err(solo, out.narrow(0, 50, 70)), 1e-6);
  }
}

namespace {

void check_routing_aware_backward() {
  torch::manual_seed(3);
  auto pack = Packing::from_lengths({90, 33, 140}, torch::kCPU);
  const int64_t T = pack.tokens(), hq = 6, hkv = 3, d = 8;
  const MaskSpec ssa = MaskSpec::streaming(4, 16);
  // Hard routing (the training case) and a soft mix (the general formula).
  std::vector<torch::Tensor> weights = {
      torch::tensor({{1., 0., 1.}, {0., 0., 0.}, {1., 1., 0.}}, torch::kFloat64),
      torch::rand({3, 3}, torch::kFloat64),
  };
  for (const auto& s0 : weights) {
    auto q = torch::randn({T, hq, d}, torch::kFloat64).requires_grad_();
    auto k = torch::randn({T, hkv, d}, torch::kFloat64).requires_grad_();
    auto v = torch::randn({T, hkv, d}, torch::kFloat64).requires_grad_();
    auto s = s0.clone().requires_grad_();
    auto w = torch::randn({T, hq, d}, torch::kFloat64);
    (hybrid_attention(q, k, v, s, pack, ssa, 0.3) * w).sum().backward();
    std::vector<torch::Tensor> ours = {q.grad().clone(), k.grad().clone(), v.grad().clone(), s.grad().clone()};
    for (auto* t : {&q, &k, &v, &s}) t->mutable_grad().zero_();
    auto out_ref = hybrid_attention_autograd_both(q, k, v, s, pack, ssa, 0.3);
    (out_ref * w).sum().backward();
    std::vector<torch::Tensor> ref = {q.grad(), k.grad(), v.grad(), s.grad()};
    for (size_t i = 0; i < ours.size(); ++i) EXPECT_LT(rel_err(ours[i], ref[i]), 1e-10) << "input " << i;
    // Forward equals the dense mix of the two brute-force branches.
    auto fa = reference_attention(q, k, v, pack, MaskSpec::causal(), 0.3);
    auto sa = reference_attention(q, k, v, pack, ssa, 0.3);
    auto wt = s0.index_select(0, pack.sample_id).repeat_interleave(hq / hkv, 1).unsqueeze(-1);
    EXPECT_LT(rel_err(hybrid_attention(q, k, v, s, pack, ssa, 0.3), wt * fa + (1 - wt) * sa), 1e-12);
  }
}

}  // namespace

TEST(Hybrid, RoutingAwareBackwardEqualsAutogradThroughBothBranches) {
  // The gathered (sample, head) pairs, then every head with dO masked, then the selected heads one KV
  // head a call.
  const int64_t saved = gather_min_len(), saved_split = head_split_min_len();
  for (auto [gather, split] : std::vector<std::pair<int64_t, int64_t>>{{0, saved_split}, {int64_t{1} << 40, saved_split}, {0, 0}}) {
    SCOPED_TRACE("gather_min_len " + std::to_string(gather) + ", head_split_min_len " + std::to_string(split));
    set_gather_min_len(gather);
    set_head_split_min_len(split);
    check_routing_aware_backward();
  }
  set_gather_min_len(saved);
  set_head_split_min_len(saved_split);
}

// A checkpointed layer's kept attention (hybrid_attention's `kept`): the forward without grad fills it
// with each head's selected branch, output and log-sum-exp; the forward with grad given it returns
// that output, and its backward gives the gradients of the ordinary hybrid. Mixed, all-full and
// all-streaming routing, with the selected heads in one call and one KV head a call; soft weights keep
// nothing.
TEST(Hybrid, KeptSelectedBranchesGiveTheSameOutputAndGradients) {
  torch::manual_seed(6);
  auto pack = Packing::from_lengths({90, 33, 140}, torch::kCPU);
  const int64_t T = pack.tokens(), Hq = 6, Hkv = 3, G = Hq / Hkv, d = 8;
  const MaskSpec ssa = MaskSpec::streaming(4, 16);
  const double scale = 0.3;
  auto q = torch::randn({T, Hq, d}, torch::kFloat64).requires_grad_();
  auto k = torch::randn({T, Hkv, d}, torch::kFloat64).requires_grad_();
  auto v = torch::randn({T, Hkv, d}, torch::kFloat64).requires_grad_();
  auto w = torch::randn({T, Hq, d}, torch::kFloat64);
  const auto lse_fa = attention_forward(q, k, v, pack, MaskSpec::causal(), scale).lse;
  const auto lse_sa = attention_forward(q, k, v, pack, ssa, scale).lse;
  const int64_t saved_split = head_split_min_len();
  for (int64_t split : {saved_split, int64_t{0}}) {
    set_head_split_min_len(split);
    for (const auto& s0 : {torch::tensor({{1., 0., 1.}, {0., 0., 0.}, {1., 1., 0.}}, torch::kFloat64),
                           torch::ones({3, 3}, torch::kFloat64), torch::zeros({3, 3}, torch::kFloat64)}) {
      SCOPED_TRACE("head_split_min_len " + std::to_string(split) + ", s " + ::testing::PrintToString(s0.sum().item<double>()));
      auto grads = [&](bool keep) {
        for (auto* t : {&q, &k, &v}) t->mutable_grad() = torch::Tensor();
        auto s = s0.clone().requires_grad_();
        AttnForward kept;
        if (keep) {
          torch::NoGradGuard ng;
          hybrid_attention(q, k, v, s, pack, ssa, scale, {}, &kept);
        }
        auto out = hybrid_attention(q, k, v, s, pack, ssa, scale, {}, keep ? &kept : nullptr);
        (out * w).sum().backward();
        return std::make_tuple(std::vector<torch::Tensor>{out.detach(), q.grad(), k.grad(), v.grad(), s.grad()}, kept);
      };
      auto [ref, none] = grads(false);
      auto [ours, kept] = grads(true);
      EXPECT_FALSE(none.out.defined());
      ASSERT_TRUE(kept.out.defined() && kept.lse.defined());
      const char* names[] = {"out", "dq", "dk", "dv", "ds"};
      for (int i = 0; i < 5; ++i) EXPECT_LT(rel_err(ours[i], ref[i]), 1e-10) << names[i];
      EXPECT_TRUE(torch::equal(kept.out, ours[0]));
      // Each head's log-sum-exp is its selected branch's.
      auto full = s0.index_select(0, pack.sample_id).repeat_interleave(G, 1).t().to(torch::kBool);  // [Hq, T]
      EXPECT_LT(rel_err(kept.lse, torch::where(full, lse_fa, lse_sa)), 1e-12);
    }
  }
  set_head_split_min_len(saved_split);
  // Soft weights: the forward runs both branches and keeps nothing.
  AttnForward kept;
  {
    torch::NoGradGuard ng;
    hybrid_attention(q, k, v, torch::full({3, 3}, 0.5, torch::kFloat64), pack, ssa, scale, {}, &kept);
  }
  EXPECT_FALSE(kept.out.defined());
}

// hybrid_attention's `remake`: the backward makes q and k again from tensors the caller keeps, so the
// step no longer holds them, and the gradients stay the same bit for bit. Hard routing (the selected
// branches in the forward, and a kept output) and soft weights (both branches).
TEST(Hybrid, RemadeQueriesAndKeysAreNotKeptAndGiveTheSameGradients) {
  torch::manual_seed(12);
  auto pack = Packing::from_lengths({70, 41}, torch::kCPU);
  const int64_t T = pack.tokens(), Hq = 4, Hkv = 2, d = 8;
  const MaskSpec ssa = MaskSpec::streaming(2, 9);
  auto q_src = torch::randn({T, Hq, d}, torch::kFloat64).requires_grad_();
  auto k_src = torch::randn({T, Hkv, d}, torch::kFloat64).requires_grad_();
  auto v = torch::randn({T, Hkv, d}, torch::kFloat64).requires_grad_();
  auto w = torch::randn({T, Hq, d}, torch::kFloat64);
  // q and k as the model makes them: an op on what the caller keeps (multiplying by a number saves nothing).
  auto make_q = [&] { return q_src * 1.5; };
  auto make_k = [&] { return k_src * -0.5; };
  for (const auto& s0 : {torch::tensor({{1., 0.}, {0., 1.}}, torch::kFloat64), torch::full({2, 2}, 0.3, torch::kFloat64)}) {
    for (bool keep : {false, true}) {
      const bool hard = s0.eq(1).logical_or(s0.eq(0)).all().item<bool>();
      if (keep && !hard) continue;
      SCOPED_TRACE(std::string(hard ? "hard" : "soft") + (keep ? ", kept output" : ""));
      int remade = 0;
      auto run = [&](bool with_remake) {
        for (auto* t : {&q_src, &k_src, &v}) t->mutable_grad() = torch::Tensor();
        auto s = s0.clone().requires_grad_();
        Remake remake;
        if (with_remake) {
          remake.q = [&] { ++remade; return make_q().detach(); };
          remake.k = [&] { ++remade; return make_k().detach(); };
        }
        AttnForward kept;
        if (keep) {
          torch::NoGradGuard ng;
          hybrid_attention(make_q(), make_k(), v, s, pack, ssa, 0.3, {}, &kept);
        }
        elastic::testing::CpuMemoryCounter mem;
        const int64_t before = mem.now();
        torch::Tensor out;
        {
          auto q = make_q(), k = make_k();
          out = hybrid_attention(q, k, v, s, pack, ssa, 0.3, {}, keep ? &kept : nullptr, remake);
        }
        const int64_t held = mem.now() - before;
        (out * w).sum().backward();
        return std::make_pair(held, std::vector<torch::Tensor>{out.detach(), q_src.grad(), k_src.grad(), v.grad(), s.grad()});
      };
      auto [held_ref, ref] = run(false);
      auto [held, ours] = run(true);
      EXPECT_EQ(remade, 2);
      EXPECT_EQ(held_ref - held, (T * Hq * d + T * Hkv * d) * 8);
      const char* names[] = {"out", "dq", "dk", "dv", "ds"};
      for (int i = 0; i < 5; ++i) EXPECT_TRUE(torch::equal(ours[i], ref[i])) << names[i];
    }
  }
}

TEST(Hybrid, RouterGradientIsInnerProductOfBranchDifferenceAndUpstream) {
  torch::manual_seed(4);
  auto pack = Packing::from_lengths({40, 25}, torch::kCPU);
  const int64_t T = pack.tokens();
  auto q = torch::randn({T, 4, 8}, torch::kFloat64), k = torch::randn({T, 2, 8}, torch::kFloat64),
       v = torch::randn({T, 2, 8}, torch::kFloat64);
  auto s = torch::tensor({{1., 0.}, {0., 1.}}, torch::kFloat64).requires_grad_();
  auto dout = torch::randn({T, 4, 8}, torch::kFloat64);
  (hybrid_attention(q, k, v, s, pack, MaskSpec::streaming(2, 5), 0.35) * dout).sum().backward();
  auto fa = reference_attention(q, k, v, pack, MaskSpec::causal(), 0.35);
  auto sa = reference_attention(q, k, v, pack, MaskSpec::streaming(2, 5), 0.35);
  auto per_tok = ((fa - sa) * dout).view({T, 2, 2, 8}).sum({2, 3});
  auto expect = torch::stack({per_tok.narrow(0, 0, 40).sum(0), per_tok.narrow(0, 40, 25).sum(0)});
  EXPECT_LT(rel_err(s.grad(), expect), 1e-12);
}

TEST(Hybrid, InferenceRunsOnlyTheSelectedBranchAndMatches) {
  torch::manual_seed(5);
  auto pack = Packing::from_lengths({70, 20, 150}, torch::kCPU);
  const int64_t T = pack.tokens();
  auto q = torch::randn({T, 6, 8}, torch::kFloat64), k = torch::randn({T, 3, 8}, torch::kFloat64),
       v = torch::randn({T, 3, 8}, torch::kFloat64);
  const MaskSpec ssa = MaskSpec::streaming(3, 10);
  const int64_t saved = gather_min_len();
  // Selected branches only (long packs), then both branches blended on the device (short packs).
  for (int64_t gather_min_len : {int64_t{0}, int64_t{1} << 40}) {
    SCOPED_TRACE("gather_min_len " + std::to_string(gather_min_len));
    set_gather_min_len(gather_min_len);
    for (const auto& s : {torch::tensor({{1., 0., 1.}, {0., 0., 0.}, {1., 1., 0.}}, torch::kFloat64),
                          torch::ones({3, 3}, torch::kFloat64), torch::zeros({3, 3}, torch::kFloat64)}) {
      torch::Tensor fast;
      {
        torch::NoGradGuard ng;
        fast = hybrid_attention(q, k, v, s, pack, ssa, 0.3);
      }
      auto fa = reference_attention(q, k, v, pack, MaskSpec::causal(), 0.3);
      auto sa = reference_attention(q, k, v, pack, ssa, 0.3);
      auto wt = s.index_select(0, pack.sample_id).repeat_interleave(2, 1).unsqueeze(-1);
      EXPECT_LT(rel_err(fast, wt * fa + (1 - wt) * sa), 1e-12);
    }
  }
  set_gather_min_len(saved);
}

// Attention over a subset of each sample's KV heads (the hybrid's branches), full and streaming: the
// selected heads equal attention over every head, to fp64 rounding; every other head is left as it
// was (NaN-poisoned here), and accumulate adds onto what is there.
class HeadSubsets : public ::testing::TestWithParam<MaskSpec> {};

TEST_P(HeadSubsets, EqualAttentionAtTheirHeadsAndLeaveTheRest) {
  const MaskSpec mask = GetParam();
  torch::manual_seed(11);
  auto pack = Packing::from_lengths({70, 9, 130, 40}, torch::kCPU);
  const int64_t T = pack.tokens(), Hq = 6, Hkv = 3, G = Hq / Hkv, d = 8;
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({T, Hq, d}, f64), k = torch::randn({T, Hkv, d}, f64), v = torch::randn({T, Hkv, d}, f64);
  auto dout = torch::randn({T, Hq, d}, f64);
  const double scale = 0.3;
  // Some heads (out of order), all, none, one; the 70- and 130-token samples split when asked.
  const std::vector<std::vector<int64_t>> lists = {{2, 0}, {0, 1, 2}, {}, {1}};
  std::vector<torch::Tensor> heads;
  auto selected = torch::zeros({T, Hkv}, torch::kBool);
  for (size_t b = 0; b < lists.size(); ++b) {
    heads.push_back(lists[b].empty() ? torch::Tensor() : torch::tensor(lists[b], torch::kInt64));
    for (auto h : lists[b]) selected.narrow(0, pack.begin(b), pack.length(b)).select(1, h).fill_(true);
  }
  // The blocked (CPU) path runs full attention sample by sample anyway.
  if (mask.full()) EXPECT_TRUE(per_sample_heads(q, pack, mask, /*backward=*/true));
  auto ref = attention_forward(q, k, v, pack, mask, scale);
  auto gref = attention_backward(dout, q, k, v, ref, pack, mask, scale);
  auto sel_q = selected.repeat_interleave(G, 1).unsqueeze(-1).expand({T, Hq, d});
  auto sel_k = selected.unsqueeze(-1).expand({T, Hkv, d});
  // Selected entries equal `want`, the others still hold `before`.
  auto expect_at_heads = [&](const torch::Tensor& got, const torch::Tensor& want, const torch::Tensor& before,
                             const torch::Tensor& sel, const char* name) {
    EXPECT_LT(rel_err(got.masked_select(sel), want.masked_select(sel)), 1e-12) << name;
    auto rest = got.masked_select(sel.logical_not()), rest_before = before.masked_select(sel.logical_not());
    EXPECT_TRUE(rest.isnan().eq(rest_before.isnan()).all().item<bool>()) << name << ": an unselected head was written";
    EXPECT_TRUE(rest.nan_to_num().eq(rest_before.nan_to_num()).all().item<bool>()) << name << ": an unselected head was written";
  };

  const int64_t saved = head_split_min_len();
  // Each subset in one call, then one KV head a call for samples of 40 tokens or more.
  for (int64_t split_min_len : {saved, int64_t{40}}) {
    SCOPED_TRACE("head_split_min_len " + std::to_string(split_min_len));
    set_head_split_min_len(split_min_len);
    auto out = torch::full({T, Hq, d}, std::nan(""), f64);
    attention_forward_heads(q, k, v, pack, heads, mask, scale, out);
    expect_at_heads(out, ref.out, torch::full_like(out, std::nan("")), sel_q, "out");

    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(accumulate ? "accumulate" : "write");
      // Written: NaN elsewhere must stay NaN. Added: onto random values.
      auto init = [&](const torch::Tensor& like) {
        return accumulate ? torch::randn(like.sizes(), f64) : torch::full(like.sizes(), std::nan(""), f64);
      };
      AttnGrads into{init(q), init(k), init(v)};
      AttnGrads before{into.dq.clone(), into.dk.clone(), into.dv.clone()};
      attention_backward_heads(dout, q, k, v, ref, pack, heads, mask, scale, accumulate, into);
      auto want = [&](const torch::Tensor& g, const torch::Tensor& b) { return accumulate ? b + g : g; };
      expect_at_heads(into.dq, want(gref.dq, before.dq), before.dq, sel_q, "dq");
      expect_at_heads(into.dk, want(gref.dk, before.dk), before.dk, sel_k, "dk");
      expect_at_heads(into.dv, want(gref.dv, before.dv), before.dv, sel_k, "dv");
    }
  }
  set_head_split_min_len(saved);
}

// Streaming with samples longer and shorter than sink + window.
INSTANTIATE_TEST_SUITE_P(Attention, HeadSubsets, ::testing::Values(MaskSpec::causal(), MaskSpec::streaming(3, 16)),
                         [](const auto& info) { return info.param.full() ? "full" : "streaming"; });

// The backend switches take the names they list, report them back, and reject anything else with the
// accepted names in the message.
TEST(Attention, BackendSwitchesTakeTheirNamesAndListThemOtherwise) {
  const auto full = full_attention_backend(), streaming = streaming_backend();
  for (const char* n : {"flash", "cudnn", "auto"}) {
    set_full_attention_backend(n);
    EXPECT_EQ(full_attention_backend(), n);
  }
  for (const char* n : {"cudnn-bwd", "cudnn", "flash", "auto"}) {
    set_streaming_backend(n);
    EXPECT_EQ(streaming_backend(), n);
  }
  try {
    set_streaming_backend("cudnn-fwd");
    FAIL() << "an unknown streaming backend was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("'flash', 'cudnn-bwd', 'cudnn', got 'cudnn-fwd'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(set_full_attention_backend("cudnn-bwd"), std::exception);
  EXPECT_EQ(streaming_backend(), "auto");  // a rejected name changes nothing
  set_full_attention_backend(full);
  set_streaming_backend(streaming);
}

// cuDNN's per-sample lengths: never shorter, at most 1/32 longer past 4,096 tokens, multiples of 128,
// 32 per octave, and stable (a padded length pads to itself), so plans repeat from step to step.
TEST(CudnnSampleLength, PadsByAtMostAThirtySecondToThirtyTwoLengthsAnOctave) {
  int64_t prev = 0;
  for (int64_t n = 1; n <= (int64_t{1} << 18); ++n) {
    const int64_t L = cudnn_sample_length(n);
    ASSERT_GE(L, n);
    ASSERT_GE(L, prev) << n;
    ASSERT_EQ(L % 128, 0) << n;
    if (n > 4096) ASSERT_LE(32 * (L - n), n) << n;
    ASSERT_EQ(cudnn_sample_length(L), L) << n;
    prev = L;
  }
  std::set<int64_t> octave;
  for (int64_t n = 16385; n <= 32768; ++n) octave.insert(cudnn_sample_length(n));
  EXPECT_EQ(octave.size(), 32u);
  EXPECT_EQ(cudnn_sample_length(16384), 16384);
  EXPECT_EQ(cudnn_sample_length(21845), 22016);
  EXPECT_EQ(cudnn_sample_length(17), 128);
  EXPECT_THROW(cudnn_sample_length(0), std::exception);
}

// A sample's rows for cuDNN: a view when nothing is padded or gathered, else the selected heads'
// rows followed by zeros.
TEST(CudnnSampleLength, RowsAreTheSampleAtItsHeadsThenZeros) {
  torch::manual_seed(3);
  const int64_t Hkv = 4, G = 2, d = 8;
  auto t = torch::randn({3000, Hkv * G, d});
  auto view = cudnn_sample_rows(t, 512, 1024, torch::Tensor(), Hkv);
  EXPECT_EQ(view.data_ptr(), t.narrow(0, 512, 1024).data_ptr());
  EXPECT_EQ(view.size(0), 1024);
  const int64_t s0 = 1100, n = 1000, L = cudnn_sample_length(n);
  ASSERT_GT(L, n);
  auto idx = torch::tensor({3, 1}, torch::kInt64);
  auto some = cudnn_sample_rows(t, s0, n, idx, Hkv);
  auto want = t.narrow(0, s0, n).view({n, Hkv, G, d}).index_select(1, idx).reshape({n, 2 * G, d});
  ASSERT_EQ(some.sizes(), (std::vector<int64_t>{L, 2 * G, d}));
  EXPECT_TRUE(torch::equal(some.narrow(0, 0, n), want));
  EXPECT_EQ(some.narrow(0, n, L - n).abs().max().item<float>(), 0.f);
  auto all = cudnn_sample_rows(t, s0, n, torch::Tensor(), Hkv);
  EXPECT_TRUE(torch::equal(all.narrow(0, 0, n), t.narrow(0, s0, n)));
  EXPECT_EQ(all.narrow(0, n, L - n).abs().max().item<float>(), 0.f);
}

// The plan keys bench-train counts: one per direction, shape, dtype and thread, as PyTorch caches them.
TEST(CudnnSampleLength, ShapeKeysAreNewPerDirectionShapeAndThread) {
  auto q = torch::zeros({4224, 12, 8}), k = torch::zeros({4224, 3, 8});
  const int64_t before = cudnn_sample_shapes();
  EXPECT_TRUE(note_cudnn_sample_shape(false, q, k));
  EXPECT_FALSE(note_cudnn_sample_shape(false, q, k));
  EXPECT_FALSE(note_cudnn_sample_shape(false, q.clone(), k.clone()));  // same shape, other buffers
  EXPECT_TRUE(note_cudnn_sample_shape(true, q, k));
  EXPECT_TRUE(note_cudnn_sample_shape(false, q.narrow(0, 0, 4096), k.narrow(0, 0, 4096)));
  EXPECT_TRUE(note_cudnn_sample_shape(false, q.narrow(1, 0, 8), k.narrow(1, 0, 2)));
  EXPECT_TRUE(note_cudnn_sample_shape(false, q.to(torch::kBFloat16), k.to(torch::kBFloat16)));
  bool other_thread = false;
  std::thread([&] { other_thread = note_cudnn_sample_shape(false, q, k); }).join();
  EXPECT_TRUE(other_thread);
  EXPECT_EQ(cudnn_sample_shapes() - before, 6);
}

// What cuDNN's padded calls rely on, checked exactly: causal attention over a sample padded with zero
// rows (q, k, v and dO) gives the sample's own output, log-sum-exp and gradients in its first rows.
TEST(CudnnSampleLength, ZeroPaddingRowsChangeNoRealRowOrGradient) {
  torch::manual_seed(4);
  const int64_t n = 1000, L = cudnn_sample_length(n), Hq = 4, Hkv = 2, d = 16;
  auto o = torch::TensorOptions().dtype(torch::kFloat64);
  auto q = torch::randn({n, Hq, d}, o), k = torch::randn({n, Hkv, d}, o), v = torch::randn({n, Hkv, d}, o);
  auto dout = torch::randn({n, Hq, d}, o);
  auto pad = [&](const torch::Tensor& x) { return cudnn_sample_rows(x, 0, n, torch::Tensor(), Hkv); };
  const auto mask = MaskSpec::causal();
  auto own = Packing::from_lengths({n}, torch::kCPU), padded = Packing::from_lengths({L}, torch::kCPU);
  auto f = attention_forward(q, k, v, own, mask, 0.25);
  auto g = attention_backward(dout, q, k, v, f, own, mask, 0.25);
  auto fp = attention_forward(pad(q), pad(k), pad(v), padded, mask, 0.25);
  // The padding rows' output is not zero, but their dO is: cuDNN gets exactly this.
  auto gp = attention_backward(pad(dout), pad(q), pad(k), pad(v), AttnForward{pad(fp.out.narrow(0, 0, n)), fp.lse}, padded,
                               mask, 0.25);
  EXPECT_LT((fp.out.narrow(0, 0, n) - f.out).abs().max().item<double>(), 1e-12);
  EXPECT_LT((fp.lse.narrow(1, 0, n) - f.lse).abs().max().item<double>(), 1e-12);
  EXPECT_LT((gp.dq.narrow(0, 0, n) - g.dq).abs().max().item<double>(), 1e-12);
  EXPECT_LT((gp.dk.narrow(0, 0, n) - g.dk).abs().max().item<double>(), 1e-12);
  EXPECT_LT((gp.dv.narrow(0, 0, n) - g.dv).abs().max().item<double>(), 1e-12);
}
