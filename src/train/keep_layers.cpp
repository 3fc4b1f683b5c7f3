#include "train/keep_layers.h"

#include <algorithm>
#include <cmath>

namespace elastic::train {

int64_t StepMemory::layers_that_fit(int64_t pack_tokens, double budget_bytes, int64_t num_layers) const {
  if (tokens <= 0 || layer_bytes <= 0 || pack_tokens <= 0) return 0;
  const double scale = static_cast<double>(pack_tokens) / static_cast<double>(tokens);
  // The step's activation peak without kept layers, then one kept layer's bytes, at this pack.
  const double activations =
      std::max(0.0, peak_bytes - static_bytes - static_cast<double>(kept_layers) * layer_bytes) * scale;
  const double per_layer = layer_bytes * scale;
  const double room = budget_bytes - static_bytes - activations;
  if (room <= 0) return 0;
  return std::clamp<int64_t>(static_cast<int64_t>(std::floor(room / per_layer)), 0, num_layers);
}

}  // namespace elastic::train
