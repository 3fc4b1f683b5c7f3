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
constexpr const char* kBackwardFn = "streaming_attention_kernel_backward";

bool half_type(torch::ScalarType t) { return t == torch::kBFloat16 || t == torch::kHalf; }

bool supported_head_dim(int64_t d) { return d == 64 || d == 128; }

bool streaming_mask(MaskSpec mask) { return !mask.full() && mask.window >= 1 && mask.sink >= 0; }

// `fn` names the caller in the messages.
void check_inputs(const char* fn, const torch::Tensor& out, const torch::Tensor& lse, const torch::Tensor& q,
                  const torch::Tensor& k, const torch::Tensor& v, const Packing& pack, MaskSpec mask, double scale) {
  ELASTIC_CHECK(q.defined() && q.dim() == 3 && q.is_cuda() && q.is_contiguous() && half_type(q.scalar_type()),
                fn << ": q must be a contiguous bfloat16 or float16 CUDA tensor [tokens, q_heads, head_dim], got "
                    << util::describe(q));
  const int64_t T = q.size(0), Hq = q.size(1), d = q.size(2);
  ELASTIC_CHECK(supported_head_dim(d), fn << ": head_dim must be 64 or 128, got " << d
                                           << " (attention_forward takes other sizes)");
  ELASTIC_CHECK(k.defined() && k.dim() == 3 && k.size(0) == T && k.size(2) == d && k.size(1) > 0 &&
                    k.scalar_type() == q.scalar_type() && k.device() == q.device() && k.is_contiguous(),
                fn << ": k must be a contiguous " << q.scalar_type() << " tensor [" << T << ", kv_heads, " << d
                    << "] on " << q.device() << ", got " << util::describe(k));
  util::check_like(fn, v, k, "v");
  ELASTIC_CHECK(Hq % k.size(1) == 0,
                fn << ": q_heads (" << Hq << ") must be a multiple of kv_heads (" << k.size(1) << ")");
  ELASTIC_CHECK(pack.tokens() == T, fn << ": q has " << T << " tokens but the packing has " << pack.tokens());
  ELASTIC_CHECK(pack.cu_i32.defined() && pack.cu_i32.dim() == 1 && pack.cu_i32.size(0) == pack.num_samples() + 1 &&
                    pack.cu_i32.scalar_type() == torch::kInt32 && pack.cu_i32.device() == q.device() &&
                    pack.cu_i32.is_contiguous(),
                fn << ": the packing's cu_i32 must be a contiguous int32 tensor [" << pack.num_samples() + 1
                    << "] on " << q.device() << ", got " << util::describe(pack.cu_i32));
  ELASTIC_CHECK(streaming_mask(mask), fn << ": needs a streaming mask (window >= 1, sink >= 0), got sink "
                                          << mask.sink << ", window " << mask.window);
  ELASTIC_CHECK(std::isfinite(scale) && scale > 0, fn << ": scale must be positive and finite, got " << scale);
  util::check_like(fn, out, q, "out");
  for (const auto* t : {&q, &k, &v, &out}) {
    ELASTIC_CHECK(reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 == 0,
                  fn << ": q, k, v and out must start 16-byte aligned (the kernel moves 16-byte chunks)");
  }
  ELASTIC_CHECK(lse.defined() && lse.dim() == 2 && lse.size(0) == Hq && lse.size(1) == T &&
                    lse.scalar_type() == torch::kFloat32 && lse.device() == q.device() && lse.is_contiguous(),
                fn << ": lse must be a contiguous float32 tensor of shape [" << Hq << ", " << T
                    << "] (q_heads, tokens) on " << q.device() << ", got " << util::describe(lse));
}

#ifdef ELASTIC_WITH_CUDA
kernels::StreamingAttentionArgs forward_args(const torch::Tensor& out, const torch::Tensor& lse, const torch::Tensor& q,
                                             const torch::Tensor& k, const torch::Tensor& v, const Packing& pack,
                                             MaskSpec mask, double scale) {
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
  return a;
}
#endif

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
  check_inputs(kFn, out, lse, q, k, v, pack, mask, scale);
#ifdef ELASTIC_WITH_CUDA
  const c10::cuda::CUDAGuard guard(q.device());
  kernels::streaming_attention_forward(forward_args(out, lse, q, k, v, pack, mask, scale),
                                       at::cuda::getCurrentCUDAStream());
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

AttnGrads streaming_attention_kernel_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                                             const torch::Tensor& v, const AttnForward& fwd, const Packing& pack,
                                             MaskSpec mask, double scale) {
  check_inputs(kBackwardFn, fwd.out, fwd.lse, q, k, v, pack, mask, scale);
  util::check_like(kBackwardFn, dout, q, "dout");
  ELASTIC_CHECK(reinterpret_cast<uintptr_t>(dout.data_ptr()) % 16 == 0,
                kBackwardFn << ": dout must start 16-byte aligned (the kernel moves 16-byte chunks)");
  AttnGrads g;
#ifdef ELASTIC_WITH_CUDA
  const c10::cuda::CUDAGuard guard(q.device());
  g.dq = torch::empty_like(q, torch::MemoryFormat::Contiguous);
  g.dk = torch::empty_like(k, torch::MemoryFormat::Contiguous);
  g.dv = torch::empty_like(v, torch::MemoryFormat::Contiguous);
  kernels::StreamingAttentionBackwardArgs a;
  a.fwd = forward_args(fwd.out, fwd.lse, q, k, v, pack, mask, scale);
  a.dout = dout.data_ptr();
  a.dq = g.dq.data_ptr();
  a.dk = g.dk.data_ptr();
  a.dv = g.dv.data_ptr();
  // Scratch from the caching allocator, ordered on the current stream like the launches: the
  // kernels initialise what they need of it.
  const auto f32 = q.options().dtype(torch::kFloat32);
  const auto dq_accum = torch::empty(q.sizes(), f32);
  const auto delta = torch::empty({q.size(1), q.size(0)}, f32);
  const auto dkv_sink = torch::empty({kernels::streaming_attention_backward_sink_floats(a)}, f32);
  a.dq_accum = dq_accum.data_ptr<float>();
  a.delta = delta.data_ptr<float>();
  a.dkv_sink = dkv_sink.numel() > 0 ? dkv_sink.data_ptr<float>() : nullptr;
  kernels::streaming_attention_backward(a, at::cuda::getCurrentCUDAStream());
#else
  util::no_cuda_kernels(kBackwardFn);
#endif
  return g;
}

}  // namespace elastic::attention
