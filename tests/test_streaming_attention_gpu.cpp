// The one-launch streaming attention forward (kernels/streaming_attention.cu) against a brute-force
// fp64 reference on fresh random inputs, with outputs poisoned with NaN before each run, and
// against the flash composition it replaced (flash_streaming_forward), whose backward must take its
// output and log-sum-exp unchanged; attention_forward runs it. The GPU tests skip without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "attention/attention.h"
#include "attention/streaming_kernel.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace elastic::attention;
using namespace elastic::testing;

namespace {

class StreamingAttentionGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

struct Inputs {
  torch::Tensor q, k, v;
};

Inputs random_inputs(int64_t T, int64_t hq, int64_t hkv, int64_t d, torch::ScalarType dtype) {
  return {randn_cuda({T, hq, d}, dtype), randn_cuda({T, hkv, d}, dtype), randn_cuda({T, hkv, d}, dtype)};
}

// Softmax attention with the streaming mask, per sample and head, in fp64 from the rounded inputs:
// out [T, Hq, d] and lse [Hq, T].
AttnForward reference(const Inputs& in, const Packing& pack, MaskSpec mask, double scale) {
  const int64_t Hq = in.q.size(1), G = Hq / in.k.size(1);
  std::vector<torch::Tensor> outs, lses;
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const int64_t s0 = pack.begin(b), n = pack.length(b);
    auto q = in.q.narrow(0, s0, n).to(torch::kFloat64).permute({1, 0, 2});                         // [Hq,n,d]
    auto k = in.k.narrow(0, s0, n).to(torch::kFloat64).repeat_interleave(G, 1).permute({1, 0, 2});  // [Hq,n,d]
    auto v = in.v.narrow(0, s0, n).to(torch::kFloat64).repeat_interleave(G, 1).permute({1, 0, 2});
    auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(q.device());
    auto i = torch::arange(n, i64).unsqueeze(1), j = torch::arange(n, i64).unsqueeze(0);
    auto vis = (j <= i) & ((j < mask.sink) | ((i - j) < mask.window));
    auto sc = torch::matmul(q, k.transpose(1, 2)).mul_(scale).masked_fill_(vis.logical_not(),
                                                                          -std::numeric_limits<double>::infinity());
    auto lse = torch::logsumexp(sc, -1);  // [Hq,n]
    outs.push_back(torch::matmul(torch::exp(sc - lse.unsqueeze(-1)), v).permute({1, 0, 2}));
    lses.push_back(lse);
  }
  return {torch::cat(outs, 0), torch::cat(lses, 1)};
}

// Largest absolute error relative to the largest absolute reference value.
double max_rel_err(const torch::Tensor& a, const torch::Tensor& ref) {
  auto a64 = a.to(torch::kFloat64), r64 = ref.to(torch::kFloat64);
  return ((a64 - r64).abs().max() / r64.abs().max().clamp_min(1e-300)).item<double>();
}

double max_abs_err(const torch::Tensor& a, const torch::Tensor& ref) {
  return (a.to(torch::kFloat64) - ref.to(torch::kFloat64)).abs().max().item<double>();
}

const char* name(torch::ScalarType t) { return t == torch::kHalf ? "fp16" : "bf16"; }

// Runs the kernel into NaN-poisoned outputs and compares with the fp64 reference.
void expect_matches_reference(const std::vector<int64_t>& lengths, int64_t hq, int64_t hkv, int64_t d, MaskSpec mask,
                              double scale, torch::ScalarType dtype) {
  SCOPED_TRACE(std::string(name(dtype)) + " Hq " + std::to_string(hq) + " Hkv " + std::to_string(hkv) + " d " +
               std::to_string(d) + " sink " + std::to_string(mask.sink) + " window " + std::to_string(mask.window) +
               " scale " + std::to_string(scale));
  auto pack = Packing::from_lengths(lengths, torch::kCUDA);
  const auto in = random_inputs(pack.tokens(), hq, hkv, d, dtype);
  ASSERT_TRUE(streaming_kernel_supports(in.q, mask));
  auto out = nan_like(in.q);
  auto lse = torch::full({hq, pack.tokens()}, std::numeric_limits<double>::quiet_NaN(),
                         in.q.options().dtype(torch::kFloat32));
  streaming_attention_kernel_out(out, lse, in.q, in.k, in.v, pack, mask, scale);
  const auto ref = reference(in, pack, mask, scale);
  EXPECT_FALSE(out.isnan().any().item<bool>()) << "output rows left unwritten";
  EXPECT_FALSE(lse.isnan().any().item<bool>()) << "log-sum-exps left unwritten";
  EXPECT_LE(max_rel_err(out, ref.out), 1e-2);
  EXPECT_LE(max_abs_err(lse, ref.lse), 1e-3);
}

}  // namespace

