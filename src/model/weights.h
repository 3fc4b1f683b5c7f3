// Loading frozen backbones from Hugging Face directories, random init for tiny models,
// and saving a model back as a directory transformers loads.
#pragma once
#include <torch/torch.h>

#include <string>

#include "model/decoder.h"

namespace elastic::model {

// Loads config.json + safetensors into a model of the given dtype/device. Every backbone
// parameter must be present with the right shape; all are frozen (requires_grad = false).
CausalLM load_model(const std::string& dir, torch::ScalarType dtype, torch::Device device);

// Copies checkpoint tensors into the model's parameters (strict about names and shapes).
void load_weights(CausalLM& model, const std::string& dir);

// Deterministic random init (normal(0, std) for matrices, 1 + noise for norms).
void init_random(CausalLM& model, uint64_t seed, double std = 0.02);

// Writes config.json and model.safetensors (backbone only; routers are exported separately).
// With max_shard_bytes > 0, writes model-0000i-of-0000n.safetensors shards plus
// model.safetensors.index.json, as transformers does for large models.
void save_model(const CausalLM& model, const std::string& dir, uint64_t max_shard_bytes = 0);

// Stable identity of a checkpoint: hash of config.json and every tensor's name, dtype,
// shape and a sample of its bytes. Cheap on 16 GB checkpoints (reads ~8 KB per tensor).
std::string weights_fingerprint(const std::string& dir);

torch::ScalarType parse_dtype(const std::string& name, const std::string& key);
// As parse_dtype, and "auto": bfloat16 on CUDA, float32 on the CPU.
torch::ScalarType resolve_dtype(const std::string& name, torch::Device device, const std::string& key);
torch::Device parse_device(const std::string& name, const std::string& key);

}  // namespace elastic::model
