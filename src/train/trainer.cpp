#include "train/trainer.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>

#include "io/atomic_file.h"
#include "model/weights.h"
#include "router/gumbel.h"
#include "train/export.h"
#include "train/schedules.h"
#include "util/error.h"
#include "util/log.h"
#include "util/memory.h"
#include "util/progress.h"

namespace elastic::train {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<torch::Tensor> unfreeze(model::CausalLM& m, const std::vector<std::string>& patterns) {
  std::vector<torch::Tensor> out;
  for (const auto& pat : patterns) {
    std::regex re;
    try {
      re = std::regex(pat);
    } catch (const std::regex_error& e) {
      ELASTIC_FAIL("train.trainable: invalid regex '" << pat << "' (" << e.what() << ")");
    }
    int matched = 0;
    for (auto& p : m->named_parameters()) {
      if (p.key().find(".mask_allocator.") != std::string::npos) continue;
      if (!std::regex_search(p.key(), re)) continue;
      ++matched;
      if (!p.value().requires_grad()) {
        p.value().set_requires_grad(true);
        out.push_back(p.value());
      }
    }
    ELASTIC_CHECK(matched > 0, "train.trainable: pattern '" << pat << "' matches no backbone parameter");
  }
  return out;
}

Trainer::Trainer(const TrainConfig& cfg) : cfg_(cfg), device_(model::parse_device(cfg.model_device, "model.device")) {
  dtype_ = cfg.model_dtype == "auto" ? (device_.is_cuda() ? torch::kBFloat16 : torch::kFloat32)
                                     : model::parse_dtype(cfg.model_dtype, "model.dtype");
  auto ds = data::Dataset::open(cfg.data_path);
  model_ = model::load_model(cfg.model_path, dtype_, device_);
  ELASTIC_CHECK(ds->header().vocab_size <= model_->config().vocab_size,
                cfg.data_path << ": dataset vocabulary (" << ds->header().vocab_size << ") exceeds the model's ("
                              << model_->config().vocab_size << ")");
  base_fingerprint_ = model::weights_fingerprint(cfg.model_path);
  loader_ = std::make_unique<data::DataLoader>(ds, cfg.train_seed, cfg.data_shuffle);
  if (cfg.train_routing == "router") {
    torch::manual_seed(cfg.train_seed);  // router init
    router::RouterOptions ro;
    ro.head_dim = model_->config().head_dim;
    ro.hidden_mult = cfg.router_hidden_mult;
    ro.pooling = router::parse_pooling(cfg.router_pooling, "router.pooling");
    ro.pool_tokens = cfg.router_pool_tokens;
    model_->attach_routers(ro);
    opt_router_ = std::make_unique<torch::optim::AdamW>(
        router_params(), torch::optim::AdamWOptions(cfg.optim_lr)
                             .betas({cfg.optim_beta1, cfg.optim_beta2})
                             .eps(cfg.optim_eps)
                             .weight_decay(cfg.optim_weight_decay));
  }
  lagrangian_ = Lagrangian(cfg, cfg.train_seed);
  lagrangian_->to(device_);
  opt_lambda_ = std::make_unique<torch::optim::Adam>(
      std::vector<torch::Tensor>{lagrangian_->lambdas},
      torch::optim::AdamOptions(cfg.optim_lambda_lr).betas({cfg.optim_beta1, cfg.optim_beta2}).eps(cfg.optim_eps));
  backbone_params_ = unfreeze(model_, cfg.train_trainable);
  if (!backbone_params_.empty()) {
    model_->train();
    opt_backbone_ = std::make_unique<torch::optim::AdamW>(
        backbone_params_, torch::optim::AdamWOptions(cfg.train_backbone_lr)
                              .betas({cfg.optim_beta1, cfg.optim_beta2})
                              .eps(cfg.optim_eps)
                              .weight_decay(cfg.optim_weight_decay));
  }
  ELASTIC_CHECK(opt_router_ || opt_backbone_,
                "nothing to train: train.routing is 'off' and train.trainable selects no parameter");
  fs::create_directories(cfg.output_dir);
  io::write_file_atomic((fs::path(cfg.output_dir) / "config.yaml").string(), to_yaml(cfg));
  log::add_file((fs::path(cfg.output_dir) / "train.log").string());
  int64_t n_router = 0;
  for (auto& p : router_params()) n_router += p.numel();
  LOG_INFO("model " << cfg.model_path << " (" << model_->config().architecture << ", "
                    << model_->config().num_parameters() / 1e6 << "M params, " << c10::toString(dtype_) << " on "
                    << device_ << "); routers " << n_router << " params; dataset " << cfg.data_path << " ("
                    << ds->size() << " packs, " << ds->header().num_tokens << " tokens)");
}

std::vector<torch::Tensor> Trainer::router_params() const {
  std::vector<torch::Tensor> out;
  for (auto& [n, p] : model_->router_parameters()) out.push_back(p);
  return out;
}

json Trainer::step() {
  const auto t0 = std::chrono::steady_clock::now();
  const bool routing = cfg_.train_routing == "router";
  const double tau = tau_at(step_, cfg_.train_steps, cfg_.tau_schedule, cfg_.tau_max, cfg_.tau_min,
                            cfg_.tau_anneal_fraction, cfg_.tau_exp_rate);
  last_tau_ = tau;
  const double lr_scale = lr_at(step_, cfg_.train_steps, 1.0, cfg_.optim_warmup_fraction, cfg_.optim_min_lr_ratio);
  auto set_lr = [&](auto* opt, double base) {
    if (!opt) return;
    for (auto& g : opt->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(base * lr_scale);
  };
  set_lr(opt_router_.get(), cfg_.optim_lr);
  set_lr(opt_backbone_.get(), cfg_.train_backbone_lr);
  for (auto& g : opt_lambda_->param_groups())
    static_cast<torch::optim::AdamOptions&>(g.options()).lr(cfg_.optim_lambda_lr * lr_scale);

  // Load the step's packs first: the loss normalisers are global over the step.
  const int64_t M = cfg_.train_micro_batches;
  std::vector<data::Batch> batches;
  int64_t total_targets = 0, total_tokens = 0;
  std::vector<int64_t> task_counts(lagrangian_->ids.size(), 0);
  for (int64_t m = 0; m < M; ++m) {
    batches.push_back(data::make_batch(loader_->at(cursor_ + m), device_));
    total_targets += batches.back().labelled_targets;
    total_tokens += batches.back().pack.tokens();
    for (auto t : batches.back().tasks) task_counts[lagrangian_->slot(t)]++;
  }
  ELASTIC_CHECK(total_targets > 0, "step " << step_ << ": no labelled tokens in the batch (check the dataset labels)");

  double ce_sum = 0, sp_sum = 0;
  std::vector<double> omega_sum(task_counts.size(), 0.0), esr_sum(task_counts.size(), 0.0);
  for (int64_t m = 0; m < M; ++m) {
    auto& b = batches[m];
    model::ForwardContext ctx;
    ctx.pack = &b.pack;
    ctx.prompts = b.prompts;
    ctx.ssa = attention::MaskSpec::streaming(cfg_.ssa_sink, cfg_.ssa_window);
    ctx.tau = tau;
    auto gen = router::routing_generator(cfg_.train_seed, /*rank=*/0, step_ * M + m);
    ctx.gen = &gen;
    ctx.mode = routing ? model::RoutingMode::train : model::RoutingMode::off;
    ctx.checkpoint = cfg_.train_checkpoint;
    auto hidden = model_->forward_hidden(b.ids, ctx);
    auto lm = lm_loss(model_, hidden, b.ids, b.labels, b.pack, cfg_.train_logits_chunk);
    auto loss = lm.sum / static_cast<double>(total_targets);
    ce_sum += lm.sum.item<double>();
    if (routing) {
      auto omega = model_sparsity(ctx.decisions);
      auto sp = lagrangian_->loss(omega, b.tasks, task_counts);
      loss = loss + sp;
      sp_sum += sp.item<double>();
      auto om = omega.detach().to(torch::kCPU, torch::kFloat64);
      auto dec = torch::stack(ctx.decisions, 0).detach().to(torch::kCPU);  // [L,B,H]
      for (size_t i = 0; i < b.tasks.size(); ++i) {
        const auto s = lagrangian_->slot(b.tasks[i]);
        omega_sum[s] += om[i].item<double>();
        esr_sum[s] += effective_sparsity(b.pack.length(i), cfg_.ssa_sink, cfg_.ssa_window, dec.select(1, i));
      }
    }
    loss.backward();
  }

  // λ is maximised: ascend its gradient.
  if (lagrangian_->lambdas.grad().defined()) lagrangian_->lambdas.mutable_grad().neg_();
  std::vector<torch::Tensor> clipped = router_params();
  clipped.insert(clipped.end(), backbone_params_.begin(), backbone_params_.end());
  const double grad_norm = torch::nn::utils::clip_grad_norm_(clipped, cfg_.optim_grad_clip);
  if (opt_router_) opt_router_->step();
  if (opt_backbone_) opt_backbone_->step();
  if (routing) opt_lambda_->step();
  for (auto* o : std::initializer_list<torch::optim::Optimizer*>{opt_router_.get(), opt_backbone_.get(), opt_lambda_.get()})
    if (o) o->zero_grad();

  if (device_.is_cuda()) torch::cuda::synchronize();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  cursor_ += M;
  ++step_;

  json j;
  j["step"] = step_;
  j["lm_loss"] = ce_sum / total_targets;
  j["sparsity_loss"] = sp_sum;
  j["loss"] = ce_sum / total_targets + sp_sum;
  j["tau"] = tau;
  j["lr"] = cfg_.optim_lr * lr_scale;
  j["grad_norm"] = grad_norm;
  j["tokens"] = total_tokens;
  j["tokens_per_s"] = total_tokens / dt;
  j["step_seconds"] = dt;
  j["peak_memory_gb"] = peak_memory_gb(device_);
  if (routing) {
    int64_t n = 0;
    double om = 0, es = 0;
    json per_task = json::object();
    auto lam = lagrangian_->lambdas.detach().to(torch::kCPU, torch::kFloat64);
    for (size_t s = 0; s < task_counts.size(); ++s) {
      n += task_counts[s];
      om += omega_sum[s];
      es += esr_sum[s];
      const std::string name = lagrangian_->ids[s] < 0 ? "other" : cfg_.task_by_id(lagrangian_->ids[s])->name;
      json t = {{"target", lagrangian_->targets[s]},
                {"lambda1", lam[s][0].item<double>()},
                {"lambda2", lam[s][1].item<double>()},
                {"samples", task_counts[s]}};
      if (task_counts[s] > 0) {
        t["omega_msr"] = omega_sum[s] / task_counts[s];
        t["omega_esr"] = esr_sum[s] / task_counts[s];
      }
      per_task[name] = t;
    }
    j["omega_msr"] = om / std::max<int64_t>(n, 1);
    j["omega_esr"] = es / std::max<int64_t>(n, 1);
    j["tasks"] = per_task;
  }
  return j;
}

json Trainer::run() {
  const auto metrics_path = (fs::path(cfg_.output_dir) / "metrics.jsonl").string();
  std::ofstream metrics(metrics_path, std::ios::app);
  ELASTIC_CHECK(metrics.good(), metrics_path << ": cannot open for writing");
  Progress progress("train", cfg_.train_steps, step_);
  json last;
  while (step_ < cfg_.train_steps) {
    last = step();
    metrics << last.dump() << "\n";
    metrics.flush();
    std::ostringstream status;
    status << "loss " << std::fixed << std::setprecision(4) << last["lm_loss"].get<double>();
    if (last.contains("omega_msr")) status << " Ω " << std::setprecision(3) << last["omega_msr"].get<double>();
    status << " τ " << std::setprecision(2) << last["tau"].get<double>() << " " << std::setprecision(0)
           << last["tokens_per_s"].get<double>() << " tok/s";
    if (step_ % cfg_.log_every == 0 || step_ == cfg_.train_steps) progress.update(step_, status.str());
  }
  progress.finish("");
  write_outputs(last);
  return last;
}

void Trainer::write_outputs(const json& last) {
  if (cfg_.train_routing == "router") {
    export_router(model_, router_manifest(model_, cfg_, base_fingerprint_, last_tau_), cfg_.output_dir);
    LOG_INFO("router written to " << (fs::path(cfg_.output_dir) / "router.safetensors").string());
  }
  if (!backbone_params_.empty()) {
    model::save_model(model_, (fs::path(cfg_.output_dir) / "model").string());
    LOG_INFO("trained backbone written to " << (fs::path(cfg_.output_dir) / "model").string());
  }
  io::write_file_atomic((fs::path(cfg_.output_dir) / "summary.json").string(), last.dump(2) + "\n");
}

}  // namespace elastic::train
