#include "train/head_scores.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "data/loader.h"
#include "data/synthetic.h"
#include "util/error.h"
#include "util/progress.h"

namespace elastic::train {

std::vector<int64_t> needle_positions(const std::vector<int64_t>& tokens, int64_t prompt_end, int64_t answer_len) {
  std::vector<int64_t> out;
  const int64_t n = std::min<int64_t>(prompt_end, static_cast<int64_t>(tokens.size()));
  if (n < 2 || tokens[n - 2] != data::kAnswer) return out;
  // The question ends with its key; follow KEY k v.. pairs from it while a value is itself a key
  // (multihop). A pair whose key never starts another pair ends the chain with answer_len values.
  auto pair_of = [&](int64_t key) {
    for (int64_t p = 0; p + 1 < n - 2; ++p)
      if (tokens[p] == data::kKey && tokens[p + 1] == key) return p;
    return int64_t{-1};
  };
  int64_t key = tokens[n - 1];
  for (int64_t hops = 0; hops < 8; ++hops) {
    const int64_t p = pair_of(key);
    if (p < 0) break;
    const int64_t next = p + 2 < n ? tokens[p + 2] : -1;
    const bool hop = next >= 0 && pair_of(next) >= 0;
    const int64_t end = std::min(n - 2, p + 2 + (hop ? 1 : answer_len));
    for (int64_t j = p; j < end; ++j) out.push_back(j);
    if (!hop) break;
    key = next;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

torch::Tensor needle_mass(const torch::Tensor& q, const torch::Tensor& k, const std::vector<int64_t>& rows,
                          const std::vector<int64_t>& needle, double scale) {
  const int64_t T = q.size(0), Hq = q.size(1), Hkv = k.size(1), d = q.size(2);
  ELASTIC_CHECK(Hq % Hkv == 0, "head scores: " << Hq << " query heads not a multiple of " << Hkv << " KV heads");
  const int64_t G = Hq / Hkv;
  const auto dev = q.device();
  auto rows_t = torch::tensor(rows, torch::kInt64).to(dev);
  auto needle_t = torch::tensor(needle, torch::kInt64).to(dev);
  auto qr = q.index_select(0, rows_t).to(torch::kFloat32).view({-1, Hkv, G, d}).permute({1, 2, 0, 3});  // [Hkv,G,R,d]
  auto kk = k.to(torch::kFloat32).permute({1, 2, 0});                                                   // [Hkv,d,T]
  auto s = torch::matmul(qr, kk.unsqueeze(1)) * scale;                                                  // [Hkv,G,R,T]
  auto causal = torch::arange(T, torch::TensorOptions().dtype(torch::kInt64).device(dev)).unsqueeze(0) >
                rows_t.unsqueeze(1);  // [R,T] future keys
  s = s.masked_fill(causal, -std::numeric_limits<float>::infinity());
  auto p = torch::softmax(s, -1);
  auto mass = p.index_select(-1, needle_t).sum(-1);  // [Hkv,G,R]
  return mass.mean({1, 2}).to(torch::kCPU, torch::kFloat64);
}

HeadScoreResult compute_head_scores(model::CausalLM& m, const data::Dataset& ds, const HeadScoreOptions& opt) {
  torch::NoGradGuard ng;
  const auto device = m->options().device();
  const auto& mc = m->config();
  const int64_t L = mc.num_layers, H = mc.num_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(mc.head_dim));
  HeadScoreResult r;
  auto sum = torch::zeros({L, H}, torch::kFloat64);
  const int64_t n = opt.max_packs < 0 ? static_cast<int64_t>(ds.size()) : std::min<int64_t>(opt.max_packs, ds.size());
  Progress progress("head-scores", n);
  for (int64_t i = 0; i < n; ++i) {
    if (opt.max_samples >= 0 && r.samples >= opt.max_samples) break;
    auto b = data::make_batch(ds.pack(i), device);
    bool any = false;
    for (auto t : b.tasks) any |= std::find(opt.tasks.begin(), opt.tasks.end(), t) != opt.tasks.end();
    if (!any) continue;
    std::vector<std::pair<torch::Tensor, torch::Tensor>> qk;
    model::ForwardContext ctx;
    ctx.pack = &b.pack;
    ctx.prompts = b.prompts;
    ctx.mode = model::RoutingMode::off;  // the backbone as it is: full attention everywhere
    ctx.capture_qk = &qk;
    m->forward_hidden(b.ids, ctx);
    ELASTIC_CHECK(static_cast<int64_t>(qk.size()) == L,
                  "head scores: the forward pass captured " << qk.size() << " layers of (q, k), expected " << L);
    auto ids = b.ids.to(torch::kCPU);
    auto labels = b.labels.to(torch::kCPU);
    for (int64_t s = 0; s < b.pack.num_samples(); ++s) {
      if (std::find(opt.tasks.begin(), opt.tasks.end(), b.tasks[s]) == opt.tasks.end()) continue;
      if (opt.max_samples >= 0 && r.samples >= opt.max_samples) break;
      const int64_t beg = b.pack.begin(s), len = b.pack.length(s);
      std::vector<int64_t> tok(len);
      std::vector<int64_t> labelled;
      for (int64_t j = 0; j < len; ++j) {
        tok[j] = ids[beg + j].item<int64_t>();
        if (labels[beg + j].item<int>() && j > 0) labelled.push_back(j);
      }
      if (labelled.empty()) continue;
      // The answer tokens are the labelled ones except the final EOS; rows predicting them sit one before.
      int64_t A = static_cast<int64_t>(labelled.size());
      if (tok[labelled.back()] == data::kEos) --A;
      if (A <= 0) continue;
      const int64_t prompt_end = labelled.front();
      auto needle = needle_positions(tok, prompt_end, A);
      if (needle.empty()) continue;
      std::vector<int64_t> rows;
      for (int64_t a = 0; a < A; ++a) rows.push_back(labelled[a] - 1);
      for (int64_t l = 0; l < L; ++l) {
        auto q = qk[l].first.narrow(0, beg, len), k = qk[l].second.narrow(0, beg, len);
        sum[l] += needle_mass(q, k, rows, needle, scale);
      }
      r.samples += 1;
      r.rows += A;
    }
    progress.update(i + 1, "");
  }
  progress.finish("");
  ELASTIC_CHECK(r.samples > 0, "head scores: no sample of the selected tasks with a KEY k v.. needle in the dataset");
  r.scores = sum / static_cast<double>(r.samples);
  return r;
}

torch::Tensor mask_from_scores(const torch::Tensor& scores, double omega) {
  ELASTIC_CHECK(omega >= 0.0 && omega <= 1.0, "head scores: omega must be in [0, 1], got " << omega);
  auto s = scores.to(torch::kCPU, torch::kFloat64).contiguous();
  const int64_t L = s.size(0), H = s.size(1), N = L * H;
  const int64_t keep = std::clamp<int64_t>(static_cast<int64_t>(std::llround((1.0 - omega) * N)), 0, N);
  std::vector<int64_t> idx(N);
  std::iota(idx.begin(), idx.end(), 0);
  auto acc = s.view({N});
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return acc[a].item<double>() > acc[b].item<double>(); });
  auto mask = torch::zeros({N}, torch::kFloat64);
  for (int64_t i = 0; i < keep; ++i) mask[idx[i]] = 1.0;
  return mask.view({L, H});
}

}  // namespace elastic::train
