// Mapping (FlashAttention-2 with sm_80 instructions): a CTA of 4 warps owns 128 query rows of one
// (sample, query head); each warp owns 32 rows as two m16 tiles, so that every K or V fragment it
// reads from shared memory feeds two mma.sync: about 160 bytes of ldmatrix per mma instead of 256
// with 16 rows per warp, where shared-memory bandwidth rather than the tensor cores would bound an
// H100. Key blocks of 64 rows stream through two shared-memory stages filled by cp.async one block
// ahead. Q stays in shared memory and is re-read for every key block: in registers it would cost
// 64 registers per thread on top of the 128 of the O accumulator. At head_dim 128: 255 registers,
// 97 KB of shared memory, two CTAs per SM.
#include "kernels/streaming_attention.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda_check.h"
#include "kernels/mma_sm80.cuh"

namespace elastic::kernels {
namespace {

using namespace sm80;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMTiles = 2;
constexpr int kWarpRows = 16 * kMTiles;
constexpr int kBlockM = kWarps * kWarpRows;
constexpr int kBlockN = 64;
constexpr int kNTiles = kBlockN / 8;

struct Params {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;
  const int32_t* cu_seqlens;
  int64_t tokens;
  int64_t q_stride, kv_stride;  // elements from one token's row to the next
  int q_heads, kv_heads, sink, window;
  float scale, scale_log2;
};

// Query i sees key j (positions inside the sample) iff j <= i and (j < sink or i - j < window).
struct Mask {
  int sink, window;
  // Bitwise, not short-circuit: a select per element, no branches.
  __device__ __forceinline__ bool visible(int i, int j) const { return (j <= i) & ((j < sink) | (i - j < window)); }
  // Whether rows [r0, r1] see any key of the block at k0 (a warp skips the block otherwise).
  __device__ __forceinline__ bool sees_any(int k0, int r0, int r1) const {
    return r0 <= r1 && k0 <= r1 && (k0 < sink || k0 + kBlockN - 1 > r0 - window);
  }
  // Whether some key of the block at k0 is hidden from some row of [r0, r1] (the block needs the
  // per-element mask): beyond the diagonal, or past the sinks and left of the window.
  __device__ __forceinline__ bool hides_any(int k0, int r0, int r1) const {
    const int first_windowed = max(k0, sink);
    return k0 + kBlockN - 1 > r0 || (first_windowed < k0 + kBlockN && first_windowed <= r1 - window);
  }
};

// The key blocks that rows [m0, m_end) see: sink blocks [0, sink_blocks), then window blocks
// [first, last); one range from 0 where the two meet or overlap.
struct KeyBlocks {
  int sink_blocks, first, last;
  __device__ __forceinline__ int count() const { return sink_blocks + last - first; }
  __device__ __forceinline__ int at(int t) const { return t < sink_blocks ? t : first + t - sink_blocks; }
};

__device__ __forceinline__ KeyBlocks key_blocks(int m0, int m_end, Mask mask) {
  const int last = (m_end + kBlockN - 1) / kBlockN;
  const int first = max(0, m0 - mask.window + 1) / kBlockN;
  const int sink_blocks = (min(mask.sink, m_end) + kBlockN - 1) / kBlockN;
  if (sink_blocks >= first) return {0, 0, last};
  return {sink_blocks, first, last};
}

// One warp's rows: thread (g = lane / 4, q = lane % 4) holds rows g and g + 8 of each m16 tile
// (index hf = 0, 1) and, of each 8-column tile, columns 2q and 2q + 1.
template <int D>
struct WarpState {
  float o[kMTiles][D / 8][4];
  float m[kMTiles][2];  // running maximum of the raw scores of the row
  float l[kMTiles][2];  // this thread's part of the row's running sum, relative to m
};

// q: the warp's Q rows plus Layout::offset(lane & 15, lane >> 4); k: the K stage plus
// Layout::offset((lane & 7) + (lane >> 4) * 8, (lane >> 3) & 1), each lane's row address for an
// x4 ldmatrix of the first 16-column slice (A: rows 0-7 and 8-15 of chunk 0, then of chunk 1;
// B: keys 0-7 of chunks 0 and 1, then keys 8-15).
template <class T, int D>
__device__ __forceinline__ void scores(float (&s)[kMTiles][kNTiles][4], uint32_t q, uint32_t k) {
  using L = Layout<T, D>;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t qa[kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) ldmatrix_x4(qa[mt], (q ^ (kk << 5)) + mt * 16 * L::kRowBytes);
#pragma unroll
    for (int np = 0; np < kNTiles / 2; ++np) {
      uint32_t kb[4];
      ldmatrix_x4(kb, (k ^ (kk << 5)) + np * 16 * L::kRowBytes);
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        mma<T>(s[mt][2 * np], qa[mt], kb[0], kb[1]);
        mma<T>(s[mt][2 * np + 1], qa[mt], kb[2], kb[3]);
      }
    }
  }
}

