// Evaluation with hard routing: per task LM loss, answer accuracy, Ω_MSR and Ω_ESR, and how
// often each (layer, KV head) chooses full attention. With the router deciding, each task's summary also
// splits its samples by how many heads they got dense (by_dense_heads: samples, accuracy, LM loss).
#pragma once
#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "data/dataset.h"
#include "model/decoder.h"
#include "train/config.h"

namespace elastic::train {

enum class EvalRouting { router, full, streaming, fixed };
EvalRouting parse_eval_routing(const std::string& s);

struct EvalOptions {
  EvalRouting routing = EvalRouting::router;
  int64_t max_packs = -1;            // -1: all
  torch::Tensor fixed_mask;          // [L, Hkv] (fixed routing): 1 = FA
  int64_t logits_chunk = 4096;
};

struct EvalResult {
  nlohmann::json summary;       // overall and per task
  torch::Tensor fa_frequency;   // [L, Hkv] fraction of samples routed to FA
  // The same per task (also in summary.tasks.<name>.fa_frequency): which heads each task keeps dense.
  std::map<std::string, torch::Tensor> task_fa_frequency;
};

EvalResult evaluate(model::CausalLM& model, const data::Dataset& ds, const TrainConfig& cfg, const EvalOptions& opt);

// Heatmap of a [rows, cols] matrix in [0, 1] as a standalone SVG.
void write_heatmap_svg(const std::string& path, const torch::Tensor& m, const std::string& title,
                       const std::string& row_label, const std::string& col_label);
void write_matrix_csv(const std::string& path, const torch::Tensor& m, const std::string& row_name,
                      const std::string& col_name);

}  // namespace elastic::train
