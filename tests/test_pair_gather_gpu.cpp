// gather_pairs / scatter_pairs (kernels/pair_gather.cu) against the ATen advanced-indexing
// composition they replace (x.index({tok, head}), index_put_), on fresh random inputs and random
// distinct (token, kv head) rows in random order. Kernel outputs are poisoned with NaN first, so
// an element the kernel fails to write shows. Rows of 512 and 128 elements take the 16-byte path;
// 15 and 1 elements, and a storage offset of one element, take the scalar path. The GPU tests
// skip without CUDA; the CPU tests (the composition path and the argument checks) always run.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/hybrid.h"
#include "attention/hybrid_blend.h"
#include "attention/pair_gather.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace elastic::attention;
using namespace elastic::testing;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

class PairGatherGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

// n distinct (token, head) pairs of a [T, H, ...] tensor, in random order.
std::pair<torch::Tensor, torch::Tensor> random_pairs(int64_t T, int64_t H, int64_t n, torch::Device dev) {
  auto flat = torch::randperm(T * H, torch::TensorOptions().dtype(torch::kInt64)).narrow(0, 0, n);
  return {flat.div(H, "floor").to(dev).contiguous(), flat.remainder(H).to(dev).contiguous()};
}

c10::List<std::optional<torch::Tensor>> put_index(const torch::Tensor& tok, const torch::Tensor& head) {
  c10::List<std::optional<torch::Tensor>> l;
  l.push_back(tok);
  l.push_back(head);
  return l;
}

// The compositions, written out here rather than taken from the library.
torch::Tensor gather_ref(const torch::Tensor& x, const torch::Tensor& tok, const torch::Tensor& head) {
  return x.index({tok, head}).contiguous();
}

torch::Tensor scatter_ref(const torch::Tensor& dst, const torch::Tensor& src, const torch::Tensor& tok,
                          const torch::Tensor& head, bool accumulate) {
  auto d = dst.clone();
  d.index_put_(put_index(tok, head), src, accumulate);
  return d;
}

std::vector<int64_t> concat(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::string str(const std::vector<int64_t>& v) { return c10::str(c10::IntArrayRef(v)); }

}  // namespace

TEST_F(PairGatherGpu, GatherAndScatterMatchTheComposition) {
  torch::manual_seed(31);
  struct Case {
    int64_t tokens, heads;
    std::vector<int64_t> row;  // trailing dims: R is their product
    int64_t pairs, offset;
  };
  const std::vector<Case> cases = {
      {4099, 8, {4, 128}, 4099 * 4, 0},  // q rows, R = G * d = 512: 16-byte path
      {4099, 8, {128}, 4099 * 4, 0},     // k rows, R = d = 128
      {333, 7, {3, 5}, 1000, 0},         // R = 15: scalar path
      {1000, 8, {4, 128}, 3000, 1},      // unaligned storage: scalar path at R = 512
      {64, 4, {}, 100, 0},               // R = 1
      {9, 2, {8}, 18, 0},                // every pair; R = 8 is one 16-byte chunk in bf16, two in fp32
      {50, 4, {128}, 0, 0},              // no pairs
  };
  for (const auto& c : cases) {
    for (auto dtype : {torch::kBFloat16, torch::kFloat32}) {
      SCOPED_TRACE("T " + std::to_string(c.tokens) + " H " + std::to_string(c.heads) + " row " + str(c.row) +
                   " pairs " + std::to_string(c.pairs) + " offset " + std::to_string(c.offset) + " " +
                   c10::toString(dtype));
      const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(dtype);
      const auto full = concat({c.tokens, c.heads}, c.row), dense = concat({c.pairs}, c.row);
      auto [tok, head] = random_pairs(c.tokens, c.heads, c.pairs, torch::kCUDA);
      auto rnd = [&](const std::vector<int64_t>& shape) {
        return placed(torch::randn(shape, opts.dtype(torch::kFloat32)).to(dtype), c.offset);
      };

      // Gather: a bit copy, so exactly the composition.
      auto x = rnd(full);
      auto ref = gather_ref(x, tok, head);
      auto out = placed(torch::full(dense, kNaN, opts), c.offset);
      gather_pairs_out(out, x, tok, head);
      EXPECT_TRUE(torch::equal(out, ref)) << "gather_pairs_out";
      auto fresh = gather_pairs(x, tok, head);
      EXPECT_EQ(fresh.sizes(), c10::IntArrayRef(dense));
      EXPECT_TRUE(torch::equal(fresh, ref)) << "gather_pairs";

      // Scatter: the selected rows poisoned first; every other row must keep its value.
      auto dst0 = rnd(full), src = rnd(dense);
      auto dst = placed(dst0, c.offset);
      dst.index_put_(put_index(tok, head), torch::full(dense, kNaN, opts), false);
      scatter_pairs(dst, src, tok, head, /*accumulate=*/false);
      EXPECT_TRUE(torch::equal(dst, scatter_ref(dst0, src, tok, head, false))) << "scatter";

      // Accumulate: the fp32 sum rounded once, bit for bit; the bf16 composition within its rounding.
      auto acc = placed(dst0, c.offset);
      scatter_pairs(acc, src, tok, head, /*accumulate=*/true);
      auto once = scatter_ref(dst0.to(torch::kFloat32), src.to(torch::kFloat32), tok, head, true).to(dtype);
      EXPECT_TRUE(torch::equal(acc, once)) << "accumulate vs fp32 sum rounded once";
      auto composed = scatter_ref(dst0, src, tok, head, true);
      const double rtol = dtype == torch::kBFloat16 ? 1.0 / 128 : 1e-6;
      EXPECT_TRUE(torch::allclose(acc.to(torch::kFloat64), composed.to(torch::kFloat64), rtol, 1e-6))
          << "accumulate vs composition, max diff "
          << (acc.to(torch::kFloat64) - composed.to(torch::kFloat64)).abs().max().item<double>();
    }
  }
}

