#include "model/config.h"

#include <filesystem>
#include <fstream>

#include "util/error.h"

namespace elastic::model {

using json = nlohmann::json;

const char* family_name(Family f) {
  switch (f) {
    case Family::Qwen3: return "qwen3";
    case Family::Llama: return "llama";
    case Family::Qwen2: return "qwen2";
  }
  return "?";
}

std::string supported_architectures() { return "Qwen3ForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM"; }

namespace {

template <class T>
T required(const json& j, const char* key, const std::string& src) {
  ELASTIC_CHECK(j.contains(key) && !j[key].is_null(), src << ": missing required key '" << key << "'");
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    ELASTIC_FAIL(src << ": key '" << key << "' has the wrong type (" << j[key].dump() << ")");
  }
}

template <class T>
T optional_or(const json& j, const char* key, T def, const std::string& src) {
  if (!j.contains(key) || j[key].is_null()) return def;
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    ELASTIC_FAIL(src << ": key '" << key << "' has the wrong type (" << j[key].dump() << ")");
  }
}

std::optional<int64_t> token_id(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  if (j[key].is_array()) return j[key].empty() ? std::nullopt : std::optional<int64_t>(j[key][0].get<int64_t>());
  return j[key].get<int64_t>();
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& src) {
  ModelConfig c;
  ELASTIC_CHECK(j.is_object(), src << ": expected a JSON object");
  ELASTIC_CHECK(j.contains("architectures") && j["architectures"].is_array() &&
                    !j["architectures"].empty(),
                src << ": missing 'architectures' (supported: " << supported_architectures() << ")");
  c.architecture = j["architectures"][0].get<std::string>();
  if (c.architecture == "Qwen3ForCausalLM") {
    c.family = Family::Qwen3;
    c.qk_norm = true;
  } else if (c.architecture == "LlamaForCausalLM") {
    c.family = Family::Llama;
  } else if (c.architecture == "Qwen2ForCausalLM") {
    c.family = Family::Qwen2;
    c.attention_bias = true;
  } else {
    ELASTIC_FAIL(src << ": architecture '" << c.architecture << "' is not supported (supported: "
                     << supported_architectures() << ")");
  }
  c.vocab_size = required<int64_t>(j, "vocab_size", src);
  c.hidden_size = required<int64_t>(j, "hidden_size", src);
  c.intermediate_size = required<int64_t>(j, "intermediate_size", src);
  c.num_layers = required<int64_t>(j, "num_hidden_layers", src);
  c.num_heads = required<int64_t>(j, "num_attention_heads", src);
  c.num_kv_heads = optional_or<int64_t>(j, "num_key_value_heads", c.num_heads, src);
  ELASTIC_CHECK(c.num_heads > 0 && c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
                src << ": num_attention_heads (" << c.num_heads
                    << ") must be a positive multiple of num_key_value_heads (" << c.num_kv_heads << ")");
  c.head_dim = optional_or<int64_t>(j, "head_dim", c.hidden_size / c.num_heads, src);
  ELASTIC_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, src << ": head_dim must be even and positive");
  c.max_position_embeddings = optional_or<int64_t>(j, "max_position_embeddings", 32768, src);
  c.rms_norm_eps = optional_or<double>(j, "rms_norm_eps", 1e-6, src);
  c.rope_theta = optional_or<double>(j, "rope_theta", 10000.0, src);
  c.tie_word_embeddings = optional_or<bool>(j, "tie_word_embeddings", false, src);
  if (c.family != Family::Qwen2) c.attention_bias = optional_or<bool>(j, "attention_bias", false, src);
  ELASTIC_CHECK(!optional_or<bool>(j, "mlp_bias", false, src), src << ": mlp_bias=true is not supported");
  c.bos_token_id = token_id(j, "bos_token_id");
  c.eos_token_id = token_id(j, "eos_token_id");
  c.torch_dtype = optional_or<std::string>(j, "torch_dtype", optional_or<std::string>(j, "dtype", "float32", src), src);
  // transformers < 5 writes rope_theta and rope_scaling; transformers 5 writes rope_parameters
  // holding rope_theta, rope_type and the scaling fields.
  const char* rope_key = j.contains("rope_parameters") && !j["rope_parameters"].is_null() ? "rope_parameters"
                                                                                           : "rope_scaling";
  if (j.contains(rope_key) && !j[rope_key].is_null()) {
    const json& r = j[rope_key];
    const std::string rsrc = src + ": " + rope_key;
    ELASTIC_CHECK(r.is_object(), rsrc << ": expected an object");
    if (r.contains("rope_theta")) c.rope_theta = required<double>(r, "rope_theta", rsrc);
    std::string type = optional_or<std::string>(r, "rope_type", optional_or<std::string>(r, "type", "", rsrc), rsrc);
    if (type == "llama3") {
      RopeScaling s;
      s.type = type;
      s.factor = required<double>(r, "factor", rsrc);
      s.low_freq_factor = required<double>(r, "low_freq_factor", rsrc);
      s.high_freq_factor = required<double>(r, "high_freq_factor", rsrc);
      s.original_max_position_embeddings = required<int64_t>(r, "original_max_position_embeddings", rsrc);
      c.rope_scaling = s;
    } else if (type != "default" && !type.empty()) {
      ELASTIC_FAIL(rsrc << ": rope_type '" << type << "' is not supported (supported: llama3, default)");
    }
  }
  ELASTIC_CHECK(!optional_or<bool>(j, "use_sliding_window", false, src),
                src << ": use_sliding_window=true is not supported (the backbone must use full attention)");
  for (auto [v, name] : {std::pair{c.vocab_size, "vocab_size"}, {c.hidden_size, "hidden_size"},
                         {c.intermediate_size, "intermediate_size"}, {c.num_layers, "num_hidden_layers"}}) {
    ELASTIC_CHECK(v > 0, src << ": '" << name << "' must be positive (got " << v << ")");
  }
  return c;
}

