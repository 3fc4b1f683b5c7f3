// Router, Gumbel straight-through routing, schedules and the sparsity objective.
#include <gtest/gtest.h>

#include "router/gumbel.h"
#include "router/router.h"
#include "test_util.h"
#include "train/objective.h"
#include "train/schedules.h"

using namespace elastic;
using elastic::testing::rel_err;

TEST(Gumbel, StraightThroughForwardIsExactlyHardAndGradientIsSoft) {
  torch::manual_seed(0);
  auto z = torch::randn({5, 3, 2}, torch::kFloat64).requires_grad_();
  auto gen = router::routing_generator(1, 0, 0);
  auto noise = router::gumbel_noise(z, gen);
  const double tau = 1.3;
  auto r = router::gumbel_softmax_ste(z, noise, tau);
  // Forward: exactly one-hot.
  EXPECT_TRUE(torch::equal(r.sum(-1), torch::ones({5, 3}, torch::kFloat64)));
  EXPECT_TRUE(torch::equal(r * (1 - r), torch::zeros_like(r)));
  auto w = torch::randn({5, 3, 2}, torch::kFloat64);
  (r * w).sum().backward();
  auto g_ste = z.grad().clone();
  z.mutable_grad().zero_();
  (torch::softmax((z + noise) / tau, -1) * w).sum().backward();
  EXPECT_LT(rel_err(g_ste, z.grad()), 1e-14);
  // The argmax of the hard sample is the argmax of z + g.
  EXPECT_TRUE(torch::equal(r.argmax(-1), (z + noise).argmax(-1)));
}

TEST(Gumbel, NoiseIsReproduciblePerSeedRankStep) {
  auto like = torch::zeros({4, 8, 2});
  auto a = router::routing_generator(7, 0, 3), b = router::routing_generator(7, 0, 3), c = router::routing_generator(7, 1, 3),
       d = router::routing_generator(7, 0, 4);
  auto na = router::gumbel_noise(like, a);
  EXPECT_TRUE(torch::equal(na, router::gumbel_noise(like, b)));
  EXPECT_FALSE(torch::equal(na, router::gumbel_noise(like, c)));
  EXPECT_FALSE(torch::equal(na, router::gumbel_noise(like, d)));
  // g = -log(-log(u)) has mean ~ Euler's constant.
  auto big = router::routing_generator(1, 0, 0);
  auto g = router::gumbel_noise(torch::zeros({200000}), big);
  EXPECT_NEAR(g.mean().item<double>(), 0.5772, 0.01);
}

TEST(Router, InitialisedAtFiftyFiftyAndShapes) {
  router::RouterOptions o;
  o.head_dim = 16;
  router::Router r(o);
  int64_t n = 0;
  for (const auto& p : r->parameters()) n += p.numel();
  EXPECT_EQ(n, (16 * 64 + 64 + 64 * 16 + 16) * 2 + 16 * 2 + 2);
  auto keys = torch::randn({30, 3, 16});
  auto z = r->forward(keys, {0, 10, 30}, {{0, 5}, {2, 20}});
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{2, 3, 2}));
  EXPECT_TRUE(torch::equal(z.select(-1, 0), z.select(-1, 1)));  // zero last layer: equal logits
  // At d = 128, m = 4 the router has about 0.26M parameters per layer (ELASTIC.md §4).
  router::RouterOptions big;
  router::Router rb(big);
  int64_t nb = 0;
  for (const auto& p : rb->parameters()) nb += p.numel();
  EXPECT_NEAR(nb / 1e6, 0.26, 0.01);
}

