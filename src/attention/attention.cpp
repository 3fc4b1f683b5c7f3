#include "attention/attention.h"

#include <algorithm>
#include <atomic>
#include <limits>

#include "attention/cudnn_band.h"
#include "attention/cudnn_sample.h"
#include "attention/sink_merge.h"
#include "attention/sink_rows.h"
#include "attention/streaming_kernel.h"
#include "util/device_copy.h"
#include "util/error.h"

namespace elastic::attention {

namespace {

std::atomic<bool> g_force_blocked{false};
std::atomic<bool> g_fp32_in_bf16{false};
// Full-attention backend: 0 auto, 1 flash, 2 cudnn.
std::atomic<int> g_full_backend{0};

// Streaming attention's window band: 0 auto, 1 flash, 2 cuDNN in the backward, 3 cuDNN both ways.
std::atomic<int> g_streaming_backend{0};

// Whether cuDNN runs the window band of streaming attention in this direction.
bool band_on_cudnn(const torch::Tensor& q, bool backward) {
  const int b = g_streaming_backend;
  // auto: flash. cuDNN's band ran no faster (Qwen3-8B, 64K, H200: 6,715 ms steps with flash,
  // 6,764 with cuDNN's backward, 6,726 with both directions on cuDNN).
  const bool want = backward ? b >= 2 : b == 3;
  return want && cudnn_band_supported(q);
}

// Full causal attention only (cuDNN's band serves streaming attention: band_on_cudnn). auto: cuDNN
// for packs of long samples (per-sample calls; 1.17x flash on a Qwen3-4B step at 64K on the H100),
// flash for many short ones, where one varlen launch wins.
bool use_cudnn(const Packing& pack, MaskSpec mask) {
  const int b = g_full_backend;
  return mask.full() && (b == 2 || (b == 0 && pack.max_len >= 1024));
}
// Query rows per block: small on the CPU (cache), large on GPUs (fewer launches).
int64_t block_rows(const torch::Tensor& q) { return q.is_cuda() ? 1024 : 128; }

torch::Tensor compute_dtype_view(const torch::Tensor& t) {
  // The blocked path computes half types in fp32; fp32/fp64 stay as they are.
  if (t.scalar_type() == torch::kHalf || t.scalar_type() == torch::kBFloat16) return t.to(torch::kFloat32);
  return t;
}

// Boolean [nq, nk]: may query position ipos[r] see key position kpos[c]?
torch::Tensor visibility(const torch::Tensor& ipos, const torch::Tensor& kpos, MaskSpec mask) {
  auto i = ipos.unsqueeze(1);
  auto j = kpos.unsqueeze(0);
  auto vis = j <= i;
  if (!mask.full()) vis = vis & ((j < mask.sink) | ((i - j) < mask.window));
  return vis;
}

struct BlockKeys {
  torch::Tensor k, v, pos;  // [Hkv, nk, d], [Hkv, nk, d], [nk]
};

BlockKeys gather_keys(const torch::Tensor& ks, const torch::Tensor& vs,
                      const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  std::vector<torch::Tensor> kk, vv, pp;
  for (auto [r0, r1] : ranges) {
    kk.push_back(ks.narrow(1, r0, r1 - r0));
    vv.push_back(vs.narrow(1, r0, r1 - r0));
    pp.push_back(torch::arange(r0, r1, torch::TensorOptions().dtype(torch::kInt64).device(ks.device())));
  }
  if (kk.size() == 1) return {kk[0], vv[0], pp[0]};
  return {torch::cat(kk, 1), torch::cat(vv, 1), torch::cat(pp, 0)};
}

void blocked_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                     const Packing& pack, MaskSpec mask, double scale, torch::Tensor& out,
                     torch::Tensor& lse) {
  const int64_t Hq = q.size(1), Hkv = k.size(1), d = q.size(2), G = Hq / Hkv;
  auto qc = compute_dtype_view(q), kc = compute_dtype_view(k), vc = compute_dtype_view(v);
  auto out_c = torch::empty(qc.sizes(), qc.options());
  // fp32 like flash's lse, except for fp64 inputs (reference checks).
  auto lse_c = torch::empty({Hq, q.size(0)}, qc.options());
  auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(q.device());
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const int64_t s0 = pack.begin(b), n = pack.length(b);
    auto qs = qc.narrow(0, s0, n).view({n, Hkv, G, d}).permute({1, 2, 0, 3});  // [Hkv,G,n,d]
    auto ks = kc.narrow(0, s0, n).permute({1, 0, 2});                          // [Hkv,n,d]
    auto vs = vc.narrow(0, s0, n).permute({1, 0, 2});
    const int64_t kBlock = block_rows(q);
    for (int64_t a = 0; a < n; a += kBlock) {
      const int64_t e = std::min(n, a + kBlock), bq = e - a;
      auto keys = gather_keys(ks, vs, visible_key_ranges(a, e, mask));
      const int64_t nk = keys.pos.size(0);
      auto qb = qs.narrow(2, a, bq).reshape({Hkv, G * bq, d});
      auto sc = torch::bmm(qb, keys.k.transpose(1, 2)).mul_(scale).view({Hkv, G, bq, nk});
      auto vis = visibility(torch::arange(a, e, i64), keys.pos, mask);
      sc.masked_fill_(vis.logical_not(), -std::numeric_limits<double>::infinity());
      auto l = torch::logsumexp(sc, -1);  // [Hkv,G,bq]
      auto p = torch::exp(sc - l.unsqueeze(-1)).view({Hkv, G * bq, nk});
      auto o = torch::bmm(p, keys.v).view({Hkv, G, bq, d});
      out_c.narrow(0, s0 + a, bq).copy_(o.permute({2, 0, 1, 3}).reshape({bq, Hq, d}));
      lse_c.narrow(1, s0 + a, bq).copy_(l.reshape({Hq, bq}));
    }
  }
  out = out_c.to(q.scalar_type());
  lse = lse_c;
}

