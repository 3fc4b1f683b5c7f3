// The LM loss of a frozen output projection (train/linear_cross_entropy.h): autograd's loss and
// gradient through linear, .to(fp32) and cross_entropy, with nothing of the logits kept.
#include <gtest/gtest.h>

#include "cpu_memory.h"
#include "test_util.h"
#include "train/linear_cross_entropy.h"
#include "util/memory.h"

using namespace elastic;
using elastic::testing::expect_error;
using elastic::testing::rel_err;

namespace {

// The composition lm_loss ran before, chunk by chunk.
torch::Tensor composed(const torch::Tensor& hidden, const torch::Tensor& rows, const torch::Tensor& targets,
                       const torch::Tensor& w, int64_t chunk) {
  namespace F = torch::nn::functional;
  auto sum = torch::zeros({}, hidden.options().dtype(torch::kFloat32));
  for (int64_t a = 0; a < rows.numel(); a += chunk) {
    const int64_t c = std::min(chunk, rows.numel() - a);
    auto logits = F::linear(hidden.index_select(0, rows.narrow(0, a, c)), w).to(torch::kFloat32);
    sum = sum + F::cross_entropy(logits, targets.narrow(0, a, c), F::CrossEntropyFuncOptions().reduction(torch::kSum));
  }
  return sum;
}

struct Case {
  torch::Tensor hidden, rows, targets, w;
};

Case random_case(torch::Dtype dtype, int64_t T = 40, int64_t D = 16, int64_t V = 97) {
  return {torch::randn({T, D}).to(dtype).requires_grad_(), std::get<0>(torch::randperm(T).narrow(0, 0, T / 2 + 3).sort()),
          torch::randint(V, {T / 2 + 3}), (torch::randn({V, D}) / 2).to(dtype)};
}

}  // namespace

TEST(LinearCrossEntropy, LossAndGradientAreAutogradsThroughTheComposition) {
  torch::manual_seed(7);
  for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto c = random_case(dtype);
    // The trainer's scale: the loss is divided by the global label count before the backward.
    const double scale = 1.0 / 37;
    auto ref = composed(c.hidden, c.rows, c.targets, c.w, 5);
    auto ref_dh = torch::autograd::grad({ref * scale}, {c.hidden})[0];
    for (int64_t chunk : {1, 5, 23, 1000}) {
      auto sum = train::linear_cross_entropy_sum(c.hidden, c.rows, c.targets, c.w, chunk);
      EXPECT_EQ(sum.scalar_type(), torch::kFloat32);
      EXPECT_NEAR(sum.item<double>(), ref.item<double>(), 1e-5 * ref.item<double>()) << dtype << " chunk " << chunk;
      auto dh = torch::autograd::grad({sum * scale}, {c.hidden})[0];
      EXPECT_EQ(dh.scalar_type(), dtype);
      // bf16: the gradient is rounded once more (formed for 1, then scaled).
      EXPECT_LT(rel_err(dh, ref_dh), dtype == torch::kFloat32 ? 1e-6 : 1e-2) << dtype << " chunk " << chunk;
      EXPECT_EQ(dh.index_select(0, c.rows).abs().sum(1).gt(0).sum().item<int64_t>(), c.rows.numel());
      EXPECT_EQ(dh.abs().sum().item<double>(), dh.index_select(0, c.rows).abs().sum().item<double>())
          << "rows without a label get no gradient";
    }
  }
}

// The composition keeps each chunk's fp32 log-probabilities until the backward; this loss keeps the
// [rows, D] gradient only.
TEST(LinearCrossEntropy, KeepsNothingOfTheLogitsForTheBackward) {
  torch::manual_seed(8);
  const int64_t V = 4000, chunk = 16;
  auto c = random_case(torch::kFloat32, 128, 16, V);
  const int64_t n = c.rows.numel(), logits_chunk = chunk * V * 4;
  // Measured while each loss (and its graph) lives.
  int64_t ours = 0, theirs = 0;
  {
    elastic::testing::CpuMemoryCounter mem;
    auto before = mem.now();
    auto a = train::linear_cross_entropy_sum(c.hidden, c.rows, c.targets, c.w, chunk);
    ours = mem.now() - before;
    before = mem.now();
    auto b = composed(c.hidden, c.rows, c.targets, c.w, chunk);
    theirs = mem.now() - before;
  }
  EXPECT_LT(ours, logits_chunk) << "held " << ours << " B; one chunk of fp32 logits is " << logits_chunk << " B";
  EXPECT_LE(ours, n * 16 * 4 + n * 8 + 4096) << "the [rows, D] gradient and the row indices";
  EXPECT_GE(theirs, (n / chunk) * logits_chunk) << "the composition holds every chunk's log-probabilities";
}

TEST(LinearCrossEntropy, RejectsATrainableProjectionAndMisshapenInputs) {
  auto c = random_case(torch::kFloat32);
  expect_error([&] { train::linear_cross_entropy_sum(c.hidden, c.rows, c.targets, c.w.t(), 4); },
               {"linear cross-entropy", "weight [V, D]"});
  expect_error([&] { train::linear_cross_entropy_sum(c.hidden, c.rows, c.targets.narrow(0, 0, 3), c.w, 4); },
               {"rows and targets"});
  expect_error([&] { train::linear_cross_entropy_sum(c.hidden, c.rows, c.targets, c.w, 0); }, {"chunk must be positive"});
  auto w = c.w.clone().requires_grad_();
  expect_error([&] { train::linear_cross_entropy_sum(c.hidden, c.rows, c.targets, w, 4); },
               {"output projection must be frozen"});
}

// bf16 on the GPU at a real vocabulary: the composition's loss and gradient, and what the forward leaves
// held by the GPU allocator.
TEST(LinearCrossEntropy, OnTheGpuInBfloat16) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(10);
  const int64_t T = 3000, D = 512, V = 151936, chunk = 1024;
  auto cuda = [](const torch::Tensor& t) { return t.to(torch::kCUDA, torch::kBFloat16); };
  auto hidden = cuda(torch::randn({T, D})).requires_grad_();
  auto rows = torch::arange(0, T, 2, torch::kLong).to(torch::kCUDA);
  auto targets = torch::randint(V, {rows.numel()}, torch::kLong).to(torch::kCUDA);
  auto w = cuda(torch::randn({V, D}) / 8);
  const auto before = allocated_bytes(torch::kCUDA);
  auto sum = train::linear_cross_entropy_sum(hidden, rows, targets, w, chunk);
  const auto held = allocated_bytes(torch::kCUDA) - before;
  EXPECT_LT(held, rows.numel() * D * 2 + rows.numel() * 8 + (1 << 20)) << "held " << held << " B after the forward";
  auto ref = composed(hidden, rows, targets, w, chunk);
  EXPECT_NEAR(sum.item<double>(), ref.item<double>(), 1e-4 * ref.item<double>());
  auto dh = torch::autograd::grad({sum / 1500.0}, {hidden})[0];
  auto ref_dh = torch::autograd::grad({ref / 1500.0}, {hidden})[0];
  EXPECT_LT(rel_err(dh, ref_dh), 1e-2);
}
