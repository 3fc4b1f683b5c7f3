#include "train/trainer.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <regex>

#include "attention/attention.h"
#include "attention/cudnn_sample.h"
#include "io/atomic_file.h"
#include "model/weights.h"
#include "router/gumbel.h"
#include "io/safetensors.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "train/schedules.h"
#include "util/device_copy.h"
#include "util/error.h"
#include "util/log.h"
#include "util/memory.h"
#include "util/progress.h"

namespace elastic::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::atomic<bool> g_stop_requested{false};
extern "C" void on_stop_signal(int) { g_stop_requested = true; }

}  // namespace

void use_training_numerics(torch::Device device) {
  if (!device.is_cuda()) return;
  at::globalContext().setAllowTF32CuBLAS(true);
  attention::set_fp32_attention_in_bf16(true);
}

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

Trainer::Trainer(const TrainConfig& cfg, std::shared_ptr<dist::Comm> comm)
    : cfg_(cfg), device_(model::parse_device(cfg.model_device, "model.device")) {
  // Each rank takes the GPU of its local rank.
  if (device_.is_cuda() && !device_.has_index()) {
    const int local = dist::local_rank_from_env();
    const auto gpus = static_cast<int>(torch::cuda::device_count());
    ELASTIC_CHECK(local < gpus, "local rank " << local << " needs GPU " << local << " but only " << gpus
                                              << " GPU(s) are visible: start at most " << gpus
                                              << " ranks per node (mpirun -np)");
    device_ = torch::Device(torch::kCUDA, static_cast<int8_t>(local));
  }
  comm_ = comm ? comm : dist::Comm::world(device_, cfg.dist_timeout_s);
  log::set_rank(comm_->rank());
  // Forward and head-scores stay exact fp32 (golden checks); eval follows training unless --exact.
  use_training_numerics(device_);
  dtype_ = model::resolve_dtype(cfg.model_dtype, device_, "model.dtype");
  auto ds = data::Dataset::open(cfg.data_path);
  model_ = model::load_model(cfg.model_path, dtype_, device_);
  ELASTIC_CHECK(ds->header().vocab_size <= model_->config().vocab_size,
                cfg.data_path << ": dataset vocabulary (" << ds->header().vocab_size << ") exceeds the model's ("
                              << model_->config().vocab_size << ")");
  base_fingerprint_ = model::weights_fingerprint(cfg.model_path);
  loader_ = std::make_unique<data::DataLoader>(ds, cfg.train_seed, cfg.data_shuffle);
  if (cfg.train_routing == "router") {
    torch::manual_seed(cfg.train_seed);  // router init
    model_->attach_routers(router_options(cfg, model_->config().head_dim));
    opt_router_ = std::make_unique<FusedAdamW>(
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
    opt_backbone_ = std::make_unique<FusedAdamW>(
        backbone_params_, torch::optim::AdamWOptions(cfg.train_backbone_lr)
                              .betas({cfg.optim_beta1, cfg.optim_beta2})
                              .eps(cfg.optim_eps)
                              .weight_decay(cfg.optim_weight_decay));
  }
  const int64_t num_layers = model_->config().num_layers;
  if (cfg.train_keep_layers == "auto") {
    // Only the GPU allocator's peak measures a step; on the CPU every layer is recomputed.
    keep_auto_ = device_.is_cuda() && cfg.train_checkpoint;
    if (!keep_auto_) LOG_INFO("train.keep_layers auto: every layer is recomputed (needs checkpointing on a GPU)");
    keep_budget_bytes_ = keep_layers_budget_bytes(device_);
  } else {
    keep_layers_ = std::stoll(cfg.train_keep_layers);
    ELASTIC_CHECK(keep_layers_ <= num_layers, "train.keep_layers: must be auto or in [0, " << num_layers
                                                  << "] (the model's layers), got " << keep_layers_);
  }
  ELASTIC_CHECK(opt_router_ || opt_backbone_,
                "nothing to train: train.routing is '" << cfg.train_routing
                                                         << "' and train.trainable selects no parameter");
  if (comm_->is_root()) {
    fs::create_directories(cfg.output_dir);
    io::write_file_atomic((fs::path(cfg.output_dir) / "config.yaml").string(), to_yaml(cfg));
    log::add_file((fs::path(cfg.output_dir) / "train.log").string());
  }
  if (!cfg.train_resume.empty()) {
    std::string dir = cfg.train_resume;
    if (dir == "auto") {
      auto latest = latest_checkpoint(checkpoint_root(cfg.output_dir));
      dir = latest ? *latest : "";
      if (!latest) LOG_INFO("resume auto: no checkpoint in " << checkpoint_root(cfg.output_dir) << ", starting fresh");
    }
    if (!dir.empty()) load_checkpoint(dir);
  }
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
  int64_t n_router = 0;
  for (auto& p : router_params()) n_router += p.numel();
  LOG_INFO("model " << cfg.model_path << " (" << model_->config().architecture << ", "
                    << model_->config().num_parameters() / 1e6 << "M params, " << c10::toString(dtype_) << " on "
                    << device_ << "); routers " << n_router << " params; dataset " << cfg.data_path << " ("
                    << ds->size() << " packs, " << ds->header().num_tokens << " tokens); " << comm_->size()
                    << " rank(s) x " << cfg.train_micro_batches << " pack(s) per step");
}

std::vector<torch::Tensor> Trainer::trainable() const {
  auto out = router_params();
  out.insert(out.end(), backbone_params_.begin(), backbone_params_.end());
  out.push_back(lagrangian_->lambdas);
  return out;
}

std::vector<torch::Tensor> Trainer::router_params() const {
  std::vector<torch::Tensor> out;
  for (auto& [n, p] : model_->router_parameters()) out.push_back(p);
  return out;
}

KeepPlan Trainer::keep_plan_for(int64_t pack_tokens) const {
  if (!keep_auto_) return {keep_layers_, 0};
  if (!step_memory_) return {};
  return step_memory_->plan(pack_tokens, keep_budget_bytes_, model_->config().num_layers);
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

  // This rank's packs: positions cursor + rank*M ... of the global stream. The loss
  // normalisers (labelled tokens, samples per task) are summed over all ranks first, so
  // N ranks with M packs each compute exactly the objective of one rank with N*M packs.
  const int64_t M = cfg_.train_micro_batches;
  const uint64_t base = cursor_ + static_cast<uint64_t>(comm_->rank()) * M;
  const int64_t slots = static_cast<int64_t>(lagrangian_->ids.size());
  std::vector<data::Batch> batches;
  auto counts = torch::zeros({2 + slots}, torch::kInt64);  // targets, tokens, samples per task slot
  for (int64_t m = 0; m < M; ++m) {
    batches.push_back(data::make_batch(loader_->at(base + m), device_));
    counts[0] += batches.back().labelled_targets;
    counts[1] += batches.back().pack.tokens();
    for (auto t : batches.back().tasks) counts[2 + lagrangian_->slot(t)] += 1;
  }
  comm_->allreduce_sum(counts, "batch counts");
  const int64_t total_targets = counts[0].item<int64_t>(), total_tokens = counts[1].item<int64_t>();
  std::vector<int64_t> task_counts(slots);
  for (int64_t s = 0; s < slots; ++s) task_counts[s] = counts[2 + s].item<int64_t>();
  ELASTIC_CHECK(total_targets > 0, "step " << step_ << ": no labelled tokens in the batch (check the dataset labels)");

  KeepPlan last_keep;  // what the last micro-batch kept (metrics)
  // Per-step sums reduced over ranks: ce, sparsity loss, non-finite flag, Ω and Ω_ESR per slot, then the
  // cuDNN plan keys the step was first to use (each a plan build: attention/cudnn_sample.h).
  auto sums = torch::zeros({4 + 2 * slots}, torch::kFloat64);
  auto acc = sums.accessor<double, 1>();
  const int64_t plan_keys_at = 3 + 2 * slots, plan_keys_before = attention::cudnn_sample_shapes();
  for (int64_t m = 0; m < M; ++m) {
    auto& b = batches[m];
    model::ForwardContext ctx;
    ctx.pack = &b.pack;
    ctx.prompts = b.prompts;
    ctx.ssa = attention::MaskSpec::streaming(cfg_.ssa_sink, cfg_.ssa_window);
    ctx.tau = tau;
    // Noise keyed by the pack's global position: distinct per rank, and the same for a pack
    // whichever rank reads it (so runs agree across world sizes).
    auto gen = router::routing_generator(cfg_.train_seed, static_cast<int64_t>(base + m), step_);
    ctx.gen = &gen;
    ctx.mode = routing ? model::RoutingMode::train : model::RoutingMode::off;
    torch::Tensor random_heads;  // [L, B, Hkv], 1 = full attention
    if (cfg_.train_routing == "random") {
      // Random streaming heads teach a backbone to keep local tasks local (docs/elasticity.md); drawn
      // once per pack so a recomputed layer sees the same heads.
      const auto& mc = model_->config();
      random_heads = util::to_device(torch::rand({mc.num_layers, b.pack.num_samples(), mc.num_kv_heads}, gen)
                                         .ge(cfg_.train_random_streaming)
                                         .to(torch::kFloat32),
                                     device_);
      ctx.mode = model::RoutingMode::fixed;
      ctx.fixed_decisions = [&random_heads](int64_t layer) { return random_heads[layer]; };
    }
    ctx.checkpoint = cfg_.train_checkpoint;
    ctx.offload_checkpoints = cfg_.train_offload_checkpoints;
    // auto: measured on the second step run, once optimizer state exists, every layer recomputed.
    std::optional<StepMemoryProbe> probe;
    if (keep_auto_ && !step_memory_ && steps_run_ > 0) probe.emplace(device_);
    last_keep = probe ? KeepPlan{} : keep_plan_for(b.pack.tokens());
    ctx.keep_layers = last_keep.layers;
    ctx.keep_attention = last_keep.attention;
    ctx.measure_layer_activations = probe.has_value();
    auto hidden = model_->forward_hidden(b.ids, ctx);
    auto lm = lm_loss(model_, hidden, b.ids, b.labels, b.pack, cfg_.train_logits_chunk);
    auto loss = lm.sum / static_cast<double>(total_targets);
    acc[0] += lm.sum.item<double>();
    if (routing) {
      auto omega = model_sparsity(ctx.decisions);
      auto sp = lagrangian_->loss(omega, b.tasks, task_counts);
      loss = loss + sp;
      acc[1] += sp.item<double>();
      auto om = omega.detach().to(torch::kCPU, torch::kFloat64);
      auto dec = torch::stack(ctx.decisions, 0).detach().to(torch::kCPU);  // [L,B,H]
      for (size_t i = 0; i < b.tasks.size(); ++i) {
        const auto s = lagrangian_->slot(b.tasks[i]);
        acc[3 + s] += om[i].item<double>();
        acc[3 + slots + s] += effective_sparsity(b.pack.length(i), cfg_.ssa_sink, cfg_.ssa_window, dec.select(1, i));
      }
    }
    if (!std::isfinite(loss.item<double>())) {
      acc[2] = 1;
      continue;  // no backward through a non-finite loss
    }
    loss.backward();
    if (probe) {
      const auto& mc = model_->config();
      // Only hard routing keeps attention outputs (attention/hybrid.h): the router's and random heads.
      const double attention_bytes = ctx.mode == model::RoutingMode::off
                                         ? 0.0
                                         : attention_kept_bytes(b.pack.tokens(), mc.num_heads, mc.head_dim, dtype_);
      step_memory_ = probe->finish(ctx.layer_activation_bytes, b.pack.tokens(), ctx.offload_checkpoints, attention_bytes);
      const auto plan = keep_plan_for(b.pack.tokens());
      LOG_INFO("train.keep_layers auto: a layer's activations take " << step_memory_->layer_bytes / 1e9 << " GB at "
               << b.pack.tokens() << " tokens (step peak " << step_memory_->peak_bytes / 1e9 << " GB, weights and state "
               << step_memory_->static_bytes / 1e9 << " GB); a pack this size keeps " << plan.layers
               << " of " << mc.num_layers << " layers' activations and " << plan.attention
               << " more layers' attention output within " << keep_budget_bytes_ / 1e9 << " GB");
    }
  }

  // One collective for every gradient (per dtype), one for the metrics.
  std::map<torch::ScalarType, std::vector<torch::Tensor>> grads;
  for (auto& p : trainable()) {
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads[p.scalar_type()].push_back(p.mutable_grad());
  }
  for (auto& [dt, g] : grads) comm_->allreduce_sum(g, "gradients");
  acc[plan_keys_at] = static_cast<double>(attention::cudnn_sample_shapes() - plan_keys_before);
  comm_->allreduce_sum(sums, "step metrics");
  acc = sums.accessor<double, 1>();
  const bool nonfinite = acc[2] > 0 || !std::isfinite(acc[0]) || !std::isfinite(acc[1]);

  torch::Tensor grad_norm;  // read after the step's end, not in the middle of it
  if (nonfinite) {
    ++nonfinite_in_a_row_;
    LOG_WARN("step " << step_ + 1 << ": non-finite loss on " << acc[2] << " rank(s); step skipped ("
                     << nonfinite_in_a_row_ << " in a row)");
    ELASTIC_CHECK(nonfinite_in_a_row_ < cfg_.train_max_nonfinite_steps,
                  "training stopped: non-finite loss in " << nonfinite_in_a_row_ << " consecutive steps (last at step "
                                                          << step_ + 1 << "); lower optim.lr or check the data");
  } else {
    nonfinite_in_a_row_ = 0;
    // λ is maximised: ascend its gradient.
    lagrangian_->lambdas.mutable_grad().neg_();
    std::vector<torch::Tensor> clipped = router_params();
    clipped.insert(clipped.end(), backbone_params_.begin(), backbone_params_.end());
    grad_norm = clip_grad_norm(clipped, cfg_.optim_grad_clip);
    if (opt_router_) opt_router_->step();
    if (opt_backbone_) opt_backbone_->step();
    if (routing) opt_lambda_->step();
  }
  for (auto* o : std::initializer_list<torch::optim::Optimizer*>{opt_router_.get(), opt_backbone_.get(), opt_lambda_.get()})
    if (o) o->zero_grad();

  if (device_.is_cuda()) torch::cuda::synchronize();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  cursor_ += static_cast<uint64_t>(comm_->size()) * M;
  ++step_;
  ++steps_run_;

  json j;
  j["step"] = step_;
  j["lm_loss"] = acc[0] / total_targets;
  j["sparsity_loss"] = acc[1];
  j["loss"] = acc[0] / total_targets + acc[1];
  j["skipped"] = nonfinite;
  j["tau"] = tau;
  j["lr"] = cfg_.optim_lr * lr_scale;
  j["grad_norm"] = grad_norm.defined() ? grad_norm.item<double>() : 0.0;
  j["tokens"] = total_tokens;
  j["tokens_per_s"] = total_tokens / dt;
  j["step_seconds"] = dt;
  j["ranks"] = comm_->size();
  j["peak_memory_gb"] = peak_memory_gb(device_);
  j["keep_layers"] = last_keep.layers;
  j["keep_attention"] = last_keep.attention;
  j["cudnn_new_plan_keys"] = static_cast<int64_t>(acc[plan_keys_at]);
  if (routing) {
    int64_t n = 0;
    double om = 0, es = 0;
    json per_task = json::object();
    auto lam = lagrangian_->lambdas.detach().to(torch::kCPU, torch::kFloat64);
    for (int64_t s = 0; s < slots; ++s) {
      n += task_counts[s];
      om += acc[3 + s];
      es += acc[3 + slots + s];
      const std::string name = lagrangian_->ids[s] < 0 ? "other" : cfg_.task_by_id(lagrangian_->ids[s])->name;
      json t = {{"target", lagrangian_->targets[s]},
                {"lambda1", lam[s][0].item<double>()},
                {"lambda2", lam[s][1].item<double>()},
                {"samples", task_counts[s]}};
      if (task_counts[s] > 0) {
        t["omega_msr"] = acc[3 + s] / task_counts[s];
        t["omega_esr"] = acc[3 + slots + s] / task_counts[s];
      }
      per_task[name] = t;
    }
    j["omega_msr"] = om / std::max<int64_t>(n, 1);
    j["omega_esr"] = es / std::max<int64_t>(n, 1);
    j["tasks"] = per_task;
  }
  return j;
}

void Trainer::save_checkpoint() {
  if (comm_->is_root()) {
    write_checkpoint_atomically(checkpoint_root(cfg_.output_dir), checkpoint_name(step_), cfg_.checkpoint_keep,
                                [&](const std::string& dir) {
      std::vector<std::pair<std::string, torch::Tensor>> ts;
      for (auto& [n, p] : model_->router_parameters()) ts.emplace_back("router/" + n, p);
      for (auto& p : model_->named_parameters())
        if (p.value().requires_grad() && p.key().find(".mask_allocator.") == std::string::npos)
          ts.emplace_back("backbone/" + p.key(), p.value());
      ts.emplace_back("lambdas", lagrangian_->lambdas);
      io::save_safetensors((fs::path(dir) / "state.safetensors").string(), ts);
      if (opt_router_) torch::save(*opt_router_, (fs::path(dir) / "optim_router.pt").string());
      if (opt_backbone_) torch::save(*opt_backbone_, (fs::path(dir) / "optim_backbone.pt").string());
      torch::save(*opt_lambda_, (fs::path(dir) / "optim_lambda.pt").string());
      json meta = {{"complete", true},
                   {"step", step_},
                   {"cursor", cursor_},
                   {"ranks", comm_->size()},
                   {"base_model_fingerprint", base_fingerprint_},
                   {"num_layers", model_->config().num_layers},
                   {"num_kv_heads", model_->config().num_kv_heads},
                   {"head_dim", model_->config().head_dim},
                   {"tau", last_tau_},
                   {"config", to_yaml(cfg_)}};
      if (model_->has_routers()) meta["router_manifest"] = router_manifest(model_, cfg_, base_fingerprint_, last_tau_);
      io::write_file_atomic((fs::path(dir) / "meta.json").string(), meta.dump(2) + "\n");
    });
    LOG_INFO("checkpoint saved: " << (fs::path(checkpoint_root(cfg_.output_dir)) / checkpoint_name(step_)).string());
  }
  comm_->barrier();
}

void Trainer::load_checkpoint(const std::string& dir) {
  auto meta = read_checkpoint_meta(dir);
  ELASTIC_CHECK(meta.value("base_model_fingerprint", "") == base_fingerprint_,
                dir << ": checkpoint was made on a different base model (fingerprint "
                    << meta.value("base_model_fingerprint", "?") << ", this model " << base_fingerprint_ << ")");
  ELASTIC_CHECK(meta.value("num_layers", -1) == model_->config().num_layers &&
                    meta.value("num_kv_heads", -1) == model_->config().num_kv_heads &&
                    meta.value("head_dim", -1) == model_->config().head_dim,
                dir << ": checkpoint shapes (layers, kv heads, head_dim) differ from the model's");
  auto st = io::SafetensorsFile::open((fs::path(dir) / "state.safetensors").string());
  torch::NoGradGuard ng;
  auto restore = [&](const std::string& name, torch::Tensor& p) {
    ELASTIC_CHECK(st->contains(name), st->path() << ": missing tensor '" << name << "'");
    auto t = st->get(name);
    ELASTIC_CHECK(t.sizes() == p.sizes(), st->path() << ": tensor '" << name << "' has shape " << t.sizes()
                                                     << ", expected " << p.sizes());
    p.copy_(t);
  };
  for (auto& [n, p] : model_->router_parameters()) restore("router/" + n, p);
  for (auto& p : model_->named_parameters())
    if (p.value().requires_grad() && p.key().find(".mask_allocator.") == std::string::npos)
      restore("backbone/" + p.key(), p.value());
  restore("lambdas", lagrangian_->lambdas);
  auto load_opt = [&](auto* opt, const char* file) {
    if (!opt) return;
    const auto path = (fs::path(dir) / file).string();
    ELASTIC_CHECK(fs::exists(path), dir << ": missing " << file << " (the run's trainable set changed?)");
    torch::load(*opt, path);
  };
  load_opt(opt_router_.get(), "optim_router.pt");
  load_opt(opt_backbone_.get(), "optim_backbone.pt");
  load_opt(opt_lambda_.get(), "optim_lambda.pt");
  step_ = meta["step"].get<int64_t>();
  cursor_ = meta["cursor"].get<uint64_t>();
  last_tau_ = meta.value("tau", 1.0);
  LOG_INFO("resumed from " << dir << " at step " << step_ << " (data position " << cursor_ << ", saved by "
                           << meta.value("ranks", 1) << " rank(s), now " << comm_->size() << ")");
}

json Trainer::run() {
  std::ofstream metrics;
  if (comm_->is_root()) {
    const auto metrics_path = (fs::path(cfg_.output_dir) / "metrics.jsonl").string();
    metrics.open(metrics_path, std::ios::app);
    ELASTIC_CHECK(metrics.good(), metrics_path << ": cannot open for writing");
  }
  Progress progress("train", cfg_.train_steps, step_);
  json last;
  while (step_ < cfg_.train_steps) {
    last = step();
    if (comm_->is_root()) {
      metrics << last.dump() << "\n";
      metrics.flush();
      std::ostringstream status;
      status << "loss " << std::fixed << std::setprecision(4) << last["lm_loss"].get<double>();
      if (last.contains("omega_msr")) status << " Ω " << std::setprecision(3) << last["omega_msr"].get<double>();
      status << " τ " << std::setprecision(2) << last["tau"].get<double>() << " " << std::setprecision(0)
             << last["tokens_per_s"].get<double>() << " tok/s";
      if (step_ % cfg_.log_every == 0 || step_ == cfg_.train_steps) progress.update(step_, status.str());
    }
    // A stop request on any rank (preemption) checkpoints everyone and ends the run.
    auto stop = torch::tensor({g_stop_requested ? 1.0 : 0.0}, torch::kFloat64);
    comm_->allreduce_sum(stop, "stop flag");
    if (stop.item<double>() > 0) {
      LOG_WARN("stop requested (SIGTERM/SIGUSR1) at step " << step_ << ": checkpointing and exiting");
      save_checkpoint();
      stopped_by_signal_ = true;
      return last;
    }
    if (cfg_.checkpoint_every > 0 && step_ % cfg_.checkpoint_every == 0 && step_ < cfg_.train_steps) save_checkpoint();
  }
  if (comm_->is_root()) progress.finish("");
  save_checkpoint();
  write_outputs(last);
  return last;
}

void Trainer::write_outputs(const json& last) {
  if (!comm_->is_root()) return;
  if (cfg_.train_routing == "router") {
    export_router(model_, router_manifest(model_, cfg_, base_fingerprint_, last_tau_), cfg_.output_dir);
    LOG_INFO("router written to " << (fs::path(cfg_.output_dir) / "router.safetensors").string());
  }
  if (!backbone_params_.empty()) {
    model::save_model(model_, trained_model_dir(cfg_.output_dir));
    LOG_INFO("trained backbone written to " << trained_model_dir(cfg_.output_dir));
  }
  io::write_file_atomic((fs::path(cfg_.output_dir) / "summary.json").string(), last.dump(2) + "\n");
}

}  // namespace elastic::train
