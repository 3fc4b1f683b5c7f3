// GPU attention in bf16 (full causal on flash and on cuDNN, streaming's window band on flash and,
// where the build has the cuDNN frontend, on cuDNN) against the exact blocked path in fp64.
// Skipped without a GPU.
#include <gtest/gtest.h>

#include "attention/attention.h"
#include "attention/hybrid.h"
#include "test_util.h"

using namespace elastic::attention;
using elastic::testing::rel_err;

namespace {

struct Inputs {
  torch::Tensor q, k, v;
};

Inputs make(int64_t T, int64_t hq, int64_t hkv, int64_t d) {
  auto o = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  return {torch::randn({T, hq, d}, o), torch::randn({T, hkv, d}, o), torch::randn({T, hkv, d}, o)};
}

torch::Tensor f64(const torch::Tensor& t) { return t.detach().to(torch::kFloat64).requires_grad_(t.requires_grad()); }

// Each test runs once per backend, full attention and streaming's band alike ("cudnn": both
// directions); the defaults are restored afterwards.
class AttentionGpu : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    set_full_attention_backend(GetParam());
    set_streaming_backend(GetParam());
  }
  void TearDown() override {
    set_full_attention_backend(saved_full_);
    set_streaming_backend(saved_streaming_);
  }
  std::string saved_full_ = full_attention_backend(), saved_streaming_ = streaming_backend();
};

}  // namespace

TEST_P(AttentionGpu, MatchesExactForwardAndBackward) {
  torch::manual_seed(0);
  // Streaming regimes (first = window + sink - 1 is the first row that sees every sink key beyond
  // its window): samples shorter than the window, with length in [window, first], exactly first + 1
  // and longer; sink 0; sink > window; and packs where no sample passes first (no merge at all).
  struct Case {
    std::vector<int64_t> lengths;
    std::vector<MaskSpec> masks;
  };
  const std::vector<Case> cases = {
      {{300, 17, 1029, 2100, 33, 150, 384},
       {MaskSpec::causal(), MaskSpec::streaming(4, 32), MaskSpec::streaming(128, 256), MaskSpec::streaming(0, 64),
        MaskSpec::streaming(200, 100)}},
      {{300, 17, 383, 256, 100}, {MaskSpec::streaming(128, 256)}},
      {{150, 299, 40}, {MaskSpec::streaming(200, 100)}},
  };
  for (const auto& c : cases) {
    for (MaskSpec mask : c.masks) {
      SCOPED_TRACE("sink " + std::to_string(mask.sink) + " window " + std::to_string(mask.window) + " samples " +
                   std::to_string(c.lengths.size()));
      auto pack = Packing::from_lengths(c.lengths, torch::kCUDA);
      auto in = make(pack.tokens(), 8, 2, 64);
      ASSERT_TRUE(uses_flash(in.q));
      const double scale = 0.125;
      auto f = attention_forward(in.q, in.k, in.v, pack, mask, scale);
      auto r = attention_forward(f64(in.q), f64(in.k), f64(in.v), pack, mask, scale);
      EXPECT_LT(rel_err(f.out, r.out), 1e-2);
      EXPECT_LT((f.lse.to(torch::kFloat64) - r.lse).abs().max().item<double>(), 2e-2);
      auto dout = torch::randn_like(in.q);
      auto g = attention_backward(dout, in.q, in.k, in.v, f, pack, mask, scale);
      auto gr = attention_backward(f64(dout), f64(in.q), f64(in.k), f64(in.v), r, pack, mask, scale);
      EXPECT_LT(rel_err(g.dq, gr.dq), 2e-2) << "dq";
      EXPECT_LT(rel_err(g.dk, gr.dk), 2e-2) << "dk";
      EXPECT_LT(rel_err(g.dv, gr.dv), 2e-2) << "dv";
      // Per sample too: a wrong row in a short sample would vanish in the whole pack's norm.
      for (int64_t b = 0; b < pack.num_samples(); ++b) {
        const int64_t s0 = pack.begin(b), n = pack.length(b);
        EXPECT_LT(rel_err(f.out.narrow(0, s0, n), r.out.narrow(0, s0, n)), 1e-2) << "out, sample of length " << n;
        EXPECT_LT(rel_err(g.dq.narrow(0, s0, n), gr.dq.narrow(0, s0, n)), 2e-2) << "dq, sample of length " << n;
      }
    }
  }
}

