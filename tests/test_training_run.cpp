// End-to-end training runs on the tiny model: CLI train + eval, exact resume, checkpoint
// atomicity under SIGKILL, and data parallelism over 2 MPI ranks equal to one rank.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/dataset.h"
#include "data/synthetic.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "test_util.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"
#include "util/error.h"

using namespace elastic;
using elastic::testing::TempDir;
namespace fs = std::filesystem;

namespace {

// A tiny model and dataset in `dir`; returns a config for them.
train::TrainConfig tiny_setup(const TempDir& dir, int64_t steps) {
  if (!fs::exists(dir.path / "model" / "config.json")) {
    auto cfg = model::ModelConfig::from_json(
        {{"architectures", {"Qwen3ForCausalLM"}}, {"vocab_size", 128}, {"hidden_size", 32}, {"intermediate_size", 64},
         {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 8}},
        "test");
    model::CausalLM m(cfg, torch::TensorOptions());
    model::init_random(m, 1);
    model::save_model(m, dir.str("model"));
    data::SyntheticOptions o;
    o.vocab = 128;
    o.num_samples = 48;
    o.min_len = 64;
    o.max_len = 160;
    auto packs = data::pack_samples(data::make_synthetic_samples(o), 400);
    data::DatasetWriter w(dir.str("data.bin"), 128, 0);
    for (const auto& p : packs) w.add(p);
    w.finish();
  }
  return train::parse_config("", "test",
                             {"model.path=" + dir.str("model"), "data.path=" + dir.str("data.bin"),
                              "output.dir=" + dir.str("run"), "train.steps=" + std::to_string(steps),
                              "ssa.sink=4", "ssa.window=16", "router.pool_tokens=8", "optim.lr=0.01",
                              "optim.lambda_lr=0.05", "train.micro_batches=2", "checkpoint.every=0",
                              // CPU: bitwise exactness is promised there (GPU kernels use atomics).
                              "model.device=cpu"});
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Metrics without wall-clock and memory fields.
nlohmann::json deterministic(nlohmann::json j) {
  for (const char* k : {"tokens_per_s", "step_seconds", "peak_memory_gb", "ranks", "cudnn_new_plan_keys"}) j.erase(k);
  return j;
}

torch::Tensor router_tensor(const std::string& run, const std::string& name) {
  return io::SafetensorsFile::open(run + "/router.safetensors")->get(name).clone();
}

int run_cmd(const std::string& cmd) { return std::system((cmd + " > /dev/null 2>&1").c_str()); }

// `elastic train` on tiny_setup's model and data into DIR/run, with S 4 and W 16.
int train_cli(const TempDir& d, int steps) {
  return run_cmd(std::string(ELASTIC_BINARY) + " train --set model.path=" + d.str("model") + " --set data.path=" +
                 d.str("data.bin") + " --set output.dir=" + d.str("run") + " --set train.steps=" + std::to_string(steps) +
                 " --set ssa.window=16 --set ssa.sink=4 --set model.device=cpu");
}

}  // namespace

TEST(TrainingRun, ResumeIsBitwiseExact) {
  TempDir a, b;
  auto cfg_a = tiny_setup(a, 10);
  train::Trainer(cfg_a).run();
  // Same data and model for b (copied), 5 steps, then resume to 10.
  fs::copy(a.path / "model", b.path / "model");
  fs::copy(a.path / "data.bin", b.path / "data.bin");
  auto cfg_b = tiny_setup(b, 10);
  {
    train::Trainer t(cfg_b);
    std::ofstream m(b.str("run/metrics.jsonl"));
    for (int i = 0; i < 5; ++i) m << t.step().dump() << "\n";
    t.save_checkpoint();
  }
  cfg_b.train_resume = "auto";
  train::Trainer resumed(cfg_b);
  EXPECT_EQ(resumed.current_step(), 5);
  resumed.run();
  auto ma = read_metrics(a.str("run/metrics.jsonl")), mb = read_metrics(b.str("run/metrics.jsonl"));
  ASSERT_EQ(ma.size(), 10u);
  ASSERT_EQ(mb.size(), 10u);
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(deterministic(ma[i]), deterministic(mb[i])) << "step " << i + 1;
  auto fa = io::SafetensorsFile::open(a.str("run/router.safetensors"));
  auto fb = io::SafetensorsFile::open(b.str("run/router.safetensors"));
  for (const auto& t : fa->tensors()) EXPECT_TRUE(torch::equal(fa->get(t.name), fb->get(t.name))) << t.name;
}

// train.keep_layers: layers that keep their activations train as the recomputed ones do (the
// same losses and routers), the metrics say how many were kept, and more than the model has is
// refused by name. auto keeps none on the CPU.
TEST(TrainingRun, KeptLayersTrainLikeRecomputedOnes) {
  TempDir d;
  auto cfg = tiny_setup(d, 3);
  auto run = [&](const std::string& keep, const std::string& out) {
    auto c = cfg;
    c.train_keep_layers = keep;
    c.output_dir = d.str(out);
    train::Trainer(c).run();
    return read_metrics(d.str(out + "/metrics.jsonl"));
  };
  auto m0 = run("0", "run0"), m2 = run("2", "run2"), ma = run("auto", "runa");
  ASSERT_EQ(m0.size(), 3u);
  ASSERT_EQ(m2.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(m0[i]["keep_layers"], 0);
    EXPECT_EQ(m2[i]["keep_layers"], 2);
    EXPECT_EQ(ma[i]["keep_layers"], 0);
    EXPECT_EQ(m0[i]["cudnn_new_plan_keys"], 0);  // written every step; no cuDNN on the CPU
    EXPECT_NEAR(m2[i]["loss"].get<double>(), m0[i]["loss"].get<double>(), 1e-6 * std::abs(m0[i]["loss"].get<double>()))
        << "step " << i + 1;
  }
  auto f0 = io::SafetensorsFile::open(d.str("run0/router.safetensors"));
  auto f2 = io::SafetensorsFile::open(d.str("run2/router.safetensors"));
  for (const auto& t : f0->tensors()) EXPECT_TRUE(torch::allclose(f0->get(t.name), f2->get(t.name), 1e-5, 1e-6)) << t.name;
  auto bad = cfg;
  bad.train_keep_layers = "3";
  try {
    train::Trainer t(bad);
    FAIL() << "keep_layers 3 of 2 layers was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("train.keep_layers: must be auto or in [0, 2]"), std::string::npos) << e.what();
  }
}

TEST(TrainingRun, ResumeRefusesAnotherBaseModel) {
  TempDir a;
  auto cfg = tiny_setup(a, 2);
  train::Trainer(cfg).run();
  // Change one weight of the base model: its fingerprint changes.
  auto m = model::load_model(a.str("model"), torch::kFloat32, torch::kCPU);
  {
    torch::NoGradGuard ng;
    m->model->norm->weight.add_(1.0);
  }
  model::save_model(m, a.str("model"));
  cfg.train_resume = "auto";
  try {
    train::Trainer t(cfg);
    FAIL() << "resume accepted a checkpoint of another base model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different base model"), std::string::npos) << e.what();
  }
}

