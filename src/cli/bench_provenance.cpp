#include "cli/bench_provenance.h"

#include <array>
#include <cstdio>
#include <ctime>
#include <torch/version.h>

#include "util/memory.h"
#include "util/version.h"

namespace elastic::cli {
namespace {

// The command's standard output, trailing newline removed; "" when it fails (no git, not a checkout).
std::string shell_output(const char* cmd) {
  std::string out;
  FILE* p = popen(cmd, "r");
  if (!p) return out;
  std::array<char, 256> buf{};
  while (fgets(buf.data(), buf.size(), p)) out += buf.data();
  if (pclose(p) != 0) return "";
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace

nlohmann::json bench_provenance(const std::string& command, int argc, char** argv, torch::Device device) {
  std::string line = "elastic " + command;
  for (int i = 0; i < argc; ++i) line += std::string(" ") + argv[i];
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  nlohmann::json p = {{"command", line}, {"machine", device_name(device)}, {"date", date},
                      {"torch", TORCH_VERSION}, {"elastic", version()}};
  const std::string commit = shell_output("git rev-parse HEAD 2>/dev/null");
  p["commit"] = commit.empty() ? nlohmann::json(nullptr) : nlohmann::json(commit);
  if (!commit.empty()) p["dirty"] = !shell_output("git status --porcelain --untracked-files=no 2>/dev/null").empty();
  return p;
}

}  // namespace elastic::cli
