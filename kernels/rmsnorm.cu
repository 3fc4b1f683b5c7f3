// Mapping: the threads of one row form a group, and the row is cut into chunks of V elements (16
// bytes where the row length and every pointer allow, else one element), chunk c going to thread
// c % group, two chunks a thread where the row allows. Short rows (at most 128 chunks: head_dim 128
// for q_norm/k_norm) take a power-of-two group of at most 32 lanes, several rows to a warp, reduced
// by shuffles alone; long rows (hidden 4096) take a whole block of up to 1024 threads, reduced
// through shared memory. Each thread keeps its first K chunks in registers between the statistics
// and the output, so a row leaves HBM once; chunks beyond those (rows of more than 2048 chunks) are
// read again. A grid of a few waves strides over the rows (q_norm has 2M of them).
//
// rstd is recomputed in the backward rather than saved by the forward: the backward reads x anyway
// and sum(x^2) rides in the same reduction as sum(w*dy*x), so it costs a second float in one
// reduction instead of a [rows] fp32 write in every forward (and in every checkpoint recompute)
// plus a tensor kept alive until the backward. It is summed the same way as in the forward.
#include "kernels/rmsnorm.h"

#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/elementwise_vec.cuh"

namespace elastic::kernels {

namespace {

using namespace detail;

constexpr int kRowsBlock = 256;    // block size where several short rows share a block
constexpr int kShortChunks = 128;  // up to here a row gets at most 32 lanes of 4 chunks each

struct ForwardArgs {
  const void* a;  // the input, or the first term of the residual sum
  const void* b;  // the second term, or null for a plain norm
  const void* w;
  void* h;  // a + b (with b only)
  void* y;
  int64_t rows, n;
  float eps;
};

struct BackwardArgs {
  const void* dy;
  const void* x;
  const void* w;
  const void* dres;  // added to dx; may be null
  void* dx;
  int64_t rows, n;
  float eps;
};

// x + y in fp32 as ATen's add computes it before rounding to the storage dtype. Inline PTX
// because the build's --use_fast_math flushes subnormals in plain float arithmetic, which would
// break the bit-for-bit match of h with the separate add there.
__device__ __forceinline__ float add_rn(float x, float y) {
  float r;
  asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(x), "f"(y));
  return r;
}

// The forward's input at elements [e, e + V) as fp32: a, or a + b rounded to T, which is also
// written to h where h is set. Recomputing it from a and b gives the same bits.
template <typename T, int V>
__device__ __forceinline__ void input(const T* a, const T* b, T* h, int64_t e, float (&v)[V]) {
  load<T, V>(a + e, v);
  if (b == nullptr) return;
  float bv[V];
  load<T, V>(b + e, bv);
#pragma unroll
  for (int i = 0; i < V; ++i) v[i] = to_float(from_float<T>(add_rn(v[i], bv[i])));
  if (h != nullptr) store<T, V>(h + e, v);
}

// Sums N values over the threads of a row's group, leaving the total in every one of them: within
// a warp by an xor butterfly (each lane adds the same pairs, addition commutes, so all lanes end
// with the same bits); for a whole block (group == blockDim.x, a multiple of 32, more than 32) the
// warps' totals then go through shared memory and every thread adds them in the same order. Every
// thread of the block must call it; the block case synchronises.
template <int N>
__device__ __forceinline__ void group_sum(float (&v)[N], int group, float (*smem)[32]) {
  for (int offset = (group < 32 ? group : 32) / 2; offset > 0; offset /= 2) {
#pragma unroll
    for (int i = 0; i < N; ++i) v[i] += __shfl_xor_sync(0xffffffffu, v[i], offset);
  }
  if (group <= 32) return;
  const int warp = static_cast<int>(threadIdx.x) / 32, warps = group / 32;
  if (threadIdx.x % 32 == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) smem[i][warp] = v[i];
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float t = 0.f;
    for (int k = 0; k < warps; ++k) t += smem[i][k];
    v[i] = t;
  }
  __syncthreads();  // the next row's writes wait for every read of this one
}

template <int V>
__device__ __forceinline__ void sum_squares(const float (&x)[V], float& ss) {
#pragma unroll
  for (int i = 0; i < V; ++i) ss += x[i] * x[i];
}

template <typename T, int V>
__device__ __forceinline__ void normalize_store(const float (&x)[V], const T* w, T* y, float rstd) {
  float wv[V], out[V];
  load<T, V>(w, wv);
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = x[i] * rstd * wv[i];
  store<T, V>(y, out);
}

