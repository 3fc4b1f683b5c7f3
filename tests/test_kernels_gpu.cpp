// The elementwise CUDA kernels (RoPE, SwiGLU, hybrid blend) against brute-force fp64 references
// and fp64 autograd of the compositions they replace. Every output is poisoned with NaN before
// the kernel runs, so an element it fails to write shows. Shapes cover odd token counts, heads
// 8/32, d 64/128, and unaligned or non-multiple-of-vector sizes that take the scalar paths.
// Skipped without a GPU.
#include <gtest/gtest.h>

#include <limits>

#include "attention/hybrid_blend.h"
#include "model/fused_ops.h"
#include "model/layers.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace elastic;
using namespace elastic::testing;

namespace {

const auto kF64 = torch::kFloat64;

class KernelsGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

torch::Tensor f64(const torch::Tensor& t) { return t.detach().to(kF64); }

bool has_nan(const torch::Tensor& t) { return t.isnan().any().item<bool>(); }

// cos/sin [T, d] as the model builds them, at the positions of a pack.
std::pair<torch::Tensor, torch::Tensor> rope_tables(const std::vector<int64_t>& lengths, int64_t d) {
  auto pack = attention::Packing::from_lengths(lengths, torch::kCUDA);
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(torch::kCUDA);
  model::Rope rope{1.0 / torch::pow(1e6, torch::arange(0, d, 2, f32) / static_cast<double>(d))};
  return rope.tables(pack.positions);
}

}  // namespace

TEST_F(KernelsGpu, RopeForwardAndBackwardMatchFp64) {
  torch::manual_seed(21);
  struct Shape {
    std::vector<int64_t> lengths;
    int64_t heads, d, offset;
  };
  const std::vector<Shape> shapes = {{{1}, 8, 64, 0},      {{17}, 8, 128, 0},    {{4099}, 32, 128, 0},
                                     {{4000, 99}, 8, 64, 0}, {{333}, 32, 64, 1},  {{5, 2}, 3, 6, 0},
                                     {{2048, 2051}, 8, 128, 0}};
  for (const auto& sh : shapes) {
    auto [cos, sin] = rope_tables(sh.lengths, sh.d);
    const int64_t T = cos.size(0);
    for (auto dtype : {torch::kBFloat16, torch::kFloat32}) {
      SCOPED_TRACE("T " + std::to_string(T) + " H " + std::to_string(sh.heads) + " d " + std::to_string(sh.d) +
                   " offset " + std::to_string(sh.offset) + " " + dtype_name(dtype));
      auto x = placed(randn_cuda({T, sh.heads, sh.d}, dtype), sh.offset);
      auto dy = placed(randn_cuda({T, sh.heads, sh.d}, dtype), sh.offset);
      // fp64 reference: the composition's forward and its autograd backward.
      auto x64 = f64(x).requires_grad_();
      auto y64 = model::rope_composed(x64, f64(cos), f64(sin));
      auto dx64 = torch::autograd::grad({y64}, {x64}, {f64(dy)})[0];

      auto y = placed(nan_like(x), sh.offset);
      model::rope_out(y, x, cos, sin, /*inverse=*/false);
      EXPECT_FALSE(has_nan(y));
      EXPECT_LT(rel_err(y, y64), tolerance(dtype)) << "forward";
      auto dx = placed(nan_like(x), sh.offset);
      model::rope_out(dx, dy, cos, sin, /*inverse=*/true);
      EXPECT_FALSE(has_nan(dx));
      EXPECT_LT(rel_err(dx, dx64), tolerance(dtype)) << "backward";

      // Through the autograd function, as the model calls it.
      auto xg = x.detach().clone().requires_grad_();
      auto yg = model::apply_rope(xg, cos, sin);
      EXPECT_LT(rel_err(yg, y64), tolerance(dtype)) << "apply_rope";
      yg.backward(dy);
      EXPECT_LT(rel_err(xg.grad(), dx64), tolerance(dtype)) << "apply_rope backward";
    }
  }
}

