// Activation checkpointing must not change gradients: routers and unfrozen backbone
// parameters get the same gradients with and without it (fp64, same Gumbel noise).
#include <gtest/gtest.h>

#include "cpu_memory.h"
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

// A 3-layer fp64 Qwen3 with routers (random, so decisions differ per head) and the backbone
// parameters whose names contain `trainable` trainable.
model::CausalLM make_model(torch::Device device, const std::string& trainable = "mlp.up_proj") {
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
  // Non-zero router weights so decisions differ per head.
  {
    torch::NoGradGuard ng;
    for (auto& [n, p] : m->router_parameters()) p.normal_(0, 0.3);
  }
  for (auto& p : m->named_parameters())
    if (p.key().find(trainable) != std::string::npos) p.value().set_requires_grad(true);
  return m;
}

std::vector<torch::Tensor> trainable_grads(model::CausalLM& m) {
  std::vector<torch::Tensor> g;
  for (auto& p : m->parameters())
    if (p.requires_grad()) g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return g;
}

// A training-mode forward context over `pack` (SSA sink 2 + window 6) with noise from `gen`.
model::ForwardContext training_context(const attention::Packing& pack, torch::Generator& gen, bool checkpoint,
                                       int64_t keep_layers = 0) {
  model::ForwardContext ctx;
  ctx.pack = &pack;
  ctx.mode = model::RoutingMode::train;
  ctx.ssa = attention::MaskSpec::streaming(2, 6);
  ctx.gen = &gen;
  ctx.checkpoint = checkpoint;
  ctx.keep_layers = keep_layers;
  return ctx;
}

// Forward, LM loss plus the summed sparsity, backward; returns the loss.
double train_pass(model::CausalLM& m, const torch::Tensor& ids, const torch::Tensor& labels, model::ForwardContext& ctx) {
  auto h = m->forward_hidden(ids, ctx);
  auto lm = train::lm_loss(m, h, ids, labels, *ctx.pack, 16);
  auto loss = lm.sum / lm.tokens + train::model_sparsity(ctx.decisions).sum();
  loss.backward();
  return loss.item<double>();
}

