#include "model/fused_ops.h"

#include "util/error.h"
#include "util/kernel_dispatch.h"

#ifdef ELASTIC_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#endif

namespace elastic::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using util::is_bf16;
using util::kernel_dtype;
bool fused(const torch::Tensor& t) { return util::uses_fused_kernels(t); }

using util::check_like;

void check_kernel_input(const torch::Tensor& t, const char* fn, const char* name) {
  ELASTIC_CHECK(t.defined() && t.is_cuda() && kernel_dtype(t) && t.is_contiguous(),
                fn << ": " << name << " must be a contiguous bf16 or fp32 CUDA tensor, got " << util::describe(t));
}

void check_rope_args(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  ELASTIC_CHECK(x.dim() == 3, "rope: x must be [tokens, heads, head_dim], got " << x.sizes());
  const int64_t T = x.size(0), d = x.size(2);
  ELASTIC_CHECK(cos.dim() == 2 && cos.size(0) == T && cos.size(1) == d,
                "rope: cos must be [tokens=" << T << ", head_dim=" << d << "], got " << cos.sizes());
  ELASTIC_CHECK(sin.dim() == 2 && sin.size(0) == T && sin.size(1) == d,
                "rope: sin must be [tokens=" << T << ", head_dim=" << d << "], got " << sin.sizes());
}

// The adjoint of rope_composed: dx = dy * cos + rotate_half^T(dy * sin), exact for any tables.
torch::Tensor rope_adjoint_composed(const torch::Tensor& dy, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = dy.size(-1) / 2;
  auto c = cos.to(dy.scalar_type()).unsqueeze(1);
  auto s = sin.to(dy.scalar_type()).unsqueeze(1);
  auto ds = dy * s;
  return dy * c + torch::cat({ds.narrow(-1, half, half), -ds.narrow(-1, 0, half)}, -1);
}

class RopeFn : public torch::autograd::Function<RopeFn> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& cos,
                               const torch::Tensor& sin) {
    ctx->save_for_backward({cos, sin});
    if (!fused(x) || x.size(2) % 2 != 0) return rope_composed(x, cos, sin);
    auto xc = x.contiguous();
    auto y = torch::empty(xc.sizes(), xc.options());
    rope_out(y, xc, cos, sin, /*inverse=*/false);
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &cos = saved[0], &sin = saved[1];
    const auto& dy = grads[0];
    torch::Tensor dx;
    if (fused(dy) && dy.size(2) % 2 == 0) {
      auto dyc = dy.contiguous();
      dx = torch::empty(dyc.sizes(), dyc.options());
      rope_out(dx, dyc, cos, sin, /*inverse=*/true);
    } else {
      dx = rope_adjoint_composed(dy, cos, sin);
    }
    return {dx, torch::Tensor(), torch::Tensor()};
  }
};

class SwigluFn : public torch::autograd::Function<SwigluFn> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& g, const torch::Tensor& u) {
    if (!fused(g) || u.scalar_type() != g.scalar_type() || !u.is_cuda()) {
      ctx->save_for_backward({g, u});
      return swiglu_composed(g, u);
    }
    auto gc = g.contiguous(), uc = u.contiguous();
    ctx->save_for_backward({gc, uc});
    auto y = torch::empty(gc.sizes(), gc.options());
    swiglu_out(y, gc, uc);
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &g = saved[0], &u = saved[1];
    const auto& dy = grads[0];
    if (fused(g) && u.scalar_type() == g.scalar_type() && u.is_cuda() && dy.scalar_type() == g.scalar_type()) {
      auto dg = torch::empty(g.sizes(), g.options()), du = torch::empty(g.sizes(), g.options());
      swiglu_backward_out(dg, du, dy.contiguous(), g, u);
      return {dg, du};
    }
    auto sg = torch::sigmoid(g);
    return {dy * u * sg * (1 + g * (1 - sg)), dy * (g * sg)};
  }
};

