// The training loop: wires model, routers, data, objective, optimiser, schedules and
// metrics. One call to step() is one optimiser step over `train.micro_batches` packs.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "model/decoder.h"
#include "train/config.h"
#include "train/objective.h"

namespace elastic::train {

struct StepMetrics {
  nlohmann::json json;  // one line of metrics.jsonl
};

class Trainer {
 public:
  explicit Trainer(const TrainConfig& cfg);
  // Runs all remaining steps, writing metrics and the final router; returns the last metrics.
  nlohmann::json run();
  nlohmann::json step();

  model::CausalLM& model() { return model_; }
  Lagrangian& lagrangian() { return lagrangian_; }
  int64_t current_step() const { return step_; }
  const TrainConfig& config() const { return cfg_; }
  torch::Device device() const { return device_; }
  // Parameters updated by the router optimiser, the backbone optimiser, and λ.
  std::vector<torch::Tensor> router_params() const;
  std::vector<torch::Tensor> backbone_trainable() const { return backbone_params_; }

 private:
  void write_outputs(const nlohmann::json& last);
  TrainConfig cfg_;
  torch::Device device_;
  torch::ScalarType dtype_;
  model::CausalLM model_{nullptr};
  Lagrangian lagrangian_{nullptr};
  std::unique_ptr<data::DataLoader> loader_;
  std::unique_ptr<torch::optim::AdamW> opt_router_, opt_backbone_;
  std::unique_ptr<torch::optim::Adam> opt_lambda_;
  std::vector<torch::Tensor> backbone_params_;
  std::string base_fingerprint_;
  int64_t step_ = 0;
  uint64_t cursor_ = 0;  // global data position
  double last_tau_ = 1.0;
};

// Unfreezes backbone parameters whose names match any regex; returns them (error if a pattern matches nothing).
std::vector<torch::Tensor> unfreeze(model::CausalLM& model, const std::vector<std::string>& patterns);

}  // namespace elastic::train
