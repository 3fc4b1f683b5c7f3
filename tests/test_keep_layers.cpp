// train.keep_layers: the memory model that picks how many layers keep their activations, and the
// config key's validation.
#include <gtest/gtest.h>

#include "train/config.h"
#include "train/keep_layers.h"

using namespace elastic;

// Weights and state 10 GB; a 1000-token step, every layer recomputed, peaks at 28 GB; a kept layer
// holds 2 GB.
TEST(KeepLayers, FitsTheBudgetAndScalesWithThePack) {
  const train::StepMemory m{10e9, 28e9, 2e9, 1000};
  // Same pack: 18 GB of other activations, 22 GB of room, 2 GB a layer.
  EXPECT_EQ(m.layers_that_fit(1000, 50e9, 36), 11);
  // Twice the tokens: 36 GB of other activations leave 4 GB, 4 GB a layer.
  EXPECT_EQ(m.layers_that_fit(2000, 50e9, 36), 1);
  // Half the tokens: 31 layers of 1 GB fit in 31 GB.
  EXPECT_EQ(m.layers_that_fit(500, 50e9, 36), 31);
  // Never more than the model's layers, never fewer than none.
  EXPECT_EQ(m.layers_that_fit(500, 50e9, 20), 20);
  EXPECT_EQ(m.layers_that_fit(1000, 25e9, 36), 0);
  EXPECT_EQ(m.layers_that_fit(4000, 50e9, 36), 0);
}

// The measured H100 step (Qwen3-8B, 16K tokens, docs/performance.md): 24.6 GB peak with none kept,
// about 1.55 GB a kept layer, 79.9 GB with all 36 kept, on a card of 85.5 GB.
TEST(KeepLayers, MeasuredQwen3_8BStepKeepsWhatFitsInNinetyPercent) {
  const train::StepMemory m{16.6e9, 24.6e9, 1.55e9, 16384};
  const double budget = train::kKeepLayersMemoryShare * 85.5e9;
  const auto k = m.layers_that_fit(16384, budget, 36);
  EXPECT_EQ(k, 33);  // (76.95 - 24.6) / 1.55
  EXPECT_LE(24.6e9 + k * 1.55e9, budget);
  // A measurement that saw nothing kept (CPU, or no grad) keeps nothing.
  EXPECT_EQ((train::StepMemory{16.6e9, 24.6e9, 0, 16384}).layers_that_fit(16384, budget, 36), 0);
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