TEST(Router, PoolingModes) {
  auto keys = torch::arange(40, torch::kFloat32).view({40, 1, 1}).expand({40, 1, 4}).contiguous();
  std::vector<int64_t> cu = {0, 10, 40};
  std::vector<router::PromptRange> prompts = {{2, 8}, {0, 30}};
  auto pool = [&](router::Pooling p, int64_t P) {
    router::RouterOptions o;
    o.head_dim = 4;
    o.pooling = p;
    o.pool_tokens = P;
    return router::Router(o)->pool(keys, cu, prompts).select(-1, 0).squeeze(-1);
  };
  // first_token: position prompt_begin of each sample.
  EXPECT_TRUE(torch::allclose(pool(router::Pooling::first_token, 1), torch::tensor({2.f, 10.f})));
  // prompt_mean: mean over the prompt.
  EXPECT_TRUE(torch::allclose(pool(router::Pooling::prompt_mean, 1), torch::tensor({4.5f, 24.5f})));
  // boundary P = 3: mean of the first 3 and last 3 prompt tokens.
  EXPECT_TRUE(torch::allclose(pool(router::Pooling::boundary, 3), torch::tensor({(2 + 3 + 4 + 5 + 6 + 7) / 6.f,
                                                                                 (10 + 11 + 12 + 37 + 38 + 39) / 6.f})));
  // boundary with P longer than the prompt: both halves are the whole prompt.
  EXPECT_TRUE(torch::allclose(pool(router::Pooling::boundary, 100), torch::tensor({4.5f, 24.5f})));
}

