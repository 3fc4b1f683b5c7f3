// gather_heads / scatter_heads / the log-sum-exp pair (attention/head_rows.h) against a reference
// written here with one narrow-and-select copy per head (no indexing operator), on the CPU (the
// ATen path) and, where a GPU exists, through kernels/head_rows.cu in bf16 and fp32: outputs
// poisoned with NaN, 16-byte and one-element paths (d = 15, a storage offset of one element),
// padding rows, head-major output, strided sources and more heads than the kernel takes.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "attention/head_rows.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace elastic::attention;
using namespace elastic::testing;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

torch::Tensor host_list(const std::vector<int64_t>& h) { return torch::tensor(h, torch::TensorOptions().dtype(torch::kInt64)); }

// [rows, m * G, d]: rows [s0, s0 + n) of t at heads, then zeros; head_major: [m, rows, G, d].
torch::Tensor gather_ref(const torch::Tensor& t, int64_t s0, int64_t n, int64_t rows, const std::vector<int64_t>& heads,
                         int64_t Hkv, bool head_major) {
  const int64_t m = static_cast<int64_t>(heads.size()), G = t.size(1) / Hkv, d = t.size(2);
  auto out = torch::zeros({m, rows, G, d}, t.options());
  auto src = t.narrow(0, s0, n).reshape({n, Hkv, G, d});
  for (int64_t j = 0; j < m; ++j) out.select(0, j).narrow(0, 0, n).copy_(src.select(1, heads[static_cast<size_t>(j)]));
  return head_major ? out : out.permute({1, 0, 2, 3}).reshape({rows, m * G, d});
}

// dst with rows [s0, s0 + n) at heads set to (or increased by) src [n, m * G, d], in fp64.
torch::Tensor scatter_ref(const torch::Tensor& dst, const torch::Tensor& src, int64_t s0, int64_t n,
                          const std::vector<int64_t>& heads, int64_t Hkv, bool accumulate) {
  const int64_t m = static_cast<int64_t>(heads.size()), G = dst.size(1) / Hkv, d = dst.size(2);
  auto out = dst.to(torch::kFloat64).clone();
  auto rows = out.narrow(0, s0, n).view({n, Hkv, G, d});
  auto vals = src.to(torch::kFloat64).reshape({n, m, G, d});
  for (int64_t j = 0; j < m; ++j) {
    auto r = rows.select(1, heads[static_cast<size_t>(j)]);
    accumulate ? r.add_(vals.select(1, j)) : r.copy_(vals.select(1, j));
  }
  return out;
}

// The same for a log-sum-exp [Hkv * G, T]: [m * G, n].
torch::Tensor lse_ref(const torch::Tensor& lse, int64_t s0, int64_t n, const std::vector<int64_t>& heads, int64_t Hkv) {
  const int64_t G = lse.size(0) / Hkv;
  std::vector<torch::Tensor> parts;
  for (auto h : heads) parts.push_back(lse.narrow(0, h * G, G).narrow(1, s0, n));
  return torch::cat(parts, 0);
}

struct Case {
  int64_t T, Hkv, G, d, s0, n, rows;
  std::vector<int64_t> heads;
  int64_t offset;  // storage offset of every input: 1 sends the kernel down its one-element path
};

std::string name(const Case& c, torch::ScalarType dtype) {
  return "T " + std::to_string(c.T) + " Hkv " + std::to_string(c.Hkv) + " G " + std::to_string(c.G) + " d " +
         std::to_string(c.d) + " rows [" + std::to_string(c.s0) + ", +" + std::to_string(c.n) + ") padded to " +
         std::to_string(c.rows) + " heads " + c10::str(c10::IntArrayRef(c.heads)) + " offset " +
         std::to_string(c.offset) + " " + c10::toString(dtype);
}

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {3000, 8, 4, 128, 1100, 1000, 1024, {5, 1, 6}, 0},  // q rows of Qwen3 heads, out of order, padded
      {3000, 8, 1, 128, 0, 3000, 3072, {7, 0, 3, 2}, 0},  // k rows, the whole pack
      {700, 8, 4, 128, 37, 500, 500, {2}, 1},             // unaligned: one-element path, no padding
      {333, 5, 3, 15, 100, 33, 128, {4, 0}, 0},           // d = 15: one-element path
      {200, 80, 1, 16, 10, 50, 64, {}, 0},                // 70 of 80 heads (filled below): ATen on CUDA
  };
  return c;
}

