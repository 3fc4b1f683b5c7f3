// Subcommands of the `elastic` binary; each lives in its own cmd_*.cpp.
#pragma once

namespace elastic::cli {

// Each takes the arguments after the subcommand name and returns the exit code.
int cmd_make_tiny_model(int argc, char** argv);
int cmd_forward(int argc, char** argv);
int cmd_inspect_model(int argc, char** argv);
int cmd_bench_forward(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_make_synthetic_data(int argc, char** argv);
int cmd_inspect_data2(int argc, char** argv);
int cmd_prepare_data(int argc, char** argv);
int cmd_bench_train(int argc, char** argv);
int cmd_bench_prefill(int argc, char** argv);
int cmd_bench_kernels(int argc, char** argv);
int cmd_head_scores(int argc, char** argv);
int cmd_export(int argc, char** argv);
int cmd_inspect(int argc, char** argv);

}  // namespace elastic::cli
