// Backward of the streaming attention forward (kernels/streaming_attention.cu), FlashAttention-2
// style in three launches: delta = rowsum(dout * out) (zeroing the fp32 dq accumulator on the way),
// the main kernel, and the conversion of the fp32 accumulators to the output dtype.
//
// Main kernel: a CTA of 8 warps owns a block of 128 keys of one (sample, kv head) and walks the
// query blocks of 64 rows that see them, for each of the G query heads of the kv head; each warp
// owns 16 keys and computes its scores transposed (keys x queries: S^T = K Q^T, dP^T = V dO^T), so
// that P^T and dS^T are already the A operands of dV += P^T dO and dK += dS^T Q, whose fp32
// accumulators (128 registers per thread at head_dim 128) stay in registers for the whole walk.
// dQ = dS K needs all 128 keys of a query row: dS^T goes through shared memory, each warp then
// multiplies 16 query rows by half of head_dim and adds them into the fp32 dq accumulator with
// atomics (FlashAttention-2's scheme). Q, dO and their rows' lse and delta stream through two
// shared-memory stages filled by cp.async one step ahead. At head_dim 128: 255 registers, no
// spills, 149 KB of shared memory, one CTA (8 warps) per SM.
//
// A block of window keys is seen by about (window + 128) / 64 query blocks, a block holding sink
// keys by every later row of the sample: its rows are split into chunks of that same length, each
// a CTA, which add their dK and dV into a small fp32 accumulator per sample instead of writing
// them. Sink chunks are scheduled first.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda_check.h"
#include "kernels/mma_sm80.cuh"
#include "kernels/streaming_attention.h"

