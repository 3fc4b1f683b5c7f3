// bench-kernels cases for RMSNorm (kernels/rmsnorm.cu) against what the GPU ran before it:
// at::rms_norm and its autograd backward (frozen weight, as in router training), and the separate
// residual add in front of it. Hidden rows of n = q_heads * head_dim (4096 for Qwen3-8B, whose
// hidden size that is) and q_norm's rows of head_dim over every query head.
#include <string>

#include "cli/bench_kernels.h"
#include "model/fused_ops.h"

namespace elastic::cli {

namespace {

constexpr double kEps = 1e-6;

std::string dtype_name(torch::ScalarType t) { return t == torch::kBFloat16 ? "bf16" : c10::toString(t); }

// Forward and backward cases of a plain norm over rows of n; bytes count x (and dy) in, y (dx) out.
void add_norm_cases(std::vector<KernelCase>& cases, const std::string& name, int64_t rows, int64_t n,
                    const torch::TensorOptions& opts) {
  const double e = static_cast<double>(c10::elementSize(c10::typeMetaToScalarType(opts.dtype())));
  auto x = torch::randn({rows, n}, opts), dy = torch::randn({rows, n}, opts);
  auto w = 1 + 0.5 * torch::randn({n}, opts);
  auto y = torch::empty_like(x), dx = torch::empty_like(x);
  auto xg = x.detach().requires_grad_();
  auto yg = at::rms_norm(xg, {n}, w, kEps);
  const std::string shape = "rows=" + std::to_string(rows) + " n=" + std::to_string(n) + " " +
                            dtype_name(c10::typeMetaToScalarType(opts.dtype()));
  const double elems = static_cast<double>(rows) * n;
  cases.push_back({name + "_forward", shape, 2 * elems * e + n * e, [=] { model::rms_norm_out(y, x, w, kEps); },
                   [=] { at::rms_norm(x, {n}, w, kEps); }});
  cases.push_back({name + "_backward", shape, 3 * elems * e + n * e,
                   [=] { model::rms_norm_backward_out(dx, dy, x, w, kEps, torch::Tensor()); },
                   [=] { torch::autograd::grad({yg}, {xg}, {dy}, /*retain_graph=*/true); }});
}

}  // namespace

std::vector<KernelCase> norm_kernel_cases(const KernelShape& s) {
  const auto opts = torch::TensorOptions().device(s.device).dtype(s.dtype);
  const int64_t T = s.tokens, D = s.q_heads * s.head_dim;
  const double e = static_cast<double>(c10::elementSize(s.dtype));
  const torch::AutoGradMode grad_on(true);  // the backward baselines record their graphs here
  std::vector<KernelCase> cases;
  add_norm_cases(cases, "rms_norm", T, D, opts);

  {  // The attention's residual add and the second norm: a + b and its norm, h and y out.
    auto a = torch::randn({T, D}, opts), b = torch::randn({T, D}, opts), dy = torch::randn({T, D}, opts);
    auto dres = torch::randn({T, D}, opts);
    auto w = 1 + 0.5 * torch::randn({D}, opts);
    auto h = torch::empty_like(a), y = torch::empty_like(a), dx = torch::empty_like(a);
    auto hg = (a + b).requires_grad_();
    auto yg = at::rms_norm(hg, {D}, w, kEps);
    const std::string shape = "rows=" + std::to_string(T) + " n=" + std::to_string(D) + " " + dtype_name(s.dtype);
    const double elems = static_cast<double>(T) * D;
    cases.push_back({"add_rms_norm_forward", shape, 4 * elems * e + D * e,
                     [=] { model::add_rms_norm_out(h, y, a, b, w, kEps); },
                     [=] { at::rms_norm(a + b, {D}, w, kEps); }});
    // Backward: the norm's gradient plus the residual's (dy, h, dres in; dx out).
    cases.push_back({"add_rms_norm_backward", shape, 4 * elems * e + D * e,
                     [=] { model::rms_norm_backward_out(dx, dy, a, w, kEps, dres); },
                     [=] { torch::autograd::grad({yg}, {hg}, {dy}, /*retain_graph=*/true)[0] + dres; }});
  }

  add_norm_cases(cases, "q_norm", T * s.q_heads, s.head_dim, opts);
  return cases;
}

}  // namespace elastic::cli
