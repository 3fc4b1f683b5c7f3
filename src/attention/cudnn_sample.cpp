#include "attention/cudnn_sample.h"

#include <atomic>
#include <bit>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>

#include "attention/head_rows.h"
#include "util/error.h"

namespace elastic::attention {

namespace {

std::atomic<bool> g_expand_kv{false};
std::atomic<int> g_lse_dim{3};  // rank of cuDNN's log-sum-exp ([1, H, n] or [1, H, n, 1])

// [rows, H, d] as the [1, H, rows, d] view cuDNN takes.
torch::Tensor bhsd(const torch::Tensor& t) { return t.transpose(0, 1).unsqueeze(0); }

// K/V with one head per query head, for cuDNN builds that reject grouped-query layouts.
torch::Tensor expand_kv(const torch::Tensor& t, int64_t G) {
  return G == 1 ? t : t.unsqueeze(2).expand({t.size(0), t.size(1), G, t.size(2)}).reshape({t.size(0), t.size(1) * G, t.size(2)});
}

// Our calls' q and k are [rows, H, d] views of row-major buffers, so their strides follow from the
// sizes and the key needs only these.
using ShapeKey = std::tuple<std::thread::id, bool, int64_t, int64_t, int64_t, int64_t, int>;
std::mutex g_shapes_mutex;
std::set<ShapeKey> g_shapes;

}  // namespace

bool note_cudnn_sample_shape(bool backward, const torch::Tensor& q, const torch::Tensor& k) {
  ShapeKey key{std::this_thread::get_id(), backward, q.size(0), q.size(1), k.size(1), q.size(2),
               static_cast<int>(q.scalar_type())};
  std::lock_guard<std::mutex> lock(g_shapes_mutex);
  return g_shapes.insert(key).second;
}

int64_t cudnn_sample_shapes() {
  std::lock_guard<std::mutex> lock(g_shapes_mutex);
  return static_cast<int64_t>(g_shapes.size());
}

int64_t cudnn_sample_length(int64_t n) {
  ELASTIC_CHECK(n > 0, "cudnn_sample_length: a sample needs at least one token, got " << n);
  const int64_t step = std::max<int64_t>(128, static_cast<int64_t>(std::bit_floor(static_cast<uint64_t>(n))) / 32);
  return (n + step - 1) / step * step;
}

torch::Tensor cudnn_sample_rows(const torch::Tensor& t, int64_t s0, int64_t n, const torch::Tensor& idx, int64_t Hkv) {
  const int64_t rows = cudnn_sample_length(n);
  if (!every_head_in_order(idx, Hkv)) return gather_heads(t, s0, n, rows, idx, Hkv);
  auto src = t.narrow(0, s0, n);
  if (rows == n) return src;
  auto buf = torch::empty({rows, t.size(1), t.size(2)}, t.options());
  buf.narrow(0, n, rows - n).zero_();
  buf.narrow(0, 0, n).copy_(src);
  return buf;
}

AttnForward cudnn_sample_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t n,
                                 double scale) {
  const int64_t Hq = q.size(1), G = Hq / k.size(1);
  auto kk = g_expand_kv ? expand_kv(k, G) : k, vv = g_expand_kv ? expand_kv(v, G) : v;
  auto call = [&] {
    note_cudnn_sample_shape(/*backward=*/false, q, kk);
    return at::_scaled_dot_product_cudnn_attention(bhsd(q), bhsd(kk), bhsd(vv), std::nullopt,
                                                   /*compute_log_sumexp=*/true, 0.0, /*is_causal=*/true, false, scale);
  };
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, c10::SymInt, c10::SymInt, at::Tensor, at::Tensor, at::Tensor> r;
  try {
    r = call();
  } catch (const c10::Error&) {
    if (g_expand_kv || G == 1) throw;
    g_expand_kv = true;  // this cuDNN has no grouped-query support: expand from now on
    kk = expand_kv(k, G);
    vv = expand_kv(v, G);
    r = call();
  }
  g_lse_dim = static_cast<int>(std::get<1>(r).dim());
  const int64_t rows = q.size(0);
  return {std::get<0>(r).squeeze(0).transpose(0, 1).narrow(0, 0, n), std::get<1>(r).reshape({Hq, rows}).narrow(1, 0, n)};
}

AttnGrads cudnn_sample_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                                const torch::Tensor& v, const torch::Tensor& out, const torch::Tensor& lse, int64_t n,
                                double scale) {
  const int64_t rows = q.size(0), Hq = q.size(1), Hkv = k.size(1), G = Hq / Hkv, d = q.size(2);
  const bool expand = g_expand_kv && G > 1;
  auto kk = expand ? expand_kv(k, G) : k, vv = expand ? expand_kv(v, G) : v;
  auto i64 = q.options().dtype(torch::kInt64);
  auto seed = torch::zeros({}, i64), offset = torch::zeros({}, i64);
  // The padding rows' log-sum-exp can be anything finite: their dO is zero.
  auto lse_rows = rows == n ? lse.contiguous() : torch::zeros({Hq, rows}, lse.options());
  if (rows != n) lse_rows.narrow(1, 0, n).copy_(lse);
  auto lse_c = lse_rows.view(g_lse_dim == 4 ? std::vector<int64_t>{1, Hq, rows, 1} : std::vector<int64_t>{1, Hq, rows});
  note_cudnn_sample_shape(/*backward=*/true, q, kk);
  auto g = at::_scaled_dot_product_cudnn_attention_backward(
      bhsd(dout), bhsd(q), bhsd(kk), bhsd(vv), bhsd(out), lse_c, seed, offset, at::Tensor(), at::Tensor(), at::Tensor(),
      rows, rows, 0.0, /*is_causal=*/true, scale);
  auto first = [&](const torch::Tensor& t) { return t.squeeze(0).transpose(0, 1).narrow(0, 0, n); };
  auto dk = first(std::get<1>(g)), dv = first(std::get<2>(g));
  if (expand) {
    dk = dk.reshape({n, Hkv, G, d}).sum(2);
    dv = dv.reshape({n, Hkv, G, d}).sum(2);
  }
  return {first(std::get<0>(g)), dk, dv};
}

}  // namespace elastic::attention
