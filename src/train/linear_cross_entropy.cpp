#include "train/linear_cross_entropy.h"

#include <algorithm>

#include "util/error.h"

namespace elastic::train {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class LinearCrossEntropyFn : public torch::autograd::Function<LinearCrossEntropyFn> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& hidden, const torch::Tensor& rows,
                               const torch::Tensor& targets, const torch::Tensor& weight, int64_t chunk) {
    const int64_t n = rows.numel();
    auto sum = torch::zeros({}, hidden.options().dtype(torch::kFloat32));
    // dL/d(hidden[rows]) for an output gradient of 1.
    auto grad_rows = torch::empty({n, hidden.size(1)}, hidden.options());
    for (int64_t a = 0; a < n; a += chunk) {
      const int64_t c = std::min(chunk, n - a);
      auto t = targets.narrow(0, a, c).unsqueeze(1);
      auto logits = torch::nn::functional::linear(hidden.index_select(0, rows.narrow(0, a, c)), weight)
                        .to(torch::kFloat32);
      auto lse = logits.logsumexp(1, /*keepdim=*/true);
      sum += (lse - logits.gather(1, t)).sum();
      // softmax - onehot, in place over the fp32 logits: the chunk's only [c, V] fp32 tensor.
      logits.sub_(lse).exp_();
      logits.scatter_add_(1, t, torch::full({c, 1}, -1.0f, logits.options()));
      auto gc = grad_rows.narrow(0, a, c);
      at::mm_out(gc, logits.to(hidden.scalar_type()), weight);
    }
    ctx->save_for_backward({rows, grad_rows});
    ctx->saved_data["tokens"] = hidden.size(0);
    return sum;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto s = ctx->get_saved_variables();
    const auto &rows = s[0], &grad_rows = s[1];
    auto dh = torch::zeros({ctx->saved_data["tokens"].toInt(), grad_rows.size(1)}, grad_rows.options());
    dh.index_add_(0, rows, grad_rows * grads[0].to(grad_rows.scalar_type()));
    return {dh, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor linear_cross_entropy_sum(const torch::Tensor& hidden, const torch::Tensor& rows,
                                       const torch::Tensor& targets, const torch::Tensor& weight, int64_t chunk) {
  ELASTIC_CHECK(chunk > 0, "linear cross-entropy: chunk must be positive, got " << chunk);
  ELASTIC_CHECK(hidden.dim() == 2 && weight.dim() == 2 && weight.size(1) == hidden.size(1),
                "linear cross-entropy: hidden must be [tokens, D] and weight [V, D], got " << hidden.sizes() << " and "
                                                                                         << weight.sizes());
  ELASTIC_CHECK(!weight.requires_grad(), "linear cross-entropy: the output projection must be frozen");
  ELASTIC_CHECK(rows.dim() == 1 && targets.sizes() == rows.sizes(),
                "linear cross-entropy: rows and targets must be [n] of one length, got " << rows.sizes() << " and "
                                                                                         << targets.sizes());
  return LinearCrossEntropyFn::apply(hidden, rows, targets, weight, chunk);
}

}  // namespace elastic::train
