// elastic head-scores: retrieval-head scores of a backbone and the static head mask at a given
// sparsity (the DuoAttention / PruLong-style fixed-ratio baseline of `elastic eval --routing fixed`).
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "cli/args.h"
#include "data/dataset.h"
#include "data/synthetic.h"
#include "io/atomic_file.h"
#include "model/weights.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/evaluate.h"
#include "train/head_scores.h"
#include "util/error.h"
#include "util/log.h"

namespace elastic::cli {

namespace fs = std::filesystem;

int cmd_head_scores(int argc, char** argv) {
  Args a("head-scores", argc, argv, {"data", "omega", "out", "scores-out", "tasks", "max-packs", "max-samples", "device", "dtype"},
         {"help"});
  if (a.flag("help") || a.positional().size() != 1) {
    std::cout << "elastic head-scores RUN_OR_MODEL --data D [--omega 0.7] [--out mask.csv] [--scores-out scores.csv]\n"
                 "  [--tasks retrieval[,multihop]] [--max-packs N] [--max-samples N] [--device auto|cpu|cuda] [--dtype float32]\n"
                 "Scores each (layer, KV head) by the attention mass its answer rows put on the planted KEY k v..\n"
                 "needle of retrieval samples (full attention, averaged over samples and the query heads of the\n"
                 "group) and writes the static mask keeping the top round((1 - omega) * L * Hkv) heads as full\n"
                 "attention (1 = FA), for `elastic eval RUN --routing fixed --mask mask.csv`.\n"
                 "RUN_OR_MODEL: a model directory (config.json), or a run directory: its trained backbone\n"
                 "RUN/model when present, else the run's model.path.\n";
    return a.flag("help") ? 0 : 2;
  }
  const fs::path src = a.positional()[0];
  std::string model_dir;
  if (fs::exists(src / "config.json")) {
    model_dir = src.string();
  } else if (auto trained = train::trained_model(src.string())) {
    model_dir = *trained;
  } else if (fs::exists(src / "config.yaml")) {
    model_dir = train::load_config((src / "config.yaml").string(), {}).model_path;
  } else {
    ELASTIC_FAIL(src.string() << ": neither a model directory (config.json) nor a run directory (config.yaml)");
  }
  std::string device_name = a.get("device", "auto");
  if (device_name == "auto") device_name = torch::cuda::is_available() ? "cuda" : "cpu";
  const auto device = model::parse_device(device_name, "--device");
  const auto dtype = model::parse_dtype(a.get("dtype", "float32"), "--dtype");
  auto m = model::load_model(model_dir, dtype, device);

  train::HeadScoreOptions opt;
  opt.max_packs = a.get_int("max-packs", -1);
  opt.max_samples = a.get_int("max-samples", -1);
  if (a.has("tasks")) {
    opt.tasks.clear();
    std::stringstream ss(a.get("tasks", ""));
    for (std::string t; std::getline(ss, t, ',');)
      opt.tasks.push_back(static_cast<int64_t>(data::parse_synthetic_task(t)));
  }
  const double omega = a.get_double("omega", 0.7);
  auto ds = data::Dataset::open(a.require("data"));
  auto r = train::compute_head_scores(m, *ds, opt);
  auto mask = train::mask_from_scores(r.scores, omega);

  const std::string out = a.get("out", "mask.csv");
  std::string scores_out = a.get("scores-out", "");
  if (scores_out.empty()) {
    fs::path p(out);
    scores_out = (p.parent_path() / (p.stem().string() + ".scores.csv")).string();
  }
  for (const auto& f : {out, scores_out})
    if (fs::path(f).has_parent_path()) fs::create_directories(fs::path(f).parent_path());
  train::write_matrix_csv(out, mask, "layer", "kv_head");
  train::write_matrix_csv(scores_out, r.scores, "layer", "kv_head");

  const int64_t L = r.scores.size(0), H = r.scores.size(1);
  std::cout << "retrieval score (needle attention mass at the answer rows) per layer x KV head, " << r.samples
            << " samples, " << r.rows << " answer rows; * = full attention in the mask\n";
  for (int64_t l = 0; l < L; ++l) {
    std::cout << "  layer " << std::setw(3) << l;
    for (int64_t h = 0; h < H; ++h)
      std::cout << "  " << std::fixed << std::setprecision(3) << r.scores[l][h].item<double>()
                << (mask[l][h].item<double>() > 0.5 ? "*" : " ");
    std::cout << "\n";
  }
  const int64_t fa = mask.sum().item<double>();
  std::cout << "mask: " << fa << " of " << L * H << " heads full attention (Ω_MSR " << std::setprecision(4)
            << 1.0 - double(fa) / double(L * H) << ", requested " << omega << ")\nwritten: " << out << ", " << scores_out
            << "\n";
  return 0;
}

}  // namespace elastic::cli
