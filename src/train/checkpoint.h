// Training checkpoints: everything needed to continue a run exactly (router and trainable
// backbone weights, λ, optimiser states, step and the global data position). All randomness
// is a function of (seed, step, data position), so no RNG state needs saving.
//
// Layout: OUTPUT/checkpoints/step_00000010/{state.safetensors, optim_*.pt, meta.json}.
// A checkpoint is written into a temporary directory, synced, and renamed into place, so a
// process killed mid-write leaves the previous checkpoints intact.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace elastic::train {

std::string checkpoint_root(const std::string& output_dir);
// Where a run that trains backbone weights writes them (a Hugging Face model directory), and
// that directory if the run has written it.
std::string trained_model_dir(const std::string& output_dir);
std::optional<std::string> trained_model(const std::string& output_dir);
std::string checkpoint_name(int64_t step);

// Runs `write(tmp_dir)`, then fsyncs and renames tmp_dir to root/name; keeps the newest `keep`.
void write_checkpoint_atomically(const std::string& root, const std::string& name, int64_t keep,
                                 const std::function<void(const std::string& tmp_dir)>& write);

// Newest complete checkpoint (has meta.json with "complete": true), if any.
std::optional<std::string> latest_checkpoint(const std::string& root);

nlohmann::json read_checkpoint_meta(const std::string& dir);

}  // namespace elastic::train
