#include "model/fused_ops.h"

#include "util/error.h"
#include "util/kernel_dispatch.h"

#ifdef ELASTIC_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

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

torch::Tensor rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  check_rope_args(x, cos, sin);
  return RopeFn::apply(x, cos, sin);
}

torch::Tensor swiglu(const torch::Tensor& g, const torch::Tensor& u) {
  ELASTIC_CHECK(g.sizes() == u.sizes(), "swiglu: up projection must have the gate's shape " << g.sizes() << ", got "
                                                                                            << u.sizes());
  return SwigluFn::apply(g, u);
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

}  // namespace elastic::model
