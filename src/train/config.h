// The training configuration: every key, its default, and its validation in one table.
// YAML files and `--set key=value` overrides go through the same checks, and unknown
// keys are rejected with the nearest valid key, before any work starts.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "router/router.h"

namespace elastic::train {

struct TaskSpec {
  std::string name;
  int64_t id = 0;
  double target = 1.0;
};

// Labelled rows per logits chunk of the LM loss: about 0.9 GB of transient logits at Qwen3's
// vocabulary (train/linear_cross_entropy.h), in [1024, D] x [D, V] matmuls that still run at full rate.
inline constexpr int64_t kLogitsChunk = 1024;

struct TrainConfig {
  // model
  std::string model_path;
  std::string model_dtype = "auto";   // auto: bfloat16 on CUDA, float32 on CPU
  std::string model_device = "auto";  // auto | cpu | cuda | cuda:N
  // router (ELASTIC.md §4)
  int64_t router_hidden_mult = 4;
  std::string router_pooling = "boundary";
  int64_t router_pool_tokens = 100;
  // streaming sparse attention (§6)
  int64_t ssa_sink = 128;
  int64_t ssa_window = 2048;
  // Gumbel temperature (§5)
  std::string tau_schedule = "cosine";  // cosine | exp
  double tau_max = 1.5;
  double tau_min = 1.0;
  double tau_anneal_fraction = 0.6;
  double tau_exp_rate = 0.6;
  // objective (§7-8)
  std::string objective_form = "abs_sq";  // abs_sq: λ1|Ω−t| + λ2(Ω−t)²; signed: λ1(Ω−t) + λ2(Ω−t)²
  double objective_default_target = 1.0;
  double objective_lambda_init_max = 0.5;
  std::vector<TaskSpec> tasks;
  // optimiser (§9)
  double optim_lr = 5e-4;
  double optim_lambda_lr = 1e-3;
  double optim_beta1 = 0.9;
  double optim_beta2 = 0.95;
  double optim_eps = 1e-8;
  double optim_weight_decay = 0.1;
  double optim_warmup_fraction = 0.2;
  double optim_min_lr_ratio = 0.1;
  double optim_grad_clip = 5.0;
  // training loop
  int64_t train_steps = 300;
  int64_t train_micro_batches = 1;  // packs per rank per step (gradient accumulation)
  uint64_t train_seed = 0;
  std::string train_routing = "router";      // router: train routers; off: full attention (backbone training);
                                             // random: a backbone trained with random streaming heads
  double train_random_streaming = 0.5;       // random: fraction of (sample, layer, kv head) pairs on SSA
  std::vector<std::string> train_trainable;  // regexes of backbone parameters to unfreeze
  double train_backbone_lr = 1e-3;           // lr of unfrozen backbone parameters
  int64_t train_logits_chunk = kLogitsChunk;  // labelled rows per logits chunk
  bool train_checkpoint = true;              // recompute decoder layers in the backward
  bool train_offload_checkpoints = false;    // keep checkpointed layer inputs in pinned host memory
  std::string train_keep_layers = "0";       // with checkpointing: the last N layers keep activations (no
                                             // recompute); auto: every other layer's attention output,
                                             // then as many layers as fit (train/keep_layers.h)
  int64_t train_max_nonfinite_steps = 3;     // consecutive skipped steps before training stops
  std::string train_resume;                  // "", "auto" (newest checkpoint in output.dir) or a checkpoint dir
  // checkpoints (under output.dir/checkpoints)
  int64_t checkpoint_every = 50;             // steps; 0 = only at the end and on SIGTERM/SIGUSR1
  int64_t checkpoint_keep = 3;
  // distribution
  double dist_timeout_s = 600.0;
  // data
  std::string data_path;
  bool data_shuffle = true;
  // output
  std::string output_dir = "runs/default";
  int64_t log_every = 1;
  std::string log_level = "info";

  const TaskSpec* task_by_id(int64_t id) const;
  double target_for(int64_t task_id) const;
};

// Router options from the config, for a model with this head_dim.
router::RouterOptions router_options(const TrainConfig& cfg, int64_t head_dim);

// Default task map of the reference data (ELASTIC.md §8).
std::vector<TaskSpec> default_tasks();

// Loads a YAML file (may be empty) and applies `key=value` overrides in order.
TrainConfig load_config(const std::string& yaml_path, const std::vector<std::string>& overrides);
// The same from YAML text (tests).
TrainConfig parse_config(const std::string& yaml_text, const std::string& source,
                         const std::vector<std::string>& overrides);
// The fully resolved configuration as YAML (saved in the run directory).
std::string to_yaml(const TrainConfig& cfg);
// All valid keys (help and suggestions).
std::vector<std::string> config_keys();

}  // namespace elastic::train
