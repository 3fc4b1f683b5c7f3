// The custom autograd functions behind the fused kernels (model/fused_ops.h) and the hybrid
// blend's entry points on the CPU: the forward is the old ATen composition bit for bit, the
// analytic backward equals fp64 autograd through the plain composition, and the formulas the
// CUDA kernels use (rope's backward as the rotation with sin negated) hold. The kernels
// themselves are checked in test_kernels_gpu.cpp.
#include <gtest/gtest.h>

#include "attention/hybrid_blend.h"
#include "model/fused_ops.h"
#include "model/layers.h"
#include "test_util.h"

using namespace elastic;
using elastic::testing::expect_error;
using elastic::testing::rel_err;

namespace {

// Tables as the model builds them, at the positions of a pack of samples 0..n-1.
std::pair<torch::Tensor, torch::Tensor> rope_tables(const std::vector<int64_t>& lengths, int64_t d) {
  auto pack = attention::Packing::from_lengths(lengths, torch::kCPU);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  model::Rope rope{1.0 / torch::pow(1e6, torch::arange(0, d, 2, f32) / static_cast<double>(d))};
  return rope.tables(pack.positions);
}

torch::Tensor grad_of(const torch::Tensor& y, const torch::Tensor& x, const torch::Tensor& dy) {
  return torch::autograd::grad({y}, {x}, {dy})[0];
}

}  // namespace

TEST(FusedOps, RopeForwardIsTheCompositionAndBackwardIsItsAdjoint) {
  torch::manual_seed(11);
  for (int64_t d : {8, 64}) {
    auto [cos, sin] = rope_tables({9, 30, 1}, d);
    const int64_t T = cos.size(0);
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
      auto x = torch::randn({T, 3, d}).to(dtype);
      EXPECT_TRUE(torch::equal(model::apply_rope(x, cos, sin), model::rope_composed(x, cos, sin)));
    }
    auto x = torch::randn({T, 3, d}, torch::kFloat64).requires_grad_();
    auto dy = torch::randn({T, 3, d}, torch::kFloat64);
    auto ours = grad_of(model::rope(x, cos, sin), x, dy);
    auto ref = grad_of(model::rope_composed(x, cos, sin), x, dy);
    EXPECT_LT(rel_err(ours, ref), 1e-13) << "d " << d;
    // The CUDA kernel's backward: the inverse rotation, i.e. rope with sin negated (the tables'
    // halves are equal).
    EXPECT_LT(rel_err(model::rope_composed(dy, cos, -sin), ref), 1e-13) << "d " << d;
    // The CPU backward is the exact adjoint even for tables with unequal halves.
    auto c2 = torch::randn({T, d}), s2 = torch::randn({T, d});
    EXPECT_LT(rel_err(grad_of(model::rope(x, c2, s2), x, dy), grad_of(model::rope_composed(x, c2, s2), x, dy)), 1e-13);
  }
}

TEST(FusedOps, RopeRejectsMismatchedTables) {
  auto x = torch::randn({5, 2, 8});
  expect_error([&] { model::rope(x, torch::randn({4, 8}), torch::randn({5, 8})); },
               {"rope: cos must be [tokens=5, head_dim=8]", "[4, 8]"});
  expect_error([&] { model::rope(x, torch::randn({5, 8}), torch::randn({5, 4})); }, {"rope: sin must be"});
  expect_error([&] { model::rope(torch::randn({5, 8}), torch::randn({5, 8}), torch::randn({5, 8})); },
               {"rope: x must be [tokens, heads, head_dim]"});
}

TEST(FusedOps, SwigluForwardIsTheCompositionAndBackwardMatchesAutograd) {
  torch::manual_seed(12);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto g = (3 * torch::randn({7, 33})).to(dtype), u = torch::randn({7, 33}).to(dtype);
    EXPECT_TRUE(torch::equal(model::swiglu(g, u), torch::silu(g) * u));
  }
  // Large |g| too, where sigmoid saturates.
  auto g = (4 * torch::randn({13, 29}, torch::kFloat64)).requires_grad_();
  auto u = torch::randn({13, 29}, torch::kFloat64).requires_grad_();
  auto dy = torch::randn({13, 29}, torch::kFloat64);
  auto ours = torch::autograd::grad({model::swiglu(g, u)}, {g, u}, {dy});
  auto ref = torch::autograd::grad({model::swiglu_composed(g, u)}, {g, u}, {dy});
  EXPECT_LT(rel_err(ours[0], ref[0]), 1e-13);
  EXPECT_LT(rel_err(ours[1], ref[1]), 1e-13);
  expect_error([&] { model::swiglu(torch::randn({3, 4}), torch::randn({3, 5})); }, {"swiglu", "[3, 4]", "[3, 5]"});
}