// keep_layers: the checkpointed run keeps the last N layers' activations instead of recomputing them.
// keep_attention: as many checkpointed layers keep their attention's output for the recompute.
void same_gradients_with_and_without_recompute(torch::Device device, bool offload, int64_t keep_layers = 0,
                                               const std::string& trainable = "mlp.up_proj",
                                               int64_t keep_attention = 0) {
  auto m = make_model(device, trainable);
  auto pack = attention::Packing::from_lengths({40, 25}, device);
  auto ids = torch::randint(64, {65});
  auto labels = torch::ones({65}, torch::kUInt8);
  auto run = [&](bool checkpoint) {
    for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();
    auto gen = router::routing_generator(3, 0, 0);
    auto ctx = training_context(pack, gen, checkpoint, checkpoint ? keep_layers : 0);
    ctx.offload_checkpoints = offload;
    ctx.keep_attention = checkpoint ? keep_attention : 0;
    const double loss = train_pass(m, ids, labels, ctx);
    return Run{loss, trainable_grads(m)};
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

TEST(Checkpoint, SameGradientsWithAndWithoutRecompute) {
  same_gradients_with_and_without_recompute(torch::kCPU, false);
  same_gradients_with_and_without_recompute(torch::kCPU, false, 0, "none");  // routers only: the frozen MLP
}

// The recompute stops before a frozen down projection (its output is never needed); a trainable one
// needs its input and output gradient, so the whole layer is recomputed.
TEST(Checkpoint, SameGradientsWithATrainableDownProjection) {
  same_gradients_with_and_without_recompute(torch::kCPU, false, 0, "mlp.down_proj");
  same_gradients_with_and_without_recompute(torch::kCPU, false, 0, "mlp.");
}

// A frozen MLP (model/frozen_mlp.h) and a frozen output projection (train/linear_cross_entropy.h)
// take their own backward, in a kept layer and in a recompute alike. The reference is autograd
// through both: unfreezing their weights changes no other gradient.
TEST(Checkpoint, FrozenMlpAndLossGiveAutogradsRouterGradients) {
  auto m = make_model(torch::kCPU, "none");
  auto pack = attention::Packing::from_lengths({40, 25}, torch::kCPU);
  auto ids = torch::randint(64, {65});
  auto labels = torch::ones({65}, torch::kUInt8);
  labels.narrow(0, 10, 20).zero_();
  auto router_grads = [&](bool checkpoint, int64_t keep) {
    for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();
    auto gen = router::routing_generator(3, 0, 0);
    auto ctx = training_context(pack, gen, checkpoint, keep);
    train_pass(m, ids, labels, ctx);
    std::vector<torch::Tensor> g;
    for (auto& [name, p] : m->router_parameters()) g.push_back(p.grad().clone());
    return g;
  };
  std::vector<torch::Tensor> unfrozen;
  for (auto& p : m->named_parameters()) {
    if (p.key().find("mlp.") != std::string::npos) unfrozen.push_back(p.value());
  }
  unfrozen.push_back(m->lm_head_weight());
  for (auto& p : unfrozen) p.set_requires_grad(true);
  ASSERT_FALSE(m->model->layers[0]->mlp->frozen());
  const auto ref = router_grads(false, 0);
  for (auto& p : unfrozen) p.set_requires_grad(false);
  ASSERT_TRUE(m->model->layers[0]->mlp->frozen());
  for (auto [checkpoint, keep] : {std::pair{false, 0}, {true, 0}, {true, 1}, {true, 3}}) {
    const auto g = router_grads(checkpoint, keep);
    ASSERT_EQ(g.size(), ref.size());
    for (size_t i = 0; i < g.size(); ++i) {
      EXPECT_GT(ref[i].abs().sum().item<double>(), 0) << "router parameter " << i;
      EXPECT_LT(rel_err(g[i], ref[i]), 1e-6) << "router parameter " << i << ", checkpoint " << checkpoint << ", keep " << keep;
    }
  }
}

// train.keep_layers: the kept layers join the recomputed ones in one backward (1 of 3), or replace
// them all (3 of 3).
TEST(Checkpoint, SameGradientsWithLastLayersKept) {
  same_gradients_with_and_without_recompute(torch::kCPU, false, 1);
  same_gradients_with_and_without_recompute(torch::kCPU, false, 3);
  same_gradients_with_and_without_recompute(torch::kCPU, false, 1, "none");
}

// ForwardContext::keep_attention: the recompute takes the forward's selected branches and runs the
// others only for the router gradient. Gradients stay those of the pass without recompute: every
// layer keeping, one next to a kept layer, routers only, and a trainable MLP.
TEST(Checkpoint, SameGradientsWithAttentionOutputsKept) {
  same_gradients_with_and_without_recompute(torch::kCPU, false, 0, "mlp.up_proj", 3);
  same_gradients_with_and_without_recompute(torch::kCPU, false, 1, "mlp.up_proj", 1);
  same_gradients_with_and_without_recompute(torch::kCPU, false, 0, "none", 2);
  same_gradients_with_and_without_recompute(torch::kCPU, false, 1, "mlp.", 2);
}

// What keeping costs, and that it happens: after the forward, each layer that keeps holds its
// attention's output [T, Hq, d] and log-sum-exp [Hq, T] (fp64 here) on top of what the step holds.
TEST(Checkpoint, KeptAttentionHoldsItsOutputAndLogSumExp) {
  auto m = make_model(torch::kCPU, "none");
  auto pack = attention::Packing::from_lengths({40, 25}, torch::kCPU);
  auto ids = torch::randint(64, {65});
  auto held_after_forward = [&](int64_t keep_attention) {
    elastic::testing::CpuMemoryCounter mem;
    auto gen = router::routing_generator(3, 0, 0);
    auto ctx = training_context(pack, gen, true);
    ctx.keep_attention = keep_attention;
    auto h = m->forward_hidden(ids, ctx);
    return mem.now();
  };
  const int64_t per_layer = 65 * 4 * 8 * 8 + 4 * 65 * 8;
  const int64_t none = held_after_forward(0);
  EXPECT_EQ(held_after_forward(2) - none, 2 * per_layer);
  EXPECT_EQ(held_after_forward(3) - none, 3 * per_layer);
  // The model has 3 layers.
  EXPECT_THROW(held_after_forward(4), std::exception);
}

// The kept layers' routing weights come straight from their routers; the others from the
// checkpoint node that recomputes the layer in the backward.
TEST(Checkpoint, KeptLayersSkipTheCheckpoint) {
  auto m = make_model(torch::kCPU);
  auto pack = attention::Packing::from_lengths({8}, torch::kCPU);
  auto gen = router::routing_generator(3, 0, 0);
  auto ctx = training_context(pack, gen, true, 1);
  m->forward_hidden(torch::randint(64, {8}), ctx);
  ASSERT_EQ(ctx.decisions.size(), 3u);
  for (size_t l = 0; l < 3; ++l) {
    ASSERT_TRUE(ctx.decisions[l].grad_fn()) << "layer " << l;
    const bool checkpointed = ctx.decisions[l].grad_fn()->name().find("CheckpointFn") != std::string::npos;
    EXPECT_EQ(checkpointed, l < 2) << "layer " << l << ": " << ctx.decisions[l].grad_fn()->name();
  }
}

TEST(Checkpoint, KeepLayersBeyondTheModelIsRejected) {
  auto m = make_model(torch::kCPU);
  auto pack = attention::Packing::from_lengths({8}, torch::kCPU);
  model::ForwardContext ctx;
  ctx.pack = &pack;
  ctx.checkpoint = true;
  ctx.keep_layers = 4;
  try {
    m->forward_hidden(torch::randint(64, {8}), ctx);
    FAIL() << "keep_layers 4 of 3 layers was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("keep_layers must be in [0, 3], got 4"), std::string::npos) << e.what();
  }
}

// train.keep_layers: auto plans with what a recomputed layer holds in the backward, standing for
// what a kept layer holds from its forward: both are measured (GPU allocator) and must agree.
// Both MLP paths: autograd's (an up projection that trains) and the frozen one.
TEST(Checkpoint, RecomputedLayerHoldsWhatAKeptLayerHolds) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const std::string trainable : {"mlp.up_proj", "none"}) {
    SCOPED_TRACE(trainable);
    auto m = make_model(torch::kCUDA, trainable);
    auto pack = attention::Packing::from_lengths({300, 212}, torch::kCUDA);
    auto ids = torch::randint(64, {512});
    auto labels = torch::ones({512}, torch::kUInt8);
    auto measure = [&](int64_t keep) {
      auto gen = router::routing_generator(3, 0, 0);
      auto ctx = training_context(pack, gen, true, keep);
      ctx.measure_layer_activations = true;
      train_pass(m, ids, labels, ctx);
      return static_cast<double>(ctx.layer_activation_bytes);
    };
    // The backward runs on autograd's device thread, whose first matmul has cuBLAS take its workspace
    // (32 MiB on sm_90) from the allocator: once, in whichever layer's recompute comes first. A pass
    // before the measured ones takes it, as a real run's first step does.
    measure(0);
    const double recomputed = measure(0), kept = measure(3);
    EXPECT_GT(kept, 512 * 32 * 8.0) << "a layer holds at least its norms' inputs and its attention outputs";
    EXPECT_NEAR(recomputed / kept, 1.0, 0.2) << "recomputed " << recomputed << " B, kept " << kept << " B";
  }
}