TEST(TrainingRun, KilledCheckpointWriteLeavesThePreviousIntact) {
  TempDir d;
  const auto root = d.str("ck");
  train::write_checkpoint_atomically(root, train::checkpoint_name(1), 3, [](const std::string& dir) {
    io::write_file_atomic(dir + "/meta.json", R"({"complete": true, "step": 1})");
  });
  pid_t pid = fork();
  if (pid == 0) {
    train::write_checkpoint_atomically(root, train::checkpoint_name(2), 3, [](const std::string& dir) {
      std::ofstream(dir + "/state.safetensors") << "partial";
      ::raise(SIGKILL);  // dies mid-write
    });
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  auto latest = train::latest_checkpoint(root);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(fs::path(*latest).filename(), train::checkpoint_name(1));
  EXPECT_EQ(train::read_checkpoint_meta(*latest)["step"], 1);
  // The next write succeeds and removes the dead writer's leftovers.
  train::write_checkpoint_atomically(root, train::checkpoint_name(3), 3, [](const std::string& dir) {
    io::write_file_atomic(dir + "/meta.json", R"({"complete": true, "step": 3})");
  });
  int entries = 0;
  for (auto& e : fs::directory_iterator(root)) entries += 1 + 0 * e.path().string().size();
  EXPECT_EQ(entries, 2);
  EXPECT_EQ(fs::path(*train::latest_checkpoint(root)).filename(), train::checkpoint_name(3));
}

TEST(TrainingRun, CliTrainThenEval) {
  TempDir d;
  tiny_setup(d, 1);
  const std::string e = ELASTIC_BINARY;
  ASSERT_EQ(train_cli(d, 3), 0);
  for (const char* f : {"config.yaml", "metrics.jsonl", "summary.json", "router.safetensors", "router.json"})
    EXPECT_TRUE(fs::exists(d.path / "run" / f)) << f;
  EXPECT_EQ(read_metrics(d.str("run/metrics.jsonl")).size(), 3u);
  ASSERT_EQ(run_cmd(e + " eval " + d.str("run") + " --out " + d.str("eval")), 0);
  auto ev = nlohmann::json::parse(io::read_file(d.str("eval/eval.json")));
  EXPECT_GT(ev["samples"].get<int64_t>(), 0);
  EXPECT_TRUE(fs::exists(d.path / "eval" / "fa_heatmap.svg"));
  EXPECT_TRUE(fs::exists(d.path / "eval" / "fa_frequency.csv"));
  // Per task: [layers][KV heads] frequencies whose sample-weighted mean is the overall frequency.
  std::vector<std::vector<double>> overall;
  {
    std::ifstream in(d.str("eval/fa_frequency.csv"));
    std::string line, cell;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::stringstream ss(line);
      std::getline(ss, cell, ',');
      overall.emplace_back();
      while (std::getline(ss, cell, ',')) overall.back().push_back(std::stod(cell));
    }
  }
  ASSERT_FALSE(overall.empty());
  ASSERT_FALSE(ev["tasks"].empty());
  std::vector<std::vector<double>> weighted(overall.size(), std::vector<double>(overall[0].size(), 0.0));
  for (auto& [task, t] : ev["tasks"].items()) {
    const auto f = t["fa_frequency"].get<std::vector<std::vector<double>>>();
    ASSERT_EQ(f.size(), overall.size()) << task;
    for (size_t l = 0; l < f.size(); ++l) {
      ASSERT_EQ(f[l].size(), overall[l].size()) << task;
      for (size_t h = 0; h < f[l].size(); ++h) {
        EXPECT_GE(f[l][h], 0.0);
        EXPECT_LE(f[l][h], 1.0);
        weighted[l][h] += f[l][h] * t["samples"].get<double>() / ev["samples"].get<double>();
      }
    }
    EXPECT_TRUE(fs::exists(d.path / "eval" / ("fa_heatmap_" + task + ".svg"))) << task;
  }
  for (size_t l = 0; l < overall.size(); ++l)
    for (size_t h = 0; h < overall[l].size(); ++h) EXPECT_NEAR(weighted[l][h], overall[l][h], 1e-5) << l << "," << h;
  // The router's evaluation also reports the Ω_MSR that Gumbel-sampled routing gives in expectation,
  // per task and overall (the sample-weighted mean of the tasks').
  ASSERT_TRUE(ev.contains("omega_msr_sampled"));
  double sampled = 0.0;
  for (auto& [task, t] : ev["tasks"].items()) {
    ASSERT_TRUE(t.contains("omega_msr_sampled")) << task;
    EXPECT_GT(t["omega_msr_sampled"].get<double>(), 0.0) << task;
    EXPECT_LT(t["omega_msr_sampled"].get<double>(), 1.0) << task;
    sampled += t["omega_msr_sampled"].get<double>() * t["samples"].get<double>() / ev["samples"].get<double>();
  }
  EXPECT_NEAR(sampled, ev["omega_msr_sampled"].get<double>(), 1e-9);
  // by_dense_heads partitions each task's samples by their number of dense heads: counts add up to the
  // task's, accuracies average to its accuracy, and the mean count is (1 − Ω_MSR)·L·H_kv.
  const double heads = static_cast<double>(overall.size() * overall[0].size());
  for (auto& [task, t] : ev["tasks"].items()) {
    ASSERT_TRUE(t.contains("by_dense_heads")) << task;
    double n = 0, correct = 0, dense = 0;
    for (const auto& g : t["by_dense_heads"]) {
      const auto k = g["dense_heads"].get<int64_t>(), s = g["samples"].get<int64_t>();
      EXPECT_GE(k, 0) << task;
      EXPECT_LE(k, heads) << task;
      EXPECT_GT(s, 0) << task;
      n += s, correct += s * g["accuracy"].get<double>(), dense += s * k;
    }
    EXPECT_EQ(n, t["samples"].get<double>()) << task;
    EXPECT_NEAR(correct / n, t["accuracy"].get<double>(), 1e-9) << task;
    EXPECT_NEAR(dense / n, (1.0 - t["omega_msr"].get<double>()) * heads, 1e-6) << task;
  }
  // Off the GPU every evaluation is exact fp32, so --exact changes nothing.
  EXPECT_EQ(ev["numerics"], "exact");
  ASSERT_EQ(run_cmd(e + " eval " + d.str("run") + " --exact --out " + d.str("eval_exact")), 0);
  auto ex = nlohmann::json::parse(io::read_file(d.str("eval_exact/eval.json")));
  EXPECT_EQ(ex["numerics"], "exact");
  EXPECT_EQ(ex["lm_loss"].get<double>(), ev["lm_loss"].get<double>());
  EXPECT_EQ(ex["omega_msr"].get<double>(), ev["omega_msr"].get<double>());
  // Bad config: unknown key with a suggestion, non-zero exit.
  EXPECT_NE(run_cmd(e + " train --set model.path=x --set data.path=y --set optim.lrr=1"), 0);
}