AttnGrads blocked_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                           const torch::Tensor& v, const AttnForward& fwd, const Packing& pack,
                           MaskSpec mask, double scale) {
  const int64_t Hq = q.size(1), Hkv = k.size(1), d = q.size(2), G = Hq / Hkv;
  auto qc = compute_dtype_view(q), kc = compute_dtype_view(k), vc = compute_dtype_view(v);
  auto oc = compute_dtype_view(fwd.out), doc = compute_dtype_view(dout);
  auto lse = fwd.lse.to(qc.scalar_type());
  auto dq = torch::zeros(qc.sizes(), qc.options());
  auto dk = torch::zeros(kc.sizes(), kc.options());
  auto dv = torch::zeros(vc.sizes(), vc.options());
  auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(q.device());
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const int64_t s0 = pack.begin(b), n = pack.length(b);
    auto to_heads = [&](const torch::Tensor& t) {  // [n,Hq,d] -> [Hkv,G,n,d]
      return t.narrow(0, s0, n).view({n, Hkv, G, d}).permute({1, 2, 0, 3});
    };
    auto qs = to_heads(qc), os = to_heads(oc), dos = to_heads(doc);
    auto ls = lse.narrow(1, s0, n).view({Hkv, G, n});
    auto ks = kc.narrow(0, s0, n).permute({1, 0, 2});
    auto vs = vc.narrow(0, s0, n).permute({1, 0, 2});
    auto dks = torch::zeros({Hkv, n, d}, kc.options());
    auto dvs = torch::zeros({Hkv, n, d}, vc.options());
    const int64_t kBlock = block_rows(q);
    for (int64_t a = 0; a < n; a += kBlock) {
      const int64_t e = std::min(n, a + kBlock), bq = e - a;
      auto ranges = visible_key_ranges(a, e, mask);
      auto keys = gather_keys(ks, vs, ranges);
      const int64_t nk = keys.pos.size(0);
      auto qb = qs.narrow(2, a, bq).reshape({Hkv, G * bq, d});
      auto ob = os.narrow(2, a, bq).reshape({Hkv, G * bq, d});
      auto dob = dos.narrow(2, a, bq).reshape({Hkv, G * bq, d});
      auto lb = ls.narrow(2, a, bq).reshape({Hkv, G * bq, 1});
      auto sc = torch::bmm(qb, keys.k.transpose(1, 2)).mul_(scale).view({Hkv, G, bq, nk});
      auto vis = visibility(torch::arange(a, e, i64), keys.pos, mask);
      sc.masked_fill_(vis.logical_not(), -std::numeric_limits<double>::infinity());
      auto p = torch::exp(sc.view({Hkv, G * bq, nk}) - lb);                  // [Hkv,G*bq,nk]
      auto dp = torch::bmm(dob, keys.v.transpose(1, 2));                     // [Hkv,G*bq,nk]
      auto D = (dob * ob).sum(-1, true);                                     // [Hkv,G*bq,1]
      auto ds = p * (dp - D);
      auto dqb = torch::bmm(ds, keys.k).mul_(scale).view({Hkv, G, bq, d});
      dq.narrow(0, s0 + a, bq).add_(dqb.permute({2, 0, 1, 3}).reshape({bq, Hq, d}));
      auto dkb = torch::bmm(ds.transpose(1, 2), qb).mul_(scale);              // [Hkv,nk,d]
      auto dvb = torch::bmm(p.transpose(1, 2), dob);
      int64_t off = 0;
      for (auto [r0, r1] : ranges) {
        dks.narrow(1, r0, r1 - r0).add_(dkb.narrow(1, off, r1 - r0));
        dvs.narrow(1, r0, r1 - r0).add_(dvb.narrow(1, off, r1 - r0));
        off += r1 - r0;
      }
    }
    dk.narrow(0, s0, n).add_(dks.permute({1, 0, 2}));
    dv.narrow(0, s0, n).add_(dvs.permute({1, 0, 2}));
  }
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

