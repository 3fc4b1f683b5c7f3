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
  EXPECT_EQ(m.layers_that_fit(1000, 50e9, 36), 12);
  // Twice the tokens: 36 GB of other activations leave 4 GB, 4 GB a layer.
  EXPECT_EQ(m.layers_that_fit(2000, 50e9, 36), 2);
  // Half the tokens: 31 layers of 1 GB fit in 31 GB.
  EXPECT_EQ(m.layers_that_fit(500, 50e9, 36), 32);
  // Never more than the model's layers; none where even the recompute does not fit.
  EXPECT_EQ(m.layers_that_fit(500, 50e9, 20), 20);
  EXPECT_EQ(m.layers_that_fit(1000, 25e9, 36), 0);
  EXPECT_EQ(m.layers_that_fit(4000, 50e9, 36), 0);
  // A step that just fits keeps one layer: it holds what the recompute held.
  EXPECT_EQ(m.layers_that_fit(1000, 28e9, 36), 1);
}

// Measured steps (docs/performance.md). H100, Qwen3-8B at 16K: 24.6 GB peak with none kept, about
// 1.55 GB a kept layer, 79.9 GB with all 36 kept, on a card of 85.5 GB.
TEST(KeepLayers, MeasuredQwen3_8BStepKeepsWhatFitsInNinetyPercent) {
  const train::StepMemory m{16.6e9, 24.6e9, 1.55e9, 16384};
  const double budget = train::kKeepLayersMemoryShare * 85.5e9;
  const auto k = m.layers_that_fit(16384, budget, 36);
  EXPECT_EQ(k, 34);  // 1 + (76.95 - 24.6) / 1.55
  EXPECT_LE(24.6e9 + (k - 1) * 1.55e9, budget);
  // A measurement that saw nothing kept (CPU, or no grad) keeps nothing.
  EXPECT_EQ((train::StepMemory{16.6e9, 24.6e9, 0, 16384}).layers_that_fit(16384, budget, 36), 0);
}

// H200 (143,771 MiB), Qwen3-8B at 64K: 49.7 GB peak with none kept, 6.86 GB measured a layer. The
// old model (k layers on top of the peak) kept 12, which peaked at 118.9 GB; 13 kept peaked at 125.3.
TEST(KeepLayers, MeasuredH200StepKeepsOneLayerMoreThanTheRecomputePeakPlusKLayers) {
  const train::StepMemory m{17.6e9, 49.73e9, 6.86e9, 65536};
  const double budget = train::kKeepLayersMemoryShare * 143771.0 * 1048576.0;
  EXPECT_EQ(m.layers_that_fit(65536, budget, 36), 13);
  EXPECT_LE(125.3e9, budget);
}

// The same card and pack with the layer inputs offloaded (session 18): 32.05 GB peak with none kept,
// 6.33 GB a layer. The k - 1 count kept 17, which peaked at 140.9 GB, above the 135.7 GB budget.
TEST(KeepLayers, MeasuredH200StepWithOffloadedInputsKeepsWhatFits) {
  const double budget = train::kKeepLayersMemoryShare * 143771.0 * 1048576.0;
  const train::StepMemory offloaded{16.4e9, 32.05e9, 6.33e9, 65536, /*inputs_offloaded=*/true};
  const auto k = offloaded.layers_that_fit(65536, budget, 36);
  EXPECT_EQ(k, 16);
  EXPECT_LE(32.05e9 + k * 6.33e9, budget);
  train::StepMemory on_gpu = offloaded;
  on_gpu.inputs_offloaded = false;
  EXPECT_EQ(on_gpu.layers_that_fit(65536, budget, 36), 17);
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
