// Router export for inference engines (ELASTIC.md §11; docs/router-format.md):
// router.safetensors with the reference's tensor names, and router.json, a manifest.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "model/decoder.h"
#include "train/config.h"

namespace elastic::train {

inline constexpr int kRouterFormatVersion = 1;

nlohmann::json router_manifest(const model::CausalLM& model, const TrainConfig& cfg,
                               const std::string& base_fingerprint, double tau);
// Writes DIR/router.safetensors and DIR/router.json (each atomically).
void export_router(const model::CausalLM& model, const nlohmann::json& manifest, const std::string& dir);
// Loads router weights (export names) into a model whose routers are attached; checks
// every tensor is present with the right shape.
void load_router_weights(model::CausalLM& model, const std::string& router_file);
// Reads router.json; checks it against the model it will be attached to.
nlohmann::json read_manifest(const std::string& dir, const model::ModelConfig& cfg);
// An exported router directory (router.json + router.safetensors) attached to a model: its options
// from the manifest, its weights loaded. Returns the manifest (its "ssa" holds the router's S and W).
nlohmann::json attach_exported_router(model::CausalLM& model, const std::string& dir);

}  // namespace elastic::train
