// Learning-rate and Gumbel-temperature schedules (ELASTIC.md §5, §9), as pure functions of
// the step so that resume needs no schedule state.
#pragma once
#include <cstdint>
#include <string>

namespace elastic::train {

// Linear warmup over warmup_fraction of the steps, then cosine decay to min_ratio * base.
double lr_at(int64_t step, int64_t total_steps, double base, double warmup_fraction, double min_ratio);

// cosine: from tau_max to tau_min over the first anneal_fraction of steps, then tau_min.
// exp:    max(tau_min, tau_max * exp(-rate * progress)), progress = step / total in [0, 1].
double tau_at(int64_t step, int64_t total_steps, const std::string& schedule, double tau_max, double tau_min,
              double anneal_fraction, double exp_rate);

}  // namespace elastic::train
