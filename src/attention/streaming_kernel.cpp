#include "attention/streaming_kernel.h"

#include <cmath>
#include <cstdint>

#include "util/error.h"
#include "util/kernel_dispatch.h"

#ifdef ELASTIC_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/streaming_attention.h"
#endif

namespace elastic::attention {

namespace {

constexpr const char* kFn = "streaming_attention_kernel";

bool half_type(torch::ScalarType t) { return t == torch::kBFloat16 || t == torch::kHalf; }

bool supported_head_dim(int64_t d) { return d == 64 || d == 128; }

bool streaming_mask(MaskSpec mask) { return !mask.full() && mask.window >= 1 && mask.sink >= 0; }

void check_inputs(const torch::Tensor& out, const torch::Tensor& lse, const torch::Tensor& q, const torch::Tensor& k,
                  const torch::Tensor& v, const Packing& pack, MaskSpec mask, double scale) {
  ELASTIC_CHECK(q.defined() && q.dim() == 3 && q.is_cuda() && q.is_contiguous() && half_type(q.scalar_type()),
                kFn << ": q must be a contiguous bfloat16 or float16 CUDA tensor [tokens, q_heads, head_dim], got "
                    << util::describe(q));
  const int64_t T = q.size(0), Hq = q.size(1), d = q.size(2);
  ELASTIC_CHECK(supported_head_dim(d), kFn << ": head_dim must be 64 or 128, got " << d
                                           << " (attention_forward takes other sizes)");
  ELASTIC_CHECK(k.defined() && k.dim() == 3 && k.size(0) == T && k.size(2) == d && k.size(1) > 0 &&
                    k.scalar_type() == q.scalar_type() && k.device() == q.device() && k.is_contiguous(),
                kFn << ": k must be a contiguous " << q.scalar_type() << " tensor [" << T << ", kv_heads, " << d
                    << "] on " << q.device() << ", got " << util::describe(k));
  util::check_like(kFn, v, k, "v");
  ELASTIC_CHECK(Hq % k.size(1) == 0,
                kFn << ": q_heads (" << Hq << ") must be a multiple of kv_heads (" << k.size(1) << ")");
  ELASTIC_CHECK(pack.tokens() == T, kFn << ": q has " << T << " tokens but the packing has " << pack.tokens());
  ELASTIC_CHECK(pack.cu_i32.defined() && pack.cu_i32.dim() == 1 && pack.cu_i32.size(0) == pack.num_samples() + 1 &&
                    pack.cu_i32.scalar_type() == torch::kInt32 && pack.cu_i32.device() == q.device() &&
                    pack.cu_i32.is_contiguous(),
                kFn << ": the packing's cu_i32 must be a contiguous int32 tensor [" << pack.num_samples() + 1
                    << "] on " << q.device() << ", got " << util::describe(pack.cu_i32));
  ELASTIC_CHECK(streaming_mask(mask), kFn << ": needs a streaming mask (window >= 1, sink >= 0), got sink "
                                          << mask.sink << ", window " << mask.window);
  ELASTIC_CHECK(std::isfinite(scale) && scale > 0, kFn << ": scale must be positive and finite, got " << scale);
  util::check_like(kFn, out, q, "out");
  for (const auto* t : {&q, &k, &v, &out}) {
    ELASTIC_CHECK(reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 == 0,
                  kFn << ": q, k, v and out must start 16-byte aligned (the kernel moves 16-byte chunks)");
  }
  ELASTIC_CHECK(lse.defined() && lse.dim() == 2 && lse.size(0) == Hq && lse.size(1) == T &&
                    lse.scalar_type() == torch::kFloat32 && lse.device() == q.device() && lse.is_contiguous(),
                kFn << ": lse must be a contiguous float32 tensor of shape [" << Hq << ", " << T
                    << "] (q_heads, tokens) on " << q.device() << ", got " << util::describe(lse));
}

}  // namespace

bool streaming_kernel_supports(const torch::Tensor& q, MaskSpec mask) {
#ifdef ELASTIC_WITH_CUDA
  return q.defined() && q.is_cuda() && q.dim() == 3 && half_type(q.scalar_type()) && supported_head_dim(q.size(2)) &&
         streaming_mask(mask);
#else
  return false;
#endif
}

void streaming_attention_kernel_out(const torch::Tensor& out, const torch::Tensor& lse, const torch::Tensor& q,
                                    const torch::Tensor& k, const torch::Tensor& v, const Packing& pack,
                                    MaskSpec mask, double scale) {
  check_inputs(out, lse, q, k, v, pack, mask, scale);
#ifdef ELASTIC_WITH_CUDA
  const c10::cuda::CUDAGuard guard(q.device());
  kernels::StreamingAttentionArgs a;
  a.q = q.data_ptr();
  a.k = k.data_ptr();
  a.v = v.data_ptr();
  a.out = out.data_ptr();
  a.lse = lse.data_ptr<float>();
  a.cu_seqlens = pack.cu_i32.data_ptr<int32_t>();
  a.samples = pack.num_samples();
  a.tokens = q.size(0);
  a.max_len = pack.max_len;
  a.q_heads = q.size(1);
  a.kv_heads = k.size(1);
  a.head_dim = q.size(2);
  a.sink = mask.sink;
  a.window = mask.window;
  a.scale = static_cast<float>(scale);
  a.dtype = q.scalar_type() == torch::kHalf ? kernels::AttentionDtype::kFloat16 : kernels::AttentionDtype::kBFloat16;
  kernels::streaming_attention_forward(a, at::cuda::getCurrentCUDAStream());
#else
  util::no_cuda_kernels(kFn);
#endif
}

AttnForward streaming_attention_kernel(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                       const Packing& pack, MaskSpec mask, double scale) {
  AttnForward f;
  if (q.defined() && q.dim() == 3) {
    f.out = torch::empty_like(q, torch::MemoryFormat::Contiguous);
    f.lse = torch::empty({q.size(1), q.size(0)}, q.options().dtype(torch::kFloat32));
  }
  streaming_attention_kernel_out(f.out, f.lse, q, k, v, pack, mask, scale);
  return f;
}

}  // namespace elastic::attention
