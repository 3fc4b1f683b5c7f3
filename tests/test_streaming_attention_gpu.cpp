// The one-launch streaming attention forward (kernels/streaming_attention.cu) against a brute-force
// fp64 reference on fresh random inputs, with outputs poisoned with NaN before each run, and
// against the flash composition it replaced (flash_streaming_forward), whose backward must take its
// output and log-sum-exp unchanged; attention_forward runs it. The backward kernels
// (kernels/streaming_attention_bwd.cu) against the fp64 gradients and attention_backward's flash
// composition. The GPU tests skip without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

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
  std::vector<torch::Tensor> outs, lses;
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const auto a = reference_sample_attention(in.q, in.k, in.v, pack.begin(b), pack.length(b), mask, scale);
    outs.push_back(torch::matmul(a.p, a.v).permute({1, 0, 2}));
    lses.push_back(a.lse);
  }
  return {torch::cat(outs, 0), torch::cat(lses, 1)};
}

// Its gradients in fp64 by the explicit formulas: dS = P (dout v^T - rowsum(dout * out)),
// dq = scale dS k, dk = scale dS^T q and dv = P^T dout, the last two summed over the query heads
// of each kv head.
AttnGrads reference_backward(const torch::Tensor& dout, const Inputs& in, const Packing& pack, MaskSpec mask,
                             double scale) {
  const int64_t Hkv = in.k.size(1), G = in.q.size(1) / Hkv, d = in.q.size(2);
  std::vector<torch::Tensor> dqs, dks, dvs;
  auto per_kv_head = [&](const torch::Tensor& t, int64_t n) {  // [Hq, n, d] -> [n, Hkv, d]
    return t.view({Hkv, G, n, d}).sum(1).permute({1, 0, 2});
  };
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const int64_t n = pack.length(b);
    const auto a = reference_sample_attention(in.q, in.k, in.v, pack.begin(b), n, mask, scale);
    auto g = dout.narrow(0, pack.begin(b), n).to(torch::kFloat64).permute({1, 0, 2});  // [Hq,n,d]
    auto delta = (g * torch::matmul(a.p, a.v)).sum(-1, true);
    auto ds = a.p * (torch::matmul(g, a.v.transpose(1, 2)) - delta);
    dqs.push_back(torch::matmul(ds, a.k).mul_(scale).permute({1, 0, 2}));
    dks.push_back(per_kv_head(torch::matmul(ds.transpose(1, 2), a.q).mul_(scale), n));
    dvs.push_back(per_kv_head(torch::matmul(a.p.transpose(1, 2), g), n));
  }
  return {torch::cat(dqs, 0), torch::cat(dks, 0), torch::cat(dvs, 0)};
}

// Largest absolute error relative to the largest absolute reference value.
double max_rel_err(const torch::Tensor& a, const torch::Tensor& ref) {
  auto a64 = a.to(torch::kFloat64), r64 = ref.to(torch::kFloat64);
  return ((a64 - r64).abs().max() / r64.abs().max().clamp_min(1e-300)).item<double>();
}

double max_abs_err(const torch::Tensor& a, const torch::Tensor& ref) {
  return (a.to(torch::kFloat64) - ref.to(torch::kFloat64)).abs().max().item<double>();
}

// What a reference comparison ran, for its failure messages.
std::string case_name(const std::string& what, torch::ScalarType dtype, int64_t hq, int64_t hkv, int64_t d,
                      MaskSpec mask, double scale) {
  return what + (dtype == torch::kHalf ? "fp16" : "bf16") + " Hq " + std::to_string(hq) + " Hkv " +
         std::to_string(hkv) + " d " + std::to_string(d) + " sink " + std::to_string(mask.sink) + " window " +
         std::to_string(mask.window) + " scale " + std::to_string(scale);
}

