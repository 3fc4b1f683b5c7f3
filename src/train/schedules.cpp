#include "train/schedules.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace elastic::train {

double lr_at(int64_t step, int64_t total, double base, double warmup_fraction, double min_ratio) {
  const double warm = std::floor(warmup_fraction * static_cast<double>(total));
  if (warm > 0 && step < warm) return base * (static_cast<double>(step) + 1.0) / warm;
  const double span = std::max(1.0, static_cast<double>(total) - warm);
  const double p = std::clamp((static_cast<double>(step) - warm) / span, 0.0, 1.0);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * p));
  return base * (min_ratio + (1.0 - min_ratio) * cosine);
}

double tau_at(int64_t step, int64_t total, const std::string& schedule, double tau_max, double tau_min,
              double anneal_fraction, double exp_rate) {
  const double progress = total > 1 ? static_cast<double>(step) / static_cast<double>(total - 1) : 1.0;
  if (schedule == "cosine") {
    if (anneal_fraction <= 0 || progress >= anneal_fraction) return tau_min;
    const double p = progress / anneal_fraction;
    return tau_min + 0.5 * (tau_max - tau_min) * (1.0 + std::cos(M_PI * p));
  }
  if (schedule == "exp") return std::max(tau_min, tau_max * std::exp(-exp_rate * progress));
  ELASTIC_FAIL("tau.schedule: unknown schedule '" << schedule << "'");
}

}  // namespace elastic::train
