// The elementwise work of hybrid attention (src/attention/hybrid.cpp), one pass each. Tensors
// [T, Hq, d] are contiguous (viewed as [T, Hkv, G, d], G = Hq / Hkv), bf16 when `bf16`, else
// fp32; w is the fp32 [B, Hkv] routing weight and sample_id the int64 [T] sample of each
// token, so the weight of token t and query head hq is w[sample_id[t], hq / G].
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace elastic::kernels {

struct HybridShape {
  int64_t tokens, q_heads, kv_heads, head_dim;
};

// out = sa + w * (fa - sa), as w * fa + (1 - w) * sa: exactly fa where w = 1, sa where w = 0.
void hybrid_blend_forward(const void* fa, const void* sa, const float* w, const int64_t* sample_id, void* out,
                          HybridShape shape, bool bf16, cudaStream_t stream);

// ds[b, h] = sum over the tokens of sample b, the query heads of group h and d of (fa - sa) * dout,
// accumulated in fp32 (ds: fp32 [samples, Hkv], zeroed here first; the order of the atomic adds
// varies between runs).
void hybrid_blend_ds(const void* fa, const void* sa, const void* dout, const int64_t* sample_id, float* ds,
                     int64_t samples, HybridShape shape, bool bf16, cudaStream_t stream);

// dout_fa = dout * w and dout_sa = dout * (1 - w), the upstream gradients of the two branches;
// either output may be null (not written).
void hybrid_blend_weighted_dout(const void* dout, const float* w, const int64_t* sample_id, void* dout_fa,
                                void* dout_sa, HybridShape shape, bool bf16, cudaStream_t stream);

}  // namespace elastic::kernels