// Layer inputs kept in pinned host memory between the forward and the recompute, copied on a side
// stream: each recompute takes the input the one before it brought back (three layers: two
// prefetches), and with a layer kept the offloaded ones are the first two.
TEST(Checkpoint, SameGradientsWithOffloadedLayerInputsOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  same_gradients_with_and_without_recompute(torch::kCUDA, true);
  same_gradients_with_and_without_recompute(torch::kCUDA, true, 1);
  same_gradients_with_and_without_recompute(torch::kCUDA, true, 0, "mlp.");
  same_gradients_with_and_without_recompute(torch::kCUDA, true, 1, "none");
}

// Fixed decisions (baselines, bench-train's step without router) through checkpointed layers: the
// same decision tensors serve several passes, and gradients match the pass without recompute.
TEST(Checkpoint, FixedDecisionsServeSeveralPasses) {
  auto m = make_model(torch::kCPU);
  auto pack = attention::Packing::from_lengths({40, 25}, torch::kCPU);
  auto ids = torch::randint(64, {65});
  auto labels = torch::ones({65}, torch::kUInt8);
  std::vector<torch::Tensor> decisions;
  for (int l = 0; l < 3; ++l) decisions.push_back(torch::randint(2, {2, 2}).to(torch::kFloat32));
  auto run = [&](bool checkpoint) {
    for (auto& p : m->parameters()) p.mutable_grad() = torch::Tensor();
    model::ForwardContext ctx;
    ctx.pack = &pack;
    ctx.mode = model::RoutingMode::fixed;
    ctx.fixed_decisions = [&](int64_t l) { return decisions.at(static_cast<size_t>(l)); };
    ctx.ssa = attention::MaskSpec::streaming(2, 6);
    ctx.checkpoint = checkpoint;
    auto lm = train::lm_loss(m, m->forward_hidden(ids, ctx), ids, labels, pack, 16);
    (lm.sum / lm.tokens).backward();
    return trainable_grads(m);
  };
  auto g0 = run(false);
  for (int pass = 0; pass < 2; ++pass) {
    auto g1 = run(true);
    ASSERT_EQ(g0.size(), g1.size());
    for (size_t i = 0; i < g0.size(); ++i) EXPECT_LT(rel_err(g1[i], g0[i]), 1e-10) << "pass " << pass << ", parameter " << i;
  }
  for (const auto& d : decisions) EXPECT_FALSE(d.requires_grad());
}
