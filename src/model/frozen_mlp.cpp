#include "model/frozen_mlp.h"

#include <algorithm>

#include "model/fused_ops.h"
#include "util/error.h"
#include "util/kernel_dispatch.h"

namespace elastic::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_weights(const FrozenMlpWeights& w, const torch::Tensor& x) {
  const int64_t D = x.size(-1);
  ELASTIC_CHECK(w.gate.dim() == 2 && w.gate.size(1) == D && w.up.sizes() == w.gate.sizes() && w.down.dim() == 2 &&
                    w.down.size(0) == D && w.down.size(1) == w.gate.size(0),
                "frozen MLP: weights must be gate/up [I, " << D << "] and down [" << D << ", I], got gate "
                                                          << w.gate.sizes() << ", up " << w.up.sizes() << ", down "
                                                          << w.down.sizes());
  ELASTIC_CHECK(!w.gate.requires_grad() && !w.up.requires_grad() && !w.down.requires_grad(),
                "frozen MLP: a weight requires grad; a trainable MLP takes the autograd path");
}

torch::Tensor swiglu_value(const torch::Tensor& g, const torch::Tensor& u) {
  if (!util::uses_fused_kernels(g)) return swiglu_composed(g, u);
  auto y = torch::empty(g.sizes(), g.options());
  swiglu_out(y, g, u);
  return y;
}

class FrozenMlpFn : public torch::autograd::Function<FrozenMlpFn> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& gate,
                               const torch::Tensor& up, const torch::Tensor& down, int64_t row_chunk) {
    const FrozenMlpWeights w{gate, up, down};
    auto [g, u] = frozen_mlp_gate_up(x, w);
    const int64_t T = g.size(0);
    auto y = torch::empty({T, down.size(0)}, g.options());
    for (int64_t a = 0; a < T; a += row_chunk) {
      const int64_t n = std::min(row_chunk, T - a);
      auto yc = y.narrow(0, a, n);
      at::mm_out(yc, swiglu_value(g.narrow(0, a, n), u.narrow(0, a, n)), down.t());
    }
    ctx->save_for_backward({g, u, gate, up, down});
    ctx->saved_data["row_chunk"] = row_chunk;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    auto dx = frozen_mlp_backward(grads[0], s[0], s[1], {s[2], s[3], s[4]}, ctx->saved_data["row_chunk"].toInt());
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> frozen_mlp_gate_up(const torch::Tensor& x, const FrozenMlpWeights& w) {
  check_weights(w, x);
  torch::NoGradGuard ng;
  auto rows = x.detach().reshape({-1, x.size(-1)});
  return {torch::nn::functional::linear(rows, w.gate), torch::nn::functional::linear(rows, w.up)};
}

torch::Tensor frozen_mlp_backward(const torch::Tensor& dy, const torch::Tensor& g, const torch::Tensor& u,
                                  const FrozenMlpWeights& w, int64_t row_chunk) {
  ELASTIC_CHECK(row_chunk > 0, "frozen MLP: row_chunk must be positive, got " << row_chunk);
  ELASTIC_CHECK(g.dim() == 2 && u.sizes() == g.sizes() && g.is_contiguous() && u.is_contiguous(),
                "frozen MLP backward: g and u must be contiguous [rows, I] of one shape, got " << g.sizes() << " and "
                                                                                              << u.sizes());
  torch::NoGradGuard ng;
  const int64_t T = g.size(0), D = w.down.size(0);
  auto d = dy.reshape({-1, D});
  ELASTIC_CHECK(d.size(0) == T, "frozen MLP backward: output gradient has " << d.size(0) << " rows, g has " << T);
  auto dx = torch::empty({T, w.gate.size(1)}, g.options());
  for (int64_t a = 0; a < T; a += row_chunk) {
    const int64_t n = std::min(row_chunk, T - a);
    auto gc = g.narrow(0, a, n), uc = u.narrow(0, a, n), dxc = dx.narrow(0, a, n);
    swiglu_backward_inplace(torch::mm(d.narrow(0, a, n), w.down), gc, uc);  // gc, uc now dL/dg, dL/du
    at::mm_out(dxc, gc, w.gate);
    dxc.addmm_(uc, w.up);
  }
  return dx;
}

torch::Tensor frozen_mlp(const torch::Tensor& x, const FrozenMlpWeights& w, int64_t row_chunk) {
  check_weights(w, x);
  ELASTIC_CHECK(row_chunk > 0, "frozen MLP: row_chunk must be positive, got " << row_chunk);
  auto sizes = x.sizes().vec();
  auto y = FrozenMlpFn::apply(x.reshape({-1, x.size(-1)}), w.gate, w.up, w.down, row_chunk);
  sizes.back() = w.down.size(0);
  return y.view(sizes);
}

}  // namespace elastic::model