TEST_P(AttentionGpu, HybridRoutingAwareBackwardMatchesExact) {
  torch::manual_seed(1);
  auto pack = Packing::from_lengths({700, 64, 1500}, torch::kCUDA);
  auto in = make(pack.tokens(), 8, 4, 128);
  // Per branch: a sample with some heads, one with all or none (the per-sample cuDNN calls take
  // views then, copies of the selected heads otherwise).
  auto s = torch::tensor({{1., 0., 0., 1.}, {1., 1., 1., 1.}, {1., 1., 0., 1.}}, torch::kCUDA);
  const MaskSpec ssa = MaskSpec::streaming(16, 128);
  // keep: a checkpointed layer's path, the selected branches kept from a forward without grad.
  auto run = [&](bool exact, bool keep = false) {
    auto q = (exact ? f64(in.q) : in.q.detach().clone()).requires_grad_();
    auto k = (exact ? f64(in.k) : in.k.detach().clone()).requires_grad_();
    auto v = (exact ? f64(in.v) : in.v.detach().clone()).requires_grad_();
    auto sw = (exact ? s.to(torch::kFloat64) : s.clone()).requires_grad_();
    AttnForward kept;
    if (keep) {
      torch::NoGradGuard ng;
      hybrid_attention(q, k, v, sw, pack, ssa, 0.088, {}, &kept);
      EXPECT_TRUE(kept.out.defined());
    }
    auto out = exact ? hybrid_attention_autograd_both(q, k, v, sw, pack, ssa, 0.088)
                     : hybrid_attention(q, k, v, sw, pack, ssa, 0.088, {}, keep ? &kept : nullptr);
    torch::manual_seed(7);
    auto w = torch::randn(out.sizes(), torch::TensorOptions().device(torch::kCUDA));
    (out.to(torch::kFloat64) * w.to(torch::kFloat64)).sum().backward();
    return std::vector<torch::Tensor>{out.detach(), q.grad(), k.grad(), v.grad(), sw.grad()};
  };
  set_force_blocked(true);
  auto ref = run(true);
  set_force_blocked(false);
  // The gathered (sample, head) pairs, then every head with dO masked, then the selected heads one KV
  // head a call (padded head-major copies on cuDNN).
  const int64_t saved = gather_min_len(), saved_split = head_split_min_len();
  for (auto [gather, split] : std::vector<std::pair<int64_t, int64_t>>{{0, saved_split}, {int64_t{1} << 40, saved_split}, {0, 0}}) {
    SCOPED_TRACE("gather_min_len " + std::to_string(gather) + ", head_split_min_len " + std::to_string(split));
    set_gather_min_len(gather);
    set_head_split_min_len(split);
    for (bool keep : {false, true}) {
      if (keep && gather != 0) continue;  // the kept path needs the selected pairs
      auto ours = run(false, keep);
      const char* names[] = {"out", "dq", "dk", "dv", "ds"};
      for (int i = 0; i < 5; ++i) EXPECT_LT(rel_err(ours[i], ref[i]), 2e-2) << names[i] << (keep ? ", kept" : "");
    }
  }
  set_gather_min_len(saved);
  set_head_split_min_len(saved_split);
}

INSTANTIATE_TEST_SUITE_P(FullAttentionBackend, AttentionGpu, ::testing::Values("flash", "cudnn"),
                         [](const auto& info) { return info.param; });
