#include "kernels/rope.h"

#include "kernels/cuda_check.h"
#include "kernels/elementwise_vec.cuh"

namespace elastic::kernels {

namespace {

using namespace detail;

// One thread per V consecutive pairs (x[j..j+V), x[j+half..j+half+V)) of one row. Consecutive
// threads walk a row, then the heads of a token, so the warps of a token share its table rows
// in L1 and the tables cost one read per token, not per head.
template <typename T, int V>
__global__ void rope_kernel(const T* __restrict__ x, T* __restrict__ y, const float* __restrict__ cos,
                            const float* __restrict__ sin, int64_t table_stride, int64_t tokens, int64_t heads,
                            int64_t half, float sign) {
  const int64_t chunks = half / V;
  const int64_t per_token = heads * chunks;
  const int64_t n = tokens * per_token;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / per_token, rest = i - t * per_token;
    const int64_t h = rest / chunks, j = (rest - h * chunks) * V;
    const int64_t row = (t * heads + h) * 2 * half;
    float x1[V], x2[V], c[V], s[V], y1[V], y2[V];
    load<T, V>(x + row + j, x1);
    load<T, V>(x + row + half + j, x2);
    load<float, V>(cos + t * table_stride + j, c);
    load<float, V>(sin + t * table_stride + j, s);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float sk = sign * s[k];
      y1[k] = x1[k] * c[k] - x2[k] * sk;
      y2[k] = x2[k] * c[k] + x1[k] * sk;
    }
    store<T, V>(y + row + j, y1);
    store<T, V>(y + row + half + j, y2);
  }
}

template <typename T>
void launch(const void* x, void* y, const float* cos, const float* sin, int64_t table_stride, int64_t tokens,
            int64_t heads, int64_t half, float sign, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const bool vec = half % V == 0 && table_stride % 4 == 0 && aligned16(x) && aligned16(y) && aligned16(cos) &&
                   aligned16(sin);
  const int64_t items = tokens * heads * (vec ? half / V : half);
  if (items == 0) return;
  const auto* xt = static_cast<const T*>(x);
  auto* yt = static_cast<T*>(y);
  if (vec) {
    rope_kernel<T, V><<<grid_for(items), kThreads, 0, stream>>>(xt, yt, cos, sin, table_stride, tokens, heads, half,
                                                                 sign);
  } else {
    rope_kernel<T, 1><<<grid_for(items), kThreads, 0, stream>>>(xt, yt, cos, sin, table_stride, tokens, heads, half,
                                                                 sign);
  }
  ELASTIC_CUDA_LAUNCH_CHECK();
}

}  // namespace

void rope(const void* x, void* y, const float* cos, const float* sin, int64_t table_stride, int64_t tokens,
          int64_t heads, int64_t head_dim, bool inverse, bool bf16, cudaStream_t stream) {
  const float sign = inverse ? -1.f : 1.f;
  if (bf16) {
    launch<__nv_bfloat16>(x, y, cos, sin, table_stride, tokens, heads, head_dim / 2, sign, stream);
  } else {
    launch<float>(x, y, cos, sin, table_stride, tokens, heads, head_dim / 2, sign, stream);
  }
}

}  // namespace elastic::kernels