namespace elastic::kernels {
namespace {

using namespace sm80;

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockN = 16 * kWarps;  // keys of a CTA, 16 per warp
constexpr int kBlockM = 64;           // query rows of a step
constexpr int kNTiles = kBlockM / 8;  // 8-column tiles of a warp's scores
constexpr int kQueryGroups = kBlockM / 16;
constexpr int kDimSplit = kWarps / kQueryGroups;  // dQ: warps sharing 16 query rows split head_dim
static_assert(kWarps % kQueryGroups == 0, "the dQ step needs whole groups of warps per 16 query rows");

struct Params {
  const void* q;
  const void* k;
  const void* v;
  const void* dout;
  const float* lse;
  const float* delta;
  void* dk;
  void* dv;
  float* dq_accum;
  float* dkv_sink;  // [samples, sink_keys, kv_heads, D] dk, then the same for dv
  const int32_t* cu_seqlens;
  int64_t tokens;
  int64_t q_stride, kv_stride;
  int q_heads, kv_heads, sink, window;
  int sink_keys;     // keys of the sink blocks: sink rounded up to kBlockN
  int chunk_blocks;  // query blocks of one sink chunk
  float scale, scale_log2;
};

// Query i sees key j iff j <= i and (j < sink or i - j < window), and i is a row of the sample.
struct Mask {
  int sink, window, n;
  __device__ __forceinline__ bool visible(int i, int j) const {
    return (j <= i) & ((j < sink) | (i - j < window)) & (i < n);
  }
  // Whether some key of the block at k0 is hidden from some row of [m0, m0 + kBlockM): beyond the
  // diagonal, past the sinks and left of the window, or a row past the sample's end.
  __device__ __forceinline__ bool hides_any(int k0, int m0) const {
    const int r1 = m0 + kBlockM - 1, first_windowed = max(k0, sink);
    return k0 + kBlockN - 1 > m0 || r1 >= n || (first_windowed < k0 + kBlockN && first_windowed <= r1 - window);
  }
};

// What one CTA does: keys [k0, k0 + kBlockN) against query blocks [qb_begin, qb_end) of every
// query head of its kv head; `shared` when other CTAs hold the same keys (a sink block).
struct Work {
  int k0, qb_begin, qb_end;
  bool shared;
};

// Items of a sample of n rows: the chunks of its sink blocks first (chunk-major, the heaviest
// work), then its other key blocks in order (the last ones, near the sample's end, are lighter).
__device__ __forceinline__ Work work_item(int x, int n, const Params& p) {
  const int query_blocks = (n + kBlockM - 1) / kBlockM, key_blocks = (n + kBlockN - 1) / kBlockN;
  const int sink_blocks = min(p.sink_keys / kBlockN, key_blocks);
  const int chunks = (query_blocks + p.chunk_blocks - 1) / p.chunk_blocks;
  if (x < sink_blocks * chunks) {
    const int k0 = (x % sink_blocks) * kBlockN, c = x / sink_blocks;
    return {k0, max(c * p.chunk_blocks, k0 / kBlockM), min((c + 1) * p.chunk_blocks, query_blocks), true};
  }
  const int k0 = (sink_blocks + x - sink_blocks * chunks) * kBlockN;
  if (k0 >= n) return {k0, 0, 0, false};
  // The last row that sees the block's last key.
  const int last_row = min(n - 1, k0 + kBlockN - 1 + p.window - 1);
  return {k0, k0 / kBlockM, last_row / kBlockM + 1, false};
}

template <int D>
struct Accumulators {
  float dk[D / 8][4];  // the warp's 16 keys x D, mma accumulator layout
  float dv[D / 8][4];
};

// c = a (the warp's 16 rows of `rows`) * b^T (the kBlockM rows of `cols`), over D. rows: the
// tile plus Layout::offset(warp * 16 + (lane & 15), lane >> 4); cols: the tile plus
// Layout::offset((lane & 7) + (lane >> 4) * 8, (lane >> 3) & 1) (see the forward's scores()).
template <class T, int D>
__device__ __forceinline__ void transposed_scores(float (&c)[kNTiles][4], uint32_t rows, uint32_t cols) {
  using L = Layout<T, D>;
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) c[nt][e] = 0.f;
  // Unrolled fully, the loop's hoisted fragment addresses make ptxas spill at head_dim 128.
#pragma unroll 2
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[4];
    ldmatrix_x4(a, rows ^ (kk << 5));
#pragma unroll
    for (int np = 0; np < kNTiles / 2; ++np) {
      uint32_t b[4];
      ldmatrix_x4(b, (cols ^ (kk << 5)) + np * 16 * L::kRowBytes);
      mma<T>(c[2 * np], a, b[0], b[1]);
      mma<T>(c[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// A warp's 16 x kBlockM accumulator tile rounded to T as the A operands of its kBlockM / 16
// 16-column slices: the two 8-column tiles 2kk and 2kk + 1 form slice kk.
using Operand = uint32_t[kBlockM / 16][4];

template <class T>
__device__ __forceinline__ void to_operand(Operand& a, const float (&x)[kNTiles][4]) {
#pragma unroll
  for (int kk = 0; kk < kBlockM / 16; ++kk) {
    a[kk][0] = pack2<T>(x[2 * kk][0], x[2 * kk][1]);
    a[kk][1] = pack2<T>(x[2 * kk][2], x[2 * kk][3]);
    a[kk][2] = pack2<T>(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    a[kk][3] = pack2<T>(x[2 * kk + 1][2], x[2 * kk + 1][3]);
  }
}

// acc (16 keys x D) += a (16 keys x kBlockM queries) * the kBlockM x D tile at `tile` plus
// Layout::offset(lane & 15, lane >> 4) (transposed x4 ldmatrix, as the forward's accumulate_pv).
template <class T, int D>
__device__ __forceinline__ void accumulate(float (&acc)[D / 8][4], const Operand& a, uint32_t tile) {
  using L = Layout<T, D>;
#pragma unroll
  for (int kk = 0; kk < kBlockM / 16; ++kk)
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, (tile ^ (dp << 5)) + kk * 16 * L::kRowBytes);
      mma<T>(acc[2 * dp], a[kk], b[0], b[1]);
      mma<T>(acc[2 * dp + 1], a[kk], b[2], b[3]);
    }
}

// P^T from the scores S^T, in place. Thread (g = lane / 4, q = lane % 4) holds keys g and g + 8 of
// the warp and, of each 8-column tile, query columns 2q and 2q + 1; lse holds the kBlockM rows'.
__device__ __forceinline__ void probabilities(float (&s)[kNTiles][4], const float* lse, Mask mask, bool masked,
                                              int key0, int m0, float scale_log2, int lane) {
  constexpr float kLog2e = 1.4426950408889634f;
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = nt * 8 + (lane & 3) * 2 + (e & 1);
      const int key = key0 + (lane >> 2) + (e >> 1) * 8;
      const float pr = exp2f(fmaf(s[nt][e], scale_log2, -lse[col] * kLog2e));
      s[nt][e] = !masked || mask.visible(m0 + col, key) ? pr : 0.f;
    }
}

// dS^T = P^T (dP^T - delta), in place of dP^T (layout as in probabilities).
__device__ __forceinline__ void score_grads(float (&dp)[kNTiles][4], const float (&p)[kNTiles][4], const float* delta,
                                            int lane) {
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) dp[nt][e] = p[nt][e] * (dp[nt][e] - delta[nt * 8 + (lane & 3) * 2 + (e & 1)]);
}

// The warp's dS^T rows (the A operand of dK) into the kBlockN x kBlockM tile `ds` (rows = keys).
template <class T>
__device__ __forceinline__ void store_ds(uint32_t ds, const Operand& a, int warp, int lane) {
  using LS = Layout<T, kBlockM>;
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = warp * 16 + (lane >> 2) + hf * 8;
      st_shared(ds + LS::offset(row, nt) + 4 * (lane & 3), a[nt / 2][(nt & 1) * 2 + hf]);
    }
}

// dq_accum += scale * dS K for 16 query rows (group warp % kQueryGroups) and a 1 / kDimSplit slice
// of head_dim (warp / kQueryGroups): A = dS from the transposed tile (rows keys), B = K.
template <class T, int D>
__device__ __forceinline__ void add_dq(const Params& p, uint32_t ds, uint32_t k_tile, int64_t row0, int rows, int h,
                                       int warp, int lane) {
  using L = Layout<T, D>;
  using LS = Layout<T, kBlockM>;
  constexpr int kDims = D / kDimSplit;
  const int group = warp % kQueryGroups, slice = warp / kQueryGroups;
  float acc[kDims / 8][4];
#pragma unroll
  for (int nt = 0; nt < kDims / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
  // Transposed x4 ldmatrix of A from its transpose: keys 0-7 of query chunks 0 and 1, then keys 8-15.
  const uint32_t a_lane = ds + LS::offset((lane & 7) + ((lane >> 4) << 3), 2 * group + ((lane >> 3) & 1));
  const uint32_t b_lane = k_tile + L::offset(lane & 15, lane >> 4);
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk) {
    uint32_t a[4];
    ldmatrix_x4_trans(a, a_lane + kk * 16 * LS::kRowBytes);
#pragma unroll
    for (int dp = 0; dp < kDims / 16; ++dp) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, (b_lane ^ ((slice * kDims / 16 + dp) << 5)) + kk * 16 * L::kRowBytes);
      mma<T>(acc[2 * dp], a, b[0], b[1]);
      mma<T>(acc[2 * dp + 1], a, b[2], b[3]);
    }
  }
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int r = group * 16 + (lane >> 2) + hf * 8;
    if (r >= rows) continue;
    float* dst = p.dq_accum + ((row0 + r) * p.q_heads + h) * D + slice * kDims + (lane & 3) * 2;