// Runs the kernel into NaN-poisoned outputs and compares with the fp64 reference.
void expect_matches_reference(const std::vector<int64_t>& lengths, int64_t hq, int64_t hkv, int64_t d, MaskSpec mask,
                              double scale, torch::ScalarType dtype) {
  SCOPED_TRACE(case_name("", dtype, hq, hkv, d, mask, scale));
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

// The backward kernels on the kernel forward's (out, lse), against the fp64 gradients.
void expect_backward_matches_reference(const std::vector<int64_t>& lengths, int64_t hq, int64_t hkv, int64_t d,
                                       MaskSpec mask, double scale, torch::ScalarType dtype) {
  SCOPED_TRACE(case_name("backward ", dtype, hq, hkv, d, mask, scale));
  auto pack = Packing::from_lengths(lengths, torch::kCUDA);
  const auto in = random_inputs(pack.tokens(), hq, hkv, d, dtype);
  const auto dout = randn_cuda(in.q.sizes(), dtype);
  const auto fwd = streaming_attention_kernel(in.q, in.k, in.v, pack, mask, scale);
  const auto g = streaming_attention_kernel_backward(dout, in.q, in.k, in.v, fwd, pack, mask, scale);
  const auto ref = reference_backward(dout, in, pack, mask, scale);
  for (const auto& [grad, want, what] : {std::tuple{g.dq, ref.dq, "dq"}, std::tuple{g.dk, ref.dk, "dk"},
                                         std::tuple{g.dv, ref.dv, "dv"}}) {
    EXPECT_FALSE(grad.isnan().any().item<bool>()) << what << " has NaNs";
    EXPECT_LE(max_rel_err(grad, want), 1e-2) << what;
  }
}

// A comparison with the fp64 reference: forward or backward.
using Check = void (*)(const std::vector<int64_t>& lengths, int64_t hq, int64_t hkv, int64_t d, MaskSpec mask,
                       double scale, torch::ScalarType dtype);

// Every mask in bf16 and fp16, with G = 4 and G = 1, on the lengths each mask's boundaries call for.
void sweep(const std::vector<MaskSpec>& masks, double scale, Check check,
           const std::function<std::vector<int64_t>(MaskSpec)>& lengths) {
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    for (MaskSpec mask : masks) {
      check(lengths(mask), 8, 2, 128, mask, scale, dtype);
      check(lengths(mask), 4, 4, 128, mask, scale, dtype);
    }
  }
}

// head_dim 64, and scores sharp enough that each row's softmax is dominated by a few keys (large
// jumps of the running maximum between key blocks).
void head_dim_64_and_sharp_scores(Check check) {
  const std::vector<int64_t> lengths = {300, 1, 65, 513};
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    check(lengths, 8, 2, 64, MaskSpec::streaming(100, 64), 0.125, dtype);
    check(lengths, 8, 2, 128, MaskSpec::streaming(100, 64), 1.0, dtype);
    check(lengths, 8, 8, 64, MaskSpec::streaming(0, 200), 1.0, dtype);
  }
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
  sweep(masks, scale, expect_matches_reference,
        [](MaskSpec m) { return std::vector<int64_t>{1, 37, m.window + m.sink - 1, 64, 129, 100, 255, 700, 2}; });
}

