// The RMSNorm kernels (kernels/rmsnorm.cu) against a brute-force fp64 reference and fp64 autograd:
// the forward, the fused residual add (its sum equal to the separate add bit for bit), the
// backward with and without the residual gradient, and the autograd functions the model calls.
// A trainable weight keeps ATen's path and gets its gradient. Every kernel output is poisoned with
// NaN first, so an element left unwritten shows. Row lengths cover one block a row (4096, 5120,
// longer than the registers hold), lanes of a warp (head_dim 128, 64, 1024, 8), odd lengths and
// unaligned pointers (scalar path); row counts are odd and reach past one sweep of the grid.
// Skipped without a GPU.
#include <gtest/gtest.h>

#include <limits>

#include "model/fused_ops.h"
#include "model/layers.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace elastic;
using namespace elastic::testing;

namespace {

const auto kF64 = torch::kFloat64;
constexpr double kEps = 1e-6;

class RmsNormGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

// Weights of a trained norm are far from all ones; these vary by about +-50%.
torch::Tensor norm_weight(int64_t n, torch::ScalarType dtype) {
  return (1 + 0.5 * torch::randn({n}, torch::TensorOptions().device(torch::kCUDA))).to(dtype);
}

torch::Tensor f64(const torch::Tensor& t) { return t.detach().to(kF64); }

bool has_nan(const torch::Tensor& t) { return t.isnan().any().item<bool>(); }

// The definition, in fp64 over the last dimension.
torch::Tensor reference(const torch::Tensor& x64, const torch::Tensor& w64) {
  return x64 * torch::rsqrt(x64.pow(2).mean(-1, true) + kEps) * w64;
}

// fp64 y and d(y . dy)/dx at x.
std::pair<torch::Tensor, torch::Tensor> reference_with_grad(const torch::Tensor& x, const torch::Tensor& w,
                                                            const torch::Tensor& dy) {
  auto x64 = f64(x).requires_grad_();
  auto y64 = reference(x64, f64(w));
  auto dx64 = torch::autograd::grad({y64}, {x64}, {f64(dy)})[0];
  return {y64.detach(), dx64};
}

struct Shape {
  int64_t rows, n, offset;
};

std::string describe(const Shape& s, torch::ScalarType dtype) {
  return "rows " + std::to_string(s.rows) + " n " + std::to_string(s.n) + " offset " + std::to_string(s.offset) + " " +
         dtype_name(dtype);
}

// 4096 and 5120: hidden sizes, a block a row (20011 rows take several sweeps of the grid); 20480
// and 4097 (scalar): more chunks than the registers keep; 128 (200003 rows: several sweeps), 64,
// 1024, 8: lanes of a warp; 100 and 3: odd lengths on the scalar path; offset 1: unaligned.
const std::vector<Shape> kShapes = {{1, 4096, 0},    {333, 4096, 0}, {20011, 4096, 0}, {31, 5120, 0},
                                    {5, 20480, 0},   {9, 4097, 0},   {7, 128, 0},      {4099, 128, 0},
                                    {200003, 128, 0}, {33, 64, 0},   {65, 1024, 0},    {5, 8, 0},
                                    {17, 100, 0},    {2, 3, 0},      {333, 4096, 1},   {99, 128, 1}};

const std::vector<torch::ScalarType> kDtypes = {torch::kBFloat16, torch::kFloat32};

}  // namespace

TEST_F(RmsNormGpu, ForwardAndBackwardKernelsMatchFp64) {
  torch::manual_seed(31);
  for (const auto& sh : kShapes) {
    for (auto dtype : kDtypes) {
      SCOPED_TRACE(describe(sh, dtype));
      auto x = placed(randn_cuda({sh.rows, sh.n}, dtype), sh.offset);
      auto dy = placed(randn_cuda({sh.rows, sh.n}, dtype), sh.offset);
      auto dres = placed(randn_cuda({sh.rows, sh.n}, dtype), sh.offset);
      auto w = norm_weight(sh.n, dtype);
      auto [y64, dx64] = reference_with_grad(x, w, dy);

      auto y = placed(nan_like(x), sh.offset);
      model::rms_norm_out(y, x, w, kEps);
      EXPECT_FALSE(has_nan(y));
      EXPECT_LT(rel_err(y, y64), tolerance(dtype)) << "forward";

      auto dx = placed(nan_like(x), sh.offset);
      model::rms_norm_backward_out(dx, dy, x, w, kEps, torch::Tensor());
      EXPECT_FALSE(has_nan(dx));
      EXPECT_LT(rel_err(dx, dx64), tolerance(dtype)) << "backward";

      auto dx_res = placed(nan_like(x), sh.offset);
      model::rms_norm_backward_out(dx_res, dy, x, w, kEps, dres);
      EXPECT_FALSE(has_nan(dx_res));
      EXPECT_LT(rel_err(dx_res, dx64 + f64(dres)), tolerance(dtype)) << "backward + residual gradient";
    }
  }
}

