#include "attention/sink_merge.h"

#include "util/error.h"
#include "util/kernel_dispatch.h"

#ifdef ELASTIC_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/sink_merge.h"
#endif

namespace elastic::attention {

namespace {

void check_lse(const torch::Tensor& t, const char* name, int64_t heads, int64_t tokens, torch::Device dev) {
  ELASTIC_CHECK(t.defined() && t.dim() == 2 && t.size(0) == heads && t.size(1) == tokens &&
                    t.scalar_type() == torch::kFloat32 && t.device() == dev && t.is_contiguous(),
                "sink_merge: " << name << " must be a contiguous float32 tensor of shape [" << heads << ", " << tokens
                               << "] (heads, tokens) on " << dev << ", got " << util::describe(t));
}

}  // namespace

void sink_merge(const torch::Tensor& out, const torch::Tensor& lse, const torch::Tensor& out_w,
                const torch::Tensor& lse_w, const torch::Tensor& out_s, const torch::Tensor& lse_s,
                const torch::Tensor& positions, int64_t first) {
  ELASTIC_CHECK(out_w.defined() && out_w.dim() == 3 && out_w.is_cuda() && out_w.is_contiguous(),
                "sink_merge: out_w must be a contiguous CUDA tensor [tokens, heads, head_dim], got "
                    << util::describe(out_w));
  const auto st = out_w.scalar_type();
  ELASTIC_CHECK(st == torch::kFloat32 || st == torch::kHalf || st == torch::kBFloat16,
                "sink_merge: out_w must be float32, float16 or bfloat16, got " << st);
  const int64_t T = out_w.size(0), H = out_w.size(1);
  util::check_like("sink_merge", out, out_w, "out");
  util::check_like("sink_merge", out_s, out_w, "out_s");
  check_lse(lse, "lse", H, T, out_w.device());
  check_lse(lse_w, "lse_w", H, T, out_w.device());
  check_lse(lse_s, "lse_s", H, T, out_w.device());
  ELASTIC_CHECK(positions.defined() && positions.dim() == 1 && positions.size(0) == T &&
                    positions.scalar_type() == torch::kInt64 && positions.device() == out_w.device() &&
                    positions.is_contiguous(),
                "sink_merge: positions must be a contiguous int64 tensor of shape [" << T << "] on "
                                                                                     << out_w.device());
#ifdef ELASTIC_WITH_CUDA
  const c10::cuda::CUDAGuard guard(out_w.device());
  kernels::SinkMergeArgs a;
  a.out = out.data_ptr();
  a.lse = lse.data_ptr<float>();
  a.out_w = out_w.data_ptr();
  a.lse_w = lse_w.data_ptr<float>();
  a.out_s = out_s.data_ptr();
  a.lse_s = lse_s.data_ptr<float>();
  a.positions = positions.data_ptr<int64_t>();
  a.first = first;
  a.tokens = T;
  a.heads = H;
  a.head_dim = out_w.size(2);
  a.dtype = st == torch::kFloat32 ? kernels::SinkMergeDtype::kFloat32
            : st == torch::kHalf  ? kernels::SinkMergeDtype::kFloat16
                                  : kernels::SinkMergeDtype::kBFloat16;
  kernels::sink_merge(a, at::cuda::getCurrentCUDAStream());
#else
  util::no_cuda_kernels("sink_merge");
#endif
}

}  // namespace elastic::attention
