// Training subcommands: train, eval, make-synthetic-data, inspect-data.
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/dataset.h"
#include "data/synthetic.h"
#include "io/atomic_file.h"
#include "model/weights.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/evaluate.h"
#include "train/export.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/log.h"

namespace elastic::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void apply_log_level(const std::string& level) {
  log::Level l;
  if (log::parse_level(level, &l)) log::set_level(l);
}

void print_task_table(const json& summary) {
  // Router evaluations add the Ω_MSR that training-time (Gumbel-sampled) routing gives in expectation.
  const bool sampled = summary.contains("omega_msr_sampled");
  std::cout << std::left << std::setw(16) << "task" << std::right << std::setw(8) << "samples" << std::setw(10)
            << "lm_loss" << std::setw(10) << "accuracy" << std::setw(10) << "Ω_MSR" << std::setw(10) << "Ω_ESR"
            << std::setw(9) << "target" << (sampled ? "  Ω_MSR sampled" : "") << "\n";
  for (auto it = summary["tasks"].begin(); it != summary["tasks"].end(); ++it) {
    const auto& t = *it;
    std::cout << std::left << std::setw(16) << it.key() << std::right << std::setw(8) << t["samples"].get<int64_t>()
              << std::fixed << std::setprecision(4) << std::setw(10) << t["lm_loss"].get<double>() << std::setw(10)
              << t["accuracy"].get<double>() << std::setw(10) << t["omega_msr"].get<double>() << std::setw(10)
              << t["omega_esr"].get<double>() << std::setw(9) << std::setprecision(2) << t["target"].get<double>();
    if (sampled) std::cout << std::setw(15) << std::setprecision(4) << t["omega_msr_sampled"].get<double>();
    std::cout << "\n";
  }
  std::cout << std::left << std::setw(16) << "all" << std::right << std::setw(8) << summary["samples"].get<int64_t>()
            << std::setprecision(4) << std::setw(10) << summary["lm_loss"].get<double>() << std::setw(10)
            << summary["accuracy"].get<double>() << std::setw(10) << summary["omega_msr"].get<double>() << std::setw(10)
            << summary["omega_esr"].get<double>();
  if (sampled) std::cout << std::setw(9) << "" << std::setw(15) << summary["omega_msr_sampled"].get<double>();
  std::cout << "\n";
}

}  // namespace

int cmd_train(int argc, char** argv) {
  Args a("train", argc, argv, {"set", "resume"}, {"help"});
  if (a.flag("help")) {
    std::cout << "elastic train CONFIG.yaml [--set key=value ...] [--resume auto|CHECKPOINT_DIR]\n"
                 "Multi-GPU / multi-process: mpirun -np N elastic train ... (see launch/)\n\nkeys:\n";
    for (const auto& k : train::config_keys()) std::cout << "  " << k << "\n";
    return 0;
  }
  ELASTIC_CHECK(a.positional().size() <= 1, "train: usage: elastic train CONFIG.yaml [--set key=value ...]");
  auto overrides = a.all("set");
  if (a.has("resume")) overrides.push_back("train.resume=" + a.get("resume", ""));
  auto cfg = train::load_config(a.positional().empty() ? "" : a.positional()[0], overrides);
  apply_log_level(cfg.log_level);
  train::Trainer trainer(cfg);
  auto last = trainer.run();
  if (trainer.stopped_by_signal()) {
    LOG_WARN("stopped by signal at step " << trainer.current_step() << "; resume with --resume auto");
    return 0;
  }
  if (last.is_null()) {
    LOG_INFO("nothing to do: the run is already at step " << trainer.current_step() << " of " << cfg.train_steps);
    return 0;
  }
  if (trainer.rank() != 0) return 0;
  std::cout << "\nfinal step " << last["step"] << ": lm_loss " << last["lm_loss"].get<double>();
  if (last.contains("omega_msr")) {
    std::cout << ", Ω_MSR " << last["omega_msr"].get<double>() << ", Ω_ESR " << last["omega_esr"].get<double>() << "\n";
    for (auto it = last["tasks"].begin(); it != last["tasks"].end(); ++it) {
      if (!it->contains("omega_msr")) continue;
      std::cout << "  " << std::left << std::setw(16) << it.key() << " Ω_MSR " << std::fixed << std::setprecision(3)
                << (*it)["omega_msr"].get<double>() << " (target " << (*it)["target"].get<double>() << ", λ1 "
                << (*it)["lambda1"].get<double>() << ", λ2 " << (*it)["lambda2"].get<double>() << ")\n";
    }
  } else {
    std::cout << "\n";
  }
  std::cout << "run directory: " << cfg.output_dir << " (metrics.jsonl, config.yaml, summary.json"
            << (cfg.train_routing == "router" ? ", router.safetensors, router.json" : ", model/") << ")\n";
  return 0;
}