#pragma unroll
    for (int nt = 0; nt < kDims / 8; ++nt) {
      atomicAdd(dst + nt * 8, p.scale * acc[nt][2 * hf]);
      atomicAdd(dst + nt * 8 + 1, p.scale * acc[nt][2 * hf + 1]);
    }
  }
}

// The warp's dK (scaled here) and dV: stored as T, or for shared keys added into the sink
// accumulator of the sample.
template <class T, int D>
__device__ __forceinline__ void store_dkv(const Params& p, Accumulators<D>& a, const Work& w, int seq0, int sample,
                                          int n, int kvh, int warp, int lane) {
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int key = w.k0 + warp * 16 + (lane >> 2) + hf * 8;
    if (key >= n) continue;
    const int col = (lane & 3) * 2;
    if (w.shared) {
      const int64_t keys = static_cast<int64_t>(gridDim.z) * p.sink_keys * p.kv_heads * D;
      float* dk = p.dkv_sink + ((static_cast<int64_t>(sample) * p.sink_keys + key) * p.kv_heads + kvh) * D + col;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          atomicAdd(dk + dt * 8 + e, p.scale * a.dk[dt][2 * hf + e]);
          atomicAdd(dk + keys + dt * 8 + e, a.dv[dt][2 * hf + e]);
        }
    } else {
      const int64_t at = (static_cast<int64_t>(seq0 + key) * p.kv_heads + kvh) * D + col;
      auto* dk = static_cast<T*>(p.dk) + at;
      auto* dv = static_cast<T*>(p.dv) + at;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        *reinterpret_cast<uint32_t*>(dk + dt * 8) =
            pack2<T>(p.scale * a.dk[dt][2 * hf], p.scale * a.dk[dt][2 * hf + 1]);
        *reinterpret_cast<uint32_t*>(dv + dt * 8) = pack2<T>(a.dv[dt][2 * hf], a.dv[dt][2 * hf + 1]);
      }
    }
  }
}

