// The training loop: wires model, routers, data, objective, optimiser, schedules and
// metrics. One call to step() is one optimiser step over `train.micro_batches` packs.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "dist/comm.h"
#include "model/decoder.h"
#include "train/config.h"
#include "train/keep_layers.h"
#include "train/objective.h"
#include "train/optimizer.h"

namespace elastic::train {

struct StepMetrics {
  nlohmann::json json;  // one line of metrics.jsonl
};

class Trainer {
 public:
  // `comm` defaults to the MPI world (a world of one outside mpirun).
  explicit Trainer(const TrainConfig& cfg, std::shared_ptr<dist::Comm> comm = nullptr);
  // Runs the remaining steps (or until SIGTERM/SIGUSR1, then checkpoints), writing metrics,
  // checkpoints and the final router; returns the last step's metrics.
  nlohmann::json run();
  nlohmann::json step();
  void save_checkpoint();
  void load_checkpoint(const std::string& dir);
  bool stopped_by_signal() const { return stopped_by_signal_; }

  model::CausalLM& model() { return model_; }
  Lagrangian& lagrangian() { return lagrangian_; }
  int64_t current_step() const { return step_; }
  int rank() const { return comm_->rank(); }
  const TrainConfig& config() const { return cfg_; }
  torch::Device device() const { return device_; }
  // Parameters updated by the router optimiser, the backbone optimiser, and λ.
  std::vector<torch::Tensor> router_params() const;
  std::vector<torch::Tensor> backbone_trainable() const { return backbone_params_; }

 private:
  void write_outputs(const nlohmann::json& last);
  std::vector<torch::Tensor> trainable() const;  // router, backbone, λ: all that is reduced
  TrainConfig cfg_;
  torch::Device device_;
  torch::ScalarType dtype_;
  model::CausalLM model_{nullptr};
  Lagrangian lagrangian_{nullptr};
  std::unique_ptr<data::DataLoader> loader_;
  std::unique_ptr<FusedAdamW> opt_router_, opt_backbone_;
  std::unique_ptr<torch::optim::Adam> opt_lambda_;
  std::vector<torch::Tensor> backbone_params_;
  std::string base_fingerprint_;
  std::shared_ptr<dist::Comm> comm_;
  int64_t step_ = 0;
  int64_t nonfinite_in_a_row_ = 0;
  bool stopped_by_signal_ = false;
  uint64_t cursor_ = 0;  // global data position
  double last_tau_ = 1.0;
  // train.keep_layers: a number, or (auto) what fits by the step measured on the second step run.
  int64_t keep_layers_ = 0;
  bool keep_auto_ = false;
  double keep_budget_bytes_ = 0;  // auto: kKeepLayersMemoryShare of the GPU's memory
  std::optional<StepMemory> step_memory_;
  int64_t steps_run_ = 0;
  KeepPlan keep_plan_for(int64_t pack_tokens) const;
};

// Unfreezes backbone parameters whose names match any regex; returns them (error if a pattern matches nothing).
std::vector<torch::Tensor> unfreeze(model::CausalLM& model, const std::vector<std::string>& patterns);

// fp32 weights on a GPU (backbones trained from scratch): TF32 tensor cores for the matmuls and bf16
// flash attention, for training and for evaluating what was trained. Process-wide; a no-op off the GPU.
void use_training_numerics(torch::Device device);

}  // namespace elastic::train