// The weight the norm kernels take: contiguous [n] with n the last dimension of x, x's dtype and device.
bool norm_weight_fits(const torch::Tensor& w, const torch::Tensor& x) {
  return w.defined() && x.dim() >= 1 && w.dim() == 1 && w.size(0) == x.size(-1) &&
         w.scalar_type() == x.scalar_type() && w.device() == x.device() && w.is_contiguous();
}

// Where rms_norm and add_rms_norm take the kernel: it has no weight gradient, so a trainable
// weight (backbone training) stays on ATen, as do weights of another dtype or device.
bool fused_norm(const torch::Tensor& x, const torch::Tensor& w) {
  return fused(x) && norm_weight_fits(w, x) && !w.requires_grad();
}

// The path of an RMSNorm before the kernel existed.
torch::Tensor rms_norm_aten(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  if (x.is_cuda()) return at::rms_norm(x, {w.size(0)}, w, eps);
  return rms_norm_composed(x, w, eps);
}

[[maybe_unused]] int64_t norm_rows(const torch::Tensor& x) { return x.size(-1) == 0 ? 0 : x.numel() / x.size(-1); }

void check_norm_weight(const char* fn, const torch::Tensor& w, const torch::Tensor& x) {
  ELASTIC_CHECK(norm_weight_fits(w, x),
                fn << ": weight must be a contiguous " << x.scalar_type() << " tensor [n] with n the last dimension of "
                   << util::describe(x) << ", got " << util::describe(w));
}

class RmsNormFn : public torch::autograd::Function<RmsNormFn> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w, double eps) {
    auto xc = x.contiguous();
    ctx->save_for_backward({xc, w});
    ctx->saved_data["eps"] = eps;
    auto y = torch::empty(xc.sizes(), xc.options());
    rms_norm_out(y, xc, w, eps);
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    auto dx = torch::empty(x.sizes(), x.options());
    rms_norm_backward_out(dx, grads[0].contiguous(), x, w, ctx->saved_data["eps"].toDouble(), torch::Tensor());
    return {dx, torch::Tensor(), torch::Tensor()};
  }
};

