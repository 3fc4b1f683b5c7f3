#include "train/evaluate.h"

#include <cmath>
#include <iomanip>
#include <sstream>

#include "data/loader.h"
#include "io/atomic_file.h"
#include "train/objective.h"
#include "util/error.h"
#include "util/progress.h"

namespace elastic::train {

using nlohmann::json;

EvalRouting parse_eval_routing(const std::string& s) {
  if (s == "router") return EvalRouting::router;
  if (s == "full") return EvalRouting::full;
  if (s == "streaming") return EvalRouting::streaming;
  if (s == "fixed") return EvalRouting::fixed;
  ELASTIC_FAIL("--routing: expected router, full, streaming or fixed, got '" << s << "'");
}

namespace {
json matrix_to_json(const torch::Tensor& m) {
  auto t = m.to(torch::kCPU, torch::kFloat64).contiguous();
  json rows = json::array();
  for (int64_t r = 0; r < t.size(0); ++r) {
    auto row = t[r];
    rows.push_back(std::vector<double>(row.data_ptr<double>(), row.data_ptr<double>() + row.numel()));
  }
  return rows;
}
}  // namespace

EvalResult evaluate(model::CausalLM& m, const data::Dataset& ds, const TrainConfig& cfg, const EvalOptions& opt) {
  torch::NoGradGuard ng;
  const auto device = m->options().device();
  const int64_t L = m->config().num_layers, H = m->config().num_kv_heads;
  const bool routed = opt.routing == EvalRouting::router;  // the router decides: Ω sampled is reported too
  struct Acc {
    double loss = 0, omega = 0, esr = 0, omega_sampled = 0;
    int64_t tokens = 0, samples = 0, correct = 0;
    torch::Tensor fa;  // [L, Hkv] samples routed to FA, per head
    // Routed only, by the sample's number of dense heads: whether a task's losses come from the
    // samples the router gives fewer heads.
    struct Group {
      int64_t samples = 0, correct = 0, tokens = 0;
      double loss = 0;
    };
    std::map<int64_t, Group> by_dense;
  };
  std::map<int64_t, Acc> per_task;
  const int64_t n = opt.max_packs < 0 ? static_cast<int64_t>(ds.size()) : std::min<int64_t>(opt.max_packs, ds.size());
  Progress progress("eval", n);
  for (int64_t i = 0; i < n; ++i) {
    auto b = data::make_batch(ds.pack(i), device);
    model::ForwardContext ctx;
    ctx.pack = &b.pack;
    ctx.prompts = b.prompts;
    ctx.ssa = attention::MaskSpec::streaming(cfg.ssa_sink, cfg.ssa_window);
    const int64_t B = b.pack.num_samples();
    switch (opt.routing) {
      case EvalRouting::router: ctx.mode = model::RoutingMode::eval; break;
      case EvalRouting::full:
        ctx.mode = model::RoutingMode::fixed;
        ctx.fixed_decisions = [&](int64_t) { return torch::ones({B, H}); };
        break;
      case EvalRouting::streaming:
        ctx.mode = model::RoutingMode::fixed;
        ctx.fixed_decisions = [&](int64_t) { return torch::zeros({B, H}); };
        break;
      case EvalRouting::fixed:
        ELASTIC_CHECK(opt.fixed_mask.defined() && opt.fixed_mask.size(0) == L && opt.fixed_mask.size(1) == H,
                      "eval: fixed routing needs a [" << L << ", " << H << "] head mask");
        ctx.mode = model::RoutingMode::fixed;
        ctx.fixed_decisions = [&](int64_t l) { return opt.fixed_mask[l].to(torch::kFloat32).unsqueeze(0).expand({B, H}); };
        break;
    }
    auto hidden = m->forward_hidden(b.ids, ctx);
    auto dec = torch::stack(ctx.decisions, 0).to(torch::kCPU, torch::kFloat64);  // [L,B,H]
    auto omega = model_sparsity(ctx.decisions).to(torch::kCPU, torch::kFloat64);
    auto omega_sampled = routed ? sampled_sparsity(ctx.router_logits).to(torch::kCPU, torch::kFloat64) : torch::Tensor();
    // Per-sample loss and exact-match accuracy over the labelled targets.
    auto is_target = b.labels.to(torch::kBool) & (b.pack.positions.to(torch::kCPU) > 0);
    auto tgt = is_target.nonzero().squeeze(1);
    std::vector<double> loss_s(B, 0.0);
    std::vector<int64_t> tok_s(B, 0), wrong_s(B, 0);
    for (int64_t a = 0; a < tgt.numel(); a += opt.logits_chunk) {
      auto t = tgt.narrow(0, a, std::min(opt.logits_chunk, tgt.numel() - a));
      auto logits = m->logits(hidden.index_select(0, (t - 1).to(device))).to(torch::kFloat32);
      auto labels = b.ids.index_select(0, t).to(device);
      auto ce = torch::nn::functional::cross_entropy(
                    logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone))
                    .to(torch::kCPU, torch::kFloat64);
      auto wrong = logits.argmax(-1).ne(labels).to(torch::kCPU);
      auto sid = b.pack.sample_id.to(torch::kCPU).index_select(0, t);
      for (int64_t r = 0; r < t.numel(); ++r) {
        const auto s = sid[r].item<int64_t>();
        loss_s[s] += ce[r].item<double>();
        tok_s[s] += 1;
        wrong_s[s] += wrong[r].item<bool>();
      }
    }
    for (int64_t s = 0; s < B; ++s) {
      auto& acc = per_task[b.tasks[s]];
      const bool ok = tok_s[s] > 0 && wrong_s[s] == 0;
      const double om = omega[s].item<double>();
      const auto dec_s = dec.select(1, s);
      acc.loss += loss_s[s];
      acc.tokens += tok_s[s];
      acc.samples += 1;
      acc.correct += ok;
      acc.omega += om;
      acc.esr += effective_sparsity(b.pack.length(s), cfg.ssa_sink, cfg.ssa_window, dec_s);
      if (!acc.fa.defined()) acc.fa = torch::zeros({L, H}, torch::kFloat64);
      acc.fa += dec_s;
      if (routed) {
        acc.omega_sampled += omega_sampled[s].item<double>();
        auto& g = acc.by_dense[std::llround((1.0 - om) * L * H)];  // Ω_MSR is the SSA share of L·H heads
        g.samples += 1, g.correct += ok, g.loss += loss_s[s], g.tokens += tok_s[s];
      }
    }
    progress.update(i + 1, "");
  }
  progress.finish("");
  EvalResult r;
  auto fa_count = torch::zeros({L, H}, torch::kFloat64);  // over every task's samples
  Acc all;
  json tasks = json::object();
  for (const auto& [id, a] : per_task) {
    const auto* spec = cfg.task_by_id(id);
    const std::string name = spec ? spec->name : "task_" + std::to_string(id);
    r.task_fa_frequency[name] = a.fa / a.samples;
    tasks[name] = {{"task_id", id},
                   {"samples", a.samples},
                   {"lm_loss", a.tokens ? a.loss / a.tokens : 0.0},
                   {"accuracy", static_cast<double>(a.correct) / a.samples},
                   {"omega_msr", a.omega / a.samples},
                   {"omega_esr", a.esr / a.samples},
                   {"target", cfg.target_for(id)},
                   {"fa_frequency", matrix_to_json(r.task_fa_frequency[name])}};
    if (routed) {
      tasks[name]["omega_msr_sampled"] = a.omega_sampled / a.samples;
      json groups = json::array();
      for (const auto& [dense, g] : a.by_dense)
        groups.push_back({{"dense_heads", dense},
                          {"samples", g.samples},
                          {"accuracy", static_cast<double>(g.correct) / g.samples},
                          {"lm_loss", g.tokens ? g.loss / g.tokens : 0.0}});
      tasks[name]["by_dense_heads"] = groups;
    }
    all.loss += a.loss, all.tokens += a.tokens, all.samples += a.samples, all.correct += a.correct;
    all.omega += a.omega, all.esr += a.esr, all.omega_sampled += a.omega_sampled;
    fa_count += a.fa;
  }
  r.fa_frequency = fa_count / std::max<int64_t>(all.samples, 1);
  r.summary = {{"samples", all.samples},
               {"lm_loss", all.tokens ? all.loss / all.tokens : 0.0},
               {"accuracy", all.samples ? static_cast<double>(all.correct) / all.samples : 0.0},
               {"omega_msr", all.samples ? all.omega / all.samples : 0.0},
               {"omega_esr", all.samples ? all.esr / all.samples : 0.0},
               {"tasks", tasks}};
  if (routed && all.samples) r.summary["omega_msr_sampled"] = all.omega_sampled / all.samples;
  return r;
}

