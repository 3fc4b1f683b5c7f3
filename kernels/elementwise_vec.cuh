// Device helpers shared by the elementwise kernels (rope, swiglu, hybrid_blend): loads and
// stores of N consecutive elements as fp32, in 16-byte transactions where N allows, and the
// launch shape of a grid-stride loop. Callers guarantee the alignment of vector accesses.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace elastic::kernels::detail {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// The integer type of a given width: one load or store instruction moves it.
template <int Bytes>
struct Raw;
template <>
struct Raw<16> { using type = uint4; };
template <>
struct Raw<8> { using type = uint2; };
template <>
struct Raw<4> { using type = unsigned int; };
template <>
struct Raw<2> { using type = unsigned short; };

// Elements per access: at most 16 bytes, and never more than N.
template <typename T, int N>
inline constexpr int kChunk = N * static_cast<int>(sizeof(T)) <= 16 ? N : 16 / static_cast<int>(sizeof(T));

// p must be aligned to min(N * sizeof(T), 16) bytes. The intrinsics pin the access width:
// plain dereferences get split into scalar accesses where the compiler cannot prove alignment.
// Loads go through the read-only path: outputs never alias inputs.
template <typename T, int N>
__device__ __forceinline__ void load(const T* p, float (&out)[N]) {
  constexpr int C = kChunk<T, N>;
  static_assert(N % C == 0, "N must be a multiple of the access width");
  using R = typename Raw<C * sizeof(T)>::type;
#pragma unroll
  for (int c = 0; c < N; c += C) {
    const R bits = __ldg(reinterpret_cast<const R*>(p + c));
    T v[C];
    memcpy(v, &bits, sizeof(bits));
#pragma unroll
    for (int i = 0; i < C; ++i) out[c + i] = to_float(v[i]);
  }
}

template <typename T, int N>
__device__ __forceinline__ void store(T* p, const float (&in)[N]) {
  constexpr int C = kChunk<T, N>;
  static_assert(N % C == 0, "N must be a multiple of the access width");
  using R = typename Raw<C * sizeof(T)>::type;
#pragma unroll
  for (int c = 0; c < N; c += C) {
    T v[C];
#pragma unroll
    for (int i = 0; i < C; ++i) v[i] = from_float<T>(in[c + i]);
    R bits;
    memcpy(&bits, v, sizeof(bits));
    __stwb(reinterpret_cast<R*>(p + c), bits);
  }
}

// V consecutive elements in one access each way (d and s aligned to V * sizeof(T) bytes), for the
// gather and scatter kernels (pair_gather, head_rows). The typed word pins the access width.
template <typename T, int V>
__device__ __forceinline__ void copy_chunk(T* __restrict__ d, const T* __restrict__ s) {
  using W = typename Raw<V * sizeof(T)>::type;
  *reinterpret_cast<W*>(d) = __ldg(reinterpret_cast<const W*>(s));
}

// d += s over V elements, summed in fp32 and rounded once. d is read with a plain load, not
// through the read-only path, because the calling kernel writes it.
template <typename T, int V>
__device__ __forceinline__ void add_chunk(T* __restrict__ d, const T* __restrict__ s) {
  using W = typename Raw<V * sizeof(T)>::type;
  W dw = *reinterpret_cast<const W*>(d);
  const W sw = __ldg(reinterpret_cast<const W*>(s));
  T dv[V], sv[V];
  memcpy(dv, &dw, sizeof(dw));
  memcpy(sv, &sw, sizeof(sw));
#pragma unroll
  for (int k = 0; k < V; ++k) dv[k] = from_float<T>(to_float(dv[k]) + to_float(sv[k]));
  memcpy(&dw, dv, sizeof(dw));
  *reinterpret_cast<W*>(d) = dw;
}

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over `items` (1-D grid: no 65535 limit; capped because every
// thread loops anyway). items > 0.
inline unsigned int grid_for(int64_t items, int threads = kThreads) {
  const int64_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned int>(std::min<int64_t>(blocks, int64_t{1} << 20));
}

}  // namespace elastic::kernels::detail