TEST(FusedOps, HybridEntryPointsOnTheCpuAreTheComposition) {
  torch::manual_seed(13);
  auto pack = attention::Packing::from_lengths({6, 1, 9}, torch::kCPU);
  const int64_t T = pack.tokens(), Hq = 6, Hkv = 3, d = 4;
  auto fa = torch::randn({T, Hq, d}, torch::kFloat64), sa = torch::randn({T, Hq, d}, torch::kFloat64);
  auto dout = torch::randn({T, Hq, d}, torch::kFloat64);
  auto s = torch::rand({3, Hkv}, torch::kFloat64).requires_grad_();
  // Each against fp64 autograd of the blend: d/ds is ds, d/dfa and d/dsa the branch gradients.
  auto fa_g = fa.clone().requires_grad_(), sa_g = sa.clone().requires_grad_();
  auto out = attention::hybrid_blend(fa_g, sa_g, s, pack);
  auto wt = s.detach().index_select(0, pack.sample_id).repeat_interleave(Hq / Hkv, 1).unsqueeze(-1);
  EXPECT_LT(rel_err(out, sa + wt * (fa - sa)), 1e-15);
  auto g = torch::autograd::grad({out}, {s, fa_g, sa_g}, {dout});
  EXPECT_LT(rel_err(attention::hybrid_ds(fa, sa, dout, s, pack), g[0]), 1e-13);
  auto [dfa, dsa] = attention::hybrid_branch_douts(dout, s.detach(), pack, true, true);
  EXPECT_LT(rel_err(dfa, g[1]), 1e-15);
  EXPECT_LT(rel_err(dsa, g[2]), 1e-15);
  auto only_sa = attention::hybrid_branch_douts(dout, s.detach(), pack, false, true);
  EXPECT_FALSE(only_sa.first.defined());
  EXPECT_TRUE(torch::equal(only_sa.second, dsa));
  expect_error([&] { attention::hybrid_blend(fa, sa, torch::rand({3, 4}, torch::kFloat64), pack); },
               {"hybrid blend: routing weights must be [samples, kv_heads]", "q_heads=6"});
}

TEST(FusedOps, RmsNormOnTheCpuIsTransformersSequenceBitForBit) {
  torch::manual_seed(14);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto x = torch::randn({5, 3, 64}).to(dtype), w = (1 + 0.1 * torch::randn({64})).to(dtype);
    // The sequence RMSNorm ran before rms_norm existed, spelled out.
    auto x32 = x.to(torch::kFloat32);
    auto expected = w * (x32 * torch::rsqrt(x32.pow(2).mean(-1, true) + 1e-6)).to(dtype);
    EXPECT_TRUE(torch::equal(model::rms_norm(x, w, 1e-6), expected));
    model::RMSNorm norm(64, 1e-6, torch::TensorOptions().dtype(dtype));
    norm->weight.copy_(w);
    EXPECT_TRUE(torch::equal(norm->forward(x), expected));
    // The residual sum is the plain add, its norm the same sequence.
    auto b = torch::randn({5, 3, 64}).to(dtype);
    auto [h, y] = norm->forward_add(x, b);
    EXPECT_TRUE(torch::equal(h, x + b));
    EXPECT_TRUE(torch::equal(y, model::rms_norm_composed(x + b, w, 1e-6)));
  }
  // Differentiable in both outputs and, on this path, in the weight (fp32 inside, as transformers).
  auto a = torch::randn({4, 16}, torch::kFloat64).requires_grad_(), b = torch::randn({4, 16}, torch::kFloat64);
  auto w = torch::randn({16}, torch::kFloat64).requires_grad_();
  auto [h, y] = model::add_rms_norm(a, b, w, 1e-6);
  auto dh = torch::randn({4, 16}, torch::kFloat64), dy = torch::randn({4, 16}, torch::kFloat64);
  auto ours = torch::autograd::grad({h, y}, {a, w}, {dh, dy});
  auto a2 = a.detach().clone().requires_grad_(), w2 = w.detach().clone().requires_grad_();
  auto h2 = a2 + b;
  auto y2 = h2 * torch::rsqrt(h2.pow(2).mean(-1, true) + 1e-6) * w2;
  auto ref = torch::autograd::grad({h2, y2}, {a2, w2}, {dh, dy});
  EXPECT_LT(rel_err(ours[0], ref[0]), 1e-6);
  EXPECT_LT(rel_err(ours[1], ref[1]), 1e-6);
}
