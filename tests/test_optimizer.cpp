// The fused router optimizer and gradient clipping (src/train/optimizer.h) against LibTorch's own
// AdamW and clip_grad_norm_, step by step, and across a save and load in both directions.
#include <gtest/gtest.h>

#include "train/optimizer.h"
#include "test_util.h"

using elastic::testing::TempDir;
using elastic::train::FusedAdamW;

namespace {

// Parameters of a few shapes (a router layer's: matrices, vectors, a 2-row head) and a gradient
// stream that is the same for every optimizer under test.
std::vector<torch::Tensor> make_params(torch::TensorOptions o) {
  torch::manual_seed(3);
  std::vector<torch::Tensor> ps;
  for (auto shape : std::vector<std::vector<int64_t>>{{16, 8}, {16}, {2, 16}, {2}, {5, 3, 2}})
    ps.push_back(torch::randn(shape, o).requires_grad_());
  return ps;
}

std::vector<torch::Tensor> clone_params(const std::vector<torch::Tensor>& ps) {
  std::vector<torch::Tensor> out;
  for (const auto& p : ps) out.push_back(p.detach().clone().requires_grad_());
  return out;
}

void set_grads(std::vector<torch::Tensor>& ps, int64_t step) {
  for (size_t i = 0; i < ps.size(); ++i) {
    auto g = torch::randn(ps[i].sizes(), torch::Generator(at::detail::createCPUGenerator(100 * step + i)),
                          torch::TensorOptions().dtype(torch::kFloat64));
    ps[i].mutable_grad() = g.to(ps[i].options()) * (1 + static_cast<double>(i));
  }
}

torch::optim::AdamWOptions options() { return torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1); }

void run_steps(torch::optim::Optimizer& opt, std::vector<torch::Tensor>& ps, int64_t from, int64_t to) {
  for (int64_t s = from; s < to; ++s) {
    set_grads(ps, s);
    // The trainer's schedule changes the learning rate between steps.
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(1e-2 / (1 + s));
    opt.step();
    opt.zero_grad();
  }
}

double max_diff(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, (a[i].detach().to(torch::kFloat64).cpu() - b[i].detach().to(torch::kFloat64).cpu()).abs().max().item<double>());
  return m;
}

void expect_same_trajectory(torch::TensorOptions o, double tol) {
  auto ref = make_params(o);
  auto fused = clone_params(ref);
  torch::optim::AdamW a(ref, options());
  FusedAdamW f(fused, options());
  for (int64_t s = 0; s < 6; ++s) {
    run_steps(a, ref, s, s + 1);
    run_steps(f, fused, s, s + 1);
    ASSERT_LE(max_diff(ref, fused), tol) << "after step " << s + 1;
  }
  EXPECT_GT(max_diff(ref, make_params(o)), 1e-3) << "the parameters did not move";
}

}  // namespace

TEST(Optimizer, FusedAdamWFollowsAdamWStepByStep) {
  expect_same_trajectory(torch::TensorOptions().dtype(torch::kFloat64), 1e-13);
  expect_same_trajectory(torch::TensorOptions().dtype(torch::kFloat32), 1e-6);
}

TEST(Optimizer, FusedAdamWFollowsAdamWOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  expect_same_trajectory(torch::TensorOptions().dtype(torch::kFloat32).device(torch::kCUDA), 1e-6);
}

TEST(Optimizer, TensorsWithoutGradientsAreLeftAlone) {
  auto ps = make_params(torch::TensorOptions().dtype(torch::kFloat64));
  const auto before = ps[1].detach().clone();
  FusedAdamW f(ps, options());
  set_grads(ps, 0);
  ps[1].mutable_grad() = torch::Tensor();
  f.step();
  EXPECT_TRUE(torch::equal(ps[1].detach(), before));
  EXPECT_EQ(f.state().count(ps[1].unsafeGetTensorImpl()), 0u);
  EXPECT_EQ(f.state().size(), ps.size() - 1);
}

// Three steps with Saver, its state saved to `path` and loaded into a fresh Loader, three more
// steps: the parameters, and the saved parameters after three steps (`at_three`).
template <class Saver, class Loader>
std::vector<torch::Tensor> resumed_run(const std::string& path, std::vector<torch::Tensor>* at_three = nullptr) {
  auto first = make_params(torch::TensorOptions().dtype(torch::kFloat64));
  Saver saver(first, options());
  run_steps(saver, first, 0, 3);
  torch::save(saver, path);
  if (at_three) *at_three = clone_params(first);
  auto resumed = clone_params(first);
  Loader loader(resumed, options());
  torch::load(loader, path);
  run_steps(loader, resumed, 3, 6);
  return resumed;
}

// A run resumed from a checkpoint steps as if never stopped, whichever of the two optimizers saved
// the state (checkpoints written before the fused one existed resume with it).
TEST(Optimizer, ResumesFromSavedStateOfEitherOptimizer) {
  TempDir dir;
  auto straight = make_params(torch::TensorOptions().dtype(torch::kFloat64));
  torch::optim::AdamW a(straight, options());
  run_steps(a, straight, 0, 6);
  EXPECT_LE(max_diff(straight, resumed_run<torch::optim::AdamW, FusedAdamW>(dir.str("adamw.pt"))), 1e-13);
  std::vector<torch::Tensor> at_three;
  EXPECT_LE(max_diff(straight, resumed_run<FusedAdamW, torch::optim::AdamW>(dir.str("fused.pt"), &at_three)), 1e-13);

  // Loading into an optimizer that already stepped replaces its device step counts too.
  auto again = clone_params(at_three);
  FusedAdamW g(again, options());
  run_steps(g, again, 0, 2);
  for (size_t i = 0; i < again.size(); ++i) again[i].detach().copy_(at_three[i].detach());
  torch::load(g, dir.str("fused.pt"));
  run_steps(g, again, 3, 6);
  EXPECT_LE(max_diff(straight, again), 1e-13);
}

TEST(Optimizer, ClipGradNormMatchesLibTorch) {
  for (double max_norm : {0.5, 1e3}) {  // clipped, and left as is
    auto a = make_params(torch::TensorOptions().dtype(torch::kFloat32));
    auto b = clone_params(a);
    set_grads(a, 7);
    set_grads(b, 7);
    const double expected = torch::nn::utils::clip_grad_norm_(a, max_norm);
    const auto got = elastic::train::clip_grad_norm(b, max_norm);
    EXPECT_EQ(got.dim(), 0);
    EXPECT_NEAR(got.item<double>(), expected, 1e-5 * expected);
    for (size_t i = 0; i < a.size(); ++i) EXPECT_LE((a[i].grad() - b[i].grad()).abs().max().item<double>(), 1e-6);
    if (max_norm < expected) {
      double sq = 0;
      for (const auto& p : b) sq += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
      EXPECT_NEAR(std::sqrt(sq), max_norm, 1e-5);
    }
  }
}