// Outputs {h, y}; dL/da = dL/db = dh + (norm backward of dy at h), one tensor for both.
class AddRmsNormFn : public torch::autograd::Function<AddRmsNormFn> {
 public:
  static variable_list forward(AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b,
                               const torch::Tensor& w, double eps) {
    // An unused output's gradient stays undefined instead of becoming a tensor of zeros.
    ctx->set_materialize_grads(false);
    auto ac = a.contiguous(), bc = b.contiguous();
    auto h = torch::empty(ac.sizes(), ac.options()), y = torch::empty(ac.sizes(), ac.options());
    add_rms_norm_out(h, y, ac, bc, w, eps);
    ctx->save_for_backward({h, w});
    ctx->saved_data["eps"] = eps;
    return {h, y};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &h = saved[0], &w = saved[1];
    const auto &dh = grads[0], &dy = grads[1];
    torch::Tensor g = dh;
    if (dy.defined()) {
      g = torch::empty(h.sizes(), h.options());
      rms_norm_backward_out(g, dy.contiguous(), h, w, ctx->saved_data["eps"].toDouble(),
                            dh.defined() ? dh.contiguous() : torch::Tensor());
    }
    return {g, g, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor rope_composed(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto c = cos.to(x.scalar_type()).unsqueeze(1);
  auto s = sin.to(x.scalar_type()).unsqueeze(1);
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  auto rotated = torch::cat({-x2, x1}, -1);
  return x * c + rotated * s;
}

torch::Tensor swiglu_composed(const torch::Tensor& g, const torch::Tensor& u) { return torch::silu(g) * u; }

torch::Tensor rms_norm_composed(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  auto x32 = x.to(torch::kFloat32);
  auto var = x32.pow(2).mean(-1, true);
  x32 = x32 * torch::rsqrt(var + eps);
  return w * x32.to(x.scalar_type());
}

torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  check_rope_args(x, cos, sin);
  return RopeFn::apply(x, cos, sin);
}

torch::Tensor swiglu(const torch::Tensor& g, const torch::Tensor& u) {
  ELASTIC_CHECK(g.sizes() == u.sizes(), "swiglu: up projection must have the gate's shape " << g.sizes() << ", got "
                                                                                            << u.sizes());
  return SwigluFn::apply(g, u);
}

void swiglu_backward_inplace(const torch::Tensor& dy, const torch::Tensor& g, const torch::Tensor& u) {
  ELASTIC_CHECK(u.sizes() == g.sizes() && dy.sizes() == g.sizes(),
                "swiglu backward: gate " << g.sizes() << ", up " << u.sizes() << " and output gradient " << dy.sizes()
                                         << " must have one shape");
  torch::NoGradGuard ng;
  if (fused(g) && g.is_contiguous() && u.is_contiguous() && u.is_cuda() && u.scalar_type() == g.scalar_type() &&
      dy.scalar_type() == g.scalar_type() && dy.device() == g.device()) {
#ifdef ELASTIC_WITH_CUDA
    const c10::cuda::CUDAGuard guard(g.device());
    auto dyc = dy.contiguous();
    kernels::swiglu_backward_inplace(dyc.data_ptr(), g.data_ptr(), u.data_ptr(), g.numel(), is_bf16(g),
                                     at::cuda::getCurrentCUDAStream());
    // As any in-place op would: a saved copy of g or u read after this fails loudly, not silently.
    g.unsafeGetTensorImpl()->bump_version();
    u.unsafeGetTensorImpl()->bump_version();
    return;
#endif
  }
  // SwigluFn's composed backward, evaluated before either input is overwritten.
  auto sg = torch::sigmoid(g);
  auto du = dy * (g * sg);
  g.copy_(dy * u * sg * (1 + g * (1 - sg)));
  u.copy_(du);
}

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  if (!fused_norm(x, w)) return rms_norm_aten(x, w, eps);
  return RmsNormFn::apply(x, w, eps);
}

std::pair<torch::Tensor, torch::Tensor> add_rms_norm(const torch::Tensor& a, const torch::Tensor& b,
                                                      const torch::Tensor& w, double eps) {
  if (!fused_norm(a, w) || !b.defined() || b.sizes() != a.sizes() || b.scalar_type() != a.scalar_type() ||
      b.device() != a.device()) {
    auto h = a + b;
    return {h, rms_norm(h, w, eps)};
  }
  auto r = AddRmsNormFn::apply(a, b, w, eps);
  return {r[0], r[1]};
}

void rope_out(const torch::Tensor& y, const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
              bool inverse) {
  check_kernel_input(x, "rope", "x");
  check_rope_args(x, cos, sin);
  ELASTIC_CHECK(x.size(2) % 2 == 0, "rope: head_dim must be even, got " << x.size(2));
  check_like("rope", y, x, "output");
#ifdef ELASTIC_WITH_CUDA
  const c10::cuda::CUDAGuard guard(x.device());
  // Usually already contiguous fp32 on the device: then these are the tables themselves.
  auto c = cos.to(x.device(), torch::kFloat32).contiguous(), s = sin.to(x.device(), torch::kFloat32).contiguous();
  kernels::rope(x.data_ptr(), y.data_ptr(), c.data_ptr<float>(), s.data_ptr<float>(), c.stride(0), x.size(0),
                x.size(1), x.size(2), inverse, is_bf16(x), at::cuda::getCurrentCUDAStream());
#else
  (void)inverse;
  util::no_cuda_kernels("rope");
#endif
}

void swiglu_out(const torch::Tensor& y, const torch::Tensor& g, const torch::Tensor& u) {
  check_kernel_input(g, "swiglu", "gate");
  check_like("swiglu", u, g, "up");
  check_like("swiglu", y, g, "output");
#ifdef ELASTIC_WITH_CUDA
  const c10::cuda::CUDAGuard guard(g.device());
  kernels::swiglu_forward(g.data_ptr(), u.data_ptr(), y.data_ptr(), g.numel(), is_bf16(g),
                          at::cuda::getCurrentCUDAStream());
#else
  util::no_cuda_kernels("swiglu");
#endif
}

void swiglu_backward_out(const torch::Tensor& dg, const torch::Tensor& du, const torch::Tensor& dy,
                         const torch::Tensor& g, const torch::Tensor& u) {
  check_kernel_input(g, "swiglu backward", "gate");
  check_like("swiglu backward", u, g, "up");
  check_like("swiglu backward", dy, g, "output gradient");
  check_like("swiglu backward", dg, g, "gate gradient");
  check_like("swiglu backward", du, g, "up gradient");
#ifdef ELASTIC_WITH_CUDA
  const c10::cuda::CUDAGuard guard(g.device());
  kernels::swiglu_backward(dy.data_ptr(), g.data_ptr(), u.data_ptr(), dg.data_ptr(), du.data_ptr(), g.numel(),
                           is_bf16(g), at::cuda::getCurrentCUDAStream());
#else
  util::no_cuda_kernels("swiglu backward");
#endif
}

void rms_norm_out(const torch::Tensor& y, const torch::Tensor& x, const torch::Tensor& w, double eps) {
  check_kernel_input(x, "rms_norm", "x");
  check_norm_weight("rms_norm", w, x);
  check_like("rms_norm", y, x, "output");
#ifdef ELASTIC_WITH_CUDA
  const c10::cuda::CUDAGuard guard(x.device());
  kernels::rmsnorm_forward(x.data_ptr(), w.data_ptr(), y.data_ptr(), norm_rows(x), x.size(-1), static_cast<float>(eps),
                           is_bf16(x), at::cuda::getCurrentCUDAStream());
#else
  (void)eps;
  util::no_cuda_kernels("rms_norm");
#endif
}

void add_rms_norm_out(const torch::Tensor& h, const torch::Tensor& y, const torch::Tensor& a, const torch::Tensor& b,
                      const torch::Tensor& w, double eps) {
  check_kernel_input(a, "add_rms_norm", "a");
  check_like("add_rms_norm", b, a, "b");
  check_norm_weight("add_rms_norm", w, a);
  check_like("add_rms_norm", h, a, "sum output");
  check_like("add_rms_norm", y, a, "norm output");
#ifdef ELASTIC_WITH_CUDA
  const c10::cuda::CUDAGuard guard(a.device());
  kernels::add_rmsnorm_forward(a.data_ptr(), b.data_ptr(), w.data_ptr(), h.data_ptr(), y.data_ptr(), norm_rows(a),
                               a.size(-1), static_cast<float>(eps), is_bf16(a), at::cuda::getCurrentCUDAStream());
#else
  (void)eps;
  util::no_cuda_kernels("add_rms_norm");
#endif
}

void rms_norm_backward_out(const torch::Tensor& dx, const torch::Tensor& dy, const torch::Tensor& x,
                           const torch::Tensor& w, double eps, const torch::Tensor& dres) {
  check_kernel_input(x, "rms_norm backward", "x");
  check_like("rms_norm backward", dy, x, "output gradient");
  check_norm_weight("rms_norm backward", w, x);
  if (dres.defined()) check_like("rms_norm backward", dres, x, "residual gradient");
  check_like("rms_norm backward", dx, x, "input gradient");
#ifdef ELASTIC_WITH_CUDA
  const c10::cuda::CUDAGuard guard(x.device());
  kernels::rmsnorm_backward(dy.data_ptr(), x.data_ptr(), w.data_ptr(), dres.defined() ? dres.data_ptr() : nullptr,
                            dx.data_ptr(), norm_rows(x), x.size(-1), static_cast<float>(eps), is_bf16(x),
                            at::cuda::getCurrentCUDAStream());
#else
  (void)eps;
  util::no_cuda_kernels("rms_norm backward");
#endif
}

}  // namespace elastic::model