__device__ __forceinline__ void apply_mask(float (&s)[kMTiles][kNTiles][4], Mask mask, int r0, int k0, int lane) {
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = r0 + mt * 16 + (lane >> 2) + (e >> 1) * 8;
        const int j = k0 + nt * 8 + (lane & 3) * 2 + (e & 1);
        s[mt][nt][e] = mask.visible(i, j) ? s[mt][nt][e] : -INFINITY;
      }
}

// Scores become probabilities relative to the new row maximum; O and the sum are rescaled.
template <int D>
__device__ __forceinline__ void online_softmax(float (&s)[kMTiles][kNTiles][4], WarpState<D>& w, float scale_log2) {
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float mx = w.m[mt][hf];
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // A row that has seen no key yet keeps the maximum -inf: subtract 0 there, as -inf - -inf is NaN.
      const float base = mx == -INFINITY ? 0.f : mx * scale_log2;
      const float corr = exp2f(w.m[mt][hf] * scale_log2 - base);
      w.m[mt][hf] = mx;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int e = 2 * hf; e < 2 * hf + 2; ++e) {
          s[mt][nt][e] = exp2f(fmaf(s[mt][nt][e], scale_log2, -base));
          sum += s[mt][nt][e];
        }
      w.l[mt][hf] = w.l[mt][hf] * corr + sum;
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
        w.o[mt][dt][2 * hf] *= corr;
        w.o[mt][dt][2 * hf + 1] *= corr;
      }
    }
}

// O += P V. The score accumulator's layout is the A operand's: the two 8-column tiles 2kk and
// 2kk + 1 of P form the 16-key slice kk, rounded to T in registers. v: the V stage plus
// Layout::offset(lane & 15, lane >> 4) (transposed x4 ldmatrix: keys 0-7 and 8-15 of chunk 0, then
// of chunk 1).
template <class T, int D>
__device__ __forceinline__ void accumulate_pv(WarpState<D>& w, const float (&p)[kMTiles][kNTiles][4], uint32_t v) {
  using L = Layout<T, D>;
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk) {
    uint32_t pa[kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      pa[mt][0] = pack2<T>(p[mt][2 * kk][0], p[mt][2 * kk][1]);
      pa[mt][1] = pack2<T>(p[mt][2 * kk][2], p[mt][2 * kk][3]);
      pa[mt][2] = pack2<T>(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
      pa[mt][3] = pack2<T>(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      uint32_t vb[4];
      ldmatrix_x4_trans(vb, (v ^ (dp << 5)) + kk * 16 * L::kRowBytes);
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt) {
        mma<T>(w.o[mt][2 * dp], pa[mt], vb[0], vb[1]);
        mma<T>(w.o[mt][2 * dp + 1], pa[mt], vb[2], vb[3]);
      }
    }
  }
}

// Normalises the warp's rows, writes their log-sum-exps, and their outputs through `stage` (the
// warp's own rows of the Q tile, which no other warp reads) as whole 16-byte chunks of each row.
template <class T, int D>
__device__ __forceinline__ void store_rows(WarpState<D>& w, uint32_t stage, const Params& p, int64_t row0, int h,
                                           int rows, int lane) {
  using L = Layout<T, D>;
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = w.l[mt][hf];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const int r = mt * 16 + hf * 8 + g;
      const float inv = l > 0.f ? 1.f / l : 0.f;
      if (q == 0 && r < rows) p.lse[h * p.tokens + row0 + r] = w.m[mt][hf] * p.scale + logf(l);
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt)
        st_shared(stage + L::offset(r, dt) + 4 * q, pack2<T>(w.o[mt][dt][2 * hf] * inv, w.o[mt][dt][2 * hf + 1] * inv));
    }
  __syncwarp();
  auto* out = static_cast<T*>(p.out);