template <class T, int D>
struct Smem {
  static constexpr int kRow = Layout<T, D>::kRowBytes;
  static constexpr int kKeys = kBlockN * kRow;                              // K, then V
  // Q, dO, lse and delta, rounded up so that the second stage's tiles start 1024-byte aligned.
  static constexpr int kStage = (2 * kBlockM * kRow + 2 * kBlockM * 4 + 1023) / 1024 * 1024;
  static constexpr int kDs = kBlockN * Layout<T, kBlockM>::kRowBytes;
  static constexpr int kBytes = 2 * kKeys + 2 * kStage + kDs + 1024;  // + room to align to 1024
};

template <class T, int D>
__global__ void __launch_bounds__(kThreads, 1) streaming_attention_bwd_kernel(Params p) {
  using L = Layout<T, D>;
  using S = Smem<T, D>;
  extern __shared__ __align__(1024) unsigned char smem[];
  const int sample = static_cast<int>(blockIdx.z), kvh = static_cast<int>(blockIdx.y);
  const int seq0 = p.cu_seqlens[sample], n = p.cu_seqlens[sample + 1] - seq0;
  const Work w = work_item(static_cast<int>(blockIdx.x), n, p);
  if (w.qb_begin >= w.qb_end) return;
  const int group_heads = p.q_heads / p.kv_heads;
  const int count = (w.qb_end - w.qb_begin) * group_heads;
  const Mask mask{p.sink, p.window, n};
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;

  // Tiles start 1024-byte aligned (the swizzle's XOR addressing needs it); the stages' lse and
  // delta rows follow their Q and dO tiles.
  const uint32_t base = (smem_addr(smem) + 1023u) & ~1023u;
  const uint32_t sk = base, sv = sk + S::kKeys, sds = sv + S::kKeys, stages = sds + S::kDs;
  auto sq = [&](int t) { return stages + (t & 1) * S::kStage; };
  auto sdo = [&](int t) { return sq(t) + kBlockM * S::kRow; };
  auto sstat = [&](int t) { return sq(t) + 2 * kBlockM * S::kRow; };  // lse, then delta
  auto stats = [&](int t) { return reinterpret_cast<const float*>(smem + (sstat(t) - smem_addr(smem))); };

  const int64_t kv_row0 = static_cast<int64_t>(seq0 + w.k0) * p.kv_heads + kvh;
  load_tile<T, D, kBlockN, kThreads>(sk, static_cast<const T*>(p.k) + kv_row0 * D, p.kv_stride, n - w.k0);
  load_tile<T, D, kBlockN, kThreads>(sv, static_cast<const T*>(p.v) + kv_row0 * D, p.kv_stride, n - w.k0);
  // Step t: query block qb_begin + t / G of query head kvh * G + t % G.
  auto load_step = [&](int t) {
    if (t < count) {
      const int m0 = (w.qb_begin + t / group_heads) * kBlockM, h = kvh * group_heads + t % group_heads;
      const int64_t row = static_cast<int64_t>(seq0 + m0) * p.q_heads + h;
      load_tile<T, D, kBlockM, kThreads>(sq(t), static_cast<const T*>(p.q) + row * D, p.q_stride, n - m0);
      load_tile<T, D, kBlockM, kThreads>(sdo(t), static_cast<const T*>(p.dout) + row * D, p.q_stride, n - m0);
      const int i = static_cast<int>(threadIdx.x);
      if (i < 2 * kBlockM) {
        const int r = i % kBlockM;
        const bool ok = m0 + r < n;
        const float* src = (i < kBlockM ? p.lse : p.delta) + static_cast<int64_t>(h) * p.tokens + seq0 + m0 + r;
        cp_async4(sstat(t) + 4 * i, ok ? src : p.lse, ok);
      }
    }
    cp_async_commit();
  };
  load_step(0);

  Accumulators<D> acc;
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc.dk[dt][e] = acc.dv[dt][e] = 0.f;
  const uint32_t key_lane = L::offset(warp * 16 + (lane & 15), lane >> 4);
  const uint32_t col_lane = L::offset((lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
  const uint32_t trans_lane = L::offset(lane & 15, lane >> 4);
#pragma unroll 1
  for (int t = 0; t < count; ++t) {
    // Step t's tiles (and K, V) have landed, and every warp is done with step t - 1: its stage
    // and the dS tile are free again.
    cp_async_wait<0>();
    __syncthreads();
    load_step(t + 1);
    const int m0 = (w.qb_begin + t / group_heads) * kBlockM, h = kvh * group_heads + t % group_heads;
    float s[kNTiles][4], dp[kNTiles][4];
    transposed_scores<T, D>(s, sk + key_lane, sq(t) + col_lane);
    probabilities(s, stats(t), mask, mask.hides_any(w.k0, m0), w.k0 + warp * 16, m0, p.scale_log2, lane);
    Operand pa, dsa;
    to_operand<T>(pa, s);
    accumulate<T, D>(acc.dv, pa, sdo(t) + trans_lane);
    transposed_scores<T, D>(dp, sv + key_lane, sdo(t) + col_lane);
    score_grads(dp, s, stats(t) + kBlockM, lane);
    to_operand<T>(dsa, dp);
    accumulate<T, D>(acc.dk, dsa, sq(t) + trans_lane);
    store_ds<T>(sds, dsa, warp, lane);
    __syncthreads();
    add_dq<T, D>(p, sds, sk, static_cast<int64_t>(seq0) + m0, min(kBlockM, n - m0), h, warp, lane);
  }
  store_dkv<T, D>(p, acc, w, seq0, sample, n, kvh, warp, lane);
}

// delta[h, t] = dout[t, h] . out[t, h] in fp32, and dq_accum[t, h] = 0: D / 8 threads per row,
// one 16-byte chunk each.
template <class T, int D>
__global__ void __launch_bounds__(256) delta_kernel(const T* dout, const T* out, float* delta, float* dq_accum,
                                                    int64_t tokens, int q_heads) {
  constexpr int kChunks = D / 8;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = i / kChunks;
  const bool valid = row < tokens * q_heads;
  float sum = 0.f;
  if (valid) {
    const uint4 a = reinterpret_cast<const uint4*>(dout)[i], b = reinterpret_cast<const uint4*>(out)[i];
    const T* x = reinterpret_cast<const T*>(&a);
    const T* y = reinterpret_cast<const T*>(&b);
#pragma unroll
    for (int e = 0; e < 8; ++e) sum += static_cast<float>(x[e]) * static_cast<float>(y[e]);
    const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
    reinterpret_cast<float4*>(dq_accum)[2 * i] = zero;
    reinterpret_cast<float4*>(dq_accum)[2 * i + 1] = zero;
  }
  // The row's threads are kChunks consecutive lanes of one warp (kChunks divides 32).
#pragma unroll
  for (int off = kChunks / 2; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (valid && i % kChunks == 0) delta[(row % q_heads) * tokens + row / q_heads] = sum;
}

// 8 fp32 values rounded to T, one 16-byte store.
template <class T>
__device__ __forceinline__ void store8(T* dst, const float* src) {
  uint4 v;
  v.x = pack2<T>(src[0], src[1]);
  v.y = pack2<T>(src[2], src[3]);
  v.z = pack2<T>(src[4], src[5]);
  v.w = pack2<T>(src[6], src[7]);
  *reinterpret_cast<uint4*>(dst) = v;
}

template <class T>
__global__ void __launch_bounds__(256) convert_kernel(const float* src, T* dst, int64_t chunks) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < chunks) store8(dst + 8 * i, src + 8 * i);
}

// dk and dv of the sink blocks' keys from the accumulator [2, samples, sink_keys, kv_heads, D].
template <class T, int D>
__global__ void __launch_bounds__(256) convert_sink_kernel(const float* acc, T* dk, T* dv, const int32_t* cu_seqlens,
                                                           int samples, int sink_keys, int kv_heads) {
  constexpr int kChunks = D / 8;
  const int64_t per_sample = static_cast<int64_t>(sink_keys) * kv_heads * kChunks;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= per_sample * samples) return;
  const int sample = static_cast<int>(i / per_sample);
  const int64_t within = i % per_sample;  // (key, kv head, chunk)
  const int key = static_cast<int>(within / (kv_heads * kChunks));
  const int seq0 = cu_seqlens[sample];
  if (key >= cu_seqlens[sample + 1] - seq0) return;
  const int64_t at = static_cast<int64_t>(seq0) * kv_heads * kChunks + within;
  store8(dk + 8 * at, acc + 8 * i);
  store8(dv + 8 * at, acc + 8 * (i + per_sample * samples));
}

