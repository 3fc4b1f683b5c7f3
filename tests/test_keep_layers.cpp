// train.keep_layers: the memory model that picks how many layers keep their activations, and the
// config key's validation.
#include <gtest/gtest.h>

#include "train/config.h"
#include "train/keep_layers.h"

using namespace elastic;

// Weights and state 10 GB; a 1000-token step, every layer recomputed, peaks at 28 GB; a kept layer
// holds 2 GB. The peak already holds one layer (the recomputed one), so k kept layers add k - 1.
TEST(KeepLayers, FitsTheBudgetAndScalesWithThePack) {
  const train::StepMemory m{10e9, 28e9, 2e9, 1000};
  // Same pack: 18 GB of other activations, 22 GB of room, 2 GB a layer: 11 on top of the one held.
  EXPECT_EQ(m.plan(1000, 50e9, 36).layers, 12);
  // Twice the tokens: 36 GB of other activations leave 4 GB, 4 GB a layer.
  EXPECT_EQ(m.plan(2000, 50e9, 36).layers, 2);
  // Half the tokens: 31 layers of 1 GB fit in 31 GB.
  EXPECT_EQ(m.plan(500, 50e9, 36).layers, 32);
  // Never more than the model's layers; none where even the recompute does not fit.
  EXPECT_EQ(m.plan(500, 50e9, 20).layers, 20);
  EXPECT_EQ(m.plan(1000, 25e9, 36).layers, 0);
  EXPECT_EQ(m.plan(4000, 50e9, 36).layers, 0);
  // A step that just fits keeps one layer: it holds what the recompute held.
  EXPECT_EQ(m.plan(1000, 28e9, 36).layers, 1);
}

// Measured steps (docs/performance.md). H100, Qwen3-8B at 16K: 24.6 GB peak with none kept, about
// 1.55 GB a kept layer, 79.9 GB with all 36 kept, on a card of 85.5 GB.
TEST(KeepLayers, MeasuredQwen3_8BStepKeepsWhatFitsInNinetyPercent) {
  const train::StepMemory m{16.6e9, 24.6e9, 1.55e9, 16384};
  const double budget = train::kKeepLayersMemoryShare * 85.5e9;
  const auto k = m.plan(16384, budget, 36).layers;
  EXPECT_EQ(k, 34);  // 1 + (76.95 - 24.6) / 1.55
  EXPECT_LE(24.6e9 + (k - 1) * 1.55e9, budget);
  // A measurement that saw nothing kept (CPU, or no grad) keeps nothing.
  EXPECT_EQ((train::StepMemory{16.6e9, 24.6e9, 0, 16384}).plan(16384, budget, 36).layers, 0);
}

// H200 (143,771 MiB), Qwen3-8B at 64K: 49.7 GB peak with none kept, 6.86 GB measured a layer. The
// old model (k layers on top of the peak) kept 12, which peaked at 118.9 GB; 13 kept peaked at 125.3.
TEST(KeepLayers, MeasuredH200StepKeepsOneLayerMoreThanTheRecomputePeakPlusKLayers) {
  const train::StepMemory m{17.6e9, 49.73e9, 6.86e9, 65536};
  const double budget = train::kKeepLayersMemoryShare * 143771.0 * 1048576.0;
  EXPECT_EQ(m.plan(65536, budget, 36).layers, 13);
  EXPECT_LE(125.3e9, budget);
}

// The same card and pack with the layer inputs offloaded (session 18): 32.05 GB peak with none kept,
// 6.33 GB a layer. The k - 1 count kept 17, which peaked at 140.9 GB, above the 135.7 GB budget.
TEST(KeepLayers, MeasuredH200StepWithOffloadedInputsKeepsWhatFits) {
  const double budget = train::kKeepLayersMemoryShare * 143771.0 * 1048576.0;
  const train::StepMemory offloaded{16.4e9, 32.05e9, 6.33e9, 65536, /*inputs_offloaded=*/true};
  const auto k = offloaded.plan(65536, budget, 36).layers;
  EXPECT_EQ(k, 16);
  EXPECT_LE(32.05e9 + k * 6.33e9, budget);
  train::StepMemory on_gpu = offloaded;
  on_gpu.inputs_offloaded = false;
  EXPECT_EQ(on_gpu.plan(65536, budget, 36).layers, 17);
}

// With routing, every layer first keeps its attention output (a twelfth of a layer's activations at
// Qwen3-8B's shapes), then layers keep their activations with what is left. H100 (81,559 MiB), Qwen3-8B
// at 64K (session 20): 46.96 GB peak with none kept, 6.33 GB a layer, 0.545 GB an attention output.
TEST(KeepLayers, AttentionOutputsFirstThenLayersWithWhatIsLeft) {
  EXPECT_EQ(train::attention_kept_bytes(65536, 32, 128, torch::kBFloat16), 65536.0 * 32 * (128 * 2 + 4));
  const double a = train::attention_kept_bytes(65536, 32, 128, torch::kBFloat16);
  const double budget = train::kKeepLayersMemoryShare * 81559.0 * 1048576.0;  // 76.97 GB: 30.0 GB of room
  train::StepMemory m{17.6e9, 46.96e9, 6.33e9, 65536, false, a};
  // 36 outputs take 19.6 GB; a kept layer 5.8 GB more, the first one free: 2 kept, 34 outputs.
  auto p = m.plan(65536, budget, 36);
  EXPECT_EQ(p.layers, 2);
  EXPECT_EQ(p.attention, 34);
  EXPECT_LE((p.layers - 1) * 6.33e9 + p.attention * a, budget - 46.96e9);
  EXPECT_GT(p.layers * 6.33e9 + (p.attention - 1) * a, budget - 46.96e9) << "one more kept layer would not fit";
  // Where not every output fits: the free kept layer and as many outputs as fit (13.0 GB of room).
  p = m.plan(65536, 60e9, 36);
  EXPECT_EQ(p.layers, 1);
  EXPECT_EQ(p.attention, 23);
  // Twice the pack (128K): the step's activations leave 0.6 GB, less than one output (1.09 GB).
  p = m.plan(131072, budget, 36);
  EXPECT_EQ(p.layers, 1);
  EXPECT_EQ(p.attention, 0);
  // Offloaded inputs: no kept layer is free.
  m.inputs_offloaded = true;
  p = m.plan(65536, budget, 36);
  EXPECT_EQ(p.layers, 1);
  EXPECT_EQ(p.attention, 35);
  // No routing (nothing to keep): layers only, as before.
  m.inputs_offloaded = false;
  m.attention_bytes = 0;
  p = m.plan(65536, budget, 36);
  EXPECT_EQ(p.layers, 5);
  EXPECT_EQ(p.attention, 0);
}

TEST(KeepLayers, ConfigTakesAutoOrANumberAndNamesTheKeyOtherwise) {
  const std::string paths = "model:\n  path: m\ndata:\n  path: d.bin\n";
  EXPECT_EQ(train::parse_config(paths + "train:\n  keep_layers: auto\n", "t.yaml", {}).train_keep_layers, "auto");
  EXPECT_EQ(train::parse_config(paths, "t.yaml", {"train.keep_layers=12"}).train_keep_layers, "12");
  for (const char* bad : {"-1", "some", "1.5"}) {
    try {
      train::parse_config(paths + "train:\n  keep_layers: " + bad + "\n", "t.yaml", {});
      FAIL() << "keep_layers " << bad << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("train.keep_layers: must be auto or a number of layers"), std::string::npos)
          << e.what();
    }
  }
}