// ---- flash (CUDA, fp16/bf16) ----

// Sink keys outside the window: for query i >= window, keys j < min(sink, i - window + 1).
// Rows i >= window + sink - 1 see every sink key: one non-causal flash pass of all query rows
// against their sample's sink keys, merged into the windowed result by kernels/sink_merge.cu
// (SinkKeys). The at most sink - 1 rows before them see a prefix of the sinks: attention/sink_rows.h.

// The first min(sink, n) keys of every sample, as a varlen key batch for the sink pass. The pass
// takes every query row (no gather of q, dout or out, which would be full-size copies); rows at
// positions < first get sink outputs there too, which the merge ignores and the backward masks.
struct SinkKeys {
  torch::Tensor rows;  // key rows in the pack, int64
  torch::Tensor cu;    // int32 varlen boundaries, one sequence per sample
  int64_t max_len = 0;
  int64_t first = 0;   // rows at positions >= first see every sink key beyond their window
  bool empty() const { return !rows.defined(); }
};

SinkKeys sink_keys(const Packing& pack, MaskSpec mask, torch::Device dev) {
  SinkKeys s;
  if (mask.full() || mask.sink <= 0) return s;
  s.first = mask.window + mask.sink - 1;
  if (pack.max_len <= s.first) return s;  // no row sees all the sinks: nothing to merge
  std::vector<int64_t> rows, cu{0};
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const int64_t m = std::min(mask.sink, pack.length(b));
    for (int64_t j = 0; j < m; ++j) rows.push_back(pack.begin(b) + j);
    cu.push_back(cu.back() + m);
    s.max_len = std::max(s.max_len, m);
  }
  s.rows = util::to_device(rows, dev);
  s.cu = util::to_device(cu, dev, torch::kInt32);
  return s;
}