// K = 4 runs only in blocks of kRowsBlock threads (short rows), so it may use more registers than
// a 1024-thread block allows; K <= 2 also runs in blocks of up to 1024 (long rows).
template <typename T, int V, int K>
__global__ void __launch_bounds__(K <= 2 ? 1024 : kRowsBlock) rmsnorm_forward_kernel(ForwardArgs p, int group) {
  __shared__ float smem[1][32];
  const auto* a = static_cast<const T*>(p.a);
  const auto* b = static_cast<const T*>(p.b);
  const auto* w = static_cast<const T*>(p.w);
  auto* h = static_cast<T*>(p.h);
  auto* y = static_cast<T*>(p.y);
  const int64_t chunks = p.n / V;
  const int per_block = static_cast<int>(blockDim.x) / group, col = static_cast<int>(threadIdx.x) % group;
  const float inv_n = 1.f / static_cast<float>(p.n);
  // The loop bound is block-uniform, so every thread reaches each group_sum.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * per_block; base < p.rows;
       base += static_cast<int64_t>(gridDim.x) * per_block) {
    const int64_t row = base + static_cast<int64_t>(threadIdx.x) / group;
    const bool active = row < p.rows;
    const int64_t off = row * p.n;
    float x[K][V];
    float ss[1] = {0.f};
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t c = col + static_cast<int64_t>(j) * group;
      if (active && c < chunks) {
        input<T, V>(a, b, h, off + c * V, x[j]);
        sum_squares<V>(x[j], ss[0]);
      }
    }
    for (int64_t c = col + static_cast<int64_t>(K) * group; active && c < chunks; c += group) {
      float t[V];
      input<T, V>(a, b, h, off + c * V, t);
      sum_squares<V>(t, ss[0]);
    }
    group_sum<1>(ss, group, smem);
    const float rstd = rsqrtf(ss[0] * inv_n + p.eps);
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t c = col + static_cast<int64_t>(j) * group;
      if (active && c < chunks) normalize_store<T, V>(x[j], w + c * V, y + off + c * V, rstd);
    }
    for (int64_t c = col + static_cast<int64_t>(K) * group; active && c < chunks; c += group) {
      float t[V];
      input<T, V>(a, b, nullptr, off + c * V, t);
      normalize_store<T, V>(t, w + c * V, y + off + c * V, rstd);
    }
  }
}

// Loads x and g = w * dy of one chunk and adds to s = {sum x^2, sum g * x}.
template <typename T, int V>
__device__ __forceinline__ void grad_inputs(const T* dy, const T* x, const T* w, float (&xv)[V], float (&gv)[V],
                                            float (&s)[2]) {
  float dyv[V], wv[V];
  load<T, V>(x, xv);
  load<T, V>(dy, dyv);
  load<T, V>(w, wv);
#pragma unroll
  for (int i = 0; i < V; ++i) {
    gv[i] = dyv[i] * wv[i];
    s[0] += xv[i] * xv[i];
    s[1] += gv[i] * xv[i];
  }
}

template <typename T, int V>
__device__ __forceinline__ void grad_store(const float (&xv)[V], const float (&gv)[V], const T* dres, T* dx,
                                           float rstd, float coef) {
  float out[V];
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = rstd * (gv[i] - xv[i] * coef);
  if (dres != nullptr) {
    float r[V];
    load<T, V>(dres, r);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] += r[i];
  }
  store<T, V>(dx, out);
}

template <typename T, int V, int K>
__global__ void __launch_bounds__(K <= 2 ? 1024 : kRowsBlock) rmsnorm_backward_kernel(BackwardArgs p, int group) {
  __shared__ float smem[2][32];
  const auto* dy = static_cast<const T*>(p.dy);
  const auto* x = static_cast<const T*>(p.x);
  const auto* w = static_cast<const T*>(p.w);
  const auto* dres = static_cast<const T*>(p.dres);
  auto* dx = static_cast<T*>(p.dx);
  const int64_t chunks = p.n / V;
  const int per_block = static_cast<int>(blockDim.x) / group, col = static_cast<int>(threadIdx.x) % group;
  const float inv_n = 1.f / static_cast<float>(p.n);
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * per_block; base < p.rows;
       base += static_cast<int64_t>(gridDim.x) * per_block) {
    const int64_t row = base + static_cast<int64_t>(threadIdx.x) / group;
    const bool active = row < p.rows;
    const int64_t off = row * p.n;
    float xv[K][V], gv[K][V];
    float s[2] = {0.f, 0.f};
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t c = col + static_cast<int64_t>(j) * group;
      if (active && c < chunks) grad_inputs<T, V>(dy + off + c * V, x + off + c * V, w + c * V, xv[j], gv[j], s);
    }
    for (int64_t c = col + static_cast<int64_t>(K) * group; active && c < chunks; c += group) {
      float xt[V], gt[V];
      grad_inputs<T, V>(dy + off + c * V, x + off + c * V, w + c * V, xt, gt, s);
    }
    group_sum<2>(s, group, smem);
    const float rstd = rsqrtf(s[0] * inv_n + p.eps);
    // mean(g * x_hat) * rstd, with x_hat = x * rstd: dx = rstd * (g - x * coef).
    const float coef = rstd * rstd * s[1] * inv_n;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t c = col + static_cast<int64_t>(j) * group;
      if (active && c < chunks) {
        grad_store<T, V>(xv[j], gv[j], dres == nullptr ? nullptr : dres + off + c * V, dx + off + c * V, rstd, coef);
      }
    }
    for (int64_t c = col + static_cast<int64_t>(K) * group; active && c < chunks; c += group) {
      float xt[V], gt[V], unused[2] = {0.f, 0.f};
      grad_inputs<T, V>(dy + off + c * V, x + off + c * V, w + c * V, xt, gt, unused);
      grad_store<T, V>(xt, gt, dres == nullptr ? nullptr : dres + off + c * V, dx + off + c * V, rstd, coef);
    }
  }
}