ModelConfig ModelConfig::load(const std::string& model_dir) {
  const auto path = (std::filesystem::path(model_dir) / "config.json").string();
  std::ifstream in(path);
  ELASTIC_CHECK(in.good(), path << ": not found (expected a Hugging Face model directory)");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    ELASTIC_FAIL(path << ": not valid JSON (" << e.what() << ")");
  }
  return from_json(j, path);
}

json ModelConfig::to_json() const {
  json j;
  j["architectures"] = {architecture};
  j["model_type"] = family_name(family);
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["hidden_act"] = "silu";
  j["torch_dtype"] = torch_dtype;
  if (family != Family::Qwen2) j["attention_bias"] = attention_bias;
  if (family == Family::Llama) j["mlp_bias"] = false;
  if (family == Family::Qwen2 || family == Family::Qwen3) {
    j["use_sliding_window"] = false;
    j["max_window_layers"] = num_layers;
  }
  j["attention_dropout"] = 0.0;
  if (bos_token_id) j["bos_token_id"] = *bos_token_id;
  if (eos_token_id) j["eos_token_id"] = *eos_token_id;
  if (rope_scaling) {
    j["rope_scaling"] = {{"rope_type", rope_scaling->type},
                         {"factor", rope_scaling->factor},
                         {"low_freq_factor", rope_scaling->low_freq_factor},
                         {"high_freq_factor", rope_scaling->high_freq_factor},
                         {"original_max_position_embeddings", rope_scaling->original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  return j;
}

int64_t ModelConfig::num_parameters() const {
  const int64_t d = hidden_size, hd = head_dim;
  int64_t attn = d * num_heads * hd * 2 + d * num_kv_heads * hd * 2;
  if (attention_bias) attn += num_heads * hd + 2 * num_kv_heads * hd;
  if (qk_norm) attn += 2 * hd;
  const int64_t mlp = 3 * d * intermediate_size;
  const int64_t layer = attn + mlp + 2 * d;
  int64_t total = num_layers * layer + vocab_size * d + d;
  if (!tie_word_embeddings) total += vocab_size * d;
  return total;
}

}  // namespace elastic::model