TEST_F(RmsNormGpu, AddKernelSumIsTheSeparateAddBitForBit) {
  torch::manual_seed(32);
  for (const auto& sh : kShapes) {
    for (auto dtype : kDtypes) {
      SCOPED_TRACE(describe(sh, dtype));
      // Terms of different scales, so that most sums round.
      auto a = randn_cuda({sh.rows, sh.n}, dtype), b = (0.37 * randn_cuda({sh.rows, sh.n}, torch::kFloat32)).to(dtype);
      // Subnormal terms and sums in the first row: a flush-to-zero add would differ from ATen's.
      a[0].narrow(0, 0, std::min<int64_t>(sh.n, 4)).fill_(3e-39);
      b[0].narrow(0, 0, std::min<int64_t>(sh.n, 4)).fill_(2e-39);
      a = placed(a, sh.offset);
      b = placed(b, sh.offset);
      auto w = norm_weight(sh.n, dtype);
      auto sum = a + b;
      auto h = placed(nan_like(a), sh.offset), y = placed(nan_like(a), sh.offset);
      model::add_rms_norm_out(h, y, a, b, w, kEps);
      EXPECT_TRUE(torch::equal(h, sum)) << "h differs from a + b";
      EXPECT_FALSE(has_nan(y));
      EXPECT_LT(rel_err(y, reference(f64(sum), f64(w))), tolerance(dtype)) << "norm of the sum";
    }
  }
}

TEST_F(RmsNormGpu, AutogradFunctionsMatchFp64Autograd) {
  torch::manual_seed(33);
  const std::vector<Shape> shapes = {{333, 4096, 0}, {4099, 128, 0}, {17, 100, 0}, {99, 128, 1}};
  for (const auto& sh : shapes) {
    for (auto dtype : kDtypes) {
      SCOPED_TRACE(describe(sh, dtype));
      auto w = norm_weight(sh.n, dtype);
      auto dy = placed(randn_cuda({sh.rows, sh.n}, dtype), sh.offset);
      auto dh = placed(randn_cuda({sh.rows, sh.n}, dtype), sh.offset);

      // rms_norm, as RMSNorm::forward calls it (q_norm's [T, H, d] view included).
      auto x = placed(randn_cuda({sh.rows, sh.n}, dtype), sh.offset).requires_grad_();
      auto y = model::rms_norm(x, w, kEps);
      ASSERT_TRUE(y.grad_fn());
      EXPECT_NE(y.grad_fn()->name().find("RmsNormFn"), std::string::npos) << y.grad_fn()->name();
      auto [y64, dx64] = reference_with_grad(x, w, dy);
      EXPECT_LT(rel_err(y, y64), tolerance(dtype)) << "rms_norm";
      y.backward(dy);
      EXPECT_LT(rel_err(x.grad(), dx64), tolerance(dtype)) << "rms_norm backward";
      if (sh.n % 4 == 0) {
        auto x3 = x.detach().view({sh.rows, 4, sh.n / 4});
        auto w3 = w.narrow(0, 0, sh.n / 4).contiguous();
        EXPECT_LT(rel_err(model::rms_norm(x3, w3, kEps), reference(f64(x3), f64(w3))), tolerance(dtype)) << "3-d";
      }

      // add_rms_norm: a and b both get dh + the norm's backward at h.
      auto a = placed(randn_cuda({sh.rows, sh.n}, dtype), sh.offset).requires_grad_();
      auto b = placed(randn_cuda({sh.rows, sh.n}, dtype), sh.offset).requires_grad_();
      auto [h, yh] = model::add_rms_norm(a, b, w, kEps);
      ASSERT_TRUE(yh.grad_fn());
      EXPECT_NE(yh.grad_fn()->name().find("AddRmsNormFn"), std::string::npos) << yh.grad_fn()->name();
      auto sum = a.detach() + b.detach();
      EXPECT_TRUE(torch::equal(h, sum));
      auto [yh64, dnorm64] = reference_with_grad(sum, w, dy);
      EXPECT_LT(rel_err(yh, yh64), tolerance(dtype)) << "add_rms_norm";
      auto grads = torch::autograd::grad({h, yh}, {a, b}, {dh, dy});
      EXPECT_LT(rel_err(grads[0], dnorm64 + f64(dh)), tolerance(dtype)) << "d/da";
      EXPECT_TRUE(torch::equal(grads[0], grads[1])) << "d/da != d/db";

      // Only one output used: the other's gradient is absent, not zero-filled.
      auto y_only = model::add_rms_norm(a, b, w, kEps).second;
      EXPECT_LT(rel_err(torch::autograd::grad({y_only}, {a}, {dy})[0], dnorm64), tolerance(dtype)) << "y only";
      auto h_only = model::add_rms_norm(a, b, w, kEps).first;
      EXPECT_TRUE(torch::equal(torch::autograd::grad({h_only}, {b}, {dh})[0], dh)) << "h only";
    }
  }
}