std::vector<int64_t> heads_of(const Case& c) {
  if (!c.heads.empty()) return c.heads;
  std::vector<int64_t> h;
  for (int64_t k = c.Hkv - 1; k >= 10; --k) h.push_back(k);
  return h;
}

// Every case, both ways, on `dev` in `dtype`: gathers are bit copies, so they equal the reference
// exactly; a scatter equals it exactly, an accumulating one within one rounding of dtype.
void check_cases(torch::Device dev, torch::ScalarType dtype) {
  torch::manual_seed(41);
  for (const auto& c : cases()) {
    SCOPED_TRACE(name(c, dtype));
    const auto heads = heads_of(c);
    const auto opts = torch::TensorOptions().dtype(dtype).device(dev);
    const int64_t m = static_cast<int64_t>(heads.size()), Hq = c.Hkv * c.G;
    auto rnd = [&](at::IntArrayRef shape) { return placed(torch::randn(shape, opts.dtype(torch::kFloat32)).to(dtype), c.offset); };
    auto t = rnd({c.T, Hq, c.d});
    for (bool head_major : {false, true}) {
      auto got = gather_heads(t, c.s0, c.n, c.rows, host_list(heads), c.Hkv, head_major);
      auto want = gather_ref(t, c.s0, c.n, c.rows, heads, c.Hkv, head_major);
      ASSERT_EQ(got.sizes(), want.sizes()) << "head_major " << head_major;
      EXPECT_TRUE(got.is_contiguous());
      EXPECT_TRUE(torch::equal(got, want)) << "gather, head_major " << head_major;
    }

    // Scatter into a destination whose selected rows are poisoned: every other element must keep its
    // value. The source is a view with rows c.rows apart, as cuDNN's outputs are.
    auto src = rnd({c.rows, m * c.G, c.d}).narrow(0, 0, c.n);
    auto dst0 = rnd({c.T, Hq, c.d});
    auto poisoned = placed(scatter_ref(dst0, torch::full({c.n, m * c.G, c.d}, kNaN), c.s0, c.n, heads, c.Hkv, false).to(dtype), c.offset);
    scatter_heads(poisoned, src, c.s0, c.n, host_list(heads), c.Hkv, /*accumulate=*/false);
    EXPECT_TRUE(torch::equal(poisoned.to(torch::kFloat64), scatter_ref(dst0, src, c.s0, c.n, heads, c.Hkv, false))) << "scatter";
    auto acc = placed(dst0, c.offset);
    scatter_heads(acc, src, c.s0, c.n, host_list(heads), c.Hkv, /*accumulate=*/true);
    auto sum = scatter_ref(dst0, src, c.s0, c.n, heads, c.Hkv, true);
    EXPECT_TRUE(torch::equal(acc, sum.to(dtype))) << "accumulate: the sum rounded once to " << c10::toString(dtype);

    // Log-sum-exp columns: fp32 on the GPU, as attention writes it.
    auto lse_opts = opts.dtype(dev.is_cuda() ? torch::kFloat32 : torch::kFloat64);
    auto lse = torch::randn({Hq, c.T}, lse_opts);
    auto l = gather_lse_heads(lse, c.s0, c.n, host_list(heads), c.Hkv);
    EXPECT_TRUE(torch::equal(l, lse_ref(lse, c.s0, c.n, heads, c.Hkv))) << "lse gather";
    auto lsrc = torch::randn({m * c.G, c.n + 3}, lse_opts).narrow(1, 0, c.n);  // rows c.n + 3 apart
    auto ldst = lse.clone();
    scatter_lse_heads(ldst, lsrc, c.s0, c.n, host_list(heads), c.Hkv);
    EXPECT_TRUE(torch::equal(lse_ref(ldst, c.s0, c.n, heads, c.Hkv), lsrc)) << "lse scatter";
    auto untouched = torch::ones_like(lse, torch::kBool);
    for (auto h : heads) untouched.narrow(0, h * c.G, c.G).narrow(1, c.s0, c.n).fill_(false);
    EXPECT_TRUE(torch::equal(ldst.masked_select(untouched), lse.masked_select(untouched))) << "lse scatter wrote elsewhere";
  }
}

}  // namespace