void write_matrix_csv(const std::string& path, const torch::Tensor& m, const std::string& row_name,
                      const std::string& col_name) {
  auto t = m.to(torch::kCPU, torch::kFloat64);
  std::ostringstream os;
  os << row_name;
  for (int64_t c = 0; c < t.size(1); ++c) os << "," << col_name << c;
  os << "\n";
  for (int64_t r = 0; r < t.size(0); ++r) {
    os << r;
    for (int64_t c = 0; c < t.size(1); ++c) os << "," << std::setprecision(6) << t[r][c].item<double>();
    os << "\n";
  }
  io::write_file_atomic(path, os.str());
}

void write_heatmap_svg(const std::string& path, const torch::Tensor& m, const std::string& title,
                       const std::string& row_label, const std::string& col_label) {
  auto t = m.to(torch::kCPU, torch::kFloat64);
  const int64_t R = t.size(0), C = t.size(1);
  const int cell = std::max(8, std::min(40, static_cast<int>(600 / std::max<int64_t>(R, C))));
  const int left = 60, top = 40, h = top + R * cell + 40;
  const int w = std::max<int>(left + C * cell + 90, left + 8 * static_cast<int>(title.size()));
  std::ostringstream os;
  os << "<svg xmlns='http://www.w3.org/2000/svg' width='" << w << "' height='" << h << "' font-family='sans-serif' font-size='11'>\n";
  os << "<rect width='100%' height='100%' fill='white'/>\n";
  os << "<text x='" << left << "' y='20' font-size='14'>" << title << "</text>\n";
  auto color = [](double v) {  // white (SSA) to dark blue (FA)
    v = std::clamp(v, 0.0, 1.0);
    int r = static_cast<int>(255 - 227 * v), g = static_cast<int>(255 - 180 * v), b = static_cast<int>(255 - 75 * v);
    std::ostringstream c;
    c << "rgb(" << r << "," << g << "," << b << ")";
    return c.str();
  };
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t c = 0; c < C; ++c) {
      const double v = t[r][c].item<double>();
      os << "<rect x='" << left + c * cell << "' y='" << top + r * cell << "' width='" << cell << "' height='" << cell
         << "' fill='" << color(v) << "' stroke='#ddd'><title>" << row_label << " " << r << ", " << col_label << " " << c
         << ": " << std::setprecision(3) << v << "</title></rect>\n";
    }
    if (R <= 64 && (R <= 16 || r % 4 == 0))
      os << "<text x='" << left - 6 << "' y='" << top + r * cell + cell * 0.7 << "' text-anchor='end'>" << r << "</text>\n";
  }
  for (int64_t c = 0; c < C; ++c)
    os << "<text x='" << left + c * cell + cell / 2 << "' y='" << top + R * cell + 14 << "' text-anchor='middle'>" << c << "</text>\n";
  os << "<text x='" << left + C * cell / 2 << "' y='" << top + R * cell + 32 << "' text-anchor='middle'>" << col_label << "</text>\n";
  os << "<text x='14' y='" << top + R * cell / 2 << "' transform='rotate(-90 14 " << top + R * cell / 2 << ")' text-anchor='middle'>" << row_label << "</text>\n";
  const int lx = left + C * cell + 20;
  for (int i = 0; i <= 10; ++i)
    os << "<rect x='" << lx << "' y='" << top + (10 - i) * 12 << "' width='14' height='12' fill='" << color(i / 10.0) << "'/>\n";
  os << "<text x='" << lx + 18 << "' y='" << top + 10 << "'>FA 1.0</text>\n";
  os << "<text x='" << lx + 18 << "' y='" << top + 130 << "'>SSA 0.0</text>\n";
  os << "</svg>\n";
  io::write_file_atomic(path, os.str());
}

}  // namespace elastic::train
