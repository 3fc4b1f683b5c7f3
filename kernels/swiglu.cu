#include "kernels/swiglu.h"

#include "kernels/cuda_check.h"
#include "kernels/elementwise_vec.cuh"

namespace elastic::kernels {

namespace {

using namespace detail;

__device__ __forceinline__ float sigmoid(float g) { return 1.f / (1.f + __expf(-g)); }

// Thread item i covers elements [i*V, i*V + V); the last item may be partial and goes element
// by element (V = 1 when the pointers are not 16-byte aligned).
template <typename T, int V>
__global__ void swiglu_forward_kernel(const T* __restrict__ g, const T* __restrict__ u, T* __restrict__ y, int64_t n) {
  const int64_t items = (n + V - 1) / V;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = i * V;
    if (e + V <= n) {
      float gv[V], uv[V], yv[V];
      load<T, V>(g + e, gv);
      load<T, V>(u + e, uv);
#pragma unroll
      for (int k = 0; k < V; ++k) yv[k] = gv[k] * sigmoid(gv[k]) * uv[k];
      store<T, V>(y + e, yv);
    } else {
      for (int64_t k = e; k < n; ++k) {
        const float gk = to_float(g[k]);
        y[k] = from_float<T>(gk * sigmoid(gk) * to_float(u[k]));
      }
    }
  }
}

__device__ __forceinline__ void swiglu_grad(float dy, float g, float u, float& dg, float& du) {
  const float sg = sigmoid(g);
  dg = dy * u * sg * (1.f + g * (1.f - sg));
  du = dy * g * sg;
}

template <typename T, int V>
__global__ void swiglu_backward_kernel(const T* __restrict__ dy, const T* __restrict__ g, const T* __restrict__ u,
                                       T* __restrict__ dg, T* __restrict__ du, int64_t n) {
  const int64_t items = (n + V - 1) / V;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = i * V;
    if (e + V <= n) {
      float dyv[V], gv[V], uv[V], dgv[V], duv[V];
      load<T, V>(dy + e, dyv);
      load<T, V>(g + e, gv);
      load<T, V>(u + e, uv);
#pragma unroll
      for (int k = 0; k < V; ++k) swiglu_grad(dyv[k], gv[k], uv[k], dgv[k], duv[k]);
      store<T, V>(dg + e, dgv);
      store<T, V>(du + e, duv);
    } else {
      for (int64_t k = e; k < n; ++k) {
        float a, b;
        swiglu_grad(to_float(dy[k]), to_float(g[k]), to_float(u[k]), a, b);
        dg[k] = from_float<T>(a);
        du[k] = from_float<T>(b);
      }
    }
  }
}

// In place: each element is read before its own slot is written, by the same thread, and no other
// element is touched; g and u alias the outputs, so no __restrict__ on them.
template <typename T, int V>
__global__ void swiglu_backward_inplace_kernel(const T* __restrict__ dy, T* g, T* u, int64_t n) {
  const int64_t items = (n + V - 1) / V;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = i * V;
    if (e + V <= n) {
      float dyv[V], gv[V], uv[V], dgv[V], duv[V];
      load<T, V>(dy + e, dyv);
      load<T, V>(g + e, gv);
      load<T, V>(u + e, uv);
#pragma unroll
      for (int k = 0; k < V; ++k) swiglu_grad(dyv[k], gv[k], uv[k], dgv[k], duv[k]);
      store<T, V>(g + e, dgv);
      store<T, V>(u + e, duv);
    } else {
      for (int64_t k = e; k < n; ++k) {
        float a, b;
        swiglu_grad(to_float(dy[k]), to_float(g[k]), to_float(u[k]), a, b);
        g[k] = from_float<T>(a);
        u[k] = from_float<T>(b);
      }
    }
  }
}

template <typename T>
void launch_forward(const void* g, const void* u, void* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int V = 16 / sizeof(T);
  const auto* gt = static_cast<const T*>(g);
  const auto* ut = static_cast<const T*>(u);
  auto* yt = static_cast<T*>(y);
  if (aligned16(g) && aligned16(u) && aligned16(y)) {
    swiglu_forward_kernel<T, V><<<grid_for((n + V - 1) / V), kThreads, 0, stream>>>(gt, ut, yt, n);
  } else {
    swiglu_forward_kernel<T, 1><<<grid_for(n), kThreads, 0, stream>>>(gt, ut, yt, n);
  }
  ELASTIC_CUDA_LAUNCH_CHECK();
}

template <typename T>
void launch_backward(const void* dy, const void* g, const void* u, void* dg, void* du, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int V = 16 / sizeof(T);
  const auto* dyt = static_cast<const T*>(dy);
  const auto* gt = static_cast<const T*>(g);
  const auto* ut = static_cast<const T*>(u);
  auto* dgt = static_cast<T*>(dg);
  auto* dut = static_cast<T*>(du);
  if (aligned16(dy) && aligned16(g) && aligned16(u) && aligned16(dg) && aligned16(du)) {
    swiglu_backward_kernel<T, V><<<grid_for((n + V - 1) / V), kThreads, 0, stream>>>(dyt, gt, ut, dgt, dut, n);
  } else {
    swiglu_backward_kernel<T, 1><<<grid_for(n), kThreads, 0, stream>>>(dyt, gt, ut, dgt, dut, n);
  }
  ELASTIC_CUDA_LAUNCH_CHECK();
}

template <typename T>
void launch_backward_inplace(const void* dy, void* g, void* u, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int V = 16 / sizeof(T);
  const auto* dyt = static_cast<const T*>(dy);
  auto* gt = static_cast<T*>(g);
  auto* ut = static_cast<T*>(u);
  if (aligned16(dy) && aligned16(g) && aligned16(u)) {
    swiglu_backward_inplace_kernel<T, V><<<grid_for((n + V - 1) / V), kThreads, 0, stream>>>(dyt, gt, ut, n);
  } else {
    swiglu_backward_inplace_kernel<T, 1><<<grid_for(n), kThreads, 0, stream>>>(dyt, gt, ut, n);
  }
  ELASTIC_CUDA_LAUNCH_CHECK();
}

}  // namespace

void swiglu_forward(const void* g, const void* u, void* y, int64_t n, bool bf16, cudaStream_t stream) {
  if (bf16) {
    launch_forward<__nv_bfloat16>(g, u, y, n, stream);
  } else {
    launch_forward<float>(g, u, y, n, stream);
  }
}

void swiglu_backward(const void* dy, const void* g, const void* u, void* dg, void* du, int64_t n, bool bf16,
                     cudaStream_t stream) {
  if (bf16) {
    launch_backward<__nv_bfloat16>(dy, g, u, dg, du, n, stream);
  } else {
    launch_backward<float>(dy, g, u, dg, du, n, stream);
  }
}

void swiglu_backward_inplace(const void* dy, void* g, void* u, int64_t n, bool bf16, cudaStream_t stream) {
  if (bf16) {
    launch_backward_inplace<__nv_bfloat16>(dy, g, u, n, stream);
  } else {
    launch_backward_inplace<float>(dy, g, u, n, stream);
  }
}

}  // namespace elastic::kernels
