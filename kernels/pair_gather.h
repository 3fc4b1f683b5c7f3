// Row gather and scatter of selected (token, kv head) pairs for the routing-aware hybrid-attention
// backward (src/attention/hybrid.cpp). The source is a contiguous [tokens, heads, R] tensor, so
// each pair is one contiguous run of R elements, and whole runs are moved with 16-byte accesses
// where R and the pointers allow (ATen's advanced indexing copies them element by element).
// Plain CUDA: the C++ side (src/attention/pair_gather.cpp) checks the tensors.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace elastic::kernels {

// x / dst viewed as [tokens, heads, row_elems]; the dense side is [rows, row_elems]; tok and head
// are int64 [rows] on the device.
struct PairRows {
  int64_t rows = 0, row_elems = 0, tokens = 0, heads = 0;
};

// Preconditions (unchecked on the host: checking would need a synchronisation):
//  * 0 <= tok[r] < tokens and 0 <= head[r] < heads; a pair outside traps the kernel (a fatal
//    device error, as ATen's index assertion is).
//  * scatter: the pairs (tok[r], head[r]) are distinct within one call, so every destination
//    element has one writer and no atomics are needed. Repeated pairs give an undefined result.
//  * the dense side and the [tokens, heads, R] side do not overlap.

// out[r, :] = x[tok[r], head[r], :]. A bit copy (exact), bf16 when `bf16`, else fp32.
void pair_gather(const void* x, void* out, const int64_t* tok, const int64_t* head, PairRows shape, bool bf16,
                 cudaStream_t stream);

// dst[tok[r], head[r], :] = src[r, :], or += with `accumulate` (summed in fp32, rounded once to
// bf16). Rows of dst not named by a pair are not touched.
void pair_scatter(void* dst, const void* src, const int64_t* tok, const int64_t* head, PairRows shape,
                  bool accumulate, bool bf16, cudaStream_t stream);

}  // namespace elastic::kernels