unsigned blocks_for(int64_t threads) { return static_cast<unsigned>((threads + 255) / 256); }

// CTAs of the main kernel per (kv head, sample): the items of the longest sample (work_item's
// count grows with the length).
int64_t items(const Params& p, int64_t max_len) {
  const int64_t query_blocks = (max_len + kBlockM - 1) / kBlockM, key_blocks = (max_len + kBlockN - 1) / kBlockN;
  const int64_t sink_blocks = std::min<int64_t>(p.sink_keys / kBlockN, key_blocks);
  const int64_t chunks = (query_blocks + p.chunk_blocks - 1) / p.chunk_blocks;
  return sink_blocks * chunks + key_blocks - sink_blocks;
}

template <class T, int D>
void launch(const Params& p, const StreamingAttentionBackwardArgs& a, cudaStream_t stream) {
  const int64_t tokens = a.fwd.tokens, rows = tokens * a.fwd.q_heads;
  delta_kernel<T, D><<<blocks_for(rows * (D / 8)), 256, 0, stream>>>(
      static_cast<const T*>(a.dout), static_cast<const T*>(a.fwd.out), a.delta, a.dq_accum, tokens, p.q_heads);
  ELASTIC_CUDA_LAUNCH_CHECK();
  const int64_t sink_floats = streaming_attention_backward_sink_floats(a);
  if (sink_floats > 0) ELASTIC_CUDA_CHECK(cudaMemsetAsync(a.dkv_sink, 0, sink_floats * sizeof(float), stream));

  constexpr int kSmem = Smem<T, D>::kBytes;
  auto* kernel = streaming_attention_bwd_kernel<T, D>;
  ELASTIC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const dim3 grid(static_cast<unsigned>(items(p, a.fwd.max_len)), static_cast<unsigned>(p.kv_heads),
                  static_cast<unsigned>(a.fwd.samples));
  kernel<<<grid, kThreads, kSmem, stream>>>(p);
  ELASTIC_CUDA_LAUNCH_CHECK();

  convert_kernel<T><<<blocks_for(rows * D / 8), 256, 0, stream>>>(a.dq_accum, static_cast<T*>(a.dq), rows * D / 8);
  ELASTIC_CUDA_LAUNCH_CHECK();
  if (sink_floats > 0) {
    convert_sink_kernel<T, D><<<blocks_for(sink_floats / 16), 256, 0, stream>>>(
        a.dkv_sink, static_cast<T*>(a.dk), static_cast<T*>(a.dv), p.cu_seqlens, static_cast<int>(a.fwd.samples),
        p.sink_keys, p.kv_heads);
    ELASTIC_CUDA_LAUNCH_CHECK();
  }
}

