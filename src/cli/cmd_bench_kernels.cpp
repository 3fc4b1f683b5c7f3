// bench-kernels: median time of each fused kernel and of the composition it replaces, the
// speed-up, and the fused kernel's bandwidth against the H100's HBM3 peak.
#include <iostream>

#include "cli/args.h"
#include "cli/bench_kernels.h"
#include "cli/bench_provenance.h"
#include "cli/bench_util.h"
#include "cli/commands.h"
#include "io/atomic_file.h"
#include "util/error.h"
#include "util/log.h"

namespace elastic::cli {

using nlohmann::json;

int cmd_bench_kernels(int argc, char** argv) {
  Args a("bench-kernels", argc, argv, {"tokens", "repeat", "peak-gbs", "out", "only"}, {"help"});
  if (a.flag("help")) {
    std::cout << "elastic bench-kernels [--tokens 65536 --repeat 10 --peak-gbs 3350 --only NAME --out result.json]\n"
                 "Times each fused CUDA kernel against the ATen composition it replaces (Qwen3-8B shapes).\n";
    return 0;
  }
  ELASTIC_CHECK(torch::cuda::is_available(), "bench-kernels: needs a CUDA device");
  KernelShape s;
  s.tokens = a.get_int("tokens", 65536);
  const int reps = static_cast<int>(a.get_int("repeat", 10));
  ELASTIC_CHECK(reps >= 1, "bench-kernels: --repeat must be at least 1, got " << reps);
  const double peak_gbs = a.get_double("peak-gbs", 3350.0);
  const std::string only = a.get("only", "");
  Timer timer{s.device};
  std::vector<KernelCase> cases = elementwise_kernel_cases(s);
  for (auto& c : sink_kernel_cases(s)) cases.push_back(std::move(c));
  for (auto& c : norm_kernel_cases(s)) cases.push_back(std::move(c));
  for (auto& c : gather_kernel_cases(s)) cases.push_back(std::move(c));
  json runs = json::array();
  for (auto& c : cases) {
    if (!only.empty() && c.name.find(only) == std::string::npos) continue;
    torch::NoGradGuard ng;
    const double fused = timer.median_ms(c.fused, reps), composed = timer.median_ms(c.composed, reps);
    const double gbs = c.bytes / (fused * 1e-3) / 1e9;
    LOG_INFO(c.name << " [" << c.shape << "]: fused " << fused << " ms, composed " << composed << " ms, x"
                    << composed / fused << ", " << gbs << " GB/s (" << 100 * gbs / peak_gbs << "% of peak)");
    runs.push_back({{"name", c.name}, {"shape", c.shape}, {"fused_ms", fused}, {"composed_ms", composed},
                    {"speedup", composed / fused}, {"fused_gb_per_s", gbs}, {"fraction_of_peak_bandwidth", gbs / peak_gbs}});
  }
  json result = {{"tokens", s.tokens}, {"repeat", reps}, {"peak_gb_per_s", peak_gbs}, {"runs", runs}};
  result.update(bench_provenance("bench-kernels", argc, argv, s.device));
  if (a.has("out")) io::write_file_atomic(a.get("out", ""), result.dump(1) + "\n");
  return 0;
}

}  // namespace elastic::cli