TEST_F(PairGatherGpu, RejectsIndicesOnAnotherDevice) {
  auto x = torch::randn({10, 4, 8}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16));
  auto tok = torch::tensor({0, 3, 9}, torch::kInt64), head = torch::tensor({1, 0, 3}, torch::kInt64);
  expect_error([&] { gather_pairs(x, tok, head.cuda()); }, {"gather_pairs", "tok", "cuda"});
  expect_error([&] { scatter_pairs(x, torch::zeros({3, 8}, x.options()), tok.cuda(), head, false); },
               {"scatter_pairs", "head", "cuda"});
}

// Hybrid attention through the kernels: the gathered backward equals the every-head backward
// (soft weights with exact 0s and 1s, so each branch selects some pairs but not all, and pairs
// with 0 < s < 1 are in both branches: the accumulating scatter), and inference with hard
// decisions (gather and copying scatter) equals the blend of both full branches.
TEST_F(PairGatherGpu, HybridAttentionThroughTheKernels) {
  torch::manual_seed(32);
  auto pack = Packing::from_lengths({700, 64, 1500}, torch::kCUDA);
  const int64_t T = pack.tokens(), Hq = 16, Hkv = 4, d = 128;
  const auto bf16 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  const auto f32 = bf16.dtype(torch::kFloat32);
  auto q = torch::randn({T, Hq, d}, bf16), k = torch::randn({T, Hkv, d}, bf16), v = torch::randn({T, Hkv, d}, bf16);
  auto w = torch::randn({T, Hq, d}, f32);
  auto soft = torch::tensor({{1., 0.3, 0., 0.7}, {0., 0., 0.5, 1.}, {0.2, 1., 1., 0.}}, f32);
  const MaskSpec ssa = MaskSpec::streaming(16, 128);
  auto run = [&](int64_t gather_min_len) {
    set_gather_min_len(gather_min_len);
    auto qg = q.clone().requires_grad_(), kg = k.clone().requires_grad_(), vg = v.clone().requires_grad_();
    auto sg = soft.clone().requires_grad_();
    auto out = hybrid_attention(qg, kg, vg, sg, pack, ssa, 0.088);
    (out.to(torch::kFloat32) * w).sum().backward();
    return std::vector<torch::Tensor>{out.detach(), qg.grad(), kg.grad(), vg.grad(), sg.grad()};
  };
  const int64_t saved = gather_min_len();
  auto gathered = run(0), every = run(int64_t{1} << 40);
  const char* names[] = {"out", "dq", "dk", "dv", "ds"};
  for (int i = 0; i < 5; ++i) {
    EXPECT_FALSE(gathered[i].isnan().any().item<bool>()) << names[i];
    EXPECT_LT(rel_err(gathered[i], every[i]), 2e-2) << names[i];
  }

  const torch::NoGradGuard no_grad;
  auto hard = torch::tensor({{1., 0., 0., 1.}, {0., 0., 0., 0.}, {1., 1., 0., 1.}}, f32);
  auto fa = attention_forward(q, k, v, pack, MaskSpec::causal(), 0.088).out;
  auto sa = attention_forward(q, k, v, pack, ssa, 0.088).out;
  for (int64_t gather_min_len : {int64_t{0}, int64_t{1} << 40}) {  // selected branches, then both blended
    set_gather_min_len(gather_min_len);
    auto fast = hybrid_attention(q, k, v, hard, pack, ssa, 0.088);
    EXPECT_FALSE(fast.isnan().any().item<bool>());
    EXPECT_LT(rel_err(fast, hybrid_blend_composed(fa, sa, hard, pack)), 2e-2) << "forward, gather_min_len " << gather_min_len;
  }
  set_gather_min_len(saved);
}

