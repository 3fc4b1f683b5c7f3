#include "train/objective.h"

#include <ATen/CPUGeneratorImpl.h>

#include "train/linear_cross_entropy.h"
#include "util/error.h"

namespace elastic::train {

LmLoss lm_loss(model::CausalLM& model, const torch::Tensor& hidden, const torch::Tensor& ids,
               const torch::Tensor& labels, const attention::Packing& pack, int64_t chunk) {
  // Target positions: labelled and not the first token of a sample.
  auto is_target = labels.to(torch::kBool).to(hidden.device()) & (pack.positions > 0);
  auto tgt = is_target.nonzero().squeeze(1);
  LmLoss out;
  out.tokens = tgt.numel();
  out.sum = torch::zeros({}, hidden.options().dtype(torch::kFloat32));
  if (out.tokens == 0) return out;
  auto ids_dev = ids.to(hidden.device());
  const auto& w = model->lm_head_weight();
  if (torch::GradMode::is_enabled() && hidden.requires_grad() && !w.requires_grad()) {
    out.sum = linear_cross_entropy_sum(hidden, tgt - 1, ids_dev.index_select(0, tgt), w, chunk);
    return out;
  }
  for (int64_t a = 0; a < out.tokens; a += chunk) {
    auto t = tgt.narrow(0, a, std::min(chunk, out.tokens - a));
    auto logits = model->logits(hidden.index_select(0, t - 1)).to(torch::kFloat32);
    out.sum = out.sum + torch::nn::functional::cross_entropy(
                            logits, ids_dev.index_select(0, t),
                            torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  }
  return out;
}

torch::Tensor model_sparsity(const std::vector<torch::Tensor>& decisions) {
  ELASTIC_CHECK(!decisions.empty(), "model_sparsity: no routing decisions recorded");
  auto s = torch::stack(decisions, 0);  // [L, B, H]
  return 1.0 - s.mean(std::vector<int64_t>{0, 2});
}

torch::Tensor sampled_sparsity(const std::vector<torch::Tensor>& router_logits) {
  ELASTIC_CHECK(!router_logits.empty(), "sampled_sparsity: no router logits recorded");
  // argmax(z + g) is FA with probability softmax(z)[FA] (the Gumbel-max trick), whatever τ: the
  // expected decisions are those probabilities.
  std::vector<torch::Tensor> p_fa;
  for (const auto& z : router_logits) p_fa.push_back(torch::softmax(z.to(torch::kFloat32), -1).select(-1, 1));
  return model_sparsity(p_fa);
}

double effective_sparsity(int64_t n, int64_t sink, int64_t window, const torch::Tensor& decisions) {
  // Visible keys of a streaming head, summed over queries.
  int64_t ssa_pairs = 0;
  for (int64_t i = 0; i < n; ++i) {
    ssa_pairs += std::min(i + 1, window) + std::max<int64_t>(0, std::min(sink, i - window + 1));
  }
  const double full = static_cast<double>(n) * (n + 1) / 2.0;
  auto d = decisions.to(torch::kCPU, torch::kFloat64);
  const double heads = static_cast<double>(d.numel());
  const double fa_heads = d.sum().item<double>();
  const double visible = fa_heads * full + (heads - fa_heads) * static_cast<double>(ssa_pairs);
  return 1.0 - visible / (heads * full);
}

LagrangianImpl::LagrangianImpl(const TrainConfig& cfg, uint64_t seed) : signed_form(cfg.objective_form == "signed") {
  for (const auto& t : cfg.tasks) {
    ids.push_back(t.id);
    targets.push_back(t.target);
  }
  ids.push_back(-1);
  targets.push_back(cfg.objective_default_target);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x5eed1a3bdaull);
  auto init = torch::empty({static_cast<int64_t>(ids.size()), 2}).uniform_(0.0, cfg.objective_lambda_init_max, gen);
  lambdas = register_parameter("lambdas", init);
}

int64_t LagrangianImpl::slot(int64_t task_id) const {
  for (size_t i = 0; i + 1 < ids.size(); ++i)
    if (ids[i] == task_id) return static_cast<int64_t>(i);
  return static_cast<int64_t>(ids.size()) - 1;
}

torch::Tensor LagrangianImpl::loss(const torch::Tensor& omega, const std::vector<int64_t>& task_ids,
                                   const std::vector<int64_t>& task_counts) const {
  ELASTIC_CHECK(static_cast<int64_t>(task_ids.size()) == omega.size(0), "sparsity loss: task ids and Ω sizes differ");
  int64_t present = 0;
  for (auto c : task_counts) present += c > 0;
  if (present == 0) return torch::zeros({}, omega.options());
  std::vector<int64_t> slots;
  std::vector<double> tg, weight;
  for (auto id : task_ids) {
    const int64_t s = slot(id);
    ELASTIC_CHECK(task_counts[s] > 0, "sparsity loss: task " << id << " missing from the global batch counts");
    slots.push_back(s);
    tg.push_back(targets[s]);
    weight.push_back(1.0 / (static_cast<double>(task_counts[s]) * present));
  }
  auto dev = omega.device();
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto idx = torch::tensor(slots, torch::TensorOptions().dtype(torch::kInt64)).to(dev);
  auto t = torch::tensor(tg, f64).to(dev, omega.scalar_type());
  auto w = torch::tensor(weight, f64).to(dev, omega.scalar_type());
  auto lam = lambdas.to(dev).index_select(0, idx).to(omega.scalar_type());  // [B, 2]
  auto gap = omega - t;
  auto first = signed_form ? gap : gap.abs();
  auto per_sample = lam.select(1, 0) * first + lam.select(1, 1) * gap * gap;
  return (per_sample * w).sum();
}

}  // namespace elastic::train