// Sample lengths around every boundary of the walk over key blocks (64 keys, 128 query rows): 1,
// shorter than the sink and than the window, window + sink - 1 (the first row that sees every sink
// key beyond its window), block multiples and their neighbours, and samples longer than several
// windows. Windows of 1 (each row sees itself and the sinks), 16 (inside one block) and longer
// than every other sample; sinks of 0, 100 (not a block multiple) and 64.
TEST_F(StreamingAttentionGpu, MatchesFp64Reference) {
  torch::manual_seed(11);
  const double scale = 1.0 / std::sqrt(128.0);
  const std::vector<MaskSpec> masks = {MaskSpec::streaming(0, 16),   MaskSpec::streaming(100, 16),
                                       MaskSpec::streaming(100, 200), MaskSpec::streaming(64, 128),
                                       MaskSpec::streaming(3, 1),     MaskSpec::streaming(0, 300),
                                       MaskSpec::streaming(100, 1000)};
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    for (MaskSpec mask : masks) {
      const std::vector<int64_t> lengths = {1, 37, mask.window + mask.sink - 1, 64, 129, 100, 255, 700, 2};
      expect_matches_reference(lengths, 8, 2, 128, mask, scale, dtype);
      expect_matches_reference(lengths, 4, 4, 128, mask, scale, dtype);
    }
  }
}

// head_dim 64, and scores sharp enough that each row's softmax is dominated by a few keys (large
// jumps of the running maximum between key blocks).
TEST_F(StreamingAttentionGpu, HeadDim64AndSharpScores) {
  torch::manual_seed(12);
  const std::vector<int64_t> lengths = {300, 1, 65, 513};
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    expect_matches_reference(lengths, 8, 2, 64, MaskSpec::streaming(100, 64), 0.125, dtype);
    expect_matches_reference(lengths, 8, 2, 128, MaskSpec::streaming(100, 64), 1.0, dtype);
    expect_matches_reference(lengths, 8, 8, 64, MaskSpec::streaming(0, 200), 1.0, dtype);
  }
}

// The flash composition (windowed pass, sink-prefix rows, sink pass and merge) gives the same
// output and log-sum-exp, and its backward takes the kernel's (out, lse) unchanged.
TEST_F(StreamingAttentionGpu, MatchesFlashCompositionAndFeedsItsBackward) {
  torch::manual_seed(13);
  auto pack = Packing::from_lengths({3000, 3000, 3000}, torch::kCUDA);
  const auto in = random_inputs(pack.tokens(), 32, 8, 128, torch::kBFloat16);
  const auto mask = MaskSpec::streaming(128, 512);
  const double scale = 1.0 / std::sqrt(128.0);
  ASSERT_TRUE(uses_flash(in.q));
  const auto mine = streaming_attention_kernel(in.q, in.k, in.v, pack, mask, scale);
  const auto flash = flash_streaming_forward(in.q, in.k, in.v, pack, mask, scale);
  // The composition rounds its partial outputs to bf16 before merging them: up to three roundings
  // of 2^-8 apart in an element, hence the wider bound on the largest error.
  EXPECT_LE(rel_err(mine.out, flash.out), 1e-2);
  EXPECT_LE(max_rel_err(mine.out, flash.out), 2e-2);
  EXPECT_LE(max_abs_err(mine.lse, flash.lse), 1e-3);
  const auto dout = randn_cuda(in.q.sizes(), torch::kBFloat16);
  const auto g = attention_backward(dout, in.q, in.k, in.v, mine, pack, mask, scale);
  const auto gf = attention_backward(dout, in.q, in.k, in.v, flash, pack, mask, scale);
  EXPECT_LT(rel_err(g.dq, gf.dq), 1e-2) << "dq";
  EXPECT_LT(rel_err(g.dk, gf.dk), 1e-2) << "dk";
  EXPECT_LT(rel_err(g.dv, gf.dv), 1e-2) << "dv";
}