TEST_F(RmsNormGpu, TrainableWeightStaysOnAtenAndGetsItsGradient) {
  torch::manual_seed(34);
  const int64_t rows = 77, n = 4096;
  for (auto dtype : kDtypes) {
    SCOPED_TRACE(dtype_name(dtype));
    auto w = norm_weight(n, dtype).requires_grad_();
    auto x = randn_cuda({rows, n}, dtype).requires_grad_();
    auto dy = randn_cuda({rows, n}, dtype);
    auto y = model::rms_norm(x, w, kEps);
    ASSERT_TRUE(y.grad_fn());
    EXPECT_EQ(y.grad_fn()->name().find("RmsNormFn"), std::string::npos) << y.grad_fn()->name();
    EXPECT_TRUE(torch::equal(y, at::rms_norm(x, {n}, w, kEps)));
    auto g = torch::autograd::grad({y}, {x, w}, {dy});
    auto x64 = f64(x).requires_grad_(), w64 = f64(w).requires_grad_();
    auto g64 = torch::autograd::grad({reference(x64, w64)}, {x64, w64}, {f64(dy)});
    EXPECT_LT(rel_err(g[0], g64[0]), tolerance(dtype)) << "dx";
    ASSERT_TRUE(g[1].defined());
    EXPECT_LT(rel_err(g[1], g64[1]), tolerance(dtype)) << "dw";

    // The residual form takes the same path: the plain add, then at::rms_norm.
    auto a = randn_cuda({rows, n}, dtype), b = randn_cuda({rows, n}, dtype);
    auto [h, yh] = model::add_rms_norm(a, b, w, kEps);
    EXPECT_TRUE(torch::equal(h, a + b));
    EXPECT_TRUE(torch::equal(yh, at::rms_norm(a + b, {n}, w, kEps)));
    yh.backward(dy);
    ASSERT_TRUE(w.grad().defined());
    EXPECT_GT(w.grad().abs().sum().item<double>(), 0);
  }
  // fp64 has no kernel: ATen too.
  auto x = torch::randn({5, 64}, torch::TensorOptions().device(torch::kCUDA).dtype(kF64));
  auto w = torch::randn({64}, x.options());
  EXPECT_TRUE(torch::equal(model::rms_norm(x, w, kEps), at::rms_norm(x, {64}, w, kEps)));
}

TEST_F(RmsNormGpu, ModuleUsesTheKernelWithItsFrozenWeight) {
  torch::manual_seed(35);
  for (auto dtype : kDtypes) {
    model::RMSNorm norm(128, kEps, torch::TensorOptions().device(torch::kCUDA).dtype(dtype));
    {
      torch::NoGradGuard ng;
      norm->weight.copy_(norm_weight(128, dtype));
    }
    auto q = randn_cuda({129, 32, 128}, dtype);
    auto y = torch::empty_like(q);
    model::rms_norm_out(y, q, norm->weight, kEps);
    EXPECT_TRUE(torch::equal(norm->forward(q), y)) << dtype_name(dtype);
    auto a = randn_cuda({129, 128}, dtype), b = randn_cuda({129, 128}, dtype);
    auto h = torch::empty_like(a), yh = torch::empty_like(a);
    model::add_rms_norm_out(h, yh, a, b, norm->weight, kEps);
    auto out = norm->forward_add(a, b);
    EXPECT_TRUE(torch::equal(out.first, h)) << dtype_name(dtype);
    EXPECT_TRUE(torch::equal(out.second, yh)) << dtype_name(dtype);
  }
}