TEST(PairGather, CpuEqualsTheComposition) {
  torch::manual_seed(33);
  const int64_t T = 37, H = 4, n = 70;
  const std::vector<std::vector<int64_t>> rows = {{4, 8}, {8}, {3, 5}, {}};
  for (auto dtype : {torch::kFloat64, torch::kFloat32, torch::kBFloat16}) {
    for (const auto& row : rows) {
      SCOPED_TRACE(std::string(c10::toString(dtype)) + " row " + str(row));
      const auto opts = torch::TensorOptions().dtype(dtype);
      const auto full = concat({T, H}, row), dense = concat({n}, row);
      auto [tok, head] = random_pairs(T, H, n, torch::kCPU);
      auto x = torch::randn(full, opts);
      auto ref = gather_ref(x, tok, head);
      EXPECT_TRUE(torch::equal(gather_pairs(x, tok, head), ref));
      auto out = torch::full(dense, kNaN, opts);
      gather_pairs_out(out, x, tok, head);
      EXPECT_TRUE(torch::equal(out, ref));
      auto dst0 = torch::randn(full, opts), src = torch::randn(dense, opts);
      for (bool accumulate : {false, true}) {
        auto dst = dst0.clone();
        scatter_pairs(dst, src, tok, head, accumulate);
        EXPECT_TRUE(torch::equal(dst, scatter_ref(dst0, src, tok, head, accumulate))) << "accumulate " << accumulate;
      }
    }
  }
  // Not differentiable: no autograd history, also on the composition path.
  auto x = torch::randn({5, 2, 3}).requires_grad_();
  auto [tok, head] = random_pairs(5, 2, 4, torch::kCPU);
  EXPECT_FALSE(gather_pairs(x, tok, head).requires_grad());
}

TEST(PairGather, BadArgumentsNameTheArgument) {
  auto x = torch::randn({10, 4, 8});
  auto tok = torch::tensor({0, 3, 9}, torch::kInt64), head = torch::tensor({1, 0, 3}, torch::kInt64);
  auto src = torch::randn({3, 8});
  expect_error([&] { gather_pairs(x, tok.to(torch::kInt32), head); }, {"gather_pairs", "tok", "int64"});
  expect_error([&] { gather_pairs(x.transpose(0, 1), tok, head); }, {"gather_pairs", "x", "not contiguous"});
  expect_error([&] { gather_pairs(x.flatten(), tok, head); }, {"gather_pairs", "x", "[tokens, kv_heads"});
  expect_error([&] { gather_pairs(x, tok, head.narrow(0, 0, 2)); }, {"gather_pairs", "head", "rows=3"});
  expect_error([&] { gather_pairs_out(torch::empty({3, 9}), x, tok, head); }, {"gather_pairs", "out", "[3, 8]"});
  expect_error([&] { scatter_pairs(x, src.to(torch::kFloat64), tok, head, true); }, {"scatter_pairs", "src", "Float"});
  expect_error([&] { scatter_pairs(x, src.narrow(0, 0, 2), tok, head, false); }, {"scatter_pairs", "src", "[3, 8]"});
  expect_error([&] { scatter_pairs(x, torch::randn({8, 3}).t(), tok, head, false); }, {"src", "not contiguous"});
  expect_error([&] { scatter_pairs(x.transpose(0, 1), src, tok, head, false); }, {"scatter_pairs", "dst"});
  expect_error([&] { scatter_pairs(x, src, tok, head.to(torch::kInt32), false); }, {"scatter_pairs", "head", "int64"});
}