TEST_F(KernelsGpu, SwigluForwardAndBackwardMatchFp64) {
  torch::manual_seed(22);
  struct Shape {
    int64_t tokens, width, offset;
  };
  // 17 x 129 leaves a tail of one element after the 8-wide vectors; offset 1 is unaligned.
  const std::vector<Shape> shapes = {{1, 64, 0}, {17, 129, 0}, {4099, 128, 0}, {4099, 1000, 0},
                                     {333, 3072, 1}, {5, 7, 0}, {2, 12288, 0}};
  for (const auto& sh : shapes) {
    for (auto dtype : {torch::kBFloat16, torch::kFloat32}) {
      SCOPED_TRACE("T " + std::to_string(sh.tokens) + " I " + std::to_string(sh.width) + " offset " +
                   std::to_string(sh.offset) + " " + dtype_name(dtype));
      // Gate values up to about +-12: sigmoid saturates on both sides.
      auto g = placed((3 * randn_cuda({sh.tokens, sh.width}, torch::kFloat32)).to(dtype), sh.offset);
      auto u = placed(randn_cuda({sh.tokens, sh.width}, dtype), sh.offset);
      auto dy = placed(randn_cuda({sh.tokens, sh.width}, dtype), sh.offset);
      auto g64 = f64(g).requires_grad_(), u64 = f64(u).requires_grad_();
      auto y64 = torch::silu(g64) * u64;
      auto grads64 = torch::autograd::grad({y64}, {g64, u64}, {f64(dy)});

      auto y = placed(nan_like(g), sh.offset);
      model::swiglu_out(y, g, u);
      EXPECT_FALSE(has_nan(y));
      EXPECT_LT(rel_err(y, y64), tolerance(dtype)) << "forward";
      auto dg = placed(nan_like(g), sh.offset), du = placed(nan_like(g), sh.offset);
      model::swiglu_backward_out(dg, du, dy, g, u);
      EXPECT_FALSE(has_nan(dg));
      EXPECT_FALSE(has_nan(du));
      EXPECT_LT(rel_err(dg, grads64[0]), tolerance(dtype)) << "dg";
      EXPECT_LT(rel_err(du, grads64[1]), tolerance(dtype)) << "du";
      // Written over g and u (the frozen MLP's backward): the same values, bit for bit.
      auto gi = placed(g.clone(), sh.offset), ui = placed(u.clone(), sh.offset);
      model::swiglu_backward_inplace(dy, gi, ui);
      EXPECT_TRUE(torch::equal(gi, dg)) << "in place dg";
      EXPECT_TRUE(torch::equal(ui, du)) << "in place du";

      // Through the autograd function, as the MLP calls it.
      auto gg = g.detach().clone().requires_grad_(), ug = u.detach().clone().requires_grad_();
      auto yg = model::swiglu(gg, ug);
      EXPECT_LT(rel_err(yg, y64), tolerance(dtype)) << "swiglu";
      yg.backward(dy);
      EXPECT_LT(rel_err(gg.grad(), grads64[0]), tolerance(dtype)) << "swiglu dg";
      EXPECT_LT(rel_err(ug.grad(), grads64[1]), tolerance(dtype)) << "swiglu du";
    }
  }
}

