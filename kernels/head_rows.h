// Gather and scatter of some KV heads of a row range: what the per-sample attention calls
// (src/attention/sample_heads.cpp) copy in and out of cuDNN, with the heads known on the host.
// ATen's index_select / index_copy_ / index_add_ move these element by element and took 2.3-2.9x as
// long on the H100 (bench-kernels --only head_rows); here whole 16-byte words move where strides and
// pointers allow, the heads ride in the launch's arguments (no index tensor, no host-to-device copy)
// and a gather writes its padding rows' zeros.
// Plain CUDA: the C++ side (src/attention/head_rows.cpp) checks the tensors.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace elastic::kernels {

inline constexpr int kMaxHeadRowsHeads = 64;

// Element (i, j, e) of the headed side is at headed + i * head_row + heads[j] * head_stride + e,
// on the dense side at dense + i * dense_row + j * dense_stride + e; i < rows, j < num_heads,
// e < elems. Strides in elements. Rows from `valid` on exist only on the dense side.
struct HeadRows {
  int64_t rows = 0, valid = 0, elems = 0;
  int64_t head_row = 0, head_stride = 0, dense_row = 0, dense_stride = 0;
  int num_heads = 0;
  int heads[kMaxHeadRowsHeads] = {};
};

// Preconditions (the caller checks them): 0 <= heads[j], distinct heads for a scatter (one writer
// per element), no overlap between the two sides, every addressed element inside its tensor.

// dense(i, j, :) = headed(i, j, :) for i < valid, 0 for valid <= i < rows. A bit copy; bf16 when
// `bf16`, else fp32.
void head_rows_gather(const void* headed, void* dense, const HeadRows& shape, bool bf16, cudaStream_t stream);

// headed(i, j, :) = dense(i, j, :) for i < valid, or += with `accumulate` (summed in fp32, rounded
// once). Rows from `valid` on are not read.
void head_rows_scatter(void* headed, const void* dense, const HeadRows& shape, bool accumulate, bool bf16,
                       cudaStream_t stream);

}  // namespace elastic::kernels
