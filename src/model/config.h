// Hugging Face config.json for the supported decoder families (ELASTIC.md §2).
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace elastic::model {

enum class Family { Qwen3, Llama, Qwen2 };

struct RopeScaling {
  std::string type;  // only "llama3" changes the frequencies
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;
  Family family = Family::Qwen3;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 32768;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v bias (always on for Qwen2)
  bool qk_norm = false;         // Qwen3 q_norm/k_norm
  std::optional<int64_t> bos_token_id, eos_token_id;
  std::string torch_dtype = "float32";

  int64_t group_size() const { return num_heads / num_kv_heads; }
  // Parameter count of the backbone (for MFU and reports).
  int64_t num_parameters() const;

  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  static ModelConfig load(const std::string& model_dir);
  nlohmann::json to_json() const;  // a config.json transformers loads
};

const char* family_name(Family f);
std::string supported_architectures();

}  // namespace elastic::model