// bench-prefill --router: the exported router decides (its time counts, Ω is measured) and its S, W
// are the defaults. Routers whose last layer always picks one branch make the expected Ω exact.
TEST(TrainingRun, BenchPrefillUsesTheExportedRouter) {
  TempDir d;
  tiny_setup(d, 1);
  const std::string e = ELASTIC_BINARY;
  ASSERT_EQ(train_cli(d, 1), 0);
  ASSERT_EQ(run_cmd(e + " export " + d.str("run") + " --out " + d.str("exported")), 0);
  auto src = io::SafetensorsFile::open(d.str("exported/router.safetensors"));
  for (const bool fa : {true, false}) {
    const std::string dir = d.str(fa ? "router_fa" : "router_ssa");
    fs::create_directories(dir);
    fs::copy_file(d.str("exported/router.json"), dir + "/router.json");
    std::vector<std::pair<std::string, torch::Tensor>> ts;
    for (const auto& t : src->tensors()) {
      auto v = src->get(t.name).clone();
      const bool last = t.name.find("cls_router_head_agnostic.4.") != std::string::npos;
      if (last && t.name.find("weight") != std::string::npos) v.zero_();
      if (last && t.name.find("bias") != std::string::npos) v = fa ? torch::tensor({-10.0f, 10.0f}) : torch::tensor({10.0f, -10.0f});
      ts.emplace_back(t.name, v);
    }
    io::save_safetensors(dir + "/router.safetensors", ts);
    const std::string out = dir + "/bench.json";
    ASSERT_EQ(run_cmd(e + " bench-prefill --model " + d.str("model") + " --router " + dir +
                      " --tokens 40,72 --repeat 1 --device cpu --out " + out),
              0);
    auto j = nlohmann::json::parse(io::read_file(out));
    EXPECT_EQ(j["router"].get<std::string>(), dir);
    EXPECT_EQ(j["sink"].get<int64_t>(), 4);
    EXPECT_EQ(j["window"].get<int64_t>(), 16);
    EXPECT_FALSE(j.contains("omega_msr"));  // a fixed mask's; here each run measures its own
    ASSERT_EQ(j["runs"].size(), 2u);
    for (const auto& r : j["runs"]) {
      EXPECT_DOUBLE_EQ(r["omega_msr"].get<double>(), fa ? 0.0 : 1.0);
      EXPECT_DOUBLE_EQ(r["layer0_streaming_heads"].get<double>(), fa ? 0.0 : 2.0);
      EXPECT_GT(r["routed_ms"].get<double>(), 0.0);
    }
  }
  EXPECT_NE(run_cmd(e + " bench-prefill --model " + d.str("model") + " --router " + d.str("router_fa") +
                    " --omega 0.5 --tokens 40 --device cpu"),
            0);
}

