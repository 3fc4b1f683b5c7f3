#include "attention/hybrid_blend.h"

#include "util/error.h"
#include "util/kernel_dispatch.h"

#ifdef ELASTIC_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/hybrid_blend.h"
#endif

namespace elastic::attention {

namespace {

using util::is_bf16;
using util::kernel_dtype;
using util::describe;
bool fused(const torch::Tensor& t) { return util::uses_fused_kernels(t); }

// x (fa, sa or dout) [T, Hq, d] and routing weights (or ds) [B, Hkv] with Hkv dividing Hq.
void check_shapes(const char* fn, const torch::Tensor& x, const char* x_name, const torch::Tensor& weights,
                  const char* weights_name) {
  ELASTIC_CHECK(x.defined() && x.dim() == 3,
                fn << ": " << x_name << " must be [tokens, q_heads, head_dim], got " << describe(x));
  ELASTIC_CHECK(weights.defined() && weights.dim() == 2 && weights.size(1) > 0 && x.size(1) % weights.size(1) == 0,
                fn << ": " << weights_name << " must be [samples, kv_heads] with kv_heads dividing q_heads="
                   << x.size(1) << ", got " << describe(weights));
}

void check_same_shape(const char* fn, const torch::Tensor& t, const torch::Tensor& fa, const char* name) {
  ELASTIC_CHECK(t.defined() && t.sizes() == fa.sizes(),
                fn << ": " << name << " must have fa's shape " << fa.sizes() << ", got " << describe(t));
}

// Per-token, per-KV-head weight [T, Hkv, 1, 1] from per-sample weights [B, Hkv].
torch::Tensor token_weights(const torch::Tensor& s, const Packing& pack) {
  return s.index_select(0, pack.sample_id).unsqueeze(-1).unsqueeze(-1);
}

#ifdef ELASTIC_WITH_CUDA
using util::check_like;

// The checks every kernel shares; returns its shape.
kernels::HybridShape kernel_shape(const char* fn, const torch::Tensor& x, const char* x_name,
                                  const torch::Tensor& weights, const char* weights_name,
                                  const torch::Tensor& sample_id) {
  ELASTIC_CHECK(x.defined() && x.is_cuda() && kernel_dtype(x) && x.dim() == 3 && x.is_contiguous(),
                fn << ": " << x_name
                   << " must be a contiguous bf16 or fp32 CUDA tensor [tokens, q_heads, head_dim], got " << describe(x));
  check_shapes(fn, x, x_name, weights, weights_name);
  ELASTIC_CHECK(sample_id.defined() && sample_id.scalar_type() == torch::kInt64 && sample_id.dim() == 1 &&
                    sample_id.size(0) == x.size(0) && sample_id.device() == x.device(),
                fn << ": sample_id must be int64 [tokens=" << x.size(0) << "] on " << x.device() << ", got "
                   << describe(sample_id));
  return {x.size(0), x.size(1), weights.size(1), x.size(2)};
}
#endif

}  // namespace

torch::Tensor hybrid_blend_composed(const torch::Tensor& fa, const torch::Tensor& sa, const torch::Tensor& s,
                                    const Packing& pack) {
  check_shapes("hybrid blend", fa, "fa", s, "routing weights");
  check_same_shape("hybrid blend", sa, fa, "sa");
  const int64_t T = fa.size(0), Hq = fa.size(1), Hkv = s.size(1), d = fa.size(2);
  auto wt = token_weights(s.to(fa.scalar_type()), pack);
  auto fa4 = fa.view({T, Hkv, Hq / Hkv, d}), sa4 = sa.view({T, Hkv, Hq / Hkv, d});
  return (sa4 + wt * (fa4 - sa4)).view({T, Hq, d});
}

torch::Tensor hybrid_ds_composed(const torch::Tensor& fa, const torch::Tensor& sa, const torch::Tensor& dout,
                                 const torch::Tensor& s, const Packing& pack) {
  check_shapes("hybrid ds", fa, "fa", s, "routing weights");
  check_same_shape("hybrid ds", sa, fa, "sa");
  check_same_shape("hybrid ds", dout, fa, "dout");
  const int64_t T = fa.size(0), Hq = fa.size(1), Hkv = s.size(1), d = fa.size(2);
  const auto acc = fa.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  auto per_tok = ((fa.to(acc) - sa.to(acc)) * dout.to(acc)).view({T, Hkv, Hq / Hkv, d}).sum({2, 3});  // [T,Hkv]
  auto ds = torch::zeros({s.size(0), Hkv}, per_tok.options()).index_add_(0, pack.sample_id, per_tok);
  return ds.to(s.scalar_type());
}

std::pair<torch::Tensor, torch::Tensor> hybrid_branch_douts_composed(const torch::Tensor& dout,
                                                                     const torch::Tensor& s, const Packing& pack,
                                                                     bool want_fa, bool want_sa) {
  check_shapes("hybrid branch gradients", dout, "dout", s, "routing weights");
  const int64_t T = dout.size(0), Hq = dout.size(1), Hkv = s.size(1), d = dout.size(2);
  auto d4 = dout.contiguous().view({T, Hkv, Hq / Hkv, d});
  auto weighted = [&](const torch::Tensor& w) {
    return (d4 * token_weights(w.to(dout.scalar_type()), pack)).view({T, Hq, d});
  };
  return {want_fa ? weighted(s) : torch::Tensor(), want_sa ? weighted(1 - s) : torch::Tensor()};
}

torch::Tensor hybrid_blend(const torch::Tensor& fa, const torch::Tensor& sa, const torch::Tensor& s,
                           const Packing& pack) {
  if (!fused(fa)) return hybrid_blend_composed(fa, sa, s, pack);
  auto fc = fa.contiguous();
  auto out = torch::empty(fc.sizes(), fc.options());
  hybrid_blend_out(out, fc, sa.contiguous(), s, pack.sample_id);
  return out;
}

torch::Tensor hybrid_ds(const torch::Tensor& fa, const torch::Tensor& sa, const torch::Tensor& dout,
                        const torch::Tensor& s, const Packing& pack) {
  if (!fused(fa)) return hybrid_ds_composed(fa, sa, dout, s, pack);
  check_shapes("hybrid ds", fa, "fa", s, "routing weights");
  auto ds = torch::empty({s.size(0), s.size(1)}, fa.options().dtype(torch::kFloat32));
  hybrid_ds_out(ds, fa.contiguous(), sa.contiguous(), dout.contiguous(), pack.sample_id);
  return ds.to(s.scalar_type());
}

std::pair<torch::Tensor, torch::Tensor> hybrid_branch_douts(const torch::Tensor& dout, const torch::Tensor& s,
                                                            const Packing& pack, bool want_fa, bool want_sa) {
  if (!fused(dout)) return hybrid_branch_douts_composed(dout, s, pack, want_fa, want_sa);
  auto dc = dout.contiguous();
  torch::Tensor dfa, dsa;
  if (want_fa) dfa = torch::empty(dc.sizes(), dc.options());
  if (want_sa) dsa = torch::empty(dc.sizes(), dc.options());
  hybrid_branch_douts_out(dfa, dsa, dc, s, pack.sample_id);
  return {dfa, dsa};
}

void hybrid_blend_out(const torch::Tensor& out, const torch::Tensor& fa, const torch::Tensor& sa,
                      const torch::Tensor& s, const torch::Tensor& sample_id) {
#ifdef ELASTIC_WITH_CUDA
  const char* fn = "hybrid blend";
  const auto shape = kernel_shape(fn, fa, "fa", s, "routing weights", sample_id);
  check_like(fn, sa, fa, "sa");
  check_like(fn, out, fa, "output");
  const c10::cuda::CUDAGuard guard(fa.device());
  auto w = s.detach().to(fa.device(), torch::kFloat32).contiguous();
  auto sid = sample_id.contiguous();
  kernels::hybrid_blend_forward(fa.data_ptr(), sa.data_ptr(), w.data_ptr<float>(), sid.data_ptr<int64_t>(),
                                out.data_ptr(), shape, is_bf16(fa), at::cuda::getCurrentCUDAStream());
#else
  util::no_cuda_kernels("hybrid blend");
#endif
}

void hybrid_ds_out(const torch::Tensor& ds, const torch::Tensor& fa, const torch::Tensor& sa,
                   const torch::Tensor& dout, const torch::Tensor& sample_id) {
#ifdef ELASTIC_WITH_CUDA
  const char* fn = "hybrid ds";
  const auto shape = kernel_shape(fn, fa, "fa", ds, "ds", sample_id);
  check_like(fn, sa, fa, "sa");
  check_like(fn, dout, fa, "dout");
  ELASTIC_CHECK(ds.scalar_type() == torch::kFloat32 && ds.is_contiguous() && ds.device() == fa.device(),
                fn << ": ds must be a contiguous fp32 tensor [samples, kv_heads] on " << fa.device() << ", got "
                   << describe(ds));
  const c10::cuda::CUDAGuard guard(fa.device());
  auto sid = sample_id.contiguous();
  kernels::hybrid_blend_ds(fa.data_ptr(), sa.data_ptr(), dout.data_ptr(), sid.data_ptr<int64_t>(),
                           ds.data_ptr<float>(), ds.size(0), shape, is_bf16(fa), at::cuda::getCurrentCUDAStream());
#else
  util::no_cuda_kernels("hybrid ds");
#endif
}

void hybrid_branch_douts_out(const torch::Tensor& dout_fa, const torch::Tensor& dout_sa, const torch::Tensor& dout,
                             const torch::Tensor& s, const torch::Tensor& sample_id) {
#ifdef ELASTIC_WITH_CUDA
  const char* fn = "hybrid branch gradients";
  const auto shape = kernel_shape(fn, dout, "dout", s, "routing weights", sample_id);
  if (dout_fa.defined()) check_like(fn, dout_fa, dout, "full-attention gradient");
  if (dout_sa.defined()) check_like(fn, dout_sa, dout, "streaming gradient");
  if (!dout_fa.defined() && !dout_sa.defined()) return;
  const c10::cuda::CUDAGuard guard(dout.device());
  auto w = s.detach().to(dout.device(), torch::kFloat32).contiguous();
  auto sid = sample_id.contiguous();
  kernels::hybrid_blend_weighted_dout(dout.data_ptr(), w.data_ptr<float>(), sid.data_ptr<int64_t>(),
                                      dout_fa.defined() ? dout_fa.data_ptr() : nullptr,
                                      dout_sa.defined() ? dout_sa.data_ptr() : nullptr, shape, is_bf16(dout),
                                      at::cuda::getCurrentCUDAStream());
#else
  util::no_cuda_kernels("hybrid branch gradients");
#endif
}

}  // namespace elastic::attention