struct Plan {
  int group = 1, threads = kRowsBlock, k = 1;
  unsigned int blocks = 1;
};

// rows > 0, chunks > 0.
Plan plan_for(int64_t rows, int64_t chunks) {
  Plan p;
  if (chunks <= kShortChunks) {
    // Two chunks a lane where the row allows: twice the bytes in flight of one, for a few more
    // registers (q_norm in bf16: 8 lanes a row, 4 rows a warp).
    while (p.group < 32 && p.group * 2 < chunks) p.group *= 2;
    const int64_t per_thread = (chunks + p.group - 1) / p.group;  // 1 to 4
    p.k = per_thread <= 1 ? 1 : per_thread <= 2 ? 2 : 4;
  } else {
    // Two chunks a thread: 256 threads for hidden 4096 in bf16, 512 in fp32.
    p.threads = static_cast<int>(std::min<int64_t>(1024, ((chunks + 1) / 2 + 31) / 32 * 32));
    p.group = p.threads;
    p.k = 2;
  }
  int device = 0, sms = 0, threads_per_sm = 0;
  ELASTIC_CUDA_CHECK(cudaGetDevice(&device));
  ELASTIC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  ELASTIC_CUDA_CHECK(cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
  const int64_t per_block = p.threads / p.group;
  const int64_t needed = (rows + per_block - 1) / per_block;
  // Four waves at full occupancy: enough blocks to balance, and far below gridDim's limit.
  const int64_t cap = int64_t{4} * std::max(sms, 1) * std::max(threads_per_sm / p.threads, 1);
  p.blocks = static_cast<unsigned int>(std::min(needed, cap));
  return p;
}

template <typename T, int V, int K>
void start(const ForwardArgs& a, const Plan& p, cudaStream_t stream) {
  rmsnorm_forward_kernel<T, V, K><<<p.blocks, p.threads, 0, stream>>>(a, p.group);
}

template <typename T, int V, int K>
void start(const BackwardArgs& a, const Plan& p, cudaStream_t stream) {
  rmsnorm_backward_kernel<T, V, K><<<p.blocks, p.threads, 0, stream>>>(a, p.group);
}

template <typename T, int V, typename Args>
void launch(const Args& a, cudaStream_t stream) {
  const Plan p = plan_for(a.rows, a.n / V);
  if (p.k == 1) {
    start<T, V, 1>(a, p, stream);
  } else if (p.k == 2) {
    start<T, V, 2>(a, p, stream);
  } else {
    start<T, V, 4>(a, p, stream);
  }
  ELASTIC_CUDA_LAUNCH_CHECK();
}

// 16-byte chunks need every pointer aligned (null ones pass): with rows of a whole number of
// chunks, every row starts aligned too.
bool aligned(const ForwardArgs& a) {
  return aligned16(a.a) && aligned16(a.b) && aligned16(a.w) && aligned16(a.h) && aligned16(a.y);
}

bool aligned(const BackwardArgs& a) {
  return aligned16(a.dy) && aligned16(a.x) && aligned16(a.w) && aligned16(a.dres) && aligned16(a.dx);
}

template <typename T, typename Args>
void run(const Args& a, cudaStream_t stream) {
  if (a.rows <= 0 || a.n <= 0) return;
  constexpr int V = 16 / sizeof(T);
  if (a.n % V == 0 && aligned(a)) {
    launch<T, V>(a, stream);
  } else {
    launch<T, 1>(a, stream);
  }
}

template <typename Args>
void run(const Args& a, bool bf16, cudaStream_t stream) {
  if (bf16) {
    run<__nv_bfloat16>(a, stream);
  } else {
    run<float>(a, stream);
  }
}

}  // namespace

void rmsnorm_forward(const void* x, const void* w, void* y, int64_t rows, int64_t n, float eps, bool bf16,
                     cudaStream_t stream) {
  run(ForwardArgs{x, nullptr, w, nullptr, y, rows, n, eps}, bf16, stream);
}

void add_rmsnorm_forward(const void* a, const void* b, const void* w, void* h, void* y, int64_t rows, int64_t n,
                         float eps, bool bf16, cudaStream_t stream) {
  run(ForwardArgs{a, b, w, h, y, rows, n, eps}, bf16, stream);
}

void rmsnorm_backward(const void* dy, const void* x, const void* w, const void* dres, void* dx, int64_t rows,
                      int64_t n, float eps, bool bf16, cudaStream_t stream) {
  run(BackwardArgs{dy, x, w, dres, dx, rows, n, eps}, bf16, stream);
}

}  // namespace elastic::kernels
