// bench-kernels cases for the elementwise kernels: RoPE and SwiGLU (kernels/rope.cu,
// kernels/swiglu.cu) and the hybrid-attention blend (kernels/hybrid_blend.cu), each against the
// ATen composition it replaced. The compositions are the library's own CPU path
// (model::rope_composed, attention::hybrid_*_composed), which is the code the GPU ran before; the
// backward baselines are autograd through them, on a graph recorded once at setup.
#include <string>

#include "attention/hybrid_blend.h"
#include "cli/bench_kernels.h"
#include "cli/bench_util.h"
#include "model/fused_ops.h"

namespace elastic::cli {

namespace {

std::string dtype_name(torch::ScalarType t) { return t == torch::kBFloat16 ? "bf16" : c10::toString(t); }

// cos/sin [T, d] as model::Rope::tables builds them (Qwen3's theta).
std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t tokens, int64_t d, torch::Device dev) {
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(dev);
  auto inv = 1.0 / torch::pow(1e6, torch::arange(0, d, 2, f32) / static_cast<double>(d));
  auto freqs = torch::arange(tokens, f32).unsqueeze(1) * inv.unsqueeze(0);
  auto emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

// Backward of y with respect to xs through autograd, keeping the graph for the next run.
void autograd_backward(const torch::Tensor& y, const std::vector<torch::Tensor>& xs, const torch::Tensor& dy) {
  torch::autograd::grad({y}, xs, {dy}, /*retain_graph=*/true);
}

}  // namespace

std::vector<KernelCase> elementwise_kernel_cases(const KernelShape& s) {
  const auto opts = torch::TensorOptions().device(s.device).dtype(s.dtype);
  const int64_t T = s.tokens, Hq = s.q_heads, Hkv = s.kv_heads, d = s.head_dim, I = s.intermediate;
  const double e = static_cast<double>(c10::elementSize(s.dtype));
  const std::string dt = dtype_name(s.dtype);
  const torch::AutoGradMode grad_on(true);  // the backward baselines record their graphs here
  std::vector<KernelCase> cases;

  {  // RoPE on the queries (the keys are a quarter of the size).
    const auto tables = rope_tables(T, d, s.device);
    const auto cos = tables.first, sin = tables.second;
    auto x = torch::randn({T, Hq, d}, opts), dy = torch::randn({T, Hq, d}, opts);
    auto y = torch::empty_like(x);
    auto xg = x.detach().requires_grad_();
    auto yg = model::rope_composed(xg, cos, sin);
    const std::string shape =
        "T=" + std::to_string(T) + " H=" + std::to_string(Hq) + " d=" + std::to_string(d) + " " + dt;
    const double bytes = 2 * T * Hq * d * e + 2.0 * T * (d / 2) * 4;  // x in, y out, half of each table
    cases.push_back({"rope_forward", shape, bytes, [=] { model::rope_out(y, x, cos, sin, false); },
                     [=] { model::rope_composed(x, cos, sin); }});
    cases.push_back({"rope_backward", shape, bytes, [=] { model::rope_out(y, dy, cos, sin, true); },
                     [=] { autograd_backward(yg, {xg}, dy); }});
  }
  {  // SwiGLU of the MLP.
    auto g = torch::randn({T, I}, opts), u = torch::randn({T, I}, opts), dy = torch::randn({T, I}, opts);
    auto y = torch::empty_like(g), dg = torch::empty_like(g), du = torch::empty_like(g);
    auto gg = g.detach().requires_grad_(), ug = u.detach().requires_grad_();
    auto yg = model::swiglu_composed(gg, ug);
    const std::string shape = "T=" + std::to_string(T) + " I=" + std::to_string(I) + " " + dt;
    cases.push_back({"swiglu_forward", shape, 3 * T * I * e, [=] { model::swiglu_out(y, g, u); },
                     [=] { model::swiglu_composed(g, u); }});
    cases.push_back({"swiglu_backward", shape, 5 * T * I * e, [=] { model::swiglu_backward_out(dg, du, dy, g, u); },
                     [=] { autograd_backward(yg, {gg, ug}, dy); }});
  }
  {  // Hybrid attention's blend, router gradient and branch gradients; hard routing as in training.
    const std::vector<int64_t> mix(static_cast<size_t>(s.samples), 1);  // equal lengths
    auto pack = attention::Packing::from_lengths(mixed_lengths(T, mix), s.device);
    auto fa = torch::randn({T, Hq, d}, opts), sa = torch::randn({T, Hq, d}, opts);
    auto dout = torch::randn({T, Hq, d}, opts);
    auto w = torch::randint(0, 2, {s.samples, Hkv}, opts.dtype(torch::kFloat32));
    auto out = torch::empty_like(fa), dfa = torch::empty_like(fa), dsa = torch::empty_like(fa);
    auto ds = torch::empty({s.samples, Hkv}, opts.dtype(torch::kFloat32));
    const std::string shape = "T=" + std::to_string(T) + " Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) +
                              " d=" + std::to_string(d) + " B=" + std::to_string(s.samples) + " " + dt;
    const double bytes = 3 * T * Hq * d * e + 8.0 * T;  // three [T,Hq,d] tensors and sample_id
    cases.push_back({"hybrid_blend_forward", shape, bytes,
                     [=] { attention::hybrid_blend_out(out, fa, sa, w, pack.sample_id); },
                     [=] { attention::hybrid_blend_composed(fa, sa, w, pack); }});
    cases.push_back({"hybrid_ds", shape, bytes, [=] { attention::hybrid_ds_out(ds, fa, sa, dout, pack.sample_id); },
                     [=] { attention::hybrid_ds_composed(fa, sa, dout, w, pack); }});
    cases.push_back({"hybrid_weighted_dout", shape, bytes,
                     [=] { attention::hybrid_branch_douts_out(dfa, dsa, dout, w, pack.sample_id); },
                     [=] { attention::hybrid_branch_douts_composed(dout, w, pack, true, true); }});
  }
  return cases;
}

}  // namespace elastic::cli
