#include "model/weights.h"

#include <filesystem>
#include <iomanip>
#include <set>

#include <ATen/CPUGeneratorImpl.h>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "util/error.h"
#include "util/log.h"

namespace elastic::model {

namespace fs = std::filesystem;

torch::ScalarType parse_dtype(const std::string& name, const std::string& key) {
  if (name == "float32" || name == "fp32") return torch::kFloat32;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "float16" || name == "fp16") return torch::kFloat16;
  if (name == "float64" || name == "fp64") return torch::kFloat64;
  ELASTIC_FAIL(key << ": unknown dtype '" << name << "' (expected auto, float32, bfloat16, float16 or float64)");
}

torch::ScalarType resolve_dtype(const std::string& name, torch::Device device, const std::string& key) {
  if (name == "auto") return device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  return parse_dtype(name, key);
}

torch::Device parse_device(const std::string& name, const std::string& key) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    ELASTIC_CHECK(torch::cuda::is_available(), key << ": device '" << name << "' requested but CUDA is not available"
                                                   << " (this build or machine has no GPU)");
    return torch::Device(name);
  }
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  ELASTIC_FAIL(key << ": unknown device '" << name << "' (expected cpu, cuda, cuda:N or auto)");
}

void load_weights(CausalLM& model, const std::string& dir) {
  auto ck = io::Checkpoint::open(dir);
  torch::NoGradGuard ng;
  std::set<std::string> used;
  for (auto& p : model->named_parameters()) {
    const std::string& name = p.key();
    if (name.find(".mask_allocator.") != std::string::npos) continue;  // routers are not in backbones
    ELASTIC_CHECK(ck.contains(name), ck.source() << ": checkpoint is missing tensor '" << name << "'");
    auto src = ck.get(name);
    ELASTIC_CHECK(src.sizes() == p.value().sizes(),
                  ck.file_of(name) << ": tensor '" << name << "' has shape " << src.sizes() << ", expected "
                                   << p.value().sizes() << " from config.json");
    ELASTIC_CHECK(src.is_floating_point(),
                  ck.file_of(name) << ": tensor '" << name << "' has non-float dtype " << src.scalar_type());
    p.value().copy_(src);
    used.insert(name);
  }
  for (const auto& n : ck.names()) {
    if (!used.count(n) && !(model->config().tie_word_embeddings && n == "lm_head.weight")) {
      LOG_DEBUG(dir << ": ignoring checkpoint tensor '" << n << "'");
    }
  }
}

CausalLM load_model(const std::string& dir, torch::ScalarType dtype, torch::Device device) {
  auto cfg = ModelConfig::load(dir);
  CausalLM m(cfg, torch::TensorOptions().dtype(dtype).device(device));
  load_weights(m, dir);
  for (auto& p : m->parameters()) p.set_requires_grad(false);
  m->eval();
  return m;
}

void init_random(CausalLM& model, uint64_t seed, double std) {
  torch::NoGradGuard ng;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const bool on_gpu = model->options().device().is_cuda();
  if (on_gpu) torch::manual_seed(seed);  // big shapes: draw on the device, CPU init would take minutes
  for (auto& p : model->named_parameters()) {
    if (p.key().find(".mask_allocator.") != std::string::npos) continue;
    auto cpu = on_gpu ? torch::empty_like(p.value(), p.value().options().dtype(torch::kFloat32))
                      : torch::empty(p.value().sizes(), torch::TensorOptions().dtype(torch::kFloat32));
    const bool is_norm = p.key().find("norm") != std::string::npos;
    const bool is_bias = p.key().size() > 5 && p.key().compare(p.key().size() - 5, 5, ".bias") == 0;
    const double mean = is_norm ? 1.0 : 0.0;  // norms not all ones, so tests notice an ignored norm weight
    const double sd = (is_norm || is_bias) ? 0.1 : std;
    if (on_gpu) {
      cpu.normal_(mean, sd);
    } else {
      cpu.normal_(mean, sd, gen);
    }
    p.value().copy_(cpu);
  }
}

void save_model(const CausalLM& model, const std::string& dir, uint64_t max_shard_bytes) {
  fs::create_directories(dir);
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> shards(1);
  uint64_t bytes = 0, total = 0;
  for (const auto& p : model->named_parameters()) {
    if (p.key().find(".mask_allocator.") != std::string::npos) continue;
    const uint64_t b = static_cast<uint64_t>(p.value().numel()) * p.value().element_size();
    if (max_shard_bytes > 0 && bytes > 0 && bytes + b > max_shard_bytes) {
      shards.emplace_back();
      bytes = 0;
    }
    shards.back().emplace_back(p.key(), p.value());
    bytes += b;
    total += b;
  }
  // Stale files of an earlier save would confuse loaders (a single file beside an index).
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto name = e.path().filename().string();
    if (name.rfind("model", 0) == 0 && (e.path().extension() == ".safetensors" || name == "model.safetensors.index.json")) {
      fs::remove(e.path());
    }
  }
  if (shards.size() == 1) {
    io::save_safetensors((fs::path(dir) / "model.safetensors").string(), shards[0], {{"format", "pt"}});
  } else {
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", nlohmann::json::object()}};
    for (size_t i = 0; i < shards.size(); ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      io::save_safetensors((fs::path(dir) / name).string(), shards[i], {{"format", "pt"}});
      for (const auto& [n, _] : shards[i]) index["weight_map"][n] = name;
    }
    io::write_file_atomic((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
  }
  io::write_file_atomic((fs::path(dir) / "config.json").string(), model->config().to_json().dump(2) + "\n");
}

std::string weights_fingerprint(const std::string& dir) {
  uint64_t h = 1469598103934665603ull;
  auto feed = [&h](const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  };
  auto cfg = io::read_file((fs::path(dir) / "config.json").string());
  auto j = nlohmann::json::parse(cfg, nullptr, false);
  auto canon = j.is_discarded() ? cfg : j.dump();
  feed(canon.data(), canon.size());
  auto ck = io::Checkpoint::open(dir);
  for (const auto& name : ck.names()) {
    const auto& ti = ck.info(name);
    feed(name.data(), name.size());
    feed(ti.dtype.data(), ti.dtype.size());
    for (auto s : ti.shape) feed(&s, sizeof(s));
    auto t = ck.get(name);
    const size_t bytes = ti.end - ti.begin;
    const auto* base = static_cast<const uint8_t*>(t.data_ptr());
    const size_t head = std::min<size_t>(bytes, 4096);
    feed(base, head);
    if (bytes > head) feed(base + bytes - std::min<size_t>(bytes - head, 4096), std::min<size_t>(bytes - head, 4096));
  }
  std::ostringstream os;
  os << std::hex << std::setw(16) << std::setfill('0') << h;
  return os.str();
}

}  // namespace elastic::model