TEST_F(StreamingAttentionGpu, HeadDim64AndSharpScores) {
  torch::manual_seed(12);
  head_dim_64_and_sharp_scores(expect_matches_reference);
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
  const auto shifted = placed(in.q, 1);
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

// The backward, on the forward test's boundaries (the backward walks 128-key blocks against 64-row
// query blocks): sinks of 0, 100 (inside a key block) and 128 (one block), windows inside one
// query block, across several and longer than most samples.
TEST_F(StreamingAttentionGpu, BackwardMatchesFp64Reference) {
  torch::manual_seed(21);
  const double scale = 1.0 / std::sqrt(128.0);
  const std::vector<MaskSpec> masks = {MaskSpec::streaming(0, 16),    MaskSpec::streaming(100, 16),
                                       MaskSpec::streaming(128, 16),  MaskSpec::streaming(100, 200),
                                       MaskSpec::streaming(128, 200), MaskSpec::streaming(0, 1000),
                                       MaskSpec::streaming(100, 1000)};
  sweep(masks, scale, expect_backward_matches_reference,
        [](MaskSpec m) { return std::vector<int64_t>{1, 37, m.window + m.sink - 1, 64, 129, 255, 700}; });
}

TEST_F(StreamingAttentionGpu, BackwardHeadDim64AndSharpScores) {
  torch::manual_seed(22);
  head_dim_64_and_sharp_scores(expect_backward_matches_reference);
}

// A sample long enough that the sink blocks' rows split into many chunks of separate CTAs, whose
// dK and dV of the sink keys must add up.
TEST_F(StreamingAttentionGpu, BackwardSinkKeysOverManyChunks) {
  torch::manual_seed(23);
  const double scale = 1.0 / std::sqrt(128.0);
  expect_backward_matches_reference({5000, 300}, 4, 1, 128, MaskSpec::streaming(128, 256), scale, torch::kBFloat16);
  expect_backward_matches_reference({5000}, 4, 2, 64, MaskSpec::streaming(100, 256), scale, torch::kHalf);
}

// The flash composition attention_backward runs gives the same gradients. It rounds its partial
// gradients to bf16 before adding them, hence the norm-wise bound and the wider bound on the
// largest error.
TEST_F(StreamingAttentionGpu, BackwardMatchesFlashComposition) {
  torch::manual_seed(24);
  auto pack = Packing::from_lengths({3000, 3000, 3000}, torch::kCUDA);
  const auto in = random_inputs(pack.tokens(), 32, 8, 128, torch::kBFloat16);
  const auto mask = MaskSpec::streaming(128, 512);
  const double scale = 1.0 / std::sqrt(128.0);
  const auto fwd = streaming_attention_kernel(in.q, in.k, in.v, pack, mask, scale);
  const auto dout = randn_cuda(in.q.sizes(), torch::kBFloat16);
  const auto mine = streaming_attention_kernel_backward(dout, in.q, in.k, in.v, fwd, pack, mask, scale);
  const auto flash = attention_backward(dout, in.q, in.k, in.v, fwd, pack, mask, scale);
  EXPECT_LE(rel_err(mine.dq, flash.dq), 1e-2) << "dq";
  EXPECT_LE(rel_err(mine.dk, flash.dk), 1e-2) << "dk";
  EXPECT_LE(rel_err(mine.dv, flash.dv), 1e-2) << "dv";
  EXPECT_LE(max_rel_err(mine.dq, flash.dq), 2e-2) << "dq";
  EXPECT_LE(max_rel_err(mine.dk, flash.dk), 2e-2) << "dk";
  EXPECT_LE(max_rel_err(mine.dv, flash.dv), 2e-2) << "dv";
}

TEST_F(StreamingAttentionGpu, BackwardRejectsWhatItCannotTake) {
  auto pack = Packing::from_lengths({10, 6}, torch::kCUDA);
  const auto mask = MaskSpec::streaming(4, 8);
  const auto in = random_inputs(16, 4, 2, 128, torch::kBFloat16);
  const auto fwd = streaming_attention_kernel(in.q, in.k, in.v, pack, mask, 0.1);
  const auto narrow = in.q.narrow(1, 0, 2);
  expect_error([&] { streaming_attention_kernel_backward(narrow, in.q, in.k, in.v, fwd, pack, mask, 0.1); },
               {"streaming_attention_kernel_backward", "dout"});
  const AttnForward transposed{fwd.out, fwd.lse.t()};
  expect_error([&] { streaming_attention_kernel_backward(in.q, in.q, in.k, in.v, transposed, pack, mask, 0.1); },
               {"streaming_attention_kernel_backward", "lse"});
}

// On the CPU (and in CPU builds) callers always fall back.
TEST(StreamingAttentionKernel, DeclinesCpuTensors) {
  auto q = torch::zeros({8, 4, 128}, torch::kBFloat16);
  EXPECT_FALSE(streaming_kernel_supports(q, MaskSpec::streaming(4, 16)));
}
