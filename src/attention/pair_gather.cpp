#include "attention/pair_gather.h"

#include <string>
#include <vector>

#include "util/error.h"
#include "util/kernel_dispatch.h"

#ifdef ELASTIC_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/pair_gather.h"
#endif

namespace elastic::attention {

namespace {

// An error's account of a tensor, with its strides where contiguity is what failed.
std::string describe_layout(const torch::Tensor& t) {
  if (!t.defined() || t.is_contiguous()) return util::describe(t);
  return util::describe(t) + " with strides " + c10::str(t.strides()) + " (not contiguous)";
}

// x or dst: the [T, Hkv, ...] side whose rows the pairs name.
void check_paired(const char* fn, const torch::Tensor& t, const char* name) {
  ELASTIC_CHECK(t.defined() && t.dim() >= 2 && t.is_contiguous(),
                fn << ": " << name << " must be a contiguous tensor [tokens, kv_heads, ...], got "
                   << describe_layout(t));
}

// tok or head; rows < 0: any length.
void check_index(const char* fn, const torch::Tensor& t, const char* name, int64_t rows, torch::Device dev) {
  ELASTIC_CHECK(t.defined() && t.scalar_type() == torch::kInt64 && t.dim() == 1 && (rows < 0 || t.size(0) == rows) &&
                    t.device() == dev && t.is_contiguous(),
                fn << ": " << name << " must be a contiguous int64 tensor ["
                   << (rows < 0 ? std::string("rows") : "rows=" + std::to_string(rows)) << "] on " << dev
                   << ", got " << describe_layout(t));
}

void check_indices(const char* fn, const torch::Tensor& tok, const torch::Tensor& head, torch::Device dev) {
  check_index(fn, tok, "tok", -1, dev);
  check_index(fn, head, "head", tok.size(0), dev);
}

// [rows, paired.sizes()[2:]...]: the gathered side.
std::vector<int64_t> dense_shape(const torch::Tensor& paired, int64_t rows) {
  std::vector<int64_t> shape{rows};
  for (int64_t i = 2; i < paired.dim(); ++i) shape.push_back(paired.size(i));
  return shape;
}

void check_dense(const char* fn, const torch::Tensor& t, const char* name, const torch::Tensor& paired, int64_t rows) {
  const auto shape = dense_shape(paired, rows);
  ELASTIC_CHECK(t.defined() && t.sizes() == c10::IntArrayRef(shape) && t.scalar_type() == paired.scalar_type() &&
                    t.device() == paired.device() && t.is_contiguous(),
                fn << ": " << name << " must be a contiguous " << paired.scalar_type() << " tensor of shape "
                   << c10::IntArrayRef(shape) << " on " << paired.device() << ", got " << describe_layout(t));
}

#ifdef ELASTIC_WITH_CUDA
kernels::PairRows pair_rows(const torch::Tensor& paired, int64_t rows) {
  int64_t row_elems = 1;
  for (int64_t i = 2; i < paired.dim(); ++i) row_elems *= paired.size(i);
  return {rows, row_elems, paired.size(0), paired.size(1)};
}
#endif

}  // namespace

torch::Tensor gather_pairs_composed(const torch::Tensor& x, const torch::Tensor& tok, const torch::Tensor& head) {
  const torch::NoGradGuard no_grad;
  return x.index({tok, head}).contiguous();
}

void scatter_pairs_composed(const torch::Tensor& dst, const torch::Tensor& src, const torch::Tensor& tok,
                            const torch::Tensor& head, bool accumulate) {
  const torch::NoGradGuard no_grad;
  c10::List<std::optional<torch::Tensor>> indices;
  indices.push_back(tok);
  indices.push_back(head);
  dst.index_put_(indices, src, accumulate);
}

namespace {

// gather_pairs_out after its checks (gather_pairs makes the output itself and skips the out check).
void gather_into(const torch::Tensor& out, const torch::Tensor& x, const torch::Tensor& tok, const torch::Tensor& head) {
#ifdef ELASTIC_WITH_CUDA
  if (util::uses_fused_kernels(x)) {
    const c10::cuda::CUDAGuard guard(x.device());
    kernels::pair_gather(x.data_ptr(), out.data_ptr(), tok.data_ptr<int64_t>(), head.data_ptr<int64_t>(),
                         pair_rows(x, tok.size(0)), util::is_bf16(x), at::cuda::getCurrentCUDAStream());
    return;
  }
#endif
  const torch::NoGradGuard no_grad;
  out.copy_(gather_pairs_composed(x, tok, head));
}

}  // namespace

torch::Tensor gather_pairs(const torch::Tensor& x, const torch::Tensor& tok, const torch::Tensor& head) {
  check_paired("gather_pairs", x, "x");
  check_indices("gather_pairs", tok, head, x.device());
  if (!util::uses_fused_kernels(x)) return gather_pairs_composed(x, tok, head);
  auto out = torch::empty(dense_shape(x, tok.size(0)), x.options());
  gather_into(out, x, tok, head);
  return out;
}

void gather_pairs_out(const torch::Tensor& out, const torch::Tensor& x, const torch::Tensor& tok,
                      const torch::Tensor& head) {
  check_paired("gather_pairs", x, "x");
  check_indices("gather_pairs", tok, head, x.device());
  check_dense("gather_pairs", out, "out", x, tok.size(0));
  gather_into(out, x, tok, head);
}

void scatter_pairs(const torch::Tensor& dst, const torch::Tensor& src, const torch::Tensor& tok,
                   const torch::Tensor& head, bool accumulate) {
  check_paired("scatter_pairs", dst, "dst");
  check_indices("scatter_pairs", tok, head, dst.device());
  check_dense("scatter_pairs", src, "src", dst, tok.size(0));
#ifdef ELASTIC_WITH_CUDA
  if (util::uses_fused_kernels(dst)) {
    const c10::cuda::CUDAGuard guard(dst.device());
    kernels::pair_scatter(dst.data_ptr(), src.data_ptr(), tok.data_ptr<int64_t>(), head.data_ptr<int64_t>(),
                          pair_rows(dst, tok.size(0)), accumulate, util::is_bf16(dst), at::cuda::getCurrentCUDAStream());
    return;
  }
#endif
  scatter_pairs_composed(dst, src, tok, head, accumulate);
}

}  // namespace elastic::attention
