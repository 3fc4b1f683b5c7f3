// The frozen MLP of training (model/frozen_mlp.h): the same output and input gradient as autograd
// through down(silu(gate(x)) * up(x)), chunk by chunk, with the backward written over g and u.
#include <gtest/gtest.h>

#include "cpu_memory.h"
#include "model/frozen_mlp.h"
#include "model/fused_ops.h"
#include "test_util.h"

using namespace elastic;
using elastic::testing::expect_error;
using elastic::testing::rel_err;

namespace {

struct Mlp {
  torch::Tensor gate, up, down;
  model::FrozenMlpWeights weights() const { return {gate, up, down}; }
};

Mlp random_mlp(int64_t D, int64_t I, torch::Dtype dtype) {
  return {torch::randn({I, D}, dtype) / std::sqrt(D), torch::randn({I, D}, dtype) / std::sqrt(D),
          torch::randn({D, I}, dtype) / std::sqrt(I)};
}

torch::Tensor composed(const torch::Tensor& x, const Mlp& m) {
  namespace F = torch::nn::functional;
  return F::linear(model::swiglu_composed(F::linear(x, m.gate), F::linear(x, m.up)), m.down);
}

}  // namespace

TEST(FrozenMlp, OutputAndInputGradientAreAutogradsInEveryChunking) {
  torch::manual_seed(3);
  const auto m = random_mlp(6, 10, torch::kFloat64);
  auto x = (2 * torch::randn({13, 6}, torch::kFloat64)).requires_grad_();
  auto dy = torch::randn({13, 6}, torch::kFloat64);
  auto ref_y = composed(x, m);
  auto ref_dx = torch::autograd::grad({ref_y}, {x}, {dy})[0];
  for (int64_t chunk : {1, 4, 13, 100}) {
    auto y = model::frozen_mlp(x, m.weights(), chunk);
    EXPECT_LT(rel_err(y, ref_y), 1e-14) << "chunk " << chunk;
    auto dx = torch::autograd::grad({y}, {x}, {dy})[0];
    EXPECT_LT(rel_err(dx, ref_dx), 1e-14) << "chunk " << chunk;
  }
  // Leading dimensions are rows.
  auto x3 = x.detach().view({13, 1, 6}).requires_grad_();
  auto y3 = model::frozen_mlp(x3, m.weights(), 5);
  EXPECT_EQ(y3.sizes(), x3.sizes());
  EXPECT_LT(rel_err(torch::autograd::grad({y3}, {x3}, {dy.view({13, 1, 6})})[0].view({13, 6}), ref_dx), 1e-14);
}

TEST(FrozenMlp, BackwardWritesTheGradientsOverGateAndUp) {
  torch::manual_seed(4);
  const auto m = random_mlp(6, 10, torch::kFloat64);
  auto x = torch::randn({9, 6}, torch::kFloat64);
  auto dy = torch::randn({9, 6}, torch::kFloat64);
  auto [g, u] = model::frozen_mlp_gate_up(x, m.weights());
  auto gr = g.clone().requires_grad_(), ur = u.clone().requires_grad_();
  auto act = torch::nn::functional::linear(model::swiglu_composed(gr, ur), m.down);
  auto ref = torch::autograd::grad({act}, {gr, ur}, {dy});
  const void* gp = g.data_ptr();
  auto dx = model::frozen_mlp_backward(dy, g, u, m.weights(), 4);
  EXPECT_EQ(g.data_ptr(), gp);
  EXPECT_LT(rel_err(g, ref[0]), 1e-14) << "g holds dL/dg";
  EXPECT_LT(rel_err(u, ref[1]), 1e-14) << "u holds dL/du";
  EXPECT_LT(rel_err(dx, torch::mm(ref[0], m.gate) + torch::mm(ref[1], m.up)), 1e-14);
}

