#include "kernels/hybrid_blend.h"

#include <type_traits>

#include "kernels/cuda_check.h"
#include "kernels/elementwise_vec.cuh"

namespace elastic::kernels {

namespace {

using namespace detail;

// Tokens per block tile of the ds reduction: large enough that the block's one atomic add per
// tile is rare (T / 32 * Hkv adds onto B * Hkv addresses), small enough for many tiles.
constexpr int64_t kTileTokens = 32;

// Item i covers elements [i*V, i*V + V) of one row of d (V divides d): row i*V / d = t*Hq + hq.
// w*fa + (1 - w)*sa rather than sa + w*(fa - sa): the same in exact arithmetic, and with one
// product zero and the other exact it returns fa or sa bit for bit under hard routing.
template <typename T, int V>
__global__ void blend_kernel(const T* __restrict__ fa, const T* __restrict__ sa, const float* __restrict__ w,
                             const int64_t* __restrict__ sample_id, T* __restrict__ out, HybridShape sh) {
  const int64_t chunks = sh.head_dim / V, group = sh.q_heads / sh.kv_heads;
  const int64_t n = sh.tokens * sh.q_heads * chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / chunks, t = row / sh.q_heads, hq = row - t * sh.q_heads, e = i * V;
    const float wv = w[sample_id[t] * sh.kv_heads + hq / group];
    float f[V], s[V], o[V];
    load<T, V>(fa + e, f);
    load<T, V>(sa + e, s);
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = fmaf(wv, f[k], (1.f - wv) * s[k]);
    store<T, V>(out + e, o);
  }
}

template <typename T, int V>
__global__ void weighted_dout_kernel(const T* __restrict__ dout, const float* __restrict__ w,
                                     const int64_t* __restrict__ sample_id, T* __restrict__ dout_fa,
                                     T* __restrict__ dout_sa, HybridShape sh) {
  const int64_t chunks = sh.head_dim / V, group = sh.q_heads / sh.kv_heads;
  const int64_t n = sh.tokens * sh.q_heads * chunks;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / chunks, t = row / sh.q_heads, hq = row - t * sh.q_heads, e = i * V;
    const float wv = w[sample_id[t] * sh.kv_heads + hq / group];
    float g[V], o[V];
    load<T, V>(dout + e, g);
    if (dout_fa) {
#pragma unroll
      for (int k = 0; k < V; ++k) o[k] = g[k] * wv;
      store<T, V>(dout_fa + e, o);
    }
    if (dout_sa) {
#pragma unroll
      for (int k = 0; k < V; ++k) o[k] = g[k] * (1.f - wv);
      store<T, V>(dout_sa + e, o);
    }
  }
}

// Sum over the block, valid in thread 0; blockDim.x is a multiple of 32, at most 1024.
__device__ float block_sum(float v, float* partial) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = 0.f;
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  }
  __syncthreads();
  return v;
}

// A block tile is kTileTokens tokens of one KV head: their G*d elements per token are
// contiguous. A tile inside one sample (the usual case: packs are sample-contiguous) is reduced
// over the block and added with one atomic; a tile across a sample boundary adds each thread's
// run of equal samples. Nothing assumes sample_id is sorted.
template <typename T, int V>
__global__ void ds_kernel(const T* __restrict__ fa, const T* __restrict__ sa, const T* __restrict__ dout,
                          const int64_t* __restrict__ sample_id, float* __restrict__ ds, HybridShape sh) {
  __shared__ float partial[32];
  const int64_t group_elems = sh.q_heads / sh.kv_heads * sh.head_dim, vecs = group_elems / V;
  const int64_t tiles = (sh.tokens + kTileTokens - 1) / kTileTokens * sh.kv_heads;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t h = tile % sh.kv_heads, t0 = tile / sh.kv_heads * kTileTokens;
    const int64_t tn = t0 + kTileTokens <= sh.tokens ? kTileTokens : sh.tokens - t0;
    const int64_t b0 = sample_id[t0];
    bool same = true;
    for (int64_t k = threadIdx.x; k < tn; k += blockDim.x) same = same && sample_id[t0 + k] == b0;
    const bool uniform = __syncthreads_and(same);
    int64_t cur = b0;
    float acc = 0.f;
    for (int64_t e = threadIdx.x; e < tn * vecs; e += blockDim.x) {
      const int64_t tt = e / vecs, t = t0 + tt;
      if (!uniform) {
        const int64_t b = sample_id[t];
        if (b != cur) {
          atomicAdd(&ds[cur * sh.kv_heads + h], acc);
          cur = b;
          acc = 0.f;
        }
      }
      const int64_t off = (t * sh.kv_heads + h) * group_elems + (e - tt * vecs) * V;
      float f[V], s[V], g[V];
      load<T, V>(fa + off, f);
      load<T, V>(sa + off, s);
      load<T, V>(dout + off, g);
#pragma unroll
      for (int k = 0; k < V; ++k) acc += (f[k] - s[k]) * g[k];
    }
    if (uniform) {
      acc = block_sum(acc, partial);
      if (threadIdx.x == 0) atomicAdd(&ds[b0 * sh.kv_heads + h], acc);
    } else {
      atomicAdd(&ds[cur * sh.kv_heads + h], acc);
    }
  }
}