// The window band of every sequence of the pack: FlashAttention-2 in one varlen launch, or cuDNN
// one sequence at a time on strided views of the pack.
AttnForward band_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                         const Packing& pack, MaskSpec mask, double scale) {
  if (!mask.full() && band_on_cudnn(q, /*backward=*/false)) {
    AttnForward f{torch::empty_like(q), torch::empty({q.size(1), q.size(0)}, q.options().dtype(torch::kFloat32))};
    for (int64_t b = 0; b < pack.num_samples(); ++b) {
      const int64_t s0 = pack.begin(b), n = pack.length(b);
      auto rows = [&](const torch::Tensor& t) { return t.narrow(0, s0, n); };
      cudnn_band_forward(rows(q), rows(k), rows(v), mask.window, scale, rows(f.out), f.lse.narrow(1, s0, n));
    }
    return f;
  }
  std::optional<int64_t> wl, wr;
  if (!mask.full()) {
    wl = mask.window - 1;
    wr = 0;
  }
  auto r = at::_flash_attention_forward(q, k, v, pack.cu_i32, pack.cu_i32, pack.max_len, pack.max_len, 0.0,
                                        /*is_causal=*/true, /*return_debug_mask=*/false, scale, wl, wr);
  return {std::get<0>(r), std::get<1>(r)};
}

AttnForward flash_forward_composed(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                   const Packing& pack, MaskSpec mask, double scale) {
  AttnForward f = band_forward(q, k, v, pack, mask, scale);
  merge_sink_prefix_rows(q, k, v, pack, mask, scale, f);
  auto sk = sink_keys(pack, mask, q.device());
  if (!sk.empty()) {
    auto ks = k.index_select(0, sk.rows), vs = v.index_select(0, sk.rows);
    auto rs = at::_flash_attention_forward(q, ks, vs, pack.cu_i32, sk.cu, pack.max_len, sk.max_len, 0.0,
                                           /*is_causal=*/false, false, scale);
    sink_merge(f.out, f.lse, f.out, f.lse, std::get<0>(rs), std::get<1>(rs), pack.positions, sk.first);
  }
  return f;
}

// The kernel moves 16-byte chunks: a contiguous view that starts mid-chunk gets its own copy.
torch::Tensor aligned16(const torch::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 ? t : t.clone(torch::MemoryFormat::Contiguous);
}

// Streaming attention in one launch where the kernel takes it (kernels/streaming_attention.cu,
// 1.36x the composition at 64K tokens on the H100, docs/performance.md).
AttnForward flash_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                          const Packing& pack, MaskSpec mask, double scale) {
  if (streaming_kernel_supports(q, mask) && !band_on_cudnn(q, /*backward=*/false))
    return streaming_attention_kernel(aligned16(q), aligned16(k), aligned16(v), pack, mask, scale);
  return flash_forward_composed(q, k, v, pack, mask, scale);
}

// ---- cuDNN (CUDA, fp16/bf16): full causal attention only, one call per sample (attention/cudnn_sample.h).
// It has no local window: streaming attention's band runs on flash or cudnn_band.

AttnForward cudnn_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const Packing& pack,
                          double scale) {
  const int64_t T = q.size(0), Hq = q.size(1), Hkv = k.size(1);
  AttnForward f{torch::empty_like(q), torch::empty({Hq, T}, q.options().dtype(torch::kFloat32))};
  const torch::Tensor all;
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const int64_t s0 = pack.begin(b), n = pack.length(b);
    if (n == 0) continue;
    auto rows = [&](const torch::Tensor& t) { return cudnn_sample_rows(t, s0, n, all, Hkv); };
    auto r = cudnn_sample_forward(rows(q), rows(k), rows(v), n, scale);
    f.out.narrow(0, s0, n).copy_(r.out);
    f.lse.narrow(1, s0, n).copy_(r.lse);
  }
  return f;
}