TEST(Schedules, TemperatureAndLearningRate) {
  // cosine: 1.5 at the start, 1.0 from 60% of the steps on, halfway at 30%.
  EXPECT_DOUBLE_EQ(train::tau_at(0, 101, "cosine", 1.5, 1.0, 0.6, 0.6), 1.5);
  EXPECT_NEAR(train::tau_at(30, 101, "cosine", 1.5, 1.0, 0.6, 0.6), 1.25, 1e-12);
  EXPECT_DOUBLE_EQ(train::tau_at(60, 101, "cosine", 1.5, 1.0, 0.6, 0.6), 1.0);
  EXPECT_DOUBLE_EQ(train::tau_at(100, 101, "cosine", 1.5, 1.0, 0.6, 0.6), 1.0);
  // exp: max(tau_min, tau_init * exp(-r p)).
  EXPECT_NEAR(train::tau_at(50, 101, "exp", 1.5, 1.0, 0.6, 0.6), 1.5 * std::exp(-0.3), 1e-12);
  EXPECT_DOUBLE_EQ(train::tau_at(100, 101, "exp", 5.0, 2.0, 0.6, 2.0), 2.0);
  // lr: linear warmup over 20%, cosine to min_ratio.
  EXPECT_NEAR(train::lr_at(0, 100, 1.0, 0.2, 0.1), 1.0 / 20, 1e-12);
  EXPECT_NEAR(train::lr_at(19, 100, 1.0, 0.2, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(train::lr_at(20, 100, 1.0, 0.2, 0.1), 1.0, 1e-12);
  EXPECT_NEAR(train::lr_at(60, 100, 1.0, 0.2, 0.1), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(train::lr_at(100, 100, 1.0, 0.2, 0.1), 0.1, 1e-12);
}

TEST(Objective, SampledSparsityIsTheMeanOfGumbelSampledRouting) {
  // Router logits of 3 layers, 4 samples, 2 KV heads, some sure and some unsure of their choice.
  torch::manual_seed(3);
  std::vector<torch::Tensor> z;
  for (int l = 0; l < 3; ++l) z.push_back(torch::randn({4, 2, 2}, torch::kFloat64) * (l + 0.5));
  auto expected = train::sampled_sparsity(z).to(torch::kFloat64);
  // What training does: hard Gumbel-softmax samples at some τ, then Ω_MSR; averaged over draws.
  const int draws = 20000;
  auto sum = torch::zeros({4}, torch::kFloat64);
  auto gen = router::routing_generator(7, 0, 0);
  for (int i = 0; i < draws; ++i) {
    std::vector<torch::Tensor> dec;
    for (const auto& zl : z)
      dec.push_back(router::fa_weight(router::gumbel_softmax_ste(zl, router::gumbel_noise(zl, gen), 0.7)));
    sum += train::model_sparsity(dec).to(torch::kFloat64);
  }
  // Ω of one draw is a mean of 6 Bernoullis: the mean of 20,000 draws is within 0.01 at > 5 sigma.
  EXPECT_LT((sum / draws - expected).abs().max().item<double>(), 0.01);
  // Hard routing (argmax) differs where the router is unsure: here all heads at p(FA) = 0.6.
  std::vector<torch::Tensor> unsure(2, torch::tensor({{{0.0, std::log(1.5)}}}, torch::kFloat64));
  EXPECT_NEAR(train::sampled_sparsity(unsure).item<double>(), 0.4, 1e-6);  // computed in fp32
  std::vector<torch::Tensor> hard;
  for (const auto& zl : unsure) hard.push_back(router::hard_decision(zl));
  EXPECT_DOUBLE_EQ(train::model_sparsity(hard).item<double>(), 0.0);
}

TEST(Objective, SparsityMeasuresOnHandMadeCases) {
  // Ω_MSR: fraction of streaming heads over layers and heads, per sample.
  std::vector<torch::Tensor> dec = {torch::tensor({{1., 0.}, {1., 1.}}), torch::tensor({{0., 0.}, {1., 0.}})};
  auto om = train::model_sparsity(dec);
  EXPECT_TRUE(torch::allclose(om, torch::tensor({0.75, 0.25}).to(om.scalar_type())));
  // Ω_ESR brute force: count visible pairs.
  auto brute = [](int64_t n, int64_t S, int64_t W) {
    int64_t vis = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) vis += (j < S || i - j < W);
    return vis;
  };
  const int64_t n = 50, S = 3, W = 7;
  const double full = n * (n + 1) / 2.0;
  auto d = torch::tensor({{1., 0., 0.}, {0., 1., 0.}});  // 2 FA of 6 heads
  const double expect = 1.0 - (2 * full + 4 * brute(n, S, W)) / (6 * full);
  EXPECT_NEAR(train::effective_sparsity(n, S, W, d), expect, 1e-12);
  EXPECT_DOUBLE_EQ(train::effective_sparsity(n, S, W, torch::ones({2, 3})), 0.0);
  EXPECT_DOUBLE_EQ(train::effective_sparsity(6, 2, 7, torch::zeros({2, 3})), 0.0);  // window covers all
}

TEST(Objective, LambdaRisesUnderViolationAndLossFollowsTheFormula) {
  train::TrainConfig cfg;
  cfg.tasks = {{"qa", 0, 0.7}, {"sum", 2, 1.0}};
  train::Lagrangian lag(cfg, 3);
  auto before = lag->lambdas.detach().clone();
  auto omega = torch::tensor({0.5, 0.9, 0.2}, torch::kFloat32).requires_grad_();
  std::vector<int64_t> tasks = {0, 2, 0};
  std::vector<int64_t> counts = {2, 1, 0};  // per slot: qa, sum, default
  auto loss = lag->loss(omega, tasks, counts);
  // Σ_k mean_{i∈k}(λ1|Ω−t| + λ2(Ω−t)²) / K with K = 2 tasks present.
  auto l = before.to(torch::kFloat64);
  auto term = [&](int s, double o, double t) { return l[s][0].item<double>() * std::abs(o - t) + l[s][1].item<double>() * (o - t) * (o - t); };
  const double expect = ((term(0, 0.5, 0.7) + term(0, 0.2, 0.7)) / 2 + term(1, 0.9, 1.0)) / 2;
  EXPECT_NEAR(loss.item<double>(), expect, 1e-6);
  // Gradient ascent on λ: violations make both multipliers of the violated tasks grow.
  loss.backward();
  lag->lambdas.mutable_grad().neg_();
  torch::optim::Adam opt({lag->lambdas}, torch::optim::AdamOptions(0.01));
  opt.step();
  auto after = lag->lambdas.detach();
  for (int s = 0; s < 2; ++s)
    for (int j = 0; j < 2; ++j) EXPECT_GT(after[s][j].item<double>(), before[s][j].item<double>()) << s << "," << j;
  EXPECT_DOUBLE_EQ(after[2][0].item<double>(), before[2][0].item<double>());  // absent task untouched
  // Init U(0, 0.5).
  EXPECT_GE(before.min().item<double>(), 0.0);
  EXPECT_LE(before.max().item<double>(), 0.5);
}
