// The decoder against Hugging Face transformers (golden logits made by
// tools/gen_model_golden.py on the GPU machine), plus config and loader errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "attention/packing.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "test_util.h"
#include "util/error.h"

using namespace elastic;
using elastic::testing::rel_err;
using elastic::testing::TempDir;
namespace fs = std::filesystem;

namespace {

std::vector<std::vector<int64_t>> read_samples(const std::string& path) {
  std::ifstream in(path);
  auto j = nlohmann::json::parse(in);
  return j["samples"].get<std::vector<std::vector<int64_t>>>();
}

torch::Tensor packed_logits(model::CausalLM& m, const std::vector<std::vector<int64_t>>& samples) {
  std::vector<int64_t> ids, lengths;
  for (const auto& s : samples) {
    ids.insert(ids.end(), s.begin(), s.end());
    lengths.push_back(static_cast<int64_t>(s.size()));
  }
  auto pack = attention::Packing::from_lengths(lengths, torch::kCPU);
  model::ForwardContext ctx;
  ctx.pack = &pack;
  torch::NoGradGuard ng;
  return m->logits(m->forward_hidden(torch::tensor(ids), ctx));
}


}  // namespace

class GoldenLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenLogits, PackedForwardMatchesTransformersPerSample) {
  const fs::path dir = fs::path(ELASTIC_TEST_DATA) / "golden" / GetParam();
  ASSERT_TRUE(fs::exists(dir / "config.json")) << dir << " missing: run tools/gpu_check.sh to regenerate";
  auto m = model::load_model(dir.string(), torch::kFloat32, torch::kCPU);
  auto samples = read_samples((dir / "inputs.json").string());
  auto ours = packed_logits(m, samples);
  auto expected = io::SafetensorsFile::open((dir / "expected.safetensors").string())->get("logits");
  ASSERT_EQ(ours.sizes(), expected.sizes());
  EXPECT_LT(rel_err(ours, expected), 1e-4);
  EXPECT_LT((ours - expected).abs().max().item<double>(), 1e-3);
  // Every backbone parameter is frozen.
  for (const auto& p : m->parameters()) EXPECT_FALSE(p.requires_grad());
}

INSTANTIATE_TEST_SUITE_P(Families, GoldenLogits, ::testing::Values("qwen3", "llama", "qwen2"));

TEST(Model, PackedSamplesAreIndependent) {
  TempDir dir;
  model::ModelConfig cfg = model::ModelConfig::from_json(
      {{"architectures", {"Qwen3ForCausalLM"}}, {"vocab_size", 64}, {"hidden_size", 32}, {"intermediate_size", 48},
       {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}},
      "test");
  model::CausalLM m(cfg, torch::TensorOptions().dtype(torch::kFloat64));
  model::init_random(m, 3);
  std::vector<int64_t> a = {1, 5, 9, 3, 2, 7}, b = {4, 4, 8, 1};
  auto both = packed_logits(m, {a, b});
  auto alone_b = packed_logits(m, {b});
  EXPECT_LT(rel_err(both.narrow(0, 6, 4), alone_b), 1e-12);
}

TEST(Model, SaveLoadRoundTripAndShards) {
  TempDir dir;
  auto cfg = model::ModelConfig::from_json(
      {{"architectures", {"LlamaForCausalLM"}}, {"vocab_size", 50}, {"hidden_size", 16}, {"intermediate_size", 24},
       {"num_hidden_layers", 3}, {"num_attention_heads", 2}, {"num_key_value_heads", 1}},
      "test");
  model::CausalLM m(cfg, torch::TensorOptions());
  model::init_random(m, 1);
  model::save_model(m, dir.str("single"));
  model::save_model(m, dir.str("sharded"), 4096);
  EXPECT_TRUE(fs::exists(dir.path / "sharded" / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir.path / "sharded" / "model.safetensors"));
  for (const char* sub : {"single", "sharded"}) {
    auto m2 = model::load_model(dir.str(sub), torch::kFloat32, torch::kCPU);
    auto p1 = m->named_parameters(), p2 = m2->named_parameters();
    ASSERT_EQ(p1.size(), p2.size());
    for (const auto& p : p1) EXPECT_TRUE(torch::equal(p.value(), p2[p.key()])) << sub << " " << p.key();
  }
  EXPECT_EQ(model::weights_fingerprint(dir.str("single")), model::weights_fingerprint(dir.str("single")));
}

TEST(Model, BadConfigsAndCheckpointsNameTheCulprit) {
  TempDir dir;
  const std::string cfg_path = dir.str("config.json");
  std::ofstream(cfg_path) << R"({"architectures": ["MistralForCausalLM"], "vocab_size": 8})";
  elastic::testing::expect_error([&] { model::ModelConfig::load(dir.str()); },
                          {"config.json", "MistralForCausalLM", "Qwen3ForCausalLM"});
  std::ofstream(cfg_path) << R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 8})";
  elastic::testing::expect_error([&] { model::ModelConfig::load(dir.str()); }, {"config.json", "hidden_size"});
  std::ofstream(cfg_path) << R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 8, "hidden_size": 8,)";
  elastic::testing::expect_error([&] { model::ModelConfig::load(dir.str()); }, {"config.json", "not valid JSON"});
  std::ofstream(cfg_path) << R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 8, "hidden_size": 8,
    "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2})";
  elastic::testing::expect_error([&] { model::ModelConfig::load(dir.str()); }, {"num_key_value_heads"});
  std::ofstream(cfg_path) << R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 8, "hidden_size": 8,
    "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "rope_scaling": {"rope_type": "yarn", "factor": 4}})";
  elastic::testing::expect_error([&] { model::ModelConfig::load(dir.str()); }, {"rope_scaling", "yarn"});

  // A checkpoint whose tensor has the wrong shape, or lacks one.
  auto cfg = model::ModelConfig::from_json(
      {{"architectures", {"Qwen2ForCausalLM"}}, {"vocab_size", 10}, {"hidden_size", 8}, {"intermediate_size", 8},
       {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"num_key_value_heads", 1}},
      "test");
  model::CausalLM m(cfg, torch::TensorOptions());
  model::init_random(m, 0);
  model::save_model(m, dir.str("m"));
  std::vector<std::pair<std::string, torch::Tensor>> ts;
  for (const auto& p : m->named_parameters()) {
    if (p.key() == "model.layers.0.self_attn.k_proj.bias") continue;
    ts.emplace_back(p.key(), p.key() == "model.norm.weight" ? torch::ones({9}) : p.value());
  }
  io::save_safetensors(dir.str("m/model.safetensors"), ts);
  elastic::testing::expect_error([&] { model::load_model(dir.str("m"), torch::kFloat32, torch::kCPU); },
                          {"model.safetensors", "k_proj.bias"});
  ts.emplace_back("model.layers.0.self_attn.k_proj.bias", torch::zeros({4}));
  io::save_safetensors(dir.str("m/model.safetensors"), ts);
  elastic::testing::expect_error([&] { model::load_model(dir.str("m"), torch::kFloat32, torch::kCPU); },
                          {"model.safetensors", "model.norm.weight", "[9]", "[8]"});
  elastic::testing::expect_error([&] { model::load_model(dir.str("nowhere"), torch::kFloat32, torch::kCPU); },
                          {"nowhere", "config.json"});
}