#pragma unroll
  for (int it = 0; it < kWarpRows * L::kChunks / 32; ++it) {
    const int i = it * 32 + lane, r = i / L::kChunks, c = i % L::kChunks;
    if (r < rows) {
      *reinterpret_cast<uint4*>(out + ((row0 + r) * p.q_heads + h) * D + c * 8) = ld_shared16(stage + L::offset(r, c));
    }
  }
}

template <int D>
__device__ __forceinline__ void init(WarpState<D>& w) {
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      w.m[mt][hf] = -INFINITY;
      w.l[mt][hf] = 0.f;
    }
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) w.o[mt][dt][e] = 0.f;
  }
}

template <class T, int D>
constexpr int smem_bytes() {
  return (kBlockM + 4 * kBlockN) * Layout<T, D>::kRowBytes + 1024;
}

template <class T, int D>
__global__ void __launch_bounds__(kThreads) streaming_attention_kernel(Params p) {
  using L = Layout<T, D>;
  extern __shared__ __align__(1024) unsigned char smem[];
  // Rounded up in case dynamic shared memory starts less aligned than declared (smem_bytes has room).
  const uint32_t sq = (smem_addr(smem) + 1023u) & ~1023u;
  const uint32_t sk = sq + kBlockM * L::kRowBytes, sv = sk + 2 * kBlockN * L::kRowBytes;
  constexpr uint32_t kStage = kBlockN * L::kRowBytes;
  // Later query blocks see more keys until the window is full: they start first.
  const int m0 = static_cast<int>(gridDim.x - 1 - blockIdx.x) * kBlockM;
  const int h = static_cast<int>(blockIdx.y);
  const int seq0 = p.cu_seqlens[blockIdx.z], n = p.cu_seqlens[blockIdx.z + 1] - seq0;
  if (m0 >= n) return;
  const Mask mask{p.sink, p.window};
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int r0 = m0 + warp * kWarpRows, r1 = min(r0 + kWarpRows, n) - 1;

  const int kvh = h / (p.q_heads / p.kv_heads);
  const T* const qg = static_cast<const T*>(p.q) + (static_cast<int64_t>(seq0 + m0) * p.q_heads + h) * D;
  const T* const kg = static_cast<const T*>(p.k) + (static_cast<int64_t>(seq0) * p.kv_heads + kvh) * D;
  const T* const vg = static_cast<const T*>(p.v) + (static_cast<int64_t>(seq0) * p.kv_heads + kvh) * D;
  const KeyBlocks blocks = key_blocks(m0, min(m0 + kBlockM, n), mask);
  const int count = blocks.count();
  // One commit group per tile, K before V, so that the scores need not wait for V. Past the last
  // block the groups are empty, which keeps the wait counts below the same for every block.
  auto load_kv = [&](int t) {
    const int k0 = blocks.at(t) * kBlockN;
    if (t < count) {
      load_tile<T, D, kBlockN, kThreads>(sk + (t & 1) * kStage, kg + k0 * p.kv_stride, p.kv_stride, n - k0);
    }
    cp_async_commit();
    if (t < count) {
      load_tile<T, D, kBlockN, kThreads>(sv + (t & 1) * kStage, vg + k0 * p.kv_stride, p.kv_stride, n - k0);
    }
    cp_async_commit();
  };
  load_tile<T, D, kBlockM, kThreads>(sq, qg, p.q_stride, n - m0);
  cp_async_commit();
  load_kv(0);

  WarpState<D> w;
  init(w);
  const uint32_t q_rows = sq + warp * kWarpRows * L::kRowBytes;
  const uint32_t q_lane = q_rows + L::offset(lane & 15, lane >> 4);
  const uint32_t k_lane = sk + L::offset((lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
  const uint32_t v_lane = sv + L::offset(lane & 15, lane >> 4);
#pragma unroll 1
  for (int t = 0; t < count; ++t) {
    // K of block t (and Q) has landed, and every warp is done with block t - 1: its stage refills.
    cp_async_wait<1>();
    __syncthreads();
    load_kv(t + 1);
    const int k0 = blocks.at(t) * kBlockN;
    const bool sees = mask.sees_any(k0, r0, r1);
    float s[kMTiles][kNTiles][4];
    if (sees) {
      scores<T, D>(s, q_lane, k_lane + (t & 1) * kStage);
      if (mask.hides_any(k0, r0, r1)) apply_mask(s, mask, r0, k0, lane);
      online_softmax(s, w, p.scale_log2);
    }
    cp_async_wait<2>();
    __syncthreads();
    if (sees) accumulate_pv<T, D>(w, s, v_lane + (t & 1) * kStage);
  }
  store_rows<T, D>(w, q_rows, p, static_cast<int64_t>(seq0) + r0, h, r1 - r0 + 1, lane);
}

template <class T, int D>
void launch(const Params& p, int64_t max_len, int64_t samples, cudaStream_t stream) {
  constexpr int kSmem = smem_bytes<T, D>();
  auto* kernel = streaming_attention_kernel<T, D>;
  ELASTIC_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const dim3 grid(static_cast<unsigned>((max_len + kBlockM - 1) / kBlockM), static_cast<unsigned>(p.q_heads),
                  static_cast<unsigned>(samples));
  kernel<<<grid, kThreads, kSmem, stream>>>(p);
  ELASTIC_CUDA_LAUNCH_CHECK();
}

template <class T>
void dispatch_head_dim(const Params& p, int64_t head_dim, int64_t max_len, int64_t samples, cudaStream_t stream) {
  if (head_dim == 128) return launch<T, 128>(p, max_len, samples, stream);
  return launch<T, 64>(p, max_len, samples, stream);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

bool check_streaming_attention_args(const StreamingAttentionArgs& a, const char* fn) {
  auto require = [fn](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument(std::string(fn) + ": " + what);
  };
  require(a.head_dim == 64 || a.head_dim == 128, "head_dim must be 64 or 128, got " + std::to_string(a.head_dim));
  require(a.q_heads > 0 && a.kv_heads > 0 && a.q_heads % a.kv_heads == 0,
          "q_heads must be a multiple of kv_heads, got " + std::to_string(a.q_heads) + " and " +
              std::to_string(a.kv_heads));
  require(a.window >= 1 && a.sink >= 0, "needs window >= 1 and sink >= 0, got window " + std::to_string(a.window) +
                                            ", sink " + std::to_string(a.sink));
  require(std::isfinite(a.scale) && a.scale > 0.f, "scale must be positive and finite");
  require(a.samples >= 0 && a.samples <= 65535, "at most 65535 samples, got " + std::to_string(a.samples));
  require(a.max_len >= 0 && a.max_len <= (int64_t{1} << 30) && a.tokens >= 0 && a.tokens <= (int64_t{1} << 31) - 1,
          "max_len must be below 2^30 and tokens below 2^31");
  if (a.tokens == 0 || a.samples == 0 || a.max_len == 0) return false;
  require(aligned16(a.q) && aligned16(a.k) && aligned16(a.v) && aligned16(a.out) && a.lse && a.cu_seqlens,
          "q, k, v and out must be 16-byte aligned, lse and cu_seqlens set");
  return true;
}

void streaming_attention_forward(const StreamingAttentionArgs& a, cudaStream_t stream) {
  // One grid row per query head.
  if (a.q_heads > 65535)
    throw std::invalid_argument("streaming_attention_forward: at most 65535 q_heads, got " + std::to_string(a.q_heads));
  if (!check_streaming_attention_args(a, "streaming_attention_forward")) return;
  Params p{};
  set_shared_params(p, a);
  p.out = a.out;
  switch (a.dtype) {
    case AttentionDtype::kBFloat16:
      return dispatch_head_dim<__nv_bfloat16>(p, a.head_dim, a.max_len, a.samples, stream);
    case AttentionDtype::kFloat16:
      return dispatch_head_dim<__half>(p, a.head_dim, a.max_len, a.samples, stream);
  }
  throw std::invalid_argument("streaming_attention_forward: unknown dtype");
}

}  // namespace elastic::kernels