// What the backward builds beyond its output: a chunk of dL/d(act) and the chunk's SwiGLU temporaries,
// never a whole [rows, I] tensor (autograd's backward builds three: dL/d(act), dL/dg and dL/du).
TEST(FrozenMlp, BackwardBuildsNoWholeIntermediateTensor) {
  torch::manual_seed(5);
  const int64_t T = 256, D = 8, I = 128, chunk = 16;
  const auto m = random_mlp(D, I, torch::kFloat32);
  auto x = torch::randn({T, D}).requires_grad_();
  auto dy = torch::randn({T, D});
  const int64_t whole = T * I * 4;
  auto peak_of_backward = [&](const torch::Tensor& y) {
    elastic::testing::CpuMemoryCounter mem;
    mem.reset_peak();
    const auto before = mem.now();
    auto dx = torch::autograd::grad({y}, {x}, {dy})[0];
    return mem.peak() - before;
  };
  const auto ours = peak_of_backward(model::frozen_mlp(x, m.weights(), chunk));
  const auto autograd = peak_of_backward(composed(x, m));
  EXPECT_LT(ours, whole) << "frozen MLP backward peak " << ours << " B";
  EXPECT_GE(autograd, 3 * whole) << "the composition's backward peak " << autograd << " B";
}

TEST(FrozenMlp, ASecondBackwardThroughSpentGateAndUpFails) {
  const auto m = random_mlp(4, 6, torch::kFloat64);
  auto x = torch::randn({5, 4}, torch::kFloat64).requires_grad_();
  auto y = model::frozen_mlp(x, m.weights()).sum();
  torch::autograd::grad({y}, {x}, {}, /*retain_graph=*/true);
  try {
    torch::autograd::grad({y}, {x});
    FAIL() << "a second backward read the overwritten g and u";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("modified by an inplace operation"), std::string::npos) << e.what();
  }
}

TEST(FrozenMlp, RejectsTrainableOrMisshapenWeights) {
  auto m = random_mlp(4, 6, torch::kFloat64);
  auto x = torch::randn({5, 4}, torch::kFloat64);
  expect_error([&] { model::frozen_mlp(x, {m.gate, m.up, m.down.t()}); }, {"frozen MLP", "down [4, I]"});
  m.up.requires_grad_();
  expect_error([&] { model::frozen_mlp(x, m.weights()); }, {"frozen MLP: a weight requires grad"});
}

TEST(FusedOps, SwigluBackwardInPlaceIsSwiglusBackward) {
  torch::manual_seed(6);
  auto g = 4 * torch::randn({11, 17}), u = torch::randn({11, 17}), dy = torch::randn({11, 17});
  auto gr = g.clone().requires_grad_(), ur = u.clone().requires_grad_();
  auto ref = torch::autograd::grad({model::swiglu(gr, ur)}, {gr, ur}, {dy});
  model::swiglu_backward_inplace(dy, g, u);
  EXPECT_TRUE(torch::equal(g, ref[0]));
  EXPECT_TRUE(torch::equal(u, ref[1]));
  expect_error([&] { model::swiglu_backward_inplace(dy, g, torch::randn({11, 16})); }, {"swiglu backward", "one shape"});
}

// bf16 on the GPU (cuBLAS chunks, the in-place kernel) against fp64 autograd of the composition.
TEST(FrozenMlp, BfloatOnTheGpuMatchesFp64) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(9);
  const auto m64 = random_mlp(256, 688, torch::kFloat64);
  auto bf = [](const torch::Tensor& t) { return t.to(torch::kCUDA, torch::kBFloat16); };
  const Mlp m{bf(m64.gate), bf(m64.up), bf(m64.down)};
  auto x = bf(torch::randn({4099, 256}, torch::kFloat64)).requires_grad_();
  auto dy = bf(torch::randn({4099, 256}, torch::kFloat64));
  auto x64 = x.detach().to(torch::kFloat64).requires_grad_();
  const Mlp w64{m.gate.to(torch::kFloat64), m.up.to(torch::kFloat64), m.down.to(torch::kFloat64)};
  auto y64 = composed(x64, w64);
  auto dx64 = torch::autograd::grad({y64}, {x64}, {dy.to(torch::kFloat64)})[0];
  for (int64_t chunk : {int64_t{1000}, model::kMlpRowChunk}) {
    auto y = model::frozen_mlp(x, m.weights(), chunk);
    EXPECT_LT(rel_err(y, y64), 1e-2) << "chunk " << chunk;
    auto dx = torch::autograd::grad({y}, {x}, {dy})[0];
    EXPECT_LT(rel_err(dx, dx64), 1e-2) << "chunk " << chunk;
  }
}
