// Model subcommands: make-tiny-model, forward, inspect-model, bench-forward.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "attention/packing.h"
#include "cli/args.h"
#include "cli/bench_provenance.h"
#include "cli/bench_util.h"
#include "cli/commands.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "util/error.h"
#include "util/log.h"

namespace elastic::cli {

using model::ModelConfig;

int cmd_make_tiny_model(int argc, char** argv) {
  Args a("make-tiny-model", argc, argv,
         {"arch", "out", "vocab", "hidden", "layers", "heads", "kv-heads", "head-dim", "mlp", "seed", "dtype",
          "rope-theta", "max-positions", "device", "shard-mb"},
         {"tie", "help"});
  if (a.flag("help")) {
    std::cout << "elastic make-tiny-model --arch qwen3|llama|qwen2 --out DIR [--vocab 512 --hidden 64 --layers 2\n"
                 "  --heads 4 --kv-heads 2 --head-dim 16 --mlp 128 --seed 0 --dtype float32 --tie\n"
                 "  --rope-theta 1e6 --max-positions 32768 --device cpu --shard-mb 0]\n";
    return 0;
  }
  const std::string arch = a.require("arch");
  nlohmann::json j;
  if (arch == "qwen3") {
    j["architectures"] = {"Qwen3ForCausalLM"};
  } else if (arch == "llama") {
    j["architectures"] = {"LlamaForCausalLM"};
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  } else if (arch == "qwen2") {
    j["architectures"] = {"Qwen2ForCausalLM"};
  } else {
    ELASTIC_FAIL("make-tiny-model: --arch must be qwen3, llama or qwen2, got '" << arch << "'");
  }
  j["vocab_size"] = a.get_int("vocab", 512);
  j["hidden_size"] = a.get_int("hidden", 64);
  j["num_hidden_layers"] = a.get_int("layers", 2);
  j["num_attention_heads"] = a.get_int("heads", 4);
  j["num_key_value_heads"] = a.get_int("kv-heads", 2);
  j["head_dim"] = a.get_int("head-dim", 16);
  j["intermediate_size"] = a.get_int("mlp", 128);
  j["rope_theta"] = a.get_double("rope-theta", arch == "llama" ? 500000.0 : 1000000.0);
  j["max_position_embeddings"] = a.get_int("max-positions", 32768);
  j["rms_norm_eps"] = 1e-6;
  j["tie_word_embeddings"] = a.flag("tie");
  j["torch_dtype"] = a.get("dtype", "float32");
  j["bos_token_id"] = 1;
  j["eos_token_id"] = 2;
  auto cfg = ModelConfig::from_json(j, "make-tiny-model");
  auto dtype = model::parse_dtype(a.get("dtype", "float32"), "--dtype");
  auto device = model::parse_device(a.get("device", "cpu"), "--device");
  cfg.torch_dtype = dtype == torch::kBFloat16 ? "bfloat16" : dtype == torch::kFloat16 ? "float16" : "float32";
  model::CausalLM m(cfg, torch::TensorOptions().dtype(dtype).device(device));
  model::init_random(m, static_cast<uint64_t>(a.get_int("seed", 0)));
  const std::string out = a.require("out");
  model::save_model(m, out, static_cast<uint64_t>(a.get_int("shard-mb", 0)) << 20);
  LOG_INFO("wrote " << cfg.architecture << " with " << cfg.num_parameters() << " parameters to " << out);
  return 0;
}

namespace {

std::vector<std::vector<int64_t>> read_samples(const std::string& path) {
  auto text = io::read_file(path);
  auto j = nlohmann::json::parse(text, nullptr, false);
  ELASTIC_CHECK(!j.is_discarded(), path << ": not valid JSON");
  ELASTIC_CHECK(j.contains("samples") && j["samples"].is_array() && !j["samples"].empty(),
                path << ": expected {\"samples\": [[ids...], ...]}");
  std::vector<std::vector<int64_t>> out;
  for (const auto& s : j["samples"]) {
    ELASTIC_CHECK(s.is_array() && !s.empty(), path << ": every sample must be a non-empty array of token ids");
    out.push_back(s.get<std::vector<int64_t>>());
  }
  return out;
}

}  // namespace

int cmd_forward(int argc, char** argv) {
  Args a("forward", argc, argv, {"model", "input", "out", "dtype", "device"}, {"help"});
  if (a.flag("help")) {
    std::cout << "elastic forward --model DIR --input samples.json --out logits.safetensors [--dtype float32 "
                 "--device cpu]\n  samples.json: {\"samples\": [[ids...], ...]}, packed into one batch.\n"
                 "  Writes logits [tokens, vocab] (fp32) and cu_seqlens.\n";
    return 0;
  }
  auto device = model::parse_device(a.get("device", "cpu"), "--device");
  auto dtype = model::parse_dtype(a.get("dtype", "float32"), "--dtype");
  auto m = model::load_model(a.require("model"), dtype, device);
  auto samples = read_samples(a.require("input"));
  std::vector<int64_t> ids, lengths;
  for (const auto& s : samples) {
    for (auto t : s) {
      ELASTIC_CHECK(t >= 0 && t < m->config().vocab_size,
                    a.require("input") << ": token id " << t << " outside the vocabulary [0, "
                                       << m->config().vocab_size << ")");
    }
    ids.insert(ids.end(), s.begin(), s.end());
    lengths.push_back(static_cast<int64_t>(s.size()));
  }
  auto pack = attention::Packing::from_lengths(lengths, device);
  torch::NoGradGuard ng;
  model::ForwardContext ctx;
  ctx.pack = &pack;
  auto hidden = m->forward_hidden(torch::tensor(ids, torch::TensorOptions().dtype(torch::kInt64)), ctx);
  auto logits = m->logits(hidden).to(torch::kFloat32);
  io::save_safetensors(a.require("out"), {{"logits", logits}, {"cu_seqlens", torch::tensor(pack.cu)}});
  LOG_INFO("wrote logits " << logits.sizes() << " to " << a.require("out"));
  return 0;
}

int cmd_inspect_model(int argc, char** argv) {
  Args a("inspect-model", argc, argv, {}, {"help"});
  ELASTIC_CHECK(a.positional().size() == 1, "inspect-model: usage: elastic inspect-model MODEL_DIR");
  const auto& dir = a.positional()[0];
  auto cfg = ModelConfig::load(dir);
  auto ck = io::Checkpoint::open(dir);
  std::cout << "architecture      " << cfg.architecture << "\n"
            << "layers            " << cfg.num_layers << "\n"
            << "hidden            " << cfg.hidden_size << "\n"
            << "heads (q / kv)    " << cfg.num_heads << " / " << cfg.num_kv_heads << "\n"
            << "head_dim          " << cfg.head_dim << "\n"
            << "mlp               " << cfg.intermediate_size << "\n"
            << "vocab             " << cfg.vocab_size << (cfg.tie_word_embeddings ? " (tied)" : "") << "\n"
            << "rope theta        " << cfg.rope_theta << (cfg.rope_scaling ? " (llama3 scaling)" : "") << "\n"
            << "parameters        " << cfg.num_parameters() << "\n"
            << "tensors           " << ck.names().size() << "\n"
            << "fingerprint       " << model::weights_fingerprint(dir) << "\n";
  return 0;
}

int cmd_bench_forward(int argc, char** argv) {
  Args a("bench-forward", argc, argv, {"model", "tokens", "samples", "dtype", "device", "repeat", "out"}, {"help"});
  if (a.flag("help")) {
    std::cout << "elastic bench-forward --model DIR [--tokens 8192,32768 --samples 3 --dtype bfloat16 --device cuda"
                 " --repeat 5 --out result.json]\n";
    return 0;
  }
  auto device = model::parse_device(a.get("device", "auto"), "--device");
  auto dtype = model::resolve_dtype(a.get("dtype", "auto"), device, "--dtype");
  Timer timer{device};
  auto t0 = std::chrono::steady_clock::now();
  auto m = model::load_model(a.require("model"), dtype, device);
  timer.sync();
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t bytes = 0;
  for (const auto& p : m->parameters()) bytes += p.numel() * p.element_size();
  LOG_INFO("loaded " << bytes / 1e9 << " GB in " << load_s << " s (" << bytes / 1e9 / load_s << " GB/s)");
  nlohmann::json result = {{"model", a.require("model")},
                           {"params", m->config().num_parameters()},
                           {"load_seconds", load_s},
                           {"load_gb_per_s", bytes / 1e9 / load_s},
                           {"runs", nlohmann::json::array()}};
  result.update(bench_provenance("bench-forward", argc, argv, device));
  const auto sizes = a.get_int_list("tokens", "8192,32768");
  const int64_t nsamples = a.get_int("samples", 3), repeat = a.get_int("repeat", 5);
  ELASTIC_CHECK(repeat >= 1, "bench-forward: --repeat must be at least 1, got " << repeat);
  torch::NoGradGuard ng;
  for (int64_t T : sizes) {
    const auto lengths = mixed_lengths(T, std::vector<int64_t>(static_cast<size_t>(nsamples), 1));
    auto pack = attention::Packing::from_lengths(lengths, device);
    auto ids = torch::randint(m->config().vocab_size, {T}, torch::TensorOptions().dtype(torch::kInt64)).to(device);
    const double med = timer.median_ms([&] {
      model::ForwardContext ctx;
      ctx.pack = &pack;
      auto h = m->forward_hidden(ids, ctx);
      m->logits(h.index_select(0, pack.cu_i32.narrow(0, 1, nsamples).to(torch::kInt64) - 1));
    }, static_cast<int>(repeat)) / 1e3;
    // Forward FLOPs: 2 * params * tokens for the linears plus causal attention 2*n^2*d*Hq per sample.
    double flops = 2.0 * static_cast<double>(m->config().num_parameters() - m->config().vocab_size * m->config().hidden_size) * T;
    for (auto n : lengths) flops += 2.0 * n * n * m->config().head_dim * m->config().num_heads * m->config().num_layers;
    LOG_INFO("tokens " << T << ": " << med * 1e3 << " ms, " << T / med << " tokens/s, " << flops / med / 1e12
                       << " TFLOP/s");
    result["runs"].push_back({{"tokens", T}, {"samples", nsamples}, {"median_seconds", med},
                              {"tokens_per_second", T / med}, {"tflops", flops / med / 1e12}});
  }
  if (a.has("out")) io::write_file_atomic(a.get("out", ""), result.dump(2) + "\n");
  std::cout << result.dump(2) << "\n";
  return 0;
}

}  // namespace elastic::cli
