#include "kernels/pair_gather.h"

#include "kernels/cuda_check.h"
#include "kernels/elementwise_vec.cuh"

namespace elastic::kernels {

namespace {

using namespace detail;

enum class Op { kGather, kScatter, kScatterAdd };

// Row of pair r in the [tokens * heads] rows of the paired side. A pair outside traps: an
// unchecked one would read or write outside the tensor.
__device__ __forceinline__ int64_t pair_row(const int64_t* __restrict__ tok, const int64_t* __restrict__ head,
                                            int64_t r, int64_t tokens, int64_t heads) {
  const int64_t t = __ldg(tok + r), h = __ldg(head + r);
  if (t < 0 || t >= tokens || h < 0 || h >= heads) __trap();
  return t * heads + h;
}

// A flat grid-stride loop over chunks of V elements: item i is chunk c of dense row r
// (i = r * chunks + c), so consecutive threads touch consecutive 16-byte words of a row and a
// warp spans rows when a row is shorter than the warp (R = 128 bf16 is 16 chunks). I is the
// item index type: 32-bit whenever the items fit, which keeps the division per item cheap.
template <Op op, typename T, int V, typename I>
__global__ void pair_rows_kernel(const T* __restrict__ src, T* __restrict__ dst, const int64_t* __restrict__ tok,
                                 const int64_t* __restrict__ head, I items, I chunks, int64_t tokens, int64_t heads) {
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < items;
       i += static_cast<I>(gridDim.x) * blockDim.x) {
    const I r = i / chunks, c = i - r * chunks;
    const int64_t paired = (pair_row(tok, head, r, tokens, heads) * chunks + c) * V;
    const int64_t dense = static_cast<int64_t>(i) * V;
    if constexpr (op == Op::kGather) {
      copy_chunk<T, V>(dst + dense, src + paired);
    } else if constexpr (op == Op::kScatter) {
      copy_chunk<T, V>(dst + paired, src + dense);
    } else {
      add_chunk<T, V>(dst + paired, src + dense);
    }
  }
}

template <Op op, typename T, int V>
void launch_width(const void* src, void* dst, const int64_t* tok, const int64_t* head, const PairRows& s,
                  cudaStream_t stream) {
  const int64_t chunks = s.row_elems / V, items = s.rows * chunks;
  const auto* st = static_cast<const T*>(src);
  auto* dt = static_cast<T*>(dst);
  const unsigned int grid = grid_for(items);
  // 32-bit indices: i stays below items + one grid stride (< 2^31 + 2^28), so it never wraps.
  if (items <= INT32_MAX) {
    pair_rows_kernel<op, T, V, uint32_t><<<grid, kThreads, 0, stream>>>(
        st, dt, tok, head, static_cast<uint32_t>(items), static_cast<uint32_t>(chunks), s.tokens, s.heads);
  } else {
    pair_rows_kernel<op, T, V, int64_t><<<grid, kThreads, 0, stream>>>(st, dt, tok, head, items, chunks, s.tokens,
                                                                        s.heads);
  }
  ELASTIC_CUDA_LAUNCH_CHECK();
}

// 16-byte chunks when every row starts 16-byte aligned (R * sizeof(T) a multiple of 16 and both
// base pointers aligned), single elements otherwise.
template <Op op, typename T>
void launch(const void* src, void* dst, const int64_t* tok, const int64_t* head, const PairRows& s,
            cudaStream_t stream) {
  if (s.rows == 0 || s.row_elems == 0) return;
  constexpr int V = 16 / sizeof(T);
  if ((s.row_elems * static_cast<int64_t>(sizeof(T))) % 16 == 0 && aligned16(src) && aligned16(dst)) {
    launch_width<op, T, V>(src, dst, tok, head, s, stream);
  } else {
    launch_width<op, T, 1>(src, dst, tok, head, s, stream);
  }
}

template <Op op>
void launch_dtype(const void* src, void* dst, const int64_t* tok, const int64_t* head, const PairRows& s, bool bf16,
                  cudaStream_t stream) {
  if (bf16) {
    launch<op, __nv_bfloat16>(src, dst, tok, head, s, stream);
  } else {
    launch<op, float>(src, dst, tok, head, s, stream);
  }
}

}  // namespace

void pair_gather(const void* x, void* out, const int64_t* tok, const int64_t* head, PairRows shape, bool bf16,
                 cudaStream_t stream) {
  launch_dtype<Op::kGather>(x, out, tok, head, shape, bf16, stream);
}

void pair_scatter(void* dst, const void* src, const int64_t* tok, const int64_t* head, PairRows shape,
                  bool accumulate, bool bf16, cudaStream_t stream) {
  if (accumulate) {
    launch_dtype<Op::kScatterAdd>(src, dst, tok, head, shape, bf16, stream);
  } else {
    launch_dtype<Op::kScatter>(src, dst, tok, head, shape, bf16, stream);
  }
}

}  // namespace elastic::kernels