TEST(TrainingRun, TwoMpiRanksEqualOneRankWithTheSameGlobalBatch) {
  if (run_cmd("command -v mpirun") != 0) GTEST_SKIP() << "mpirun not installed";
  TempDir d;
  tiny_setup(d, 1);
  const std::string e = ELASTIC_BINARY;
  const std::string common = " --set model.path=" + d.str("model") + " --set data.path=" + d.str("data.bin") +
                             " --set train.steps=4 --set ssa.window=16 --set ssa.sink=4 --set checkpoint.every=2" +
                             " --set model.device=cpu";
  const std::string mpi = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
                          "mpirun -np 2 --oversubscribe ";
  ASSERT_EQ(run_cmd(e + " train" + common + " --set train.micro_batches=2 --set output.dir=" + d.str("one")), 0);
  ASSERT_EQ(run_cmd(mpi + e + " train" + common + " --set train.micro_batches=1 --set output.dir=" + d.str("two")), 0);
  auto m1 = read_metrics(d.str("one/metrics.jsonl")), m2 = read_metrics(d.str("two/metrics.jsonl"));
  ASSERT_EQ(m1.size(), 4u);
  ASSERT_EQ(m2.size(), 4u);  // written once, by rank 0
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(m1[i]["lm_loss"].get<double>(), m2[i]["lm_loss"].get<double>(), 1e-5) << "step " << i + 1;
    EXPECT_NEAR(m1[i]["omega_msr"].get<double>(), m2[i]["omega_msr"].get<double>(), 1e-9) << "step " << i + 1;
  }
  const std::string w = "model.layers.1.self_attn.mask_allocator.cls_router_head_agnostic.4.weight";
  EXPECT_TRUE(torch::allclose(router_tensor(d.str("one"), w), router_tensor(d.str("two"), w), 1e-4, 1e-5));
  // Resume the 2-rank run's step-2 checkpoint with one rank: the global data cursor carries over.
  io::remove_tree((d.path / "two" / "checkpoints" / train::checkpoint_name(4)).string());
  ASSERT_EQ(run_cmd(e + " train" + common + " --set train.micro_batches=2 --set output.dir=" + d.str("two") +
                    " --resume auto"),
            0);
  EXPECT_TRUE(torch::allclose(router_tensor(d.str("one"), w), router_tensor(d.str("two"), w), 1e-4, 1e-5));
}

