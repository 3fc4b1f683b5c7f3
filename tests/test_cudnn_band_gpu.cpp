// Band-causal attention through cuDNN's fused SDPA (attention/cudnn_band.h) against the exact
// blocked path in fp64, on strided row slices of packed buffers with outputs poisoned with NaN; and
// its backward fed a log-sum-exp over more keys than the band (sink + window), which must give the
// band keys' share of the merged attention's gradient. Skipped without a GPU or a cuDNN frontend.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "attention/attention.h"
#include "attention/cudnn_band.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace elastic::attention;
using namespace elastic::testing;

namespace {

class CudnnBandGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    if (!cudnn_band_supported(torch::empty({1, 1, 128}, torch::dtype(torch::kBFloat16).device(torch::kCUDA))))
      GTEST_SKIP() << "no cuDNN frontend in this build";
  }
};

constexpr int64_t kHq = 8, kHkv = 2, kD = 128;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Rows [s0, s0 + n) of one fused [T, Hq + 2 Hkv, d] projection: q, k and v share a row stride of
// (Hq + 2 Hkv) d, as the model's packed layout gives them.
struct Slices {
  torch::Tensor qkv, q, k, v;
};
Slices qkv_rows(int64_t T, int64_t s0, int64_t n) {
  Slices s;
  s.qkv = randn_cuda({T, kHq + 2 * kHkv, kD}, torch::kBFloat16);
  auto rows = s.qkv.narrow(0, s0, n);
  s.q = rows.narrow(1, 0, kHq);
  s.k = rows.narrow(1, kHq, kHkv);
  s.v = rows.narrow(1, kHq + kHkv, kHkv);
  return s;
}

// A NaN-filled [T, ...] buffer and its rows [s0, s0 + n) (or columns, for lse [H, T]).
struct Poisoned {
  torch::Tensor buf, view;
};
Poisoned rows_of(std::vector<int64_t> shape, int64_t s0, int64_t n, torch::ScalarType dtype) {
  auto buf = torch::full(shape, kNaN, torch::dtype(dtype).device(torch::kCUDA));
  return {buf, buf.narrow(0, s0, n)};
}
Poisoned lse_of(int64_t T, int64_t s0, int64_t n) {
  auto buf = torch::full({kHq, T}, kNaN, torch::dtype(torch::kFloat32).device(torch::kCUDA));
  return {buf, buf.narrow(1, s0, n)};
}

torch::Tensor cpu64(const torch::Tensor& t) { return t.to(torch::kCPU, torch::kFloat64); }
double err(const torch::Tensor& a, const torch::Tensor& ref) { return rel_err(cpu64(a), cpu64(ref)); }

// Everything outside rows [s0, s0 + n) of the buffer must still be NaN.
bool untouched_outside(const torch::Tensor& buf, int64_t dim, int64_t s0, int64_t n) {
  auto before = buf.narrow(dim, 0, s0), after = buf.narrow(dim, s0 + n, buf.size(dim) - s0 - n);
  return before.isnan().all().item<bool>() && after.isnan().all().item<bool>();
}

TEST_F(CudnnBandGpu, MatchesExactForwardAndBackward) {
  struct Case {
    int64_t n, window, s0;
  };
  // s0 odd: the lse view starts off a 16-byte boundary (a packed stand-in); s0 = 64: written in place.
  for (const Case c : std::vector<Case>{{1, 64, 3}, {1000, 64, 5}, {1000, 2048, 64}, {4099, 64, 64}, {4099, 2048, 7}}) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + " window=" + std::to_string(c.window) + " s0=" + std::to_string(c.s0));
    const int64_t T = c.s0 + c.n + 40;
    const double scale = 1.0 / std::sqrt(static_cast<double>(kD));
    auto in = qkv_rows(T, c.s0, c.n);
    auto dout = randn_cuda({c.n, kHq, kD}, torch::kBFloat16);

    // The exact blocked path on one sample, fp64 on the CPU.
    const auto pack = Packing::from_lengths({c.n}, torch::kCPU);
    const MaskSpec mask{0, c.window};
    auto q64 = cpu64(in.q), k64 = cpu64(in.k), v64 = cpu64(in.v);
    const auto ref = attention_forward(q64, k64, v64, pack, mask, scale);
    const auto gref = attention_backward(cpu64(dout), q64, k64, v64, ref, pack, mask, scale);

    auto out = rows_of({T, kHq, kD}, c.s0, c.n, torch::kBFloat16);
    auto lse = lse_of(T, c.s0, c.n);
    cudnn_band_forward(in.q, in.k, in.v, c.window, scale, out.view, lse.view);
    EXPECT_LE(err(out.view, ref.out), 1e-2);
    EXPECT_LE(err(lse.view, ref.lse), 1e-3);
    EXPECT_TRUE(untouched_outside(out.buf, 0, c.s0, c.n));
    EXPECT_TRUE(untouched_outside(lse.buf, 1, c.s0, c.n));

    auto dq = rows_of({T, kHq, kD}, c.s0, c.n, torch::kBFloat16);
    auto dk = rows_of({T, kHkv, kD}, c.s0, c.n, torch::kBFloat16);
    auto dv = rows_of({T, kHkv, kD}, c.s0, c.n, torch::kBFloat16);
    cudnn_band_backward(dout, in.q, in.k, in.v, out.view, lse.view, c.window, scale, dq.view, dk.view, dv.view);
    if (c.n == 1) {  // a token alone: softmax weight 1, so dq and dk are exactly 0
      EXPECT_EQ(dq.view.abs().max().item<double>(), 0.0);
      EXPECT_EQ(dk.view.abs().max().item<double>(), 0.0);
    } else {
      EXPECT_LE(err(dq.view, gref.dq), 1e-2);
      EXPECT_LE(err(dk.view, gref.dk), 1e-2);
    }
    EXPECT_LE(err(dv.view, gref.dv), 1e-2);
    for (const auto* g : {&dq, &dk, &dv}) EXPECT_TRUE(untouched_outside(g->buf, 0, c.s0, c.n));

    // A second call reuses the cached graph and overwrites rather than accumulates.
    cudnn_band_backward(dout, in.q, in.k, in.v, out.view, lse.view, c.window, scale, dq.view, dk.view, dv.view);
    EXPECT_LE(err(dv.view, gref.dv), 1e-2);
  }
}

