// bench-train: training-step throughput, peak memory and an attention/router time breakdown
// on random-weight models of real shapes (issue: GPU performance). Results as JSON.
#include <algorithm>
#include <chrono>
#include <iostream>
#include <numeric>
#include <random>

#include "attention/cudnn_sample.h"
#include "attention/hybrid.h"
#include "cli/args.h"
#include "cli/bench_provenance.h"
#include "cli/bench_util.h"
#include "cli/commands.h"
#include "io/atomic_file.h"
#include "model/weights.h"
#include "router/gumbel.h"
#include "train/export.h"
#include "train/keep_layers.h"
#include "train/objective.h"
#include "train/optimizer.h"
#include "util/error.h"
#include "util/kernel_profile.h"
#include "util/log.h"
#include "util/memory.h"

namespace elastic::cli {

using nlohmann::json;


namespace {

json profile_json(const util::KernelProfile& p) {
  json top = json::array();
  for (size_t i = 0; i < std::min<size_t>(p.kernels.size(), 30); ++i) {
    const auto& k = p.kernels[i];
    top.push_back({{"name", k.name.substr(0, 160)}, {"category", k.category}, {"ms", k.ms}, {"calls", k.calls}});
  }
  return {{"wall_ms", p.wall_ms}, {"gpu_ms", p.gpu_ms}, {"gpu_idle_fraction", 1 - p.gpu_ms / p.wall_ms},
          {"category_ms", p.category_ms}, {"kernels", p.kernels.size()}, {"top_kernels", top}};
}

// What profile `a` has on top of `b`: wall, kernel and idle time, and the kernels whose total
// time grew most (new kernels included), by name.
json profile_difference(const util::KernelProfile& a, const util::KernelProfile& b) {
  std::map<std::string, std::pair<double, int64_t>> delta;
  for (const auto& k : a.kernels) delta[k.name] = {k.ms, k.calls};
  for (const auto& k : b.kernels) {
    auto& d = delta[k.name];
    d.first -= k.ms;
    d.second -= k.calls;
  }
  std::vector<std::pair<std::string, std::pair<double, int64_t>>> grown(delta.begin(), delta.end());
  std::sort(grown.begin(), grown.end(), [](const auto& x, const auto& y) { return x.second.first > y.second.first; });
  json top = json::array();
  for (size_t i = 0; i < std::min<size_t>(grown.size(), 25); ++i)
    top.push_back({{"name", grown[i].first.substr(0, 160)}, {"ms", grown[i].second.first}, {"calls", grown[i].second.second}});
  return {{"wall_ms", a.wall_ms - b.wall_ms}, {"gpu_ms", a.gpu_ms - b.gpu_ms},
          {"idle_ms", (a.wall_ms - a.gpu_ms) - (b.wall_ms - b.gpu_ms)}, {"kernels_grown_most", top}};
}

}  // namespace

int cmd_bench_train(int argc, char** argv) {
  Args a("bench-train", argc, argv,
         {"model", "tokens", "mix", "steps", "dtype", "device", "sink", "window", "out", "peak-tflops", "fa-backend", "gather-min-len", "trace",
          "keep-layers", "ssa-backend", "omega", "head-split-min-len"},
         {"help", "no-checkpoint", "offload", "no-breakdown", "profile", "vary-lengths"});
  if (a.flag("help")) {
    std::cout << "elastic bench-train --model DIR [--tokens 32768,65536 --mix 1,1,2 --steps 3 --sink 128 --window 2048\n"
                 "  --dtype bfloat16 --device cuda --peak-tflops 800 --no-checkpoint --offload --no-breakdown\n"
                 "  --profile --out result.json]\n"
                 "--mix: relative sample lengths of each pack (1,1,2 = 16K+16K+32K at 65536 tokens).\n"
                 "--omega X: the routers start streaming about a fraction X of the heads (default 0.5), as a trained\n"
                 "  router holds Ω_MSR near its target (0.7 in the paper); routing stays live and Ω_MSR is measured.\n"
                 "--fa-backend auto|flash|cudnn: kernel for full causal attention (default auto).\n"
                 "--ssa-backend auto|flash|cudnn-bwd|cudnn: streaming attention's window band (default auto).\n"
                 "--profile: one more step under the CUDA profiler: device time by kernel and category.\n"
                 "--trace PREFIX: with --profile, also the Chrome trace of that step, PREFIX_<tokens>.json\n"
                 "  (tools/trace_gaps.py says what the host did while the GPU idled).\n"
                 "--gather-min-len N: below this longest-sample length the routing-aware backward masks dO over every\n"
                 "  head instead of running the selected heads (default 0: always selected).\n"
                 "--head-split-min-len N: samples of N tokens or more run a subset of their KV heads one head a call,\n"
                 "  so cuDNN's plan keys do not depend on how many heads were selected (default: never).\n"
                 "--offload: checkpointed layer inputs in pinned host memory (train.offload_checkpoints).\n"
                 "--vary-lengths: each step's samples get new random lengths (within an eighth of --mix's), as real\n"
                 "  data has, so per-shape costs (cuDNN's plans, per padded sample length) count in the step time;\n"
                 "  step_ms_each shows them fade as the padded lengths repeat, cudnn_new_shapes_each the plans\n"
                 "  each step built, samples_each the lengths.\n"
                 "--keep-layers N|auto: the last N layers keep their activations, no recompute (train.keep_layers;\n"
                 "  auto: as many as fit in 90% of the GPU, measured per pack size on an ordinary step, after every\n"
                 "  layer keeps its attention output where that fits).\n"
                 "--keep-attention N: the N checkpointed layers before the kept ones keep their attention's output, so\n"
                 "  their recompute runs no attention forward (default: 0, or auto's plan with --keep-layers auto).\n"
                 "A pack size that runs out of GPU memory is recorded as {\"oom\": true}; the sweep goes on.\n";
    return 0;
  }
  ELASTIC_CHECK(!a.has("trace") || a.flag("profile"), "bench-train: --trace writes the profiled step's trace; add --profile");
  auto device = model::parse_device(a.get("device", "auto"), "--device");
  auto dtype = model::resolve_dtype(a.get("dtype", "auto"), device, "--dtype");
  auto m = model::load_model(a.require("model"), dtype, device);
  const auto& mc = m->config();
  if (a.has("fa-backend")) attention::set_full_attention_backend(a.get("fa-backend", ""));
  if (a.has("gather-min-len")) attention::set_gather_min_len(a.get_int("gather-min-len", 0));
  if (a.has("head-split-min-len")) attention::set_head_split_min_len(a.get_int("head-split-min-len", 0));
  if (a.has("ssa-backend")) attention::set_streaming_backend(a.get("ssa-backend", ""));
  router::RouterOptions ro;
  ro.head_dim = mc.head_dim;
  torch::manual_seed(0);
  m->attach_routers(ro);
  // --omega: the routers start streaming each head with probability about omega (their last bias;
  // index 0 is SSA, ELASTIC.md §4), as a trained router holds the mix near its target. Random
  // last weights on top so decisions still vary by input.
  const double omega_init = a.get_double("omega", 0.5);
  ELASTIC_CHECK(omega_init > 0 && omega_init < 1, "bench-train: --omega must be in (0, 1), got " << omega_init);
  {
    torch::NoGradGuard ng;
    for (auto& r : m->routers()) {
      auto last = r->cls_router_head_agnostic[4]->as<torch::nn::Linear>();
      last->weight.normal_(0, 0.05);
      last->bias.zero_();
      last->bias[0].fill_(std::log(omega_init / (1 - omega_init)));
    }
  }
  std::vector<torch::Tensor> rp;
  for (auto& [n, p] : m->router_parameters()) rp.push_back(p);
  train::FusedAdamW opt(rp, torch::optim::AdamWOptions(5e-4));  // the trainer's
  const auto ssa = attention::MaskSpec::streaming(a.get_int("sink", 128), a.get_int("window", 2048));
  const double peak = a.get_double("peak-tflops", 800.0);
  const int steps = static_cast<int>(a.get_int("steps", 3));
  ELASTIC_CHECK(steps >= 1, "bench-train: --steps must be at least 1, got " << steps);
  Timer timer{device};
  json result = {{"model", a.require("model")}, {"architecture", mc.architecture}, {"params", mc.num_parameters()},
                 {"dtype", c10::toString(dtype)}, {"checkpoint", !a.flag("no-checkpoint")},
                 {"sink", ssa.sink}, {"window", ssa.window}, {"omega_init", omega_init}, {"runs", json::array()}};
  result.update(bench_provenance("bench-train", argc, argv, device));
  const auto sizes = a.get_int_list("tokens", "32768,65536");
  const auto mix = a.get_int_list("mix", "1,1,2");
  const int64_t nsamples = static_cast<int64_t>(mix.size());
  result["offload_checkpoints"] = a.flag("offload");
  const bool keep_auto = a.get("keep-layers", "0") == "auto";
  int64_t keep_layers = keep_auto ? 0 : a.get_int("keep-layers", 0);
  ELASTIC_CHECK(keep_layers >= 0 && keep_layers <= mc.num_layers,
                "bench-train: --keep-layers must be auto or in [0, " << mc.num_layers << "], got " << keep_layers);
  result["keep_layers"] = keep_auto ? json("auto") : json(keep_layers);
  const bool keep_attention_given = a.has("keep-attention");
  const int64_t keep_attention_arg = a.get_int("keep-attention", 0);
  ELASTIC_CHECK(keep_attention_arg >= 0 && keep_attention_arg <= mc.num_layers,
                "bench-train: --keep-attention must be in [0, " << mc.num_layers << "], got " << keep_attention_arg);
  int64_t keep_attention = keep_attention_arg;
  bool measure_layers = false;  // the --keep-layers auto step measures a layer's activations
  result["fa_backend"] = attention::full_attention_backend();
  if (a.has("head-split-min-len")) result["head_split_min_len"] = attention::head_split_min_len();
  result["ssa_backend"] = attention::streaming_backend();
  const bool vary = a.flag("vary-lengths");
  for (int64_t T : sizes) {
    const auto lengths = mixed_lengths(T, mix);
    json run = {{"tokens", T}, {"samples", lengths}, {"vary_lengths", vary}};
    try {
      auto ids = torch::randint(mc.vocab_size, {T}, torch::TensorOptions().dtype(torch::kInt64));
      attention::Packing pack;
      torch::Tensor labels;
      std::vector<router::PromptRange> prompts;
      // The pack's samples: labels on the last 5% of each (the answer of an SFT sample).
      auto set_lengths = [&](const std::vector<int64_t>& ls) {
        pack = attention::Packing::from_lengths(ls, device);
        labels = torch::zeros({T}, torch::kUInt8);
        prompts.clear();
        for (size_t b = 0; b < ls.size(); ++b) {
          const int64_t n = ls[b], k = std::max<int64_t>(1, n / 20);
          labels.narrow(0, pack.cu[b + 1] - k, k).fill_(1);
          prompts.push_back({0, n - k});
        }
      };
      set_lengths(lengths);
      // --vary-lengths: every sample but the last moves by up to an eighth of its length at random,
      // step by step (the last takes the rest), as packs of real data bring new lengths.
      auto step_lengths = [&](int64_t step) {
        std::mt19937_64 rng(static_cast<uint64_t>(step) + 1);
        auto ls = lengths;
        for (size_t b = 0; b + 1 < ls.size(); ++b) {
          const int64_t r = ls[b] / 8;
          const int64_t shift = std::uniform_int_distribution<int64_t>(-r, r)(rng);
          ls[b] += shift;
          ls.back() -= shift;
        }
        ELASTIC_CHECK(ls.back() > 0, "bench-train: --vary-lengths left no tokens for the last sample at step " << step);
        return ls;
      };
      // A forward pass over this pack as the step runs it; routing set by the caller.
      auto step_context = [&] {
        model::ForwardContext ctx;
        ctx.pack = &pack;
        ctx.prompts = prompts;
        ctx.ssa = ssa;
        ctx.checkpoint = !a.flag("no-checkpoint");
        ctx.offload_checkpoints = a.flag("offload");
        ctx.keep_layers = keep_layers;
        ctx.keep_attention = keep_attention;
        ctx.measure_layer_activations = measure_layers;
        return ctx;
      };
      // A training pass, routed with Gumbel noise from `gen`.
      auto train_context = [&](torch::Generator& gen) {
        auto ctx = step_context();
        ctx.mode = model::RoutingMode::train;
        ctx.gen = &gen;
        return ctx;
      };
      double omega = 0;
      int64_t step_no = 0, layer_bytes = 0;
      std::vector<torch::Tensor> last_decisions;
      // Per step, every step run (probe and warm-up included): the sample lengths and the cuDNN plan
      // keys it was the first to use.
      std::vector<std::vector<int64_t>> lengths_each;
      std::vector<int64_t> new_shapes_each;
      auto train_step = [&] {
        const int64_t shapes_before = attention::cudnn_sample_shapes();
        lengths_each.push_back(vary ? step_lengths(step_no) : lengths);
        if (vary) set_lengths(lengths_each.back());
        auto gen = router::routing_generator(0, 0, step_no++);
        auto ctx = train_context(gen);
        auto h = m->forward_hidden(ids, ctx);
        last_decisions.clear();
        for (const auto& d : ctx.decisions) last_decisions.push_back(d.detach());
        auto lm = train::lm_loss(m, h, ids, labels, pack, train::kLogitsChunk);
        auto om = train::model_sparsity(ctx.decisions);
        auto loss = lm.sum / std::max<int64_t>(lm.tokens, 1) + (om - 0.7).abs().mean();
        loss.backward();
        layer_bytes = ctx.layer_activation_bytes;
        opt.step();
        opt.zero_grad();
        omega = om.mean().item<double>();
        new_shapes_each.push_back(attention::cudnn_sample_shapes() - shapes_before);
      };
      if (keep_auto) {
        // As the trainer does: one step, every layer recomputed, measures what a step needs.
        keep_layers = 0;
        keep_attention = 0;
        const train::StepMemoryProbe probe(device);
        measure_layers = true;
        train_step();
        measure_layers = false;
        const auto sm = probe.finish(layer_bytes, T, a.flag("offload"),
                                     train::attention_kept_bytes(T, mc.num_heads, mc.head_dim, dtype));
        const auto plan = sm.plan(T, train::keep_layers_budget_bytes(device), mc.num_layers);
        keep_layers = plan.layers;
        keep_attention = keep_attention_given ? keep_attention_arg : plan.attention;
        run["layer_activation_gb"] = sm.layer_bytes / 1e9;
        run["peak_none_kept_gb"] = sm.peak_bytes / 1e9;
        run["planned_keep_attention"] = plan.attention;
        LOG_INFO("T=" << T << ": --keep-layers auto keeps " << keep_layers << " layers and " << plan.attention
                      << " layers' attention output (a layer's activations " << sm.layer_bytes / 1e9
                      << " GB, its attention output " << sm.attention_bytes / 1e9 << " GB; peak with none kept "
                      << sm.peak_bytes / 1e9 << " GB)");
      }
      run["keep_layers"] = keep_layers;
      run["keep_attention"] = keep_attention;
      reset_peak_memory(device);
      const auto step_times = timer.times_ms(train_step, steps);
      const double step_ms = Timer::median(step_times);
      run["step_ms_each"] = step_times;
      // The timed steps are the last `steps` run.
      const auto timed = static_cast<std::ptrdiff_t>(step_times.size());
      run["cudnn_new_shapes_each"] = std::vector<int64_t>(new_shapes_each.end() - timed, new_shapes_each.end());
      run["cudnn_shapes_before_timing"] = attention::cudnn_sample_shapes() -
          std::accumulate(new_shapes_each.end() - timed, new_shapes_each.end(), int64_t{0});
      if (vary) run["samples_each"] = std::vector<std::vector<int64_t>>(lengths_each.end() - timed, lengths_each.end());
      const double peak_gb = peak_memory_gb(device);
      // Dense-equivalent FLOPs (docs/performance.md): forward linears 2PT, causal attention 2 n² d Hq per
      // sample and layer, backward input gradients 2PT + 2.5x attention forward; with
      // --vary-lengths, attention averaged over the timed steps' lengths.
      const double P = static_cast<double>(mc.num_parameters() - mc.vocab_size * mc.hidden_size);
      double attn = 0;
      for (auto it = lengths_each.end() - timed; it != lengths_each.end(); ++it)
        for (auto n : *it) attn += 2.0 * n * n * mc.head_dim * mc.num_heads * mc.num_layers / static_cast<double>(timed);
      const double flops = 2 * P * T + attn + 2 * P * T + 2.5 * attn;
      run.update({{"step_ms", step_ms},
                  {"tokens_per_s", T / (step_ms / 1e3)},
                  {"mfu_dense_equivalent", flops / (step_ms / 1e3) / (peak * 1e12)},
                  {"peak_memory_gb", peak_gb},
                  {"peak_reserved_gb", peak_reserved_gb(device)},  // fragmentation: what kKeepLayersMemoryShare leaves room for
                  {"omega_msr", omega}});
      LOG_INFO("T=" << T << ": step " << step_ms << " ms, " << T / (step_ms / 1e3) << " tok/s, MFU "
                    << run["mfu_dense_equivalent"].get<double>() << ", peak " << peak_gb << " GB (reserved " << run["peak_reserved_gb"].get<double>()
                    << "), Ω " << omega
                    << ", new cuDNN plan keys per timed step " << run["cudnn_new_shapes_each"].dump()
                    << ", step ms each " << run["step_ms_each"].dump());
      // The step with the last step's decisions replayed and no router (the router share, below). The
      // decisions require grad, so the backward takes the step's paths: through every layer's
      // attention to the decisions (ds), and no further than the first layer's.
      auto replay_step = [&] {
        auto ctx = step_context();
        ctx.mode = model::RoutingMode::fixed;
        ctx.fixed_decisions = [&](int64_t l) {
          return last_decisions.at(static_cast<size_t>(l)).detach().requires_grad_();
        };
        auto h = m->forward_hidden(ids, ctx);
        auto lm = train::lm_loss(m, h, ids, labels, pack, train::kLogitsChunk);
        (lm.sum / std::max<int64_t>(lm.tokens, 1)).backward();
      };
      if (a.flag("profile")) {
        const std::string trace = a.has("trace") ? a.get("trace", "") + "_" + std::to_string(T) + ".json" : "";
        const auto with = util::profile_kernels(train_step, trace);
        // The same without the router, so the router's kernels and idle time show as a difference.
        const auto without = util::profile_kernels(replay_step, "");
        run["profile"] = profile_json(with);
        run["profile_replayed_decisions_no_router"] = profile_json(without);
        run["profile_router_added"] = profile_difference(with, without);
      }
      if (!a.flag("no-breakdown")) {
        // One layer's attention, at this pack, with the measured routing mix.
        auto o = torch::TensorOptions().dtype(dtype).device(device);
        auto q = torch::randn({T, mc.num_heads, mc.head_dim}, o).requires_grad_();
        auto k = torch::randn({T, mc.num_kv_heads, mc.head_dim}, o).requires_grad_();
        auto v = torch::randn({T, mc.num_kv_heads, mc.head_dim}, o).requires_grad_();
        auto s = (torch::rand({nsamples, mc.num_kv_heads}) > omega).to(torch::kFloat32).to(device).requires_grad_();
        auto dout = torch::randn({T, mc.num_heads, mc.head_dim}, o);
        const double sc = 1.0 / std::sqrt(static_cast<double>(mc.head_dim));
        auto fa_fwd = timer.median_ms([&] { torch::NoGradGuard ng; attention::attention_forward(q, k, v, pack, attention::MaskSpec::causal(), sc); }, 5);
        auto ssa_fwd = timer.median_ms([&] { torch::NoGradGuard ng; attention::attention_forward(q, k, v, pack, ssa, sc); }, 5);
        auto hyb = timer.median_ms([&] { attention::hybrid_attention(q, k, v, s, pack, ssa, sc).backward(dout); }, 5);
        auto both = timer.median_ms([&] { attention::hybrid_attention_autograd_both(q, k, v, s, pack, ssa, sc).backward(dout); }, 5);
        auto keys = torch::randn({T, mc.num_kv_heads, mc.head_dim}, o);
        auto router0 = m->routers()[0];
        auto plan = router::make_pool_plan(router0->options(), pack.cu, prompts, device);
        auto router_ms = timer.median_ms([&] { router0->forward(keys, plan).sum().backward(); }, 5);
        // The router's cost inside the step: the same step with the last step's decisions replayed
        // and no router. The difference is everything the router adds: its forward in the first
        // pass and the recompute, the Gumbel noise, its gradient through the attention (ds) and
        // its backward, the sparsity objective and its optimizer step. Host work that overlaps
        // the GPU costs nothing here, unlike in the per-layer timing above.
        auto replay_ms = timer.median_ms(replay_step, steps);
        // One decoder layer as the step runs it: the first (no-grad) pass, then the checkpointed
        // layer's forward + recompute + backward; and the loss on the final hidden states.
        auto lgen = router::routing_generator(1, 0, 0);
        auto lctx = train_context(lgen);
        m->prepare(lctx);
        auto layer0 = m->model->layers[0];
        auto x = torch::randn({T, mc.hidden_size}, o);
        auto dy = torch::randn({T, mc.hidden_size}, o);
        auto layer_fwd = timer.median_ms([&] {
          torch::NoGradGuard ng;
          lctx.decisions.clear();
          layer0->forward_plain(x, lctx);
        }, 3);
        auto layer_step = timer.median_ms([&] {
          lctx.decisions.clear();
          layer0->forward(x.detach().requires_grad_(), lctx).backward(dy);
        }, 3);
        auto h = torch::randn({T, mc.hidden_size}, o).requires_grad_();
        auto loss_ms = timer.median_ms([&] {
          auto lm = train::lm_loss(m, h, ids, labels, pack, train::kLogitsChunk);
          (lm.sum / std::max<int64_t>(lm.tokens, 1)).backward();
        }, 3);
        const double L = static_cast<double>(mc.num_layers);
        run.update({{"per_layer_ms",
                     {{"fa_forward", fa_fwd}, {"ssa_forward", ssa_fwd}, {"hybrid_fwd_bwd_routing_aware", hyb},
                      {"hybrid_fwd_bwd_autograd_both", both}, {"router_fwd_bwd", router_ms},
                      {"layer_forward_no_grad", layer_fwd}, {"layer_forward_recompute_backward", layer_step}}},
                    {"loss_fwd_bwd_ms", loss_ms},
                    {"routing_aware_speedup", both / hyb},
                    {"step_replayed_decisions_no_router_ms", replay_ms},
                    {"router_share_of_step", (step_ms - replay_ms) / step_ms},
                    {"router_share_of_step_from_layer_timing", router_ms * L / step_ms},
                    {"attention_share_of_step_est", (hyb + fa_fwd + ssa_fwd) * L / step_ms},
                    // Layers + loss against the whole step: the rest is embedding, optimizer and host work.
                    {"layers_share_of_step", layer_step * L / step_ms},
                    {"loss_share_of_step", loss_ms / step_ms}});
        LOG_INFO("T=" << T << ": routing-aware speed-up x" << both / hyb << ", router share " << (step_ms - replay_ms) / step_ms
                      << " (step without router " << replay_ms << " ms; per-layer timing " << router_ms * L / step_ms << ")");
      }
    } catch (const c10::OutOfMemoryError&) {
      // The longest pack that fits is a result too: record it and go on with the next size.
      run["oom"] = true;
      LOG_WARN("T=" << T << ": out of GPU memory");
    }
    opt.zero_grad();
    release_cached_memory(device);
    result["runs"].push_back(run);
  }
  if (a.has("out")) io::write_file_atomic(a.get("out", ""), result.dump(2) + "\n");
  std::cout << result.dump(2) << "\n";
  return 0;
}

int cmd_bench_prefill(int argc, char** argv) {
  Args a("bench-prefill", argc, argv,
         {"model", "router", "tokens", "omega", "sink", "window", "dtype", "device", "repeat", "out"}, {"help", "profile"});
  if (a.flag("help")) {
    std::cout << "elastic bench-prefill --model DIR [--router EXPORTED_DIR | --omega 0.7] [--tokens 32768,65536,131072\n"
                 "  --sink 128 --window 2048 --repeat 3 --profile --out result.json]\n"
                 "Prefill (forward, last-token logits) with full attention vs routed hybrid attention, each head\n"
                 "running only its branch. --router: an exported router (elastic export) decides, per input, with\n"
                 "argmax; its time counts, Ω_MSR is the measured one and S, W default to the router's. Otherwise a\n"
                 "fixed random mask streams a fraction --omega of the (layer, KV head) pairs.\n"
                 "--profile: device time by kernel of layer 0's attention, full and routed.\n";
    return 0;
  }
  auto device = model::parse_device(a.get("device", "auto"), "--device");
  auto dtype = model::resolve_dtype(a.get("dtype", "auto"), device, "--dtype");
  auto m = model::load_model(a.require("model"), dtype, device);
  const auto& mc = m->config();
  const bool use_router = a.has("router");
  ELASTIC_CHECK(!(use_router && a.has("omega")), "bench-prefill: --omega is for the fixed mask; with --router Ω is measured");
  int64_t sink = 128, window = 2048;
  if (use_router) {
    const auto manifest = train::attach_exported_router(m, a.get("router", ""));
    sink = manifest["ssa"]["sink_size"].get<int64_t>();
    window = manifest["ssa"]["local_window_size"].get<int64_t>();
  }
  const auto ssa = attention::MaskSpec::streaming(a.get_int("sink", sink), a.get_int("window", window));
  const double omega = a.get_double("omega", 0.7);
  const int reps = static_cast<int>(a.get_int("repeat", 3));
  ELASTIC_CHECK(reps >= 1, "bench-prefill: --repeat must be at least 1, got " << reps);
  torch::manual_seed(0);
  // The fixed mask: exactly round(omega * L * H) streaming heads.
  const int64_t L = mc.num_layers, H = mc.num_kv_heads, n_ssa = std::llround(omega * L * H);
  auto mask = torch::ones({L * H});
  mask.index_put_({torch::randperm(L * H).narrow(0, 0, n_ssa)}, 0.0);
  mask = mask.view({L, H});
  Timer timer{device};
  json result = {{"model", a.require("model")}, {"architecture", mc.architecture}, {"sink", ssa.sink},
                 {"window", ssa.window}, {"dtype", c10::toString(dtype)}, {"runs", json::array()}};
  result.update(bench_provenance("bench-prefill", argc, argv, device));
  if (use_router) result["router"] = a.get("router", "");
  else result["omega_msr"] = double(n_ssa) / (L * H);
  const auto sizes = a.get_int_list("tokens", "32768,65536,131072");
  torch::NoGradGuard ng;
  for (int64_t T : sizes) {
    auto pack = attention::Packing::from_lengths({T}, device);
    auto ids = torch::randint(mc.vocab_size, {T}, torch::TensorOptions().dtype(torch::kInt64));
    std::vector<torch::Tensor> decisions;  // the last routed prefill's, per layer [1, H]
    auto prefill = [&](bool routed) {
      model::ForwardContext ctx;
      ctx.pack = &pack;
      ctx.ssa = ssa;
      if (routed && use_router) {
        ctx.mode = model::RoutingMode::eval;
        ctx.prompts = {router::PromptRange{0, T}};
      } else if (routed) {
        ctx.mode = model::RoutingMode::fixed;
        ctx.fixed_decisions = [&](int64_t l) { return mask[l].unsqueeze(0); };
      }
      auto h = m->forward_hidden(ids, ctx);
      m->logits(h.narrow(0, T - 1, 1));
      if (routed) decisions = std::move(ctx.decisions);
    };
    const double full_ms = timer.median_ms([&] { prefill(false); }, reps);
    const double routed_ms = timer.median_ms([&] { prefill(true); }, reps);
    const double run_omega = train::model_sparsity(decisions)[0].item<double>();
    auto o = torch::TensorOptions().dtype(dtype).device(device);
    auto q = torch::randn({T, mc.num_heads, mc.head_dim}, o), k = torch::randn({T, H, mc.head_dim}, o),
         v = torch::randn({T, H, mc.head_dim}, o);
    const double sc = 1.0 / std::sqrt(static_cast<double>(mc.head_dim));
    auto s_layer = decisions[0].to(device, torch::kFloat32);
    const double attn_full = timer.median_ms([&] { attention::attention_forward(q, k, v, pack, attention::MaskSpec::causal(), sc); }, reps);
    const double attn_routed = timer.median_ms([&] { attention::hybrid_attention(q, k, v, s_layer, pack, ssa, sc); }, reps);
    json run = {{"tokens", T}, {"full_ms", full_ms}, {"routed_ms", routed_ms}, {"speedup", full_ms / routed_ms},
                {"omega_msr", run_omega}, {"layer0_attention_full_ms", attn_full},
                {"layer0_attention_routed_ms", attn_routed},
                {"layer0_streaming_heads", (1 - s_layer).sum().item<double>()}, {"peak_memory_gb", peak_memory_gb(device)}};
    if (a.flag("profile")) {
      run["layer0_full_profile"] = profile_json(util::profile_kernels(
          [&] { attention::attention_forward(q, k, v, pack, attention::MaskSpec::causal(), sc); }));
      run["layer0_routed_profile"] =
          profile_json(util::profile_kernels([&] { attention::hybrid_attention(q, k, v, s_layer, pack, ssa, sc); }));
    }
    LOG_INFO("prefill T=" << T << ": full " << full_ms << " ms, routed " << routed_ms << " ms (Ω_MSR " << run_omega
                          << "), speed-up x" << full_ms / routed_ms);
    result["runs"].push_back(run);
  }
  if (a.has("out")) io::write_file_atomic(a.get("out", ""), result.dump(2) + "\n");
  std::cout << result.dump(2) << "\n";
  return 0;
}

}  // namespace elastic::cli