// A 2-rank training job in the background; `signal_rank1` is sent to rank 1 once it trains.
// Returns whether mpirun ended within 60 s, and the job's output in *log_text.
bool job_ends_after_signalling_rank1(const TempDir& d, const std::string& signal, double timeout_s,
                                     std::string* log_text) {
  const std::string log = d.str("mpirun.log");
  const std::string cmd =
      "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 120 mpirun -np 2 --oversubscribe " +
      std::string(ELASTIC_BINARY) + " train --set model.path=" + d.str("model") + " --set data.path=" +
      d.str("data.bin") + " --set output.dir=" + d.str("run") +
      " --set train.steps=100000 --set checkpoint.every=0 --set model.device=cpu --set dist.timeout_s=" +
      std::to_string(timeout_s) + " > " + log + " 2>&1 &";
  if (std::system(cmd.c_str()) != 0) return false;
  for (int i = 0; i < 100 && !fs::exists(d.path / "run" / "metrics.jsonl"); ++i) usleep(100000);
  usleep(500000);
  // The ranks' command lines start with the binary (mpirun's with "mpirun", the shell's with "sh").
  const std::string ranks = "pgrep -f '^" + std::string(ELASTIC_BINARY) + " train.*output.dir=" + d.str("run") + "'";
  EXPECT_EQ(std::system(("kill -" + signal + " $(" + ranks + " | tail -1)").c_str()), 0);
  const auto t0 = std::chrono::steady_clock::now();
  bool ended = false;
  while (!ended && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
    ended = std::system(("pgrep -f '^mpirun.*output.dir=" + d.str("run") + "' > /dev/null").c_str()) != 0;
    if (!ended) usleep(200000);
  }
  std::system(("kill -KILL $(" + ranks + ") 2> /dev/null").c_str());  // a frozen rank outlives mpirun
  *log_text = io::read_file(log);
  return ended;
}

TEST(TrainingRun, KillingOneRankEndsTheJobAndNamesTheRank) {
  if (run_cmd("command -v mpirun") != 0) GTEST_SKIP() << "mpirun not installed";
  TempDir d;
  tiny_setup(d, 1);
  std::string out;
  EXPECT_TRUE(job_ends_after_signalling_rank1(d, "KILL", 20, &out)) << "job still running 60 s after a rank was killed";
  EXPECT_NE(out.find("process rank 1"), std::string::npos) << out;
}

TEST(TrainingRun, NonFiniteLossesAreSkippedThenStopTraining) {
  TempDir d;
  auto cfg = tiny_setup(d, 20);
  // An absurd backbone learning rate makes the weights overflow after the first update.
  cfg.train_routing = "off";
  cfg.train_trainable = {".*"};
  cfg.train_backbone_lr = 1e30;
  cfg.optim_warmup_fraction = 0;
  cfg.train_max_nonfinite_steps = 3;
  train::Trainer t(cfg);
  auto first = t.step();
  EXPECT_FALSE(first["skipped"].get<bool>());
  int skipped = 0;
  try {
    for (int i = 0; i < 10; ++i) skipped += t.step()["skipped"].get<bool>();
    FAIL() << "training did not stop";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite loss in 3 consecutive steps"), std::string::npos) << e.what();
  }
  EXPECT_EQ(skipped, 2);  // two skipped steps returned, the third raised
}

