// The fused sink merge (kernels/sink_merge.cu) against a brute-force fp64 merge, and streaming
// attention with fp32 inputs through bf16 against the exact path. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "attention/attention.h"
#include "attention/sink_merge.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace elastic::attention;
using namespace elastic::testing;

namespace {

class SinkGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

struct Merged {
  torch::Tensor out, lse;  // fp64
};

// The merge of every row (selection by position is the caller's), with "no key" (-inf) weighted 0.
Merged merge_fp64(const torch::Tensor& out_w, const torch::Tensor& lse_w, const torch::Tensor& out_s,
                  const torch::Tensor& lse_s) {
  auto lw = lse_w.to(torch::kFloat64), ls = lse_s.to(torch::kFloat64);
  auto l = torch::logaddexp(lw, ls);  // -inf where both are -inf
  auto none = l.isneginf();
  auto ww = torch::where(none, torch::zeros_like(l), torch::exp(lw - l));
  auto ws = torch::where(none, torch::zeros_like(l), torch::exp(ls - l));
  auto o = out_w.to(torch::kFloat64) * ww.t().unsqueeze(-1) + out_s.to(torch::kFloat64) * ws.t().unsqueeze(-1);
  return {o, l};
}

// Same bits: NaN payloads included, which value comparisons cannot check.
bool same_bits(const torch::Tensor& a, const torch::Tensor& b) {
  const auto bits = a.element_size() == 2 ? torch::kInt16 : torch::kInt32;
  return torch::equal(a.contiguous().view(bits), b.contiguous().view(bits));
}

struct Inputs {
  torch::Tensor out_w, lse_w, out_s, lse_s;
};

// Random outputs and log-sum-exps over a wide range, with "no key" (-inf) on the sink side, on
// the window side and on both for some tokens.
Inputs random_inputs(int64_t T, int64_t H, int64_t d, torch::ScalarType dtype) {
  auto o = torch::TensorOptions().device(torch::kCUDA);
  Inputs in{torch::randn({T, H, d}, o.dtype(dtype)), torch::randn({H, T}, o) * 8,
            torch::randn({T, H, d}, o.dtype(dtype)), torch::randn({H, T}, o) * 8 + 1};
  const double inf = std::numeric_limits<double>::infinity();
  auto t = torch::arange(T, o.dtype(torch::kInt64));
  in.lse_s.masked_fill_((t % 7 == 0).unsqueeze(0), -inf);
  in.lse_w.masked_fill_((t % 14 == 0 | t % 11 == 0).unsqueeze(0), -inf);
  return in;
}

const char* name(torch::ScalarType t) {
  return t == torch::kBFloat16 ? "bf16" : t == torch::kHalf ? "fp16" : "fp32";
}

// Elementwise: one rounding to the output type of the exact result, plus fp32 arithmetic on the
// two terms; the log-sum-exp to fp32 accuracy, -inf exactly where the reference has it.
void expect_close(const torch::Tensor& out, const torch::Tensor& lse, const Merged& ref, const Inputs& in,
                  const torch::Tensor& rows) {
  if (rows.numel() == 0) return;
  const auto dt = out.scalar_type();
  const double rnd = dt == torch::kBFloat16 ? std::ldexp(1.0, -8) : dt == torch::kHalf ? std::ldexp(1.0, -11) : 0.0;
  auto a = out.index_select(0, rows).to(torch::kFloat64), b = ref.out.index_select(0, rows);
  EXPECT_LE(rel_err(a, b), dt == torch::kFloat32 ? 1e-5 : 1e-2);
  auto lr = ref.lse.index_select(1, rows);
  auto mag = in.out_w.index_select(0, rows).to(torch::kFloat64).abs() *
                 torch::exp(in.lse_w.index_select(1, rows).to(torch::kFloat64) - lr).nan_to_num(0.0).t().unsqueeze(-1) +
             in.out_s.index_select(0, rows).to(torch::kFloat64).abs() *
                 torch::exp(in.lse_s.index_select(1, rows).to(torch::kFloat64) - lr).nan_to_num(0.0).t().unsqueeze(-1);
  auto excess = (a - b).abs() - (rnd * b.abs() + 1e-5 * mag + 1e-7);
  EXPECT_LE(excess.max().item<double>(), 0.0) << "worst element error beyond one rounding";
  EXPECT_FALSE(a.isnan().any().item<bool>());
  auto la = lse.index_select(1, rows).to(torch::kFloat64);
  EXPECT_TRUE(torch::equal(la.isneginf(), lr.isneginf()));
  auto finite = lr.isfinite();
  auto lerr = torch::where(finite, (la - lr).abs() / (lr.abs() + 1), torch::zeros_like(lr));
  EXPECT_LE(lerr.max().item<double>(), 1e-5);
}

}  // namespace

