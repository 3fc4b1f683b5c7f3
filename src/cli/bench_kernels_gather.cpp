// bench-kernels cases for the (token, kv head) pair gather and scatter of hybrid attention's
// backward (kernels/pair_gather.cu) against the ATen advanced indexing they replaced
// (attention::gather_pairs_composed / scatter_pairs_composed): rows of q, out and dO (R = G * d)
// and of k and v (R = d) for half of the (sample, kv head) pairs of a pack, as a hard routing
// picks them, and the scatter of the q gradient (copying with hard routing, accumulating with soft).
// Also the per-sample head copies around cuDNN (kernels/head_rows.cu) against the index_select /
// index_copy_ / index_add_ they replaced: one sample's rows at half of its KV heads, padded to
// cuDNN's length.
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "attention/cudnn_sample.h"
#include "attention/head_rows.h"
#include "attention/pair_gather.h"
#include "cli/bench_kernels.h"
#include "cli/bench_util.h"

namespace elastic::cli {

namespace {

// Token and head of every row of half of the (sample, head) pairs, chosen at random, laid out
// like hybrid.cpp's select_pairs: pair after pair, each the tokens of its sample in order.
std::pair<torch::Tensor, torch::Tensor> half_of_the_pairs(const std::vector<int64_t>& lengths, int64_t heads,
                                                          torch::Device dev) {
  const int64_t B = static_cast<int64_t>(lengths.size());
  auto chosen = std::get<0>(torch::randperm(B * heads, torch::kInt64).narrow(0, 0, B * heads / 2).sort());
  std::vector<int64_t> begin{0};
  for (auto n : lengths) begin.push_back(begin.back() + n);
  std::vector<torch::Tensor> toks, hds;
  for (int64_t i = 0; i < chosen.size(0); ++i) {
    const int64_t p = chosen[i].item<int64_t>(), b = p / heads, h = p % heads;
    toks.push_back(torch::arange(begin[b], begin[b + 1], torch::kInt64));
    hds.push_back(torch::full({lengths[b]}, h, torch::kInt64));
  }
  return {torch::cat(toks).to(dev), torch::cat(hds).to(dev)};
}

}  // namespace

std::vector<KernelCase> gather_kernel_cases(const KernelShape& s) {
  const auto opts = torch::TensorOptions().device(s.device).dtype(s.dtype);
  const int64_t T = s.tokens, Hkv = s.kv_heads, G = s.q_heads / s.kv_heads, d = s.head_dim;
  const double e = static_cast<double>(c10::elementSize(s.dtype));
  const auto lengths = mixed_lengths(T, std::vector<int64_t>(static_cast<size_t>(s.samples), 1));
  const auto pairs = half_of_the_pairs(lengths, Hkv, s.device);
  const auto tok = pairs.first, head = pairs.second;
  const int64_t N = tok.size(0);
  const double index_bytes = 16.0 * N;  // tok and head, read once per row
  auto shape = [&](int64_t R) {
    return "T=" + std::to_string(T) + " B=" + std::to_string(s.samples) + " Hkv=" + std::to_string(Hkv) +
           " rows=" + std::to_string(N) + " R=" + std::to_string(R) + " " + c10::toString(s.dtype);
  };
  std::vector<KernelCase> cases;

  auto xq = torch::randn({T, Hkv, G, d}, opts), outq = torch::empty({N, G, d}, opts);
  auto xk = torch::randn({T, Hkv, d}, opts), outk = torch::empty({N, d}, opts);
  // Rows read and written once each.
  cases.push_back({"pair_gather_q", shape(G * d), 2.0 * N * G * d * e + index_bytes,
                   [=] { attention::gather_pairs_out(outq, xq, tok, head); },
                   [=] { attention::gather_pairs_composed(xq, tok, head); }});
  cases.push_back({"pair_gather_k", shape(d), 2.0 * N * d * e + index_bytes,
                   [=] { attention::gather_pairs_out(outk, xk, tok, head); },
                   [=] { attention::gather_pairs_composed(xk, tok, head); }});

  // Scatters into their own destinations (fused and composed each keep adding to theirs; values
  // only grow by a few gradients' worth over the runs).
  auto dq = torch::randn({N, G, d}, opts);
  auto dst_f = torch::zeros({T, Hkv, G, d}, opts), dst_c = torch::zeros({T, Hkv, G, d}, opts);
  cases.push_back({"pair_scatter_q", shape(G * d), 2.0 * N * G * d * e + index_bytes,
                   [=] { attention::scatter_pairs(dst_f, dq, tok, head, false); },
                   [=] { attention::scatter_pairs_composed(dst_c, dq, tok, head, false); }});
  // Accumulating: the destination rows are read too.
  cases.push_back({"pair_scatter_add_q", shape(G * d), 3.0 * N * G * d * e + index_bytes,
                   [=] { attention::scatter_pairs(dst_f, dq, tok, head, true); },
                   [=] { attention::scatter_pairs_composed(dst_c, dq, tok, head, true); }});

  // One sample (the pack's first) at every other KV head, as cuDNN's per-sample calls copy it.
  const int64_t n = lengths[0], rows = attention::cudnn_sample_length(n), m = Hkv / 2;
  auto heads = torch::arange(0, Hkv, 2, torch::kInt64), heads_dev = heads.to(s.device);
  auto sample = [&](int64_t R) {
    return "n=" + std::to_string(n) + " rows=" + std::to_string(rows) + " heads=" + std::to_string(m) + "/" +
           std::to_string(Hkv) + " R=" + std::to_string(R) + " " + c10::toString(s.dtype);
  };
  auto xq3 = xq.view({T, Hkv * G, d}), xk3 = xk;
  auto composed_gather = [=](const torch::Tensor& x, int64_t R) {
    auto buf = torch::empty({rows, m * R / d, d}, x.options());
    buf.narrow(0, n, rows - n).zero_();
    auto out = buf.narrow(0, 0, n).view({n, m, R / d, d});
    at::index_select_out(out, x.narrow(0, 0, n).view({n, Hkv, R / d, d}), 1, heads_dev);
  };
  // Rows read once, padded rows written once.
  cases.push_back({"head_rows_gather_q", sample(G * d), (n + rows) * m * G * d * e,
                   [=] { attention::gather_heads(xq3, 0, n, rows, heads, Hkv); },
                   [=] { composed_gather(xq3, G * d); }});
  cases.push_back({"head_rows_gather_k", sample(d), (n + rows) * m * d * e,
                   [=] { attention::gather_heads(xk3, 0, n, rows, heads, Hkv); },
                   [=] { composed_gather(xk3, d); }});
  auto dqs = torch::randn({n, m * G, d}, opts);
  auto hdst_f = torch::zeros({T, Hkv * G, d}, opts), hdst_c = torch::zeros({T, Hkv * G, d}, opts);
  auto composed_rows = [=] { return hdst_c.narrow(0, 0, n).view({n, Hkv, G, d}); };
  cases.push_back({"head_rows_scatter_q", sample(G * d), 2.0 * n * m * G * d * e,
                   [=] { attention::scatter_heads(hdst_f, dqs, 0, n, heads, Hkv, false); },
                   [=] { composed_rows().index_copy_(1, heads_dev, dqs.view({n, m, G, d})); }});
  cases.push_back({"head_rows_scatter_add_q", sample(G * d), 3.0 * n * m * G * d * e,
                   [=] { attention::scatter_heads(hdst_f, dqs, 0, n, heads, Hkv, true); },
                   [=] { composed_rows().index_add_(1, heads_dev, dqs.view({n, m, G, d})); }});
  return cases;
}

}  // namespace elastic::cli