AttnGrads cudnn_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                         const torch::Tensor& v, const AttnForward& fwd, const Packing& pack, double scale) {
  AttnGrads out{torch::empty_like(q), torch::empty_like(k), torch::empty_like(v)};
  const int64_t Hkv = k.size(1);
  const torch::Tensor all;
  auto dc = dout.contiguous(), oc = fwd.out.contiguous();
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const int64_t s0 = pack.begin(b), n = pack.length(b);
    if (n == 0) continue;
    auto rows = [&](const torch::Tensor& t) { return cudnn_sample_rows(t, s0, n, all, Hkv); };
    auto g = cudnn_sample_backward(rows(dc), rows(q), rows(k), rows(v), rows(oc), fwd.lse.narrow(1, s0, n), n, scale);
    out.dq.narrow(0, s0, n).copy_(g.dq);
    out.dk.narrow(0, s0, n).copy_(g.dk);
    out.dv.narrow(0, s0, n).copy_(g.dv);
  }
  return out;
}

AttnGrads flash_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                         const torch::Tensor& v, const AttnForward& fwd, const Packing& pack, MaskSpec mask,
                         double scale) {
  std::optional<int64_t> wl, wr;
  if (!mask.full()) {
    wl = mask.window - 1;
    wr = 0;
  }
  auto empty = torch::empty({0}, q.options().dtype(torch::kInt64));
  auto dout_c = dout.contiguous();
  AttnGrads out;
  if (!mask.full() && band_on_cudnn(q, /*backward=*/true)) {
    // Given the merged output and log-sum-exp, cuDNN's band backward is the window keys' share, as
    // flash's is below.
    out = {torch::empty_like(q), torch::empty_like(k), torch::empty_like(v)};
    for (int64_t b = 0; b < pack.num_samples(); ++b) {
      const int64_t s0 = pack.begin(b), n = pack.length(b);
      auto rows = [&](const torch::Tensor& t) { return t.narrow(0, s0, n); };
      cudnn_band_backward(rows(dout_c), rows(q), rows(k), rows(v), rows(fwd.out), fwd.lse.narrow(1, s0, n),
                          mask.window, scale, rows(out.dq), rows(out.dk), rows(out.dv));
    }
  } else {
    auto g = at::_flash_attention_backward(dout_c, q, k, v, fwd.out, fwd.lse, pack.cu_i32, pack.cu_i32,
                                           pack.max_len, pack.max_len, 0.0, /*is_causal=*/true, empty, empty,
                                           scale, wl, wr);
    out = {std::get<0>(g), std::get<1>(g), std::get<2>(g)};
  }
  sink_prefix_rows_backward(dout, q, k, v, fwd, pack, mask, scale, out);
  auto sk = sink_keys(pack, mask, q.device());
  if (!sk.empty()) {
    // With the merged output and log-sum-exp, flash's backward gives exactly the sink keys' share.
    // Rows before sk.first must get none: a log-sum-exp of +inf (flash's own value for padding
    // rows) makes their probabilities exp(s - lse) exactly 0, hence dS = P (dP - D) = 0 and no
    // dq, dk or dv. Cheaper than zeroing their dout ([H, T] instead of [T, H, d]), and immune to
    // exp overflow on the sink keys they cannot see (the merged lse does not cover those).
    auto lse = fwd.lse.masked_fill(pack.positions.lt(sk.first), std::numeric_limits<double>::infinity());
    auto ks = k.index_select(0, sk.rows), vs = v.index_select(0, sk.rows);
    auto gs = at::_flash_attention_backward(dout_c, q, ks, vs, fwd.out, lse, pack.cu_i32, sk.cu, pack.max_len,
                                            sk.max_len, 0.0, /*is_causal=*/false, empty, empty, scale);
    out.dq.add_(std::get<0>(gs));
    out.dk.index_add_(0, sk.rows, std::get<1>(gs));
    out.dv.index_add_(0, sk.rows, std::get<2>(gs));
  }
  return out;
}

}  // namespace