// The backward given an output and log-sum-exp over more keys than the band (the sink + window
// attention's, or for one token a made-up larger one): the band keys' share, P = exp(scale q.k - lse)
// on the band and D = rowsum(dout * out), by the explicit formulas in fp64 on the GPU.
TEST_F(CudnnBandGpu, BackwardGivesBandShareOfMergedSoftmax) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(kD));
  struct Case {
    int64_t n, window, sink;
  };
  for (const Case c : std::vector<Case>{{1000, 64, 16}, {1000, 300, 16}, {1, 64, 0}}) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + " window=" + std::to_string(c.window));
    const int64_t n = c.n, s0 = 16, T = n + 32;
    auto in = qkv_rows(T, s0, n);
    auto dout = randn_cuda({n, kHq, kD}, torch::kBFloat16);
    const auto band = reference_sample_attention(in.q, in.k, in.v, 0, n, MaskSpec{0, c.window}, scale);
    torch::Tensor o, lse64;  // [Hq, n, d], [Hq, n]
    if (c.sink > 0) {
      const auto merged = reference_sample_attention(in.q, in.k, in.v, 0, n, MaskSpec{c.sink, c.window}, scale);
      o = torch::matmul(merged.p, merged.v);
      lse64 = merged.lse;
    } else {
      o = 0.6 * torch::matmul(band.p, band.v);
      lse64 = band.lse + 0.5;
    }
    auto out = o.permute({1, 0, 2}).to(torch::kBFloat16).contiguous();
    auto lse = lse64.to(torch::kFloat32).contiguous();
    auto p = band.p * torch::exp(band.lse - lse.to(torch::kFloat64)).unsqueeze(-1);
    auto g = dout.to(torch::kFloat64).permute({1, 0, 2});  // [Hq, n, d]
    auto o_used = out.to(torch::kFloat64).permute({1, 0, 2});
    auto ds = p * (torch::matmul(g, band.v.transpose(1, 2)) - (g * o_used).sum(-1, true));
    auto per_kv = [&](const torch::Tensor& t) { return t.view({kHkv, kHq / kHkv, n, kD}).sum(1).permute({1, 0, 2}); };
    auto dq_ref = (torch::matmul(ds, band.k) * scale).permute({1, 0, 2});
    auto dk_ref = per_kv(torch::matmul(ds.transpose(1, 2), band.q) * scale);
    auto dv_ref = per_kv(torch::matmul(p.transpose(1, 2), g));

    auto dq = rows_of({T, kHq, kD}, s0, n, torch::kBFloat16);
    auto dk = rows_of({T, kHkv, kD}, s0, n, torch::kBFloat16);
    auto dv = rows_of({T, kHkv, kD}, s0, n, torch::kBFloat16);
    cudnn_band_backward(dout, in.q, in.k, in.v, out, lse, c.window, scale, dq.view, dk.view, dv.view);
    EXPECT_LE(err(dq.view, dq_ref), 1e-2);
    EXPECT_LE(err(dk.view, dk_ref), 1e-2);
    EXPECT_LE(err(dv.view, dv_ref), 1e-2);
  }
}

}  // namespace
