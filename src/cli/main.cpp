// elastic: trains Elastic Attention routers on frozen Hugging Face LLMs.
#include <cstring>
#include <functional>
#include <iostream>
#include <map>

#include "cli/commands.h"
#include "util/error.h"
#include "util/log.h"

namespace {

struct Command {
  std::function<int(int, char**)> run;
  const char* help;
};

const std::map<std::string, Command>& commands() {
  using namespace elastic::cli;
  static const std::map<std::string, Command> c = {
      {"make-tiny-model", {cmd_make_tiny_model, "write a random-initialised Hugging Face model directory"}},
      {"forward", {cmd_forward, "run a packed forward pass and write logits (golden checks)"}},
      {"inspect-model", {cmd_inspect_model, "print a model directory's config, size and fingerprint"}},
      {"bench-forward", {cmd_bench_forward, "time checkpoint loading and forward throughput"}},
      {"bench-kernels", {cmd_bench_kernels, "time each fused CUDA kernel against the ATen composition it replaces"}},
      {"bench-prefill", {cmd_bench_prefill, "prefill time with full vs routed hybrid attention"}},
      {"bench-train", {cmd_bench_train, "time training steps and attention at real model shapes"}},
      {"export", {cmd_export, "write a run's or checkpoint's router for inference engines"}},
      {"head-scores", {cmd_head_scores, "score retrieval heads; write the static head-mask baseline at a sparsity"}},
      {"inspect", {cmd_inspect, "run a model with an exported router and print per-head decisions"}},
      {"train", {cmd_train, "train Elastic Attention routers (or a backbone) from a YAML config"}},
      {"eval", {cmd_eval, "evaluate a run with hard routing: per-task loss, accuracy, sparsity"}},
      {"make-synthetic-data", {cmd_make_synthetic_data, "write a packed dataset of synthetic long-context tasks"}},
      {"inspect-data", {cmd_inspect_data2, "print a packed dataset's header and one pack (--tokenizer decodes it)"}},
      {"prepare-data", {cmd_prepare_data, "tokenize raw JSONL with the chat template into a packed, sharded dataset"}},
  };
  return c;
}

void usage() {
  std::cerr << "usage: elastic <command> [options]\n\ncommands:\n";
  for (const auto& [name, c] : commands()) std::cerr << "  " << name << std::string(22 - name.size(), ' ') << c.help << "\n";
  std::cerr << "\nRun `elastic <command> --help` for a command's options.\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    usage();
    return argc < 2 ? 2 : 0;
  }
  auto it = commands().find(argv[1]);
  if (it == commands().end()) {
    std::cerr << "elastic: unknown command '" << argv[1] << "'\n";
    usage();
    return 2;
  }
  try {
    return it->second.run(argc - 2, argv + 2);
  } catch (const elastic::Error& e) {
    LOG_ERROR(e.what());
    return 1;
  } catch (const c10::Error& e) {
    LOG_ERROR("torch: " << e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    LOG_ERROR(e.what());
    return 1;
  }
}