TEST_F(KernelsGpu, HybridBlendKernelsMatchFp64Autograd) {
  torch::manual_seed(23);
  struct Shape {
    std::vector<int64_t> lengths;
    int64_t hq, hkv, d, offset;
  };
  // Samples shorter than and straddling the ds kernel's 32-token tiles, G = 1, 4 and 16.
  const std::vector<Shape> shapes = {{{1}, 8, 2, 64, 0},           {{17}, 8, 8, 128, 0},
                                     {{4099}, 32, 8, 128, 0},      {{5, 1, 11, 40, 3}, 8, 2, 64, 0},
                                     {{2048, 1, 2050}, 32, 8, 128, 0}, {{700, 99}, 32, 2, 64, 1},
                                     {{9, 4}, 4, 2, 6, 0}};
  for (const auto& sh : shapes) {
    auto pack = attention::Packing::from_lengths(sh.lengths, torch::kCUDA);
    const int64_t T = pack.tokens(), B = pack.num_samples(), G = sh.hq / sh.hkv;
    auto f32 = torch::TensorOptions().device(torch::kCUDA).dtype(torch::kFloat32);
    for (bool hard : {true, false}) {
      auto s = hard ? torch::randint(0, 2, {B, sh.hkv}, f32) : torch::rand({B, sh.hkv}, f32);
      for (auto dtype : {torch::kBFloat16, torch::kFloat32}) {
        SCOPED_TRACE("T " + std::to_string(T) + " B " + std::to_string(B) + " Hq " + std::to_string(sh.hq) + " Hkv " +
                     std::to_string(sh.hkv) + " d " + std::to_string(sh.d) + " offset " + std::to_string(sh.offset) +
                     (hard ? " hard " : " soft ") + dtype_name(dtype));
        auto fa = placed(randn_cuda({T, sh.hq, sh.d}, dtype), sh.offset);
        auto sa = placed(randn_cuda({T, sh.hq, sh.d}, dtype), sh.offset);
        auto dout = placed(randn_cuda({T, sh.hq, sh.d}, dtype), sh.offset);
        // fp64 autograd of the composition: d/ds is ds, d/dfa and d/dsa the branch gradients.
        auto fa64 = f64(fa).requires_grad_(), sa64 = f64(sa).requires_grad_(), s64 = f64(s).requires_grad_();
        auto out64 = attention::hybrid_blend_composed(fa64, sa64, s64, pack);
        auto g64 = torch::autograd::grad({out64}, {s64, fa64, sa64}, {f64(dout)});

        auto out = placed(nan_like(fa), sh.offset);
        attention::hybrid_blend_out(out, fa, sa, s, pack.sample_id);
        EXPECT_FALSE(has_nan(out));
        EXPECT_LT(rel_err(out, out64), tolerance(dtype)) << "blend";
        if (hard) {
          // Each (sample, head) is exactly one branch's output.
          auto pick = s.index_select(0, pack.sample_id).repeat_interleave(G, 1).unsqueeze(-1).eq(1);
          EXPECT_TRUE(torch::equal(out, torch::where(pick, fa, sa))) << "hard blend not exact";
        }

        auto ds = torch::full({B, sh.hkv}, std::numeric_limits<float>::quiet_NaN(), f32);
        attention::hybrid_ds_out(ds, fa, sa, dout, pack.sample_id);
        EXPECT_FALSE(has_nan(ds));
        EXPECT_LT(rel_err(ds, g64[0]), tolerance(dtype)) << "ds";

        auto dfa = placed(nan_like(fa), sh.offset), dsa = placed(nan_like(fa), sh.offset);
        attention::hybrid_branch_douts_out(dfa, dsa, dout, s, pack.sample_id);
        EXPECT_FALSE(has_nan(dfa));
        EXPECT_FALSE(has_nan(dsa));
        EXPECT_LT(rel_err(dfa, g64[1]), tolerance(dtype)) << "dout * w";
        EXPECT_LT(rel_err(dsa, g64[2]), tolerance(dtype)) << "dout * (1 - w)";
        // One side only: the other output stays untouched.
        auto only = placed(nan_like(fa), sh.offset);
        attention::hybrid_branch_douts_out(torch::Tensor(), only, dout, s, pack.sample_id);
        EXPECT_TRUE(torch::equal(only, dsa));

        // The dispatching entry points, as hybrid attention calls them.
        EXPECT_TRUE(torch::equal(attention::hybrid_blend(fa, sa, s, pack), out));
        EXPECT_LT(rel_err(attention::hybrid_ds(fa, sa, dout, s, pack), g64[0]), tolerance(dtype));
        auto both = attention::hybrid_branch_douts(dout, s, pack, true, true);
        EXPECT_TRUE(torch::equal(both.first, dfa));
        EXPECT_TRUE(torch::equal(both.second, dsa));
      }
    }
  }
}

TEST_F(KernelsGpu, HybridDsNeedsNoSortedSampleIds) {
  torch::manual_seed(24);
  const int64_t T = 1000, Hq = 8, Hkv = 2, d = 64, B = 5;
  auto opts = torch::TensorOptions().device(torch::kCUDA);
  auto sid = torch::randint(0, B, {T}, opts.dtype(torch::kInt64));
  for (auto dtype : {torch::kBFloat16, torch::kFloat32}) {
    auto fa = randn_cuda({T, Hq, d}, dtype), sa = randn_cuda({T, Hq, d}, dtype), dout = randn_cuda({T, Hq, d}, dtype);
    auto per_tok = ((f64(fa) - f64(sa)) * f64(dout)).view({T, Hkv, Hq / Hkv, d}).sum({2, 3});
    auto ref = torch::zeros({B, Hkv}, per_tok.options()).index_add_(0, sid, per_tok);
    auto ds = torch::full({B, Hkv}, std::numeric_limits<float>::quiet_NaN(), opts.dtype(torch::kFloat32));
    attention::hybrid_ds_out(ds, fa, sa, dout, sid);
    EXPECT_LT(rel_err(ds, ref), tolerance(dtype)) << dtype_name(dtype);
  }
}