// attention_forward's streaming path is the kernel, also on contiguous views that start off a
// 16-byte boundary (copied first).
TEST_F(StreamingAttentionGpu, IsWhatAttentionForwardRuns) {
  torch::manual_seed(14);
  auto pack = Packing::from_lengths({700, 1, 300}, torch::kCUDA);
  const auto mask = MaskSpec::streaming(100, 256);
  const auto in = random_inputs(pack.tokens(), 8, 2, 128, torch::kBFloat16);
  const auto mine = streaming_attention_kernel(in.q, in.k, in.v, pack, mask, 0.1);
  const auto lib = attention_forward(in.q, in.k, in.v, pack, mask, 0.1);
  EXPECT_TRUE(torch::equal(mine.out, lib.out));
  EXPECT_TRUE(torch::equal(mine.lse, lib.lse));
  auto shifted = torch::empty({in.q.numel() + 1}, in.q.options()).narrow(0, 1, in.q.numel()).view(in.q.sizes());
  shifted.copy_(in.q);
  ASSERT_TRUE(shifted.is_contiguous());
  ASSERT_NE(reinterpret_cast<uintptr_t>(shifted.data_ptr()) % 16, 0u);
  const auto from_view = attention_forward(shifted, in.k, in.v, pack, mask, 0.1);
  EXPECT_TRUE(torch::equal(mine.out, from_view.out));
}

TEST_F(StreamingAttentionGpu, RejectsWhatItCannotTake) {
  auto pack = Packing::from_lengths({10, 6}, torch::kCUDA);
  const auto mask = MaskSpec::streaming(4, 8);
  const auto in = random_inputs(16, 4, 2, 128, torch::kBFloat16);
  const auto odd = random_inputs(16, 4, 2, 96, torch::kBFloat16);
  EXPECT_FALSE(streaming_kernel_supports(odd.q, mask));
  EXPECT_FALSE(streaming_kernel_supports(in.q, MaskSpec::causal()));
  EXPECT_FALSE(streaming_kernel_supports(in.q.to(torch::kFloat32), mask));
  expect_error([&] { streaming_attention_kernel(odd.q, odd.k, odd.v, pack, mask, 0.1); }, {"head_dim", "96"});
  expect_error([&] { streaming_attention_kernel(in.q, in.k.to(torch::kHalf), in.v, pack, mask, 0.1); }, {"k must"});
  expect_error([&] { streaming_attention_kernel(in.q, in.k, in.v.narrow(1, 0, 1), pack, mask, 0.1); }, {"v must"});
  const auto three = random_inputs(16, 4, 3, 128, torch::kBFloat16);
  expect_error([&] { streaming_attention_kernel(in.q, three.k, three.v, pack, mask, 0.1); }, {"multiple of kv_heads"});
  expect_error([&] { streaming_attention_kernel(in.q, in.k, in.v, pack, MaskSpec::causal(), 0.1); }, {"streaming mask"});
  auto lse = torch::empty({16, 4}, in.q.options().dtype(torch::kFloat32));
  expect_error([&] { streaming_attention_kernel_out(nan_like(in.q), lse, in.q, in.k, in.v, pack, mask, 0.1); },
               {"lse", "[4, 16]"});
}

// On the CPU (and in CPU builds) callers always fall back.
TEST(StreamingAttentionKernel, DeclinesCpuTensors) {
  auto q = torch::zeros({8, 4, 128}, torch::kBFloat16);
  EXPECT_FALSE(streaming_kernel_supports(q, MaskSpec::streaming(4, 16)));
}
