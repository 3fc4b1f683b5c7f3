// A learning test on a designed toy problem, through the real router, Gumbel-STE routing,
// hybrid attention, Lagrangian objective and AdamW: for a "robust" task streaming
// attention loses nothing (samples shorter than the window), for a "sensitive" task the
// answer needs a key far outside the window. The router must reach the robust target and
// keep full-attention heads for the sensitive task.
#include <gtest/gtest.h>

#include "attention/hybrid.h"
#include "router/gumbel.h"
#include "router/router.h"
#include "train/config.h"
#include "train/objective.h"

using namespace elastic;

TEST(Learning, RouterLearnsTaskDependentSparsity) {
  torch::manual_seed(0);
  const int64_t L = 3, H = 2, d = 16, B = 8;
  const auto ssa = attention::MaskSpec::streaming(0, 8);
  train::TrainConfig cfg;
  // The ideal routing (head 1 full attention in every layer, head 0 streaming) has Ω = 0.5.
  cfg.tasks = {{"sensitive", 0, 0.5}, {"robust", 2, 1.0}};
  train::Lagrangian lag(cfg, 0);
  std::vector<router::Router> routers;
  std::vector<torch::Tensor> params;
  for (int l = 0; l < L; ++l) {
    router::RouterOptions o;
    o.head_dim = d;
    o.pooling = router::Pooling::prompt_mean;
    routers.emplace_back(o);
    for (auto& p : routers.back()->parameters()) params.push_back(p);
  }
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).weight_decay(0.1));
  torch::optim::Adam opt_lam({lag->lambdas}, torch::optim::AdamOptions(5e-2));

  // Half the samples of each batch per task; each task's keys carry a task-specific offset
  // so the router can tell them apart from the pooled keys.
  auto make_batch = [&](int64_t step, std::vector<int64_t>& tasks, attention::Packing& pack) {
    std::vector<int64_t> lengths;
    tasks.clear();
    for (int64_t b = 0; b < B; ++b) {
      const bool sensitive = b % 2 == 0;
      tasks.push_back(sensitive ? 0 : 2);
      lengths.push_back(sensitive ? 64 : 6);
    }
    pack = attention::Packing::from_lengths(lengths, torch::kCPU);
    const int64_t T = pack.tokens();
    auto k = torch::randn({T, H, d}, torch::kFloat64) * 0.3;
    auto q = torch::randn({T, H, d}, torch::kFloat64) * 0.3;
    auto v = torch::randn({T, H, d}, torch::kFloat64);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t s0 = pack.begin(b), n = pack.length(b);
      k.narrow(0, s0, n).select(2, 0).add_(tasks[b] == 0 ? 2.0 : -2.0);
      if (tasks[b] == 0) {
        // The last query looks for the first key: only full attention reaches it.
        k[s0].select(1, 1).fill_(3.0);
        q[s0 + n - 1].select(1, 1).fill_(3.0);
      }
    }
    return std::make_tuple(q, k, v);
  };

  auto run = [&](bool train_mode, int64_t step, double& loss_out, std::vector<double>& omega_task) {
    std::vector<int64_t> tasks;
    attention::Packing pack;
    auto [q, k, v] = make_batch(step, tasks, pack);
    auto fa = attention::attention_forward(q, k, v, pack, attention::MaskSpec::causal(), 0.25).out;
    std::vector<torch::Tensor> decisions;
    torch::Tensor task_loss = torch::zeros({}, torch::kFloat64);
    auto gen = router::routing_generator(0, 0, step);
    for (int l = 0; l < L; ++l) {
      auto z = routers[l]->forward(k, pack.cu, std::vector<router::PromptRange>(B, {0, 6}));
      auto s = train_mode ? router::fa_weight(router::gumbel_softmax_ste(z, router::gumbel_noise(z, gen), 1.0))
                          : router::hard_decision(z);
      decisions.push_back(s);
      auto out = attention::hybrid_attention(q, k, v, s.to(torch::kFloat64), pack, ssa, 0.25);
      // Task loss: squared error against full attention on head 1 at each sample's last
      // token. Head 0's output is not used, so it can always stream.
      auto last = torch::tensor(std::vector<int64_t>(pack.cu.begin() + 1, pack.cu.end())) - 1;
      task_loss = task_loss +
                  (out.index_select(0, last) - fa.index_select(0, last)).select(1, 1).pow(2).sum() / (L * B);
    }
    auto omega = train::model_sparsity(decisions);
    auto sp = lag->loss(omega, tasks, {B / 2, B / 2, 0});
    loss_out = task_loss.item<double>();
    omega_task = {0, 0};
    for (int64_t b = 0; b < B; ++b) omega_task[tasks[b] == 0 ? 0 : 1] += omega[b].item<double>() / (B / 2);
    return task_loss + sp;
  };

  double loss;
  std::vector<double> om;
  for (int64_t step = 0; step < 400; ++step) {
    auto total = run(true, step, loss, om);
    opt.zero_grad();
    opt_lam.zero_grad();
    total.backward();
    lag->lambdas.mutable_grad().neg_();
    opt.step();
    opt_lam.step();
    if (std::getenv("ELASTIC_DEBUG_LEARNING") && step % 10 == 0)
      std::cerr << "step " << step << " loss " << loss << " omega " << om[0] << " " << om[1] << " lambda "
                << lag->lambdas << "\n";
  }
  torch::NoGradGuard ng;
  std::vector<double> om_eval(2, 0.0);
  double loss_eval = 0;
  for (int64_t step = 1000; step < 1010; ++step) {
    run(false, step, loss, om);
    if (std::getenv("ELASTIC_DEBUG_LEARNING")) std::cerr << "eval omega " << om[0] << " " << om[1] << "\n";
    om_eval[0] += om[0] / 10;
    om_eval[1] += om[1] / 10;
    loss_eval += loss / 10;
  }
  // Robust task: essentially all heads streaming. Sensitive task: full-attention heads kept.
  EXPECT_GE(om_eval[1], 0.9) << "robust Ω_MSR";
  EXPECT_LE(om_eval[0], 0.7) << "sensitive Ω_MSR";
  EXPECT_GT(om_eval[1] - om_eval[0], 0.25);
  // The task loss with every head streaming, for comparison: the router must recover most of it.
  double loss_ssa = 0;
  {
    std::vector<int64_t> tasks;
    attention::Packing pack;
    auto [q, k, v] = make_batch(0, tasks, pack);
    auto fa = attention::attention_forward(q, k, v, pack, attention::MaskSpec::causal(), 0.25).out;
    auto sa = attention::attention_forward(q, k, v, pack, ssa, 0.25).out;
    auto last = torch::tensor(std::vector<int64_t>(pack.cu.begin() + 1, pack.cu.end())) - 1;
    loss_ssa = (sa.index_select(0, last) - fa.index_select(0, last)).select(1, 1).pow(2).sum().item<double>() / B;
  }
  EXPECT_LT(loss_eval, 0.25 * loss_ssa) << "the kept full-attention heads must be the ones the task needs";
}