template <typename T>
constexpr int kVec = 16 / sizeof(T);

// Calls launch(width) with width = std::integral_constant<int, V> (16-byte accesses) when `vec`,
// else with width 1 (one element at a time).
template <int V, typename F>
void with_width(bool vec, F&& launch) {
  if (vec) {
    launch(std::integral_constant<int, V>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

template <typename T>
void launch_blend(const void* fa, const void* sa, const float* w, const int64_t* sid, void* out, HybridShape sh,
                  cudaStream_t stream) {
  constexpr int V = kVec<T>;
  const bool vec = sh.head_dim % V == 0 && aligned16(fa) && aligned16(sa) && aligned16(out);
  const int64_t items = sh.tokens * sh.q_heads * (vec ? sh.head_dim / V : sh.head_dim);
  if (items == 0) return;
  const auto* f = static_cast<const T*>(fa);
  const auto* s = static_cast<const T*>(sa);
  auto* o = static_cast<T*>(out);
  with_width<V>(vec, [&](auto width) {
    blend_kernel<T, decltype(width)::value><<<grid_for(items), kThreads, 0, stream>>>(f, s, w, sid, o, sh);
  });
  ELASTIC_CUDA_LAUNCH_CHECK();
}

template <typename T>
void launch_weighted(const void* dout, const float* w, const int64_t* sid, void* dfa, void* dsa, HybridShape sh,
                     cudaStream_t stream) {
  constexpr int V = kVec<T>;
  const bool vec = sh.head_dim % V == 0 && aligned16(dout) && aligned16(dfa) && aligned16(dsa);  // null is aligned
  const int64_t items = sh.tokens * sh.q_heads * (vec ? sh.head_dim / V : sh.head_dim);
  if (items == 0 || (dfa == nullptr && dsa == nullptr)) return;
  const auto* g = static_cast<const T*>(dout);
  auto* a = static_cast<T*>(dfa);
  auto* b = static_cast<T*>(dsa);
  with_width<V>(vec, [&](auto width) {
    weighted_dout_kernel<T, decltype(width)::value><<<grid_for(items), kThreads, 0, stream>>>(g, w, sid, a, b, sh);
  });
  ELASTIC_CUDA_LAUNCH_CHECK();
}

template <typename T>
void launch_ds(const void* fa, const void* sa, const void* dout, const int64_t* sid, float* ds, HybridShape sh,
               cudaStream_t stream) {
  constexpr int V = kVec<T>;
  const int64_t group_elems = sh.q_heads / sh.kv_heads * sh.head_dim;
  const bool vec = group_elems % V == 0 && aligned16(fa) && aligned16(sa) && aligned16(dout);
  const int64_t tiles = (sh.tokens + kTileTokens - 1) / kTileTokens * sh.kv_heads;
  if (tiles == 0 || group_elems == 0) return;
  const unsigned int blocks = static_cast<unsigned int>(std::min<int64_t>(tiles, int64_t{1} << 20));
  const auto* f = static_cast<const T*>(fa);
  const auto* s = static_cast<const T*>(sa);
  const auto* g = static_cast<const T*>(dout);
  with_width<V>(vec, [&](auto width) {
    ds_kernel<T, decltype(width)::value><<<blocks, kThreads, 0, stream>>>(f, s, g, sid, ds, sh);
  });
  ELASTIC_CUDA_LAUNCH_CHECK();
}

}  // namespace

void hybrid_blend_forward(const void* fa, const void* sa, const float* w, const int64_t* sample_id, void* out,
                          HybridShape shape, bool bf16, cudaStream_t stream) {
  if (bf16) {
    launch_blend<__nv_bfloat16>(fa, sa, w, sample_id, out, shape, stream);
  } else {
    launch_blend<float>(fa, sa, w, sample_id, out, shape, stream);
  }
}

void hybrid_blend_ds(const void* fa, const void* sa, const void* dout, const int64_t* sample_id, float* ds,
                     int64_t samples, HybridShape shape, bool bf16, cudaStream_t stream) {
  if (samples * shape.kv_heads > 0) {
    ELASTIC_CUDA_CHECK(cudaMemsetAsync(ds, 0, sizeof(float) * samples * shape.kv_heads, stream));
  }
  if (bf16) {
    launch_ds<__nv_bfloat16>(fa, sa, dout, sample_id, ds, shape, stream);
  } else {
    launch_ds<float>(fa, sa, dout, sample_id, ds, shape, stream);
  }
}

void hybrid_blend_weighted_dout(const void* dout, const float* w, const int64_t* sample_id, void* dout_fa,
                                void* dout_sa, HybridShape shape, bool bf16, cudaStream_t stream) {
  if (bf16) {
    launch_weighted<__nv_bfloat16>(dout, w, sample_id, dout_fa, dout_sa, shape, stream);
  } else {
    launch_weighted<float>(dout, w, sample_id, dout_fa, dout_sa, shape, stream);
  }
}

}  // namespace elastic::kernels