template <class T>
void dispatch_head_dim(const Params& p, const StreamingAttentionBackwardArgs& a, cudaStream_t stream) {
  if (a.fwd.head_dim == 128) return launch<T, 128>(p, a, stream);
  return launch<T, 64>(p, a, stream);
}

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("streaming_attention_backward: " + what);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Beyond max_len the sink hides nothing: clamped, it fits the kernel's 32-bit positions.
int64_t sink_keys(const StreamingAttentionArgs& f) {
  return (std::min(f.sink, f.max_len) + kBlockN - 1) / kBlockN * kBlockN;
}

}  // namespace

int64_t streaming_attention_backward_sink_floats(const StreamingAttentionBackwardArgs& a) {
  return 2 * a.fwd.samples * sink_keys(a.fwd) * a.fwd.kv_heads * a.fwd.head_dim;
}

void streaming_attention_backward(const StreamingAttentionBackwardArgs& a, cudaStream_t stream) {
  const StreamingAttentionArgs& f = a.fwd;
  require(f.kv_heads <= 65535, "at most 65535 kv_heads (one grid row each), got " + std::to_string(f.kv_heads));
  if (!check_streaming_attention_args(f, "streaming_attention_backward")) return;
  require(aligned16(a.dout) && aligned16(a.dq) && aligned16(a.dk) && aligned16(a.dv),
          "dout, dq, dk and dv must be 16-byte aligned");
  require(aligned16(a.dq_accum) && a.delta &&
              (aligned16(a.dkv_sink) || streaming_attention_backward_sink_floats(a) == 0),
          "delta set, dq_accum and dkv_sink (when the sink is not empty) 16-byte aligned");
  Params p{};
  set_shared_params(p, f);
  p.dout = a.dout;
  p.delta = a.delta;
  p.dk = a.dk;
  p.dv = a.dv;
  p.dq_accum = a.dq_accum;
  p.dkv_sink = a.dkv_sink;
  p.sink_keys = static_cast<int>(sink_keys(f));
  // A sink chunk as long as the query range of a window block, so that all CTAs weigh about the same.
  p.chunk_blocks = static_cast<int>((p.window + kBlockN + kBlockM - 1) / kBlockM);
  switch (f.dtype) {
    case AttentionDtype::kBFloat16:
      return dispatch_head_dim<__nv_bfloat16>(p, a, stream);
    case AttentionDtype::kFloat16:
      return dispatch_head_dim<__half>(p, a, stream);
  }
  throw std::invalid_argument("streaming_attention_backward: unknown dtype");
}

}  // namespace elastic::kernels
