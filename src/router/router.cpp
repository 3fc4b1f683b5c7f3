#include "router/router.h"

#include "util/device_copy.h"
#include "util/error.h"

namespace elastic::router {

Pooling parse_pooling(const std::string& name, const std::string& key) {
  if (name == "boundary") return Pooling::boundary;
  if (name == "prompt_mean") return Pooling::prompt_mean;
  if (name == "first_token") return Pooling::first_token;
  ELASTIC_FAIL(key << ": unknown pooling '" << name << "' (expected boundary, prompt_mean or first_token)");
}

const char* pooling_name(Pooling p) {
  switch (p) {
    case Pooling::boundary: return "boundary";
    case Pooling::prompt_mean: return "prompt_mean";
    case Pooling::first_token: return "first_token";
  }
  return "?";
}

RouterImpl::RouterImpl(const RouterOptions& opt) : opt_(opt) {
  const int64_t d = opt.head_dim, h = opt.hidden_mult * opt.head_dim;
  namespace nn = torch::nn;
  cls_feat_extractor = register_module(
      "cls_feat_extractor", nn::Sequential(nn::Linear(d, h), nn::SiLU(), nn::Linear(h, d)));
  cls_router_head_agnostic = register_module(
      "cls_router_head_agnostic",
      nn::Sequential(nn::Linear(d, h), nn::SiLU(), nn::Linear(h, d), nn::SiLU(), nn::Linear(d, 2)));
  reset_parameters();
}

void RouterImpl::reset_parameters() {
  torch::NoGradGuard ng;
  for (auto* seq : {&cls_feat_extractor, &cls_router_head_agnostic}) {
    for (auto& m : (*seq)->children()) {
      if (auto* lin = m->as<torch::nn::Linear>()) lin->reset_parameters();  // Kaiming-uniform
    }
  }
  // The last linear starts at zero weight and equal bias: every head is routed 50/50.
  auto last = cls_router_head_agnostic[4]->as<torch::nn::Linear>();
  last->weight.zero_();
  last->bias.zero_();
}

PoolPlan make_pool_plan(const RouterOptions& opt, const std::vector<int64_t>& cu,
                        const std::vector<PromptRange>& prompts, torch::Device device) {
  const int64_t B = static_cast<int64_t>(cu.size()) - 1;
  ELASTIC_CHECK(static_cast<int64_t>(prompts.size()) == B,
                "router: " << prompts.size() << " prompt ranges for " << B << " samples");
  std::vector<int64_t> idx, seg;
  std::vector<float> w;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = cu[b + 1] - cu[b];
    int64_t pb = std::clamp<int64_t>(prompts[b].begin, 0, n - 1);
    int64_t pe = std::clamp<int64_t>(prompts[b].end, pb + 1, n);
    std::vector<int64_t> rows;
    switch (opt.pooling) {
      case Pooling::first_token: rows.push_back(pb); break;
      case Pooling::prompt_mean:
        for (int64_t i = pb; i < pe; ++i) rows.push_back(i);
        break;
      case Pooling::boundary: {
        // Mean over the concatenation of the first P and the last P prompt tokens
        // (tokens in both halves of a short prompt count twice, as in the reference).
        const int64_t p = std::min(opt.pool_tokens, pe - pb);
        for (int64_t i = pb; i < pb + p; ++i) rows.push_back(i);
        for (int64_t i = pe - p; i < pe; ++i) rows.push_back(i);
        break;
      }
    }
    for (auto r : rows) {
      idx.push_back(cu[b] + r);
      seg.push_back(b);
      w.push_back(1.0f / static_cast<float>(rows.size()));
    }
  }
  return {B, util::to_device(idx, device), util::to_device(seg, device),
          util::to_device(torch::tensor(w, torch::TensorOptions().dtype(torch::kFloat32)), device)};
}

torch::Tensor RouterImpl::pool(const torch::Tensor& keys, const PoolPlan& plan) const {
  auto rows = keys.index_select(0, plan.rows).to(torch::kFloat32) * plan.weight.view({-1, 1, 1});
  return torch::zeros({plan.samples, keys.size(1), keys.size(2)}, rows.options()).index_add(0, plan.segment, rows);
}

torch::Tensor RouterImpl::pool(const torch::Tensor& keys, const std::vector<int64_t>& cu,
                               const std::vector<PromptRange>& prompts) const {
  return pool(keys, make_pool_plan(opt_, cu, prompts, keys.device()));
}

torch::Tensor RouterImpl::logits(const torch::Tensor& pooled) {
  auto p = pooled.to(cls_feat_extractor->parameters()[0].scalar_type());
  return cls_router_head_agnostic->forward(cls_feat_extractor->forward(p)).to(torch::kFloat32);
}

torch::Tensor RouterImpl::forward(const torch::Tensor& keys, const std::vector<int64_t>& cu,
                                  const std::vector<PromptRange>& prompts) {
  return logits(pool(keys, cu, prompts));
}

torch::Tensor RouterImpl::forward(const torch::Tensor& keys, const PoolPlan& plan) { return logits(pool(keys, plan)); }

}  // namespace elastic::router