int cmd_eval(int argc, char** argv) {
  Args a("eval", argc, argv, {"data", "routing", "out", "max-packs", "model", "mask", "set"}, {"help", "exact"});
  if (a.flag("help") || a.positional().size() != 1) {
    std::cout << "elastic eval RUN_DIR [--data PATH] [--routing router|full|streaming|fixed --mask MASK.csv]\n"
                 "  [--model DIR] [--out DIR] [--max-packs N] [--set key=value] [--exact]\n"
                 "Hard routing (argmax) with the run's router; writes eval.json (per task: accuracy, loss, Ω and\n"
                 "how often each head is dense), fa_frequency.csv, fa_heatmap.svg and, for the router,\n"
                 "fa_heatmap_<task>.svg to --out (default RUN_DIR/eval). The model is --model, else the run's trained\n"
                 "backbone RUN_DIR/model when the run trained one, else the run's model.path. fp32 models on a GPU\n"
                 "run as in training (TF32 matmuls, bf16 flash attention); --exact keeps them exact fp32.\n";
    return a.flag("help") ? 0 : 2;
  }
  const std::string run = a.positional()[0];
  const auto cfg_path = (fs::path(run) / "config.yaml").string();
  std::vector<std::string> overrides = a.all("set");
  if (a.has("data")) overrides.push_back("data.path=" + a.get("data", ""));
  if (a.has("model")) {
    overrides.push_back("model.path=" + a.get("model", ""));
  } else if (auto trained = train::trained_model(run)) {
    // A run that trained backbone weights is evaluated with them, not with its starting point.
    overrides.push_back("model.path=" + *trained);
  }
  auto cfg = train::load_config(cfg_path, overrides);
  apply_log_level(cfg.log_level);
  auto routing = train::parse_eval_routing(a.get("routing", "router"));
  auto device = model::parse_device(cfg.model_device, "model.device");
  auto dtype = model::resolve_dtype(cfg.model_dtype, device, "model.dtype");
  // At 8K-16K tokens exact fp32 attention made one evaluation pass cost about four training steps.
  const bool exact = a.flag("exact") || !device.is_cuda();
  if (!exact) train::use_training_numerics(device);
  auto m = model::load_model(cfg.model_path, dtype, device);
  train::EvalOptions opt;
  opt.routing = routing;
  opt.max_packs = a.get_int("max-packs", -1);
  if (routing == train::EvalRouting::router) {
    train::read_manifest(run, m->config());
    m->attach_routers(train::router_options(cfg, m->config().head_dim));
    train::load_router_weights(m, (fs::path(run) / "router.safetensors").string());
  }
  if (routing == train::EvalRouting::fixed) {
    const auto mask_path = a.require("mask");
    std::ifstream in(mask_path);
    ELASTIC_CHECK(in.good(), mask_path << ": head mask not found");
    std::vector<float> vals;
    std::string line;
    int64_t rows = 0;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::stringstream ss(line);
      std::string cell;
      std::getline(ss, cell, ',');
      while (std::getline(ss, cell, ',')) vals.push_back(std::stof(cell));
      ++rows;
    }
    ELASTIC_CHECK(rows == m->config().num_layers && static_cast<int64_t>(vals.size()) == rows * m->config().num_kv_heads,
                  mask_path << ": expected " << m->config().num_layers << " rows of " << m->config().num_kv_heads
                            << " head values");
    opt.fixed_mask = torch::tensor(vals).view({rows, m->config().num_kv_heads}).gt(0.5);
  }
  auto ds = data::Dataset::open(cfg.data_path);
  auto r = train::evaluate(m, *ds, cfg, opt);
  const std::string out = a.get("out", (fs::path(run) / "eval").string());
  fs::create_directories(out);
  r.summary["routing"] = a.get("routing", "router");
  r.summary["data"] = cfg.data_path;
  // bf16 models run the same either way; the choice concerns fp32 ones.
  if (dtype == torch::kFloat32) r.summary["numerics"] = exact ? "exact" : "training";
  io::write_file_atomic((fs::path(out) / "eval.json").string(), r.summary.dump(2) + "\n");
  train::write_matrix_csv((fs::path(out) / "fa_frequency.csv").string(), r.fa_frequency, "layer", "kv_head");
  train::write_heatmap_svg((fs::path(out) / "fa_heatmap.svg").string(), r.fa_frequency,
                           "Full-attention frequency per (layer, KV head)", "layer", "KV head");
  // Per task only for the router: fixed routings give every task the same heads.
  if (routing == train::EvalRouting::router) {
    for (const auto& [task, freq] : r.task_fa_frequency)
      train::write_heatmap_svg((fs::path(out) / ("fa_heatmap_" + task + ".svg")).string(), freq,
                               "Full-attention frequency per (layer, KV head): " + task, "layer", "KV head");
  }
  print_task_table(r.summary);
  std::cout << "written: " << out << "/eval.json, fa_frequency.csv, fa_heatmap.svg"
            << (routing == train::EvalRouting::router ? ", fa_heatmap_<task>.svg" : "") << "\n";
  return 0;
}

