// export and inspect: hand a trained router to inference engines, and look at its decisions.
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "train/checkpoint.h"
#include "train/export.h"
#include "train/objective.h"
#include "util/error.h"
#include "util/log.h"
#ifdef ELASTIC_HAVE_TEXT
#include "text/chat_template.h"
#include "text/tokenizer.h"
#endif

namespace elastic::cli {

namespace fs = std::filesystem;
using nlohmann::json;

int cmd_export(int argc, char** argv) {
  Args a("export", argc, argv, {"out"}, {"help", "patch-config"});
  if (a.flag("help") || a.positional().size() != 1) {
    std::cout << "elastic export RUN_DIR|CHECKPOINT_DIR --out DIR [--patch-config]\n"
                 "Writes DIR/router.safetensors and DIR/router.json (docs/router-format.md); with --patch-config\n"
                 "also DIR/config.json: the base model's config plus the fields the reference's modelling code reads.\n";
    return a.flag("help") ? 0 : 2;
  }
  const fs::path src = a.positional()[0];
  const fs::path out = a.require("out");
  json manifest;
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  if (fs::exists(src / "router.safetensors") && fs::exists(src / "router.json")) {
    manifest = json::parse(io::read_file((src / "router.json").string()));
    auto f = io::SafetensorsFile::open((src / "router.safetensors").string());
    for (const auto& t : f->tensors()) tensors.emplace_back(t.name, f->get(t.name));
  } else if (fs::exists(src / "meta.json")) {
    auto meta = train::read_checkpoint_meta(src.string());
    ELASTIC_CHECK(meta.contains("router_manifest"), src.string() << ": checkpoint holds no router (a backbone run?)");
    manifest = meta["router_manifest"];
    auto f = io::SafetensorsFile::open((src / "state.safetensors").string());
    for (const auto& t : f->tensors())
      if (t.name.rfind("router/", 0) == 0) tensors.emplace_back(t.name.substr(7), f->get(t.name));
  } else {
    ELASTIC_FAIL(src.string() << ": neither a run directory (router.safetensors + router.json) nor a checkpoint (meta.json)");
  }
  ELASTIC_CHECK(!tensors.empty(), src.string() << ": no router tensors found");
  fs::create_directories(out);
  io::save_safetensors((out / "router.safetensors").string(), tensors, {{"format", "pt"}});
  io::write_file_atomic((out / "router.json").string(), manifest.dump(2) + "\n");
  if (a.flag("patch-config")) {
    const std::string model_dir = manifest["base_model"].value("path", "");
    const auto cfg_path = (fs::path(model_dir) / "config.json").string();
    ELASTIC_CHECK(fs::exists(cfg_path), cfg_path << ": base model config not found (router.json base_model.path)");
    auto cfg = json::parse(io::read_file(cfg_path));
    for (auto it = manifest["reference_config"].begin(); it != manifest["reference_config"].end(); ++it)
      cfg[it.key()] = *it;
    cfg["router_hidden_multiplier"] = manifest["router"]["hidden_multiplier"];
    cfg["router_pool_tokens"] = manifest["router"]["pool_tokens"];
    io::write_file_atomic((out / "config.json").string(), cfg.dump(2) + "\n");
  }
  LOG_INFO("exported " << tensors.size() << " router tensors to " << out.string());
  return 0;
}

int cmd_inspect(int argc, char** argv) {
  Args a("inspect", argc, argv, {"model", "router", "data", "pack", "text", "tokenizer", "dump", "device", "dtype"},
         {"help"});
  if (a.flag("help")) {
    std::cout << "elastic inspect --model DIR --router DIR (--data FILE [--pack N] | --text TEXT [--tokenizer DIR])\n"
                 "  [--dump out.safetensors] [--device cpu] [--dtype float32]\n"
                 "Runs the model with the exported router (argmax) and prints each layer's per-head decisions\n"
                 "(F = full attention, s = streaming) and Ω_MSR. --dump writes the router inputs (pre-RoPE keys),\n"
                 "logits and decisions of every layer, for checks against other implementations.\n";
    return 0;
  }
  auto device = model::parse_device(a.get("device", "cpu"), "--device");
  auto dtype = model::resolve_dtype(a.get("dtype", "auto"), device, "--dtype");
  const std::string router_dir = a.require("router");
  auto m = model::load_model(a.require("model"), dtype, device);
  auto manifest = train::attach_exported_router(m, router_dir);
  data::Batch b;
  if (a.has("data")) {
    auto ds = data::Dataset::open(a.get("data", ""));
    b = data::make_batch(ds->pack(static_cast<size_t>(a.get_int("pack", 0))), device);
  } else {
#ifdef ELASTIC_HAVE_TEXT
    auto tok = text::Tokenizer::from_dir(a.get("tokenizer", a.require("model")));
    auto ids = tok.encode(a.require("text"), true);
    data::Pack p;
    p.tokens.assign(ids.begin(), ids.end());
    p.labels.assign(ids.size(), 0);
    p.samples.push_back({0, static_cast<uint32_t>(ids.size()), 0, static_cast<uint32_t>(ids.size()), -1});
    b = data::make_batch(p, device);
#else
    ELASTIC_FAIL("inspect: --text needs the tokenizer (build with PCRE2 and utf8proc); use --data");
#endif
  }
  torch::NoGradGuard ng;
  model::ForwardContext ctx;
  ctx.pack = &b.pack;
  ctx.prompts = b.prompts;
  ctx.mode = model::RoutingMode::eval;
  ctx.ssa = attention::MaskSpec::streaming(manifest["ssa"]["sink_size"].get<int64_t>(),
                                           manifest["ssa"]["local_window_size"].get<int64_t>());
  std::vector<torch::Tensor> keys;
  ctx.capture_keys = &keys;
  m->forward_hidden(b.ids, ctx);
  auto omega = train::model_sparsity(ctx.decisions).to(torch::kCPU);
  for (int64_t s = 0; s < b.pack.num_samples(); ++s) {
    std::cout << "sample " << s << " (task " << b.tasks[s] << ", " << b.pack.length(s) << " tokens): Ω_MSR "
              << std::fixed << std::setprecision(3) << omega[s].item<double>() << "\n";
    for (size_t l = 0; l < ctx.decisions.size(); ++l) {
      auto d = ctx.decisions[l][s].to(torch::kCPU);
      std::cout << "  layer " << std::setw(3) << l << "  ";
      for (int64_t h = 0; h < d.size(0); ++h) std::cout << (d[h].item<float>() > 0.5f ? 'F' : 's');
      std::cout << "\n";
    }
  }
  if (a.has("dump")) {
    std::vector<std::pair<std::string, torch::Tensor>> ts;
    ts.emplace_back("cu_seqlens", torch::tensor(b.pack.cu));
    std::vector<int64_t> pr;
    for (const auto& p : b.prompts) pr.insert(pr.end(), {p.begin, p.end});
    ts.emplace_back("prompt_ranges", torch::tensor(pr).view({-1, 2}));
    for (size_t l = 0; l < keys.size(); ++l) {
      ts.emplace_back("keys." + std::to_string(l), keys[l].to(torch::kFloat32));
      ts.emplace_back("logits." + std::to_string(l), ctx.router_logits[l]);
      ts.emplace_back("decisions." + std::to_string(l), ctx.decisions[l]);
    }
    io::save_safetensors(a.get("dump", ""), ts);
    LOG_INFO("router inputs, logits and decisions written to " << a.get("dump", ""));
  }
  return 0;
}

}  // namespace elastic::cli
