#include "train/export.h"

#include <filesystem>
#include <fstream>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "router/router.h"
#include "util/error.h"
#include "util/version.h"

namespace elastic::train {

namespace fs = std::filesystem;

nlohmann::json router_manifest(const model::CausalLM& m, const TrainConfig& cfg, const std::string& fingerprint,
                               double tau) {
  const auto& mc = m->config();
  nlohmann::json j;
  j["format"] = "elastic-router";
  j["format_version"] = kRouterFormatVersion;
  j["producer"] = std::string("elastic ") + version();
  j["base_model"] = {{"architecture", mc.architecture},
                     {"num_layers", mc.num_layers},
                     {"hidden_size", mc.hidden_size},
                     {"num_attention_heads", mc.num_heads},
                     {"num_key_value_heads", mc.num_kv_heads},
                     {"head_dim", mc.head_dim},
                     {"vocab_size", mc.vocab_size},
                     {"weights_fingerprint", fingerprint},
                     {"path", cfg.model_path}};
  j["router"] = {{"head_dim", mc.head_dim},
                 {"hidden_multiplier", cfg.router_hidden_mult},
                 {"pooling_mode", cfg.router_pooling},
                 {"pool_tokens", cfg.router_pool_tokens},
                 {"decision", "argmax"},
                 {"fa_index", 1},
                 {"training_tau", tau}};
  j["ssa"] = {{"sink_size", cfg.ssa_sink}, {"local_window_size", cfg.ssa_window}};
  // Fields the reference's Hugging Face modelling code reads from its config.
  j["reference_config"] = {{"enable_ada_sparsity", true}, {"use_softmax", true},
                           {"pooling_mode", cfg.router_pooling}, {"sink_size", cfg.ssa_sink},
                           {"local_window_size", cfg.ssa_window}, {"toggle_type", "streaming"},
                           {"retrieval_mode", "full"}};
  nlohmann::json tasks = nlohmann::json::object();
  for (const auto& t : cfg.tasks) tasks[t.name] = {{"id", t.id}, {"target", t.target}};
  j["tasks"] = tasks;
  return j;
}

void export_router(const model::CausalLM& m, const nlohmann::json& manifest, const std::string& dir) {
  fs::create_directories(dir);
  auto params = m->router_parameters();
  ELASTIC_CHECK(!params.empty(), "export: the model has no routers attached");
  std::vector<std::pair<std::string, torch::Tensor>> ts;
  for (auto& [n, t] : params) ts.emplace_back(n, t.detach().to(torch::kCPU, torch::kFloat32));
  io::save_safetensors((fs::path(dir) / "router.safetensors").string(), ts, {{"format", "pt"}});
  io::write_file_atomic((fs::path(dir) / "router.json").string(), manifest.dump(2) + "\n");
}

void load_router_weights(model::CausalLM& m, const std::string& file) {
  auto f = io::SafetensorsFile::open(file);
  torch::NoGradGuard ng;
  for (auto& [name, p] : m->router_parameters()) {
    ELASTIC_CHECK(f->contains(name), file << ": missing router tensor '" << name << "'");
    auto t = f->get(name);
    ELASTIC_CHECK(t.sizes() == p.sizes(), file << ": tensor '" << name << "' has shape " << t.sizes() << ", expected "
                                               << p.sizes());
    p.copy_(t);
  }
}

nlohmann::json read_manifest(const std::string& dir, const model::ModelConfig& mc) {
  const auto path = (fs::path(dir) / "router.json").string();
  auto j = nlohmann::json::parse(io::read_file(path), nullptr, false);
  ELASTIC_CHECK(!j.is_discarded() && j.is_object(), path << ": not valid JSON");
  ELASTIC_CHECK(j.value("format", "") == "elastic-router", path << ": not an elastic router manifest");
  ELASTIC_CHECK(j.value("format_version", 0) == kRouterFormatVersion,
                path << ": format_version " << j.value("format_version", 0) << ", this build reads " << kRouterFormatVersion);
  const auto& b = j["base_model"];
  ELASTIC_CHECK(b.value("num_layers", -1) == mc.num_layers && b.value("num_key_value_heads", -1) == mc.num_kv_heads &&
                    b.value("head_dim", -1) == mc.head_dim,
                path << ": router was trained for " << b.value("num_layers", -1) << " layers x "
                     << b.value("num_key_value_heads", -1) << " KV heads x head_dim " << b.value("head_dim", -1)
                     << ", the model has " << mc.num_layers << " x " << mc.num_kv_heads << " x " << mc.head_dim);
  return j;
}

nlohmann::json attach_exported_router(model::CausalLM& m, const std::string& dir) {
  auto manifest = read_manifest(dir, m->config());
  const auto where = (fs::path(dir) / "router.json").string();
  router::RouterOptions ro;
  ro.head_dim = m->config().head_dim;
  ro.hidden_mult = manifest["router"]["hidden_multiplier"].get<int64_t>();
  ro.pooling = router::parse_pooling(manifest["router"]["pooling_mode"].get<std::string>(), where + " pooling_mode");
  ro.pool_tokens = manifest["router"]["pool_tokens"].get<int64_t>();
  m->attach_routers(ro);
  load_router_weights(m, (fs::path(dir) / "router.safetensors").string());
  return manifest;
}

}  // namespace elastic::train
