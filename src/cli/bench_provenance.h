// What every bench-* result records besides its numbers, so a JSON file in bench/results says
// how it was made: the command line, the machine, the commit (and whether the tree was dirty),
// the date and the LibTorch version.
#pragma once
#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <string>

namespace elastic::cli {

// `command` is the subcommand; argc/argv are its arguments (as main hands them over).
nlohmann::json bench_provenance(const std::string& command, int argc, char** argv, torch::Device device);

}  // namespace elastic::cli