void check_attention_inputs(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const Packing& pack) {
  ELASTIC_CHECK(q.dim() == 3 && k.dim() == 3 && v.dim() == 3, "attention: q, k, v must be [tokens, heads, head_dim]");
  ELASTIC_CHECK(q.size(0) == pack.tokens() && k.size(0) == pack.tokens() && v.size(0) == pack.tokens(),
                "attention: q/k/v have " << q.size(0) << " tokens but the packing has " << pack.tokens());
  ELASTIC_CHECK(k.sizes() == v.sizes() && q.size(2) == k.size(2) && q.size(1) % k.size(1) == 0,
                "attention: incompatible shapes q " << q.sizes() << " k " << k.sizes() << " v " << v.sizes());
}

std::vector<std::pair<int64_t, int64_t>> visible_key_ranges(int64_t a, int64_t b, MaskSpec mask) {
  if (mask.full()) return {{0, b}};
  const int64_t ws = std::max<int64_t>(0, a - mask.window + 1);
  const int64_t se = std::min(mask.sink, b);
  if (se >= ws) return {{0, b}};
  std::vector<std::pair<int64_t, int64_t>> r;
  if (se > 0) r.emplace_back(0, se);
  r.emplace_back(ws, b);
  return r;
}

void set_force_blocked(bool on) { g_force_blocked = on; }
void set_fp32_attention_in_bf16(bool on) { g_fp32_in_bf16 = on; }

namespace {

const std::vector<std::string> kFullBackends{"auto", "flash", "cudnn"};
const std::vector<std::string> kStreamingBackends{"auto", "flash", "cudnn-bwd", "cudnn"};

// The index of `name` in `names`, or an error that lists them.
int backend_index(const std::vector<std::string>& names, const std::string& name, const char* what) {
  auto it = std::find(names.begin(), names.end(), name);
  if (it == names.end()) {
    std::string all;
    for (const auto& n : names) all += (all.empty() ? "'" : ", '") + n + "'";
    ELASTIC_FAIL(what << " backend must be one of " << all << ", got '" << name << "'");
  }
  return static_cast<int>(it - names.begin());
}

}  // namespace

void set_full_attention_backend(const std::string& name) {
  g_full_backend = backend_index(kFullBackends, name, "attention");
}
std::string full_attention_backend() { return kFullBackends[static_cast<size_t>(g_full_backend.load())]; }

void set_streaming_backend(const std::string& name) {
  g_streaming_backend = backend_index(kStreamingBackends, name, "streaming attention");
}
std::string streaming_backend() { return kStreamingBackends[static_cast<size_t>(g_streaming_backend.load())]; }

bool uses_flash(const torch::Tensor& q) {
  return !g_force_blocked && q.is_cuda() &&
         (q.scalar_type() == torch::kBFloat16 || q.scalar_type() == torch::kHalf ||
          (q.scalar_type() == torch::kFloat32 && g_fp32_in_bf16)) &&
         q.size(2) % 8 == 0 && q.size(2) <= 256;
}

namespace {

// With set_fp32_attention_in_bf16 (the trainer's choice for fp32 weights on a GPU, with TF32
// matmuls) fp32 attention runs in bf16 through the flash kernels, like autocast does; outputs and
// gradients return in fp32. Otherwise fp32 stays exact (blocked path).
torch::Tensor to_bf16(const torch::Tensor& t) { return t.scalar_type() == torch::kFloat32 ? t.to(torch::kBFloat16) : t; }

}  // namespace

AttnForward attention_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const Packing& pack, MaskSpec mask, double scale) {
  check_attention_inputs(q, k, v, pack);
  if (uses_flash(q)) {
    if (q.scalar_type() == torch::kFloat32) {
      auto f = flash_forward(to_bf16(q).contiguous(), to_bf16(k).contiguous(), to_bf16(v).contiguous(), pack, mask, scale);
      return {f.out.to(torch::kFloat32), f.lse};
    }
    if (use_cudnn(pack, mask)) {
      return cudnn_forward(q.contiguous(), k.contiguous(), v.contiguous(), pack, scale);
    }
    return flash_forward(q.contiguous(), k.contiguous(), v.contiguous(), pack, mask, scale);
  }
  AttnForward f;
  blocked_forward(q, k, v, pack, mask, scale, f.out, f.lse);
  return f;
}