int cmd_make_synthetic_data(int argc, char** argv) {
  Args a("make-synthetic-data", argc, argv,
         {"out", "vocab", "samples", "min-len", "max-len", "answer-len", "pack-tokens", "tasks", "far-fraction", "pairs", "seed"},
         {"help", "label-all", "label-predictable"});
  if (a.flag("help")) {
    std::cout << "elastic make-synthetic-data --out FILE [--vocab 512 --samples 64 --min-len 128 --max-len 512\n"
                 "  --answer-len 4 --pack-tokens 2048 --tasks retrieval,multihop,recent_copy,pattern,instruction\n"
                 "  --far-fraction 0.5 --pairs 4 --seed 0 --label-all --label-predictable]\n"
                 "--pairs: key-value pairs in a retrieval/multihop context (needles + distractors).\n"
                 "--label-all labels every token (dense LM signal for training a backbone), not just answers;\n"
                 "--label-predictable adds only the context tokens that earlier ones determine (periodic tails).\n";
    return 0;
  }
  data::SyntheticOptions o;
  o.vocab = a.get_int("vocab", 512);
  o.num_samples = a.get_int("samples", 64);
  o.min_len = a.get_int("min-len", 128);
  o.max_len = a.get_int("max-len", 512);
  o.answer_len = a.get_int("answer-len", 4);
  o.far_fraction = a.get_double("far-fraction", 0.5);
  o.pairs = a.get_int("pairs", 4);
  o.seed = static_cast<uint64_t>(a.get_int("seed", 0));
  o.label_all = a.flag("label-all");
  o.label_predictable = a.flag("label-predictable");
  if (a.has("tasks")) {
    o.tasks.clear();
    std::stringstream ss(a.get("tasks", ""));
    for (std::string t; std::getline(ss, t, ',');) o.tasks.push_back(data::parse_synthetic_task(t));
  }
  auto samples = data::make_synthetic_samples(o);
  int64_t dropped = 0;
  const int64_t budget = a.get_int("pack-tokens", 2048);
  auto packs = data::pack_samples(samples, budget, &dropped);
  const std::string out = a.require("out");
  if (fs::path(out).has_parent_path()) fs::create_directories(fs::path(out).parent_path());
  data::DatasetWriter w(out, static_cast<uint32_t>(o.vocab), 0);
  int64_t tokens = 0;
  for (const auto& p : packs) {
    w.add(p);
    tokens += static_cast<int64_t>(p.tokens.size());
  }
  w.finish();
  LOG_INFO("wrote " << out << ": " << samples.size() - dropped << " samples in " << packs.size() << " packs, " << tokens
                    << " tokens, fill " << std::setprecision(3) << (packs.empty() ? 0.0 : double(tokens) / (packs.size() * budget))
                    << (dropped ? ", dropped " + std::to_string(dropped) + " longer than the pack budget" : ""));
  return 0;
}

}  // namespace elastic::cli