TEST(HeadRows, CpuEqualsTheReference) {
  for (auto dtype : {torch::kFloat64, torch::kFloat32, torch::kBFloat16}) check_cases(torch::kCPU, dtype);
}

TEST(HeadRows, EveryHeadInOrder) {
  EXPECT_TRUE(every_head_in_order(torch::Tensor(), 4));
  EXPECT_TRUE(every_head_in_order(host_list({0, 1, 2, 3}), 4));
  EXPECT_FALSE(every_head_in_order(host_list({1, 0, 2, 3}), 4));
  EXPECT_FALSE(every_head_in_order(host_list({0, 1, 2}), 4));
}

TEST(HeadRows, RejectsBadArgumentsNamingThem) {
  auto t = torch::randn({100, 8, 16});
  expect_error([&] { gather_heads(t, 0, 10, 16, host_list({1, 1}), 4); }, {"gather_heads", "head 1", "twice"});
  expect_error([&] { gather_heads(t, 0, 10, 16, host_list({4}), 4); }, {"gather_heads", "head 4", "[0, 4)"});
  expect_error([&] { gather_heads(t, 95, 10, 16, host_list({0}), 4); }, {"gather_heads", "rows [95, 105)", "100"});
  expect_error([&] { gather_heads(t, 0, 10, 9, host_list({0}), 4); }, {"gather_heads", "rows 9", "10"});
  expect_error([&] { gather_heads(t, 0, 10, 16, host_list({0}).to(torch::kInt32), 4); }, {"gather_heads", "int64 CPU"});
  expect_error([&] { gather_heads(t.transpose(1, 2), 0, 10, 16, host_list({0}), 4); }, {"gather_heads", "t must be", "strides"});
  expect_error([&] { gather_heads(t, 0, 10, 16, host_list({0}), 3); }, {"gather_heads", "kv_heads=3"});
  expect_error([&] { scatter_heads(t, torch::zeros({10, 4, 16}), 0, 10, host_list({0}), 4, false); },
               {"scatter_heads", "src must be [10, 2, 16]"});
  expect_error([&] { scatter_heads(t, torch::zeros({10, 2, 16}, torch::kFloat64), 0, 10, host_list({0}), 4, false); },
               {"scatter_heads", "dtype"});
  auto lse = torch::randn({8, 100});
  expect_error([&] { gather_lse_heads(lse.t(), 0, 10, host_list({0}), 4); }, {"gather_lse_heads", "stride(1) == 1"});
  expect_error([&] { scatter_lse_heads(lse, torch::zeros({3, 10}), 0, 10, host_list({0}), 4); },
               {"scatter_lse_heads", "src must be [2, 10]"});
}

TEST(HeadRowsGpu, KernelEqualsTheReference) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (auto dtype : {torch::kBFloat16, torch::kFloat32}) check_cases(torch::kCUDA, dtype);
}

TEST(HeadRowsGpu, GatherWritesEveryElementOfAPoisonedAllocation) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // The caching allocator hands the freed NaN block back to the next gather of the same size: the
  // padding rows must be written as zeros, not left as whatever the block held.
  const auto opts = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16);
  auto t = torch::randn({4000, 32, 128}, opts);
  const int64_t s0 = 123, n = 2000, rows = 2048;
  const std::vector<int64_t> heads = {6, 2, 3};
  { auto poison = torch::full({rows, 12, 128}, kNaN, opts); }
  auto got = gather_heads(t, s0, n, rows, host_list(heads), 8);
  EXPECT_FALSE(got.isnan().any().item<bool>());
  EXPECT_TRUE(torch::equal(got, gather_ref(t, s0, n, rows, heads, 8, false)));
}
