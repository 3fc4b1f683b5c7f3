// sm_80 building blocks shared by the streaming attention kernels (kernels/streaming_attention.cu,
// kernels/streaming_attention_bwd.cu): cp.async, ldmatrix, mma.sync m16n8k16 with fp32
// accumulation, and the XOR-swizzled shared-memory tile layout that the fragment loads assume.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace elastic::kernels::sm80 {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes from global to shared memory, or 16 zero bytes when !valid.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}

// 4 bytes from global to shared memory, or 4 zero bytes when !valid (rows of fp32 statistics,
// which start at any 4-byte boundary).
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int Pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a (16x16, row-major) * b (16x8, column-major), fp32 accumulation.
template <class T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats as one register of two 16-bit values, the first in the low half (the lower column
// of an mma fragment).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t u;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&u, &v, sizeof(u));
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&u, &v, sizeof(u));
  }
  return u;
}

// Tiles of D-element rows in shared memory, addressed in bytes. The 16-byte chunk c of row r sits
// at chunk c ^ (r & 7): the eight rows that one ldmatrix phase reads (same chunk, consecutive rows)
// then fall into eight different bank groups, where a row stride of 128 or 256 bytes would put
// them all into one. Tiles start 1024-byte aligned, so stepping the chunk by 2 * kk is an XOR of
// the address with kk << 5 (only the chunk bits change): one instruction per fragment load.
template <class T, int D>
struct Layout {
  static constexpr int kRowBytes = D * static_cast<int>(sizeof(T));
  static constexpr int kChunks = D / 8;
  __device__ __forceinline__ static uint32_t offset(int row, int chunk) {
    return static_cast<uint32_t>(row * kRowBytes + ((chunk ^ (row & 7)) << 4));
  }
};

// Rows [0, valid) of a Rows x D tile from global rows `stride` elements apart, the other rows
// zero: a NaN read past the sample's end would survive its zero probability in P V.
template <class T, int D, int Rows, int Threads>
__device__ __forceinline__ void load_tile(uint32_t tile, const T* src, int64_t stride, int valid) {
  using L = Layout<T, D>;
  constexpr int kStep = Threads / L::kChunks;
  static_assert(Rows % kStep == 0 && kStep % 8 == 0, "tile rows must split evenly over the threads");
  const int r = static_cast<int>(threadIdx.x) / L::kChunks, c = static_cast<int>(threadIdx.x) % L::kChunks;
  const uint32_t dst = tile + L::offset(r, c);
  const T* row = src + r * stride + c * 8;
#pragma unroll
  for (int i = 0; i < Rows / kStep; ++i) {
    const bool ok = r + i * kStep < valid;
    cp_async16(dst + i * kStep * L::kRowBytes, ok ? row : src, ok);
    row += kStep * stride;
  }
}

__device__ __forceinline__ void st_shared(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}

__device__ __forceinline__ uint4 ld_shared16(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}

}  // namespace elastic::kernels::sm80
