// Mapping: one (token, head) row per group of `lanes` lanes of a warp (a power of two, at most 32:
// 16 for d = 128 in bf16), each lane moving 16 bytes at a time, so a warp touches whole contiguous
// rows. A grid-stride loop over rows keeps the grid to one wave of resident blocks.
#include "kernels/sink_merge.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "kernels/cuda_check.h"

namespace elastic::kernels {
namespace {

constexpr int kThreads = 256;

template <int Bytes>
struct RawOf;
template <>
struct RawOf<16> {
  using type = int4;
};
template <>
struct RawOf<8> {
  using type = int2;
};
template <>
struct RawOf<4> {
  using type = int;
};
template <>
struct RawOf<2> {
  using type = short;
};

// N elements moved with one load/store instruction of their total size (the caller guarantees the
// alignment).
template <class T, int N>
struct Chunk {
  using Raw = typename RawOf<sizeof(T) * N>::type;
  T v[N];
  __device__ __forceinline__ static Chunk load(const T* p) {
    const Raw r = *reinterpret_cast<const Raw*>(p);
    Chunk c;
    memcpy(c.v, &r, sizeof(Raw));
    return c;
  }
  __device__ __forceinline__ void store(T* p) const {
    Raw r;
    memcpy(&r, v, sizeof(Raw));
    *reinterpret_cast<Raw*>(p) = r;
  }
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

struct Weights {
  float w, s, lse;
};

// exp(lse_w - l) and exp(lse_s - l) for l = logaddexp(lse_w, lse_s), written around the larger
// term so that nothing overflows and -inf needs no special case unless both sides are -inf
// (where -inf - -inf would be NaN).
__device__ __forceinline__ Weights merge_weights(float lw, float ls) {
  const float hi = fmaxf(lw, ls), lo = fminf(lw, ls);
  if (hi == -INFINITY) return {0.f, 0.f, -INFINITY};
  const float e = __expf(lo - hi);  // in [0, 1], 0 when lo is -inf
  const float whi = 1.f / (1.f + e), wlo = e * whi;
  return lw >= ls ? Weights{whi, wlo, hi + log1pf(e)} : Weights{wlo, whi, hi + log1pf(e)};
}

template <class T, int N>
__global__ void __launch_bounds__(kThreads) sink_merge_kernel(SinkMergeArgs a, int lanes, bool index32) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int rows_per_warp = 32 / lanes, sub = lane / lanes, col = lane % lanes;
  const int64_t rows = a.tokens * a.heads, chunks = a.head_dim / N;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32) * rows_per_warp;
  auto* out = static_cast<T*>(a.out);
  const auto* ow = static_cast<const T*>(a.out_w);
  const auto* os = static_cast<const T*>(a.out_s);
  // The loop bound is warp-uniform, so every lane reaches each __syncwarp.
  for (int64_t base = warp * rows_per_warp; base < rows; base += stride) {
    const int64_t row = base + sub;
    // 64-bit division costs tens of instructions; rows nearly always fit 32 bits.
    const int64_t t = index32 ? static_cast<int64_t>(static_cast<uint32_t>(row) / static_cast<uint32_t>(a.heads))
                              : row / a.heads;
    const int64_t h = row - t * a.heads, li = h * a.tokens + t;
    const bool merge = row < rows && a.positions[t] >= a.first;
    float lw = 0.f, ls = 0.f;
    if (merge) {
      lw = a.lse_w[li];
      ls = a.lse_s[li];
    }
    // In place (lse == lse_w), all lanes of a row must have read lse_w before its lane 0 writes.
    __syncwarp();
    if (!merge) continue;
    const Weights wt = merge_weights(lw, ls);
    const int64_t off = row * a.head_dim;
    for (int64_t c = col; c < chunks; c += lanes) {
      const auto x = Chunk<T, N>::load(ow + off + c * N);
      const auto y = Chunk<T, N>::load(os + off + c * N);
      Chunk<T, N> z;
#pragma unroll
      for (int i = 0; i < N; ++i) z.v[i] = from_float<T>(fmaf(to_float(x.v[i]), wt.w, to_float(y.v[i]) * wt.s));
      z.store(out + off + c * N);
    }
    if (col == 0) a.lse[li] = wt.lse;
  }
}

// Lanes per row: enough for one chunk each, a power of two so that rows tile a warp.
int lanes_for(int64_t chunks) {
  int l = 1;
  while (l < 32 && l < chunks) l *= 2;
  return l;
}

template <class T, int N>
void launch(const SinkMergeArgs& a, cudaStream_t stream) {
  const int lanes = lanes_for(a.head_dim / N);
  const int64_t rows = a.tokens * a.heads;
  const int64_t rows_per_block = (kThreads / 32) * (32 / lanes);
  int device = 0, sms = 0, per_sm = 0;
  ELASTIC_CUDA_CHECK(cudaGetDevice(&device));
  ELASTIC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  ELASTIC_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, sink_merge_kernel<T, N>, kThreads, 0));
  const int64_t wave = static_cast<int64_t>(std::max(sms, 1)) * std::max(per_sm, 1);
  const int64_t blocks = std::min((rows + rows_per_block - 1) / rows_per_block, wave);
  // row = base + sub stays below rows + 32.
  const bool index32 = rows + 32 <= (int64_t{1} << 32);
  sink_merge_kernel<T, N><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a, lanes, index32);
  ELASTIC_CUDA_LAUNCH_CHECK();
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// 16-byte accesses where the row length and the pointers allow, else one element per access.
template <class T>
void dispatch(const SinkMergeArgs& a, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  if (a.head_dim % kVec == 0 && aligned16(a.out) && aligned16(a.out_w) && aligned16(a.out_s)) {
    launch<T, kVec>(a, stream);
  } else {
    launch<T, 1>(a, stream);
  }
}

}  // namespace

void sink_merge(const SinkMergeArgs& a, cudaStream_t stream) {
  if (a.tokens <= 0 || a.heads <= 0 || a.head_dim < 0) return;
  switch (a.dtype) {
    case SinkMergeDtype::kFloat32:
      return dispatch<float>(a, stream);
    case SinkMergeDtype::kFloat16:
      return dispatch<__half>(a, stream);
    case SinkMergeDtype::kBFloat16:
      return dispatch<__nv_bfloat16>(a, stream);
  }
  throw std::invalid_argument("sink_merge: unknown dtype");
}

}  // namespace elastic::kernels