TEST(TrainingRun, AHungRankTimesOutAndAbortsTheJob) {
  if (run_cmd("command -v mpirun") != 0) GTEST_SKIP() << "mpirun not installed";
  TempDir d;
  tiny_setup(d, 1);
  // Rank 1 frozen: it stops answering without exiting; rank 0's watchdog must end the job.
  std::string out;
  EXPECT_TRUE(job_ends_after_signalling_rank1(d, "STOP", 3, &out)) << "job still running 60 s after a rank hung";
  EXPECT_NE(out.find("did not finish within 3 s"), std::string::npos) << out;
}

TEST(TrainingRun, TwoRankResumeIsBitwiseExact) {
  if (run_cmd("command -v mpirun") != 0) GTEST_SKIP() << "mpirun not installed";
  TempDir d;
  tiny_setup(d, 1);
  const std::string mpi = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -np 2 --oversubscribe " +
                          std::string(ELASTIC_BINARY) + " train --set model.path=" + d.str("model") +
                          " --set data.path=" + d.str("data.bin") +
                          " --set ssa.window=16 --set ssa.sink=4 --set model.device=cpu --set train.steps=6";
  // Straight: 6 steps. Interrupted: checkpoint at step 3 only, then resume to 6.
  ASSERT_EQ(run_cmd(mpi + " --set checkpoint.every=0 --set output.dir=" + d.str("straight")), 0);
  ASSERT_EQ(run_cmd(mpi + " --set checkpoint.every=3 --set output.dir=" + d.str("resumed")), 0);
  io::remove_tree((d.path / "resumed" / "checkpoints" / train::checkpoint_name(6)).string());
  io::remove_tree((d.path / "resumed" / "router.safetensors").string());
  std::ofstream(d.str("resumed/metrics.jsonl"), std::ios::trunc);  // keep only what the resumed run writes
  ASSERT_EQ(run_cmd(mpi + " --set checkpoint.every=0 --set output.dir=" + d.str("resumed") + " --resume auto"), 0);
  auto a = read_metrics(d.str("straight/metrics.jsonl")), b = read_metrics(d.str("resumed/metrics.jsonl"));
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(deterministic(a[i + 3]), deterministic(b[i])) << "step " << i + 4;
  auto fa = io::SafetensorsFile::open(d.str("straight/router.safetensors"));
  auto fb = io::SafetensorsFile::open(d.str("resumed/router.safetensors"));
  for (const auto& t : fa->tensors()) EXPECT_TRUE(torch::equal(fa->get(t.name), fb->get(t.name))) << t.name;
}

TEST(TrainingRun, RandomStreamingHeadsSpanFullAttentionToStreaming) {
  // train.routing=random trains a backbone with a random fraction of its heads on streaming
  // attention: at fraction 0 the step is full attention's, at 1 streaming attention's (samples of
  // 64-160 tokens, window 16: visibly different), in between neither.
  TempDir d;
  auto first_loss = [&](const std::string& routing, double fraction) {
    auto cfg = tiny_setup(d, 2);
    cfg.output_dir = d.str("run_" + routing + std::to_string(fraction));
    cfg.train_routing = routing;
    cfg.train_random_streaming = fraction;
    cfg.train_trainable = {".*"};
    train::Trainer t(cfg);
    return t.step()["lm_loss"].get<double>();
  };
  const double full = first_loss("off", 0), none = first_loss("random", 0), all = first_loss("random", 1),
               half = first_loss("random", 0.5);
  EXPECT_NEAR(none, full, 1e-6);
  EXPECT_GT(std::abs(all - full), 1e-3);
  EXPECT_GT(std::abs(half - full), 1e-4);
  EXPECT_GT(std::abs(half - all), 1e-4);
  // Random heads train a backbone: without trainable parameters the run is refused.
  auto cfg = tiny_setup(d, 2);
  cfg.train_routing = "random";
  cfg.train_random_streaming = 0.5;
  cfg.train_trainable = {};
  EXPECT_THROW(train::Trainer{cfg}, Error);
}