TEST_F(SinkGpu, MergeMatchesFp64AndLeavesOtherRowsUntouched) {
  torch::manual_seed(3);
  // Samples with no merged row (5, 64, 1 at first = 64), one with 65 merged rows, one with 236.
  auto pack = Packing::from_lengths({5, 300, 64, 129, 1}, torch::kCUDA);
  const int64_t T = pack.tokens();
  for (auto dtype : {torch::kBFloat16, torch::kHalf, torch::kFloat32}) {
    // 128/256: 16-byte accesses, 16 or 32 lanes per row; 72: 9 chunks on 16 lanes; 40, 6: odd sizes.
    for (int64_t d : {128, 256, 72, 40, 6}) {
      for (int64_t H : {3, 8}) {
        for (int64_t first : {int64_t{64}, int64_t{0}, int64_t{1000}}) {
          for (int64_t offset : {0, 1}) {
            SCOPED_TRACE(std::string(name(dtype)) + " d " + std::to_string(d) + " H " + std::to_string(H) + " first " +
                         std::to_string(first) + " offset " + std::to_string(offset));
            auto in = random_inputs(T, H, d, dtype);
            in.out_w = placed(in.out_w, offset);
            auto ref = merge_fp64(in.out_w, in.lse_w, in.out_s, in.lse_s);
            auto sel = pack.positions >= first;
            auto rows = torch::nonzero(sel).flatten(), kept = torch::nonzero(sel.logical_not()).flatten();

            // Out of place into outputs poisoned with NaN: merged rows filled, the rest untouched.
            auto out = torch::full({T, H, d}, std::nan(""), in.out_w.options());
            auto lse = torch::full({H, T}, std::nan(""), in.lse_w.options());
            auto out0 = out.clone(), lse0 = lse.clone();
            sink_merge(out, lse, in.out_w, in.lse_w, in.out_s, in.lse_s, pack.positions, first);
            expect_close(out, lse, ref, in, rows);
            EXPECT_TRUE(same_bits(out.index_select(0, kept), out0.index_select(0, kept)));
            EXPECT_TRUE(same_bits(lse.index_select(1, kept), lse0.index_select(1, kept)));

            // In place, as attention calls it.
            auto ow = placed(in.out_w, offset), lw = in.lse_w.clone();
            sink_merge(ow, lw, ow, lw, in.out_s, in.lse_s, pack.positions, first);
            expect_close(ow, lw, ref, in, rows);
            EXPECT_TRUE(same_bits(ow.index_select(0, kept), in.out_w.index_select(0, kept)));
            EXPECT_TRUE(same_bits(lw.index_select(1, kept), in.lse_w.index_select(1, kept)));
            // Both in place and out of place write the same values.
            EXPECT_TRUE(same_bits(ow.index_select(0, rows), out.index_select(0, rows)));
          }
        }
      }
    }
  }
}

TEST_F(SinkGpu, MergeRejectsMismatchedTensors) {
  auto pack = Packing::from_lengths({10, 6}, torch::kCUDA);
  auto o = torch::zeros({16, 2, 8}, torch::TensorOptions().device(torch::kCUDA).dtype(torch::kBFloat16));
  auto l = torch::zeros({2, 16}, torch::TensorOptions().device(torch::kCUDA));
  expect_error([&] { sink_merge(o, l, o, l.t().contiguous(), o, l, pack.positions, 4); }, {"lse_w", "[2, 16]"});
  expect_error([&] { sink_merge(o, l, o, l, o.to(torch::kFloat32), l, pack.positions, 4); }, {"out_s"});
  expect_error([&] { sink_merge(o, l, o, l, o, l, pack.positions.narrow(0, 0, 8), 4); }, {"positions"});
}

// fp32 inputs through bf16 (the trainer's setting) take the same flash path: d = 128 gives the
// merge kernel 16 lanes per row.
TEST_F(SinkGpu, StreamingFp32ThroughBf16MatchesExact) {
  torch::manual_seed(5);
  struct Bf16Attention {  // restored even when an assertion throws
    Bf16Attention() { set_fp32_attention_in_bf16(true); }
    ~Bf16Attention() { set_fp32_attention_in_bf16(false); }
  } bf16_attention;
  auto pack = Packing::from_lengths({300, 17, 1029, 33, 160}, torch::kCUDA);
  auto o = torch::TensorOptions().device(torch::kCUDA);
  auto q = torch::randn({pack.tokens(), 8, 128}, o), k = torch::randn({pack.tokens(), 2, 128}, o),
       v = torch::randn({pack.tokens(), 2, 128}, o);
  ASSERT_TRUE(uses_flash(q));
  auto f64 = [](const torch::Tensor& t) { return t.to(torch::kFloat64); };
  for (MaskSpec mask : {MaskSpec::streaming(4, 32), MaskSpec::streaming(16, 128), MaskSpec::streaming(200, 100)}) {
    SCOPED_TRACE("sink " + std::to_string(mask.sink) + " window " + std::to_string(mask.window));
    const double scale = 1.0 / std::sqrt(128.0);
    auto f = attention_forward(q, k, v, pack, mask, scale);
    auto r = attention_forward(f64(q), f64(k), f64(v), pack, mask, scale);
    EXPECT_EQ(f.out.scalar_type(), torch::kFloat32);
    EXPECT_LT(rel_err(f.out, r.out), 1e-2);
    EXPECT_LT((f.lse.to(torch::kFloat64) - r.lse).abs().max().item<double>(), 2e-2);
    auto dout = torch::randn_like(q);
    auto g = attention_backward(dout, q, k, v, f, pack, mask, scale);
    auto gr = attention_backward(f64(dout), f64(q), f64(k), f64(v), r, pack, mask, scale);
    EXPECT_LT(rel_err(g.dq, gr.dq), 2e-2) << "dq";
    EXPECT_LT(rel_err(g.dk, gr.dk), 2e-2) << "dk";
    EXPECT_LT(rel_err(g.dv, gr.dv), 2e-2) << "dv";
  }
}
