#include "kernels/cuda_check.h"
#include "kernels/elementwise_vec.cuh"
#include "kernels/head_rows.h"

namespace elastic::kernels {

namespace {

using namespace detail;

enum class Op { kGather, kScatter, kScatterAdd };

template <typename T, int V>
using Word = typename Raw<V * sizeof(T)>::type;

// Item it is chunk c of head j of row i (it = (i * num_heads + j) * chunks + c): consecutive
// threads touch consecutive words of one head's run, then the next head's. I is the item index
// type, 32-bit whenever the items fit.
template <Op op, typename T, int V, typename I>
__global__ void head_rows_kernel(const T* __restrict__ src, T* __restrict__ dst, const HeadRows s, I items,
                                 I chunks) {
  const I per_row = chunks * static_cast<I>(s.num_heads);
  for (I it = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; it < items;
       it += static_cast<I>(gridDim.x) * blockDim.x) {
    const I i = it / per_row, rem = it - i * per_row, j = rem / chunks, c = rem - j * chunks;
    const int64_t e = static_cast<int64_t>(c) * V;
    const int64_t headed = i * s.head_row + s.heads[j] * s.head_stride + e;
    const int64_t dense = i * s.dense_row + j * s.dense_stride + e;
    if constexpr (op == Op::kGather) {
      Word<T, V> w{};
      if (static_cast<int64_t>(i) < s.valid) w = __ldg(reinterpret_cast<const Word<T, V>*>(src + headed));
      *reinterpret_cast<Word<T, V>*>(dst + dense) = w;
    } else if constexpr (op == Op::kScatter) {
      copy_chunk<T, V>(dst + headed, src + dense);
    } else {
      add_chunk<T, V>(dst + headed, src + dense);
    }
  }
}

template <Op op, typename T, int V>
void launch_width(const void* src, void* dst, const HeadRows& s, cudaStream_t stream) {
  // A scatter reads only the rows that exist on the headed side.
  const int64_t rows = op == Op::kGather ? s.rows : s.valid;
  const int64_t chunks = s.elems / V, items = rows * s.num_heads * chunks;
  if (items == 0) return;
  const auto* st = static_cast<const T*>(src);
  auto* dt = static_cast<T*>(dst);
  const unsigned int grid = grid_for(items);
  // 32-bit items: it stays below items + one grid stride (< 2^31 + 2^28), so it never wraps.
  if (items <= INT32_MAX) {
    head_rows_kernel<op, T, V, uint32_t>
        <<<grid, kThreads, 0, stream>>>(st, dt, s, static_cast<uint32_t>(items), static_cast<uint32_t>(chunks));
  } else {
    head_rows_kernel<op, T, V, int64_t><<<grid, kThreads, 0, stream>>>(st, dt, s, items, chunks);
  }
  ELASTIC_CUDA_LAUNCH_CHECK();
}

// 16-byte words when every run starts 16-byte aligned (pointers, strides and the run length in
// whole words), single elements otherwise.
template <Op op, typename T>
void launch(const void* src, void* dst, const HeadRows& s, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const bool words = s.elems % V == 0 && s.head_row % V == 0 && s.head_stride % V == 0 && s.dense_row % V == 0 &&
                     s.dense_stride % V == 0 && aligned16(src) && aligned16(dst);
  if (words) {
    launch_width<op, T, V>(src, dst, s, stream);
  } else {
    launch_width<op, T, 1>(src, dst, s, stream);
  }
}

template <Op op>
void launch_dtype(const void* src, void* dst, const HeadRows& s, bool bf16, cudaStream_t stream) {
  if (bf16) {
    launch<op, __nv_bfloat16>(src, dst, s, stream);
  } else {
    launch<op, float>(src, dst, s, stream);
  }
}

}  // namespace

void head_rows_gather(const void* headed, void* dense, const HeadRows& shape, bool bf16, cudaStream_t stream) {
  launch_dtype<Op::kGather>(headed, dense, shape, bf16, stream);
}

void head_rows_scatter(void* headed, const void* dense, const HeadRows& shape, bool accumulate, bool bf16,
                       cudaStream_t stream) {
  if (accumulate) {
    launch_dtype<Op::kScatterAdd>(dense, headed, shape, bf16, stream);
  } else {
    launch_dtype<Op::kScatter>(dense, headed, shape, bf16, stream);
  }
}

}  // namespace elastic::kernels
