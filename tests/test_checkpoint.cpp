// Activation checkpointing must not change gradients: routers and unfrozen backbone
// parameters get the same gradients with and without it (fp64, same Gumbel noise).
#include <gtest/gtest.h>

#include "model/weights.h"
#include "router/gumbel.h"
#include "test_util.h"
#include "train/objective.h"

using namespace elastic;
using elastic::testing::rel_err;

namespace {

// Loss and trainable-parameter gradients of one training forward/backward on `device`, fp64.
struct Run {
  double loss;
  std::vector<torch::Tensor> grads;
};

void same_gradients_with_and_without_recompute(torch::Device device, bool offload) {
  auto cfg = model::ModelConfig::from_json(
      {{"architectures", {"Qwen3ForCausalLM"}}, {"vocab_size", 64}, {"hidden_size", 32}, {"intermediate_size", 48},
       {"num_hidden_layers", 3}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}},
      "test");
  model::CausalLM m(cfg, torch::TensorOptions().dtype(torch::kFloat64).device(device));
  model::init_random(m, 5);
  router::RouterOptions ro;
  ro.head_dim = 8;
  ro.pool_tokens = 4;
  torch::manual_seed(0);
  m->attach_routers(ro);
  for (auto& r : m->routers()) r->to(device, torch::kFloat64);
  // Give the last router layers non-zero weights so decisions differ per head.
  {
    torch::NoGradGuard ng;
    for (auto& [n, p] : m->router_parameters()) p.normal_(0, 0.3);
  }
  for (auto& p : m->named_parameters())
    if (p.key().find("mlp.up_proj") != std::string::npos) p.value().set_requires_grad(true);
  auto pack = attention::Packing::from_lengths({40, 25}, device);
  auto ids = torch::randint(64, {65});
  auto labels = torch::ones({65}, torch::kUInt8);
  auto run = [&](bool checkpoint) {
    for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();
    model::ForwardContext ctx;
    ctx.pack = &pack;
    ctx.mode = model::RoutingMode::train;
    ctx.ssa = attention::MaskSpec::streaming(2, 6);
    ctx.checkpoint = checkpoint;
    ctx.offload_checkpoints = offload;
    auto gen = router::routing_generator(3, 0, 0);
    ctx.gen = &gen;
    auto h = m->forward_hidden(ids, ctx);
    auto lm = train::lm_loss(m, h, ids, labels, pack, 16);
    auto loss = lm.sum / lm.tokens + train::model_sparsity(ctx.decisions).sum();
    loss.backward();
    std::vector<torch::Tensor> g;
    for (auto& p : m->parameters())
      if (p.requires_grad()) g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
    return Run{loss.item<double>(), g};
  };
  auto [l0, g0] = run(false);
  auto [l1, g1] = run(true);
  EXPECT_NEAR(l0, l1, 1e-12);
  ASSERT_EQ(g0.size(), g1.size());
  int nonzero = 0;
  for (size_t i = 0; i < g0.size(); ++i) {
    // Router logits and s are fp32 by design, so sums in another order differ at fp32 rounding.
    EXPECT_LT(rel_err(g1[i], g0[i]), 1e-6) << "parameter " << i;
    nonzero += g0[i].abs().sum().item<double>() > 0;
  }
  EXPECT_GT(nonzero, static_cast<int>(g0.size()) / 2);
}

}  // namespace

TEST(Checkpoint, SameGradientsWithAndWithoutRecompute) { same_gradients_with_and_without_recompute(torch::kCPU, false); }

// Layer inputs kept in pinned host memory between the forward and the recompute.
TEST(Checkpoint, SameGradientsWithOffloadedLayerInputsOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  same_gradients_with_and_without_recompute(torch::kCUDA, true);
}