AttnForward flash_streaming_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    const Packing& pack, MaskSpec mask, double scale) {
  check_attention_inputs(q, k, v, pack);
  ELASTIC_CHECK(q.is_cuda() && !mask.full() && (q.scalar_type() == torch::kBFloat16 || q.scalar_type() == torch::kHalf),
                "flash_streaming_forward: takes bf16/fp16 CUDA tensors and a streaming mask");
  return flash_forward_composed(q.contiguous(), k.contiguous(), v.contiguous(), pack, mask, scale);
}

AttnGrads attention_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                             const torch::Tensor& v, const AttnForward& fwd, const Packing& pack, MaskSpec mask,
                             double scale) {
  if (uses_flash(q)) {
    if (q.scalar_type() == torch::kFloat32) {
      auto g = flash_backward(to_bf16(dout), to_bf16(q).contiguous(), to_bf16(k).contiguous(), to_bf16(v).contiguous(),
                              AttnForward{to_bf16(fwd.out), fwd.lse}, pack, mask, scale);
      return {g.dq.to(torch::kFloat32), g.dk.to(torch::kFloat32), g.dv.to(torch::kFloat32)};
    }
    if (use_cudnn(pack, mask)) {
      return cudnn_backward(dout, q.contiguous(), k.contiguous(), v.contiguous(), fwd, pack, scale);
    }
    return flash_backward(dout, q.contiguous(), k.contiguous(), v.contiguous(), fwd, pack, mask, scale);
  }
  return blocked_backward(dout, q, k, v, fwd, pack, mask, scale);
}

namespace {

bool full_attention_per_sample(const torch::Tensor& q, const Packing& pack) {
  if (!uses_flash(q)) return true;  // the blocked path runs sample by sample
  return q.scalar_type() != torch::kFloat32 && use_cudnn(pack, MaskSpec::causal());
}

}  // namespace

bool per_sample_heads(const torch::Tensor& q, const Packing& pack, MaskSpec mask, bool backward) {
  if (mask.full()) return full_attention_per_sample(q, pack);
  return uses_flash(q) && q.scalar_type() != torch::kFloat32 && band_on_cudnn(q, backward);
}

namespace {

class AttentionFn : public torch::autograd::Function<AttentionFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, torch::Tensor q,
                                                torch::Tensor k, torch::Tensor v, const Packing* pack,
                                                int64_t sink, int64_t window, double scale) {
    MaskSpec mask{sink, window};
    auto f = attention_forward(q, k, v, *pack, mask, scale);
    ctx->save_for_backward({q, k, v, f.out, f.lse});
    ctx->saved_data["cu"] = pack->cu;
    ctx->saved_data["sink"] = sink;
    ctx->saved_data["window"] = window;
    ctx->saved_data["scale"] = scale;
    ctx->mark_non_differentiable({f.lse});
    return {f.out, f.lse};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto s = ctx->get_saved_variables();
    auto cu = ctx->saved_data["cu"].toIntVector();
    auto pack = Packing::from_cu(cu, s[0].device());
    MaskSpec mask{ctx->saved_data["sink"].toInt(), ctx->saved_data["window"].toInt()};
    auto g = attention_backward(grads[0], s[0], s[1], s[2], AttnForward{s[3], s[4]}, pack, mask,
                                ctx->saved_data["scale"].toDouble());
    return {g.dq, g.dk, g.dv, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const Packing& pack, MaskSpec mask, double scale) {
  if (!torch::GradMode::is_enabled() || !(q.requires_grad() || k.requires_grad() || v.requires_grad())) {
    return attention_forward(q, k, v, pack, mask, scale).out;
  }
  return AttentionFn::apply(q, k, v, &pack, mask.sink, mask.window, scale)[0];
}

}  // namespace elastic::attention
