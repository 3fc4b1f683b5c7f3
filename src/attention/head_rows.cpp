#include "attention/head_rows.h"

#include <vector>

#include "util/device_copy.h"
#include "util/error.h"
#include "util/kernel_dispatch.h"

#ifdef ELASTIC_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/head_rows.h"
#endif

namespace elastic::attention {

namespace {

// Element (i, j, e) sits at headed_offset + i * head_row + heads[j] * head_stride + e on the headed
// side (every one of the Hkv heads is addressable there) and at i * dense_row + j * dense_stride + e
// on the dense side; offsets and strides in elements, on top of each tensor's own data pointer.
struct Layout {
  int64_t rows = 0, valid = 0, elems = 0, head_row = 0, head_stride = 0, dense_row = 0, dense_stride = 0;
  int64_t headed_offset = 0, num_kv = 0;
};

std::vector<int64_t> host_heads(const char* fn, const torch::Tensor& heads, int64_t Hkv) {
  ELASTIC_CHECK(heads.defined() && heads.is_cpu() && heads.scalar_type() == torch::kInt64 && heads.dim() == 1,
                fn << ": heads must be an int64 CPU tensor [m], got " << util::describe(heads));
  auto c = heads.contiguous();
  std::vector<int64_t> h(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  std::vector<bool> seen(static_cast<size_t>(std::max<int64_t>(Hkv, 0)), false);
  for (int64_t x : h) {
    ELASTIC_CHECK(x >= 0 && x < Hkv, fn << ": head " << x << " is outside [0, " << Hkv << ")");
    ELASTIC_CHECK(!seen[static_cast<size_t>(x)], fn << ": head " << x << " is listed twice");
    seen[static_cast<size_t>(x)] = true;
  }
  return h;
}

// t [T, Hkv * G, d] with a row's heads in one run; returns G * d.
int64_t check_rows(const char* fn, const torch::Tensor& t, const char* name, int64_t s0, int64_t n, int64_t Hkv) {
  ELASTIC_CHECK(t.defined() && t.dim() == 3 && Hkv > 0 && t.size(1) % Hkv == 0 && t.stride(2) == 1 &&
                    t.stride(1) == t.size(2),
                fn << ": " << name << " must be [tokens, kv_heads * G, d] with each row's heads in one run, kv_heads="
                   << Hkv << ", got " << util::describe(t) << " with strides " << t.strides());
  ELASTIC_CHECK(s0 >= 0 && n >= 0 && s0 + n <= t.size(0),
                fn << ": rows [" << s0 << ", " << s0 + n << ") are outside " << name << "'s " << t.size(0));
  return t.size(1) / Hkv * t.size(2);
}

void check_lse(const char* fn, const torch::Tensor& lse, int64_t s0, int64_t n, int64_t Hkv) {
  ELASTIC_CHECK(lse.defined() && lse.dim() == 2 && Hkv > 0 && lse.size(0) % Hkv == 0 && lse.stride(1) == 1,
                fn << ": lse must be [kv_heads * G, tokens] with stride(1) == 1, kv_heads=" << Hkv << ", got "
                   << util::describe(lse) << " with strides " << lse.strides());
  ELASTIC_CHECK(s0 >= 0 && n >= 0 && s0 + n <= lse.size(1),
                fn << ": columns [" << s0 << ", " << s0 + n << ") are outside lse's " << lse.size(1));
}

// Rows [s0, s0 + valid) of t [T, Hkv * G, d], a (token, KV head) pair being one run of G * d; the
// dense side's rows and heads dense_row and dense_stride apart.
Layout token_rows(const torch::Tensor& t, int64_t s0, int64_t rows, int64_t valid, int64_t Hkv, int64_t dense_row,
                  int64_t dense_stride) {
  const int64_t E = t.size(1) / Hkv * t.size(2);
  return Layout{rows, valid, E, t.stride(0), E, dense_row, dense_stride, s0 * t.stride(0), Hkv};
}

// Columns [s0, s0 + n) of lse [Hkv * G, T] as (i = query head of the group, KV head, e = token): the
// sample's tokens are the run; the dense side [m * G, n] has rows dense_row apart.
Layout lse_columns(const torch::Tensor& lse, int64_t s0, int64_t n, int64_t Hkv, int64_t dense_row) {
  const int64_t G = lse.size(0) / Hkv;
  return Layout{G, G, n, lse.stride(0), G * lse.stride(0), dense_row, G * dense_row, s0, Hkv};
}

// headed's Layout view over every KV head, and dense's over the selected ones.
torch::Tensor headed_view(const torch::Tensor& headed, const Layout& l) {
  return headed.as_strided({l.valid, l.num_kv, l.elems}, {l.head_row, l.head_stride, 1},
                           headed.storage_offset() + l.headed_offset);
}
torch::Tensor dense_view(const torch::Tensor& dense, const Layout& l, int64_t m) {
  return dense.as_strided({l.rows, m, l.elems}, {l.dense_row, l.dense_stride, 1}, dense.storage_offset());
}

#ifdef ELASTIC_WITH_CUDA
bool on_kernel(const torch::Tensor& t, const std::vector<int64_t>& heads) {
  return util::uses_fused_kernels(t) && static_cast<int64_t>(heads.size()) <= kernels::kMaxHeadRowsHeads;
}

kernels::HeadRows kernel_shape(const Layout& l, const std::vector<int64_t>& heads) {
  kernels::HeadRows s{l.rows, l.valid, l.elems, l.head_row, l.head_stride, l.dense_row, l.dense_stride,
                      static_cast<int>(heads.size())};
  for (size_t j = 0; j < heads.size(); ++j) s.heads[j] = static_cast<int>(heads[j]);
  return s;
}

void* at_offset(const torch::Tensor& t, int64_t elems) {
  return static_cast<char*>(t.data_ptr()) + elems * static_cast<int64_t>(t.element_size());
}
#endif

void gather(const torch::Tensor& headed, const torch::Tensor& dense, const Layout& l, const std::vector<int64_t>& heads) {
  if (heads.empty() || l.rows == 0 || l.elems == 0) return;
#ifdef ELASTIC_WITH_CUDA
  if (on_kernel(headed, heads)) {
    const c10::cuda::CUDAGuard guard(headed.device());
    kernels::head_rows_gather(at_offset(headed, l.headed_offset), dense.data_ptr(), kernel_shape(l, heads),
                              util::is_bf16(headed), at::cuda::getCurrentCUDAStream());
    return;
  }
#endif
  const torch::NoGradGuard no_grad;
  auto d = dense_view(dense, l, static_cast<int64_t>(heads.size()));
  if (l.valid > 0)
    d.narrow(0, 0, l.valid).copy_(headed_view(headed, l).index_select(1, util::to_device(heads, headed.device())));
  if (l.rows > l.valid) d.narrow(0, l.valid, l.rows - l.valid).zero_();
}

void scatter(const torch::Tensor& headed, const torch::Tensor& dense, const Layout& l, const std::vector<int64_t>& heads,
             bool accumulate) {
  if (heads.empty() || l.valid == 0 || l.elems == 0) return;
#ifdef ELASTIC_WITH_CUDA
  if (on_kernel(headed, heads)) {
    const c10::cuda::CUDAGuard guard(headed.device());
    kernels::head_rows_scatter(at_offset(headed, l.headed_offset), dense.data_ptr(),
                               kernel_shape(l, heads), accumulate, util::is_bf16(headed),
                               at::cuda::getCurrentCUDAStream());
    return;
  }
#endif
  const torch::NoGradGuard no_grad;
  auto h = headed_view(headed, l);
  auto vals = dense_view(dense, l, static_cast<int64_t>(heads.size())).narrow(0, 0, l.valid);
  auto idx = util::to_device(heads, headed.device());
  accumulate ? h.index_add_(1, idx, vals) : h.index_copy_(1, idx, vals);
}

void check_pair(const char* fn, const torch::Tensor& a, const torch::Tensor& b) {
  ELASTIC_CHECK(b.defined() && a.scalar_type() == b.scalar_type() && a.device() == b.device(),
                fn << ": src must match dst's dtype and device, " << util::describe(a) << " on " << a.device()
                   << ", got " << util::describe(b) << (b.defined() ? " on " + b.device().str() : std::string()));
}

}  // namespace

bool every_head_in_order(const torch::Tensor& heads, int64_t Hkv) {
  if (!heads.defined()) return true;
  if (heads.numel() != Hkv) return false;
  const auto h = host_heads("every_head_in_order", heads, Hkv);
  for (int64_t j = 0; j < Hkv; ++j)
    if (h[static_cast<size_t>(j)] != j) return false;
  return true;
}

torch::Tensor gather_heads(const torch::Tensor& t, int64_t s0, int64_t n, int64_t rows, const torch::Tensor& heads,
                           int64_t Hkv, bool head_major) {
  const auto E = check_rows("gather_heads", t, "t", s0, n, Hkv);
  ELASTIC_CHECK(rows >= n, "gather_heads: rows " << rows << " must be at least the sample's " << n);
  const auto h = host_heads("gather_heads", heads, Hkv);
  const int64_t m = static_cast<int64_t>(h.size()), G = t.size(1) / Hkv, d = t.size(2);
  auto out = head_major ? torch::empty({m, rows, G, d}, t.options()) : torch::empty({rows, m * G, d}, t.options());
  gather(t, out, token_rows(t, s0, rows, n, Hkv, head_major ? E : m * E, head_major ? rows * E : E), h);
  return out;
}

void scatter_heads(const torch::Tensor& dst, const torch::Tensor& src, int64_t s0, int64_t n,
                   const torch::Tensor& heads, int64_t Hkv, bool accumulate) {
  const auto E = check_rows("scatter_heads", dst, "dst", s0, n, Hkv);
  const auto h = host_heads("scatter_heads", heads, Hkv);
  const int64_t m = static_cast<int64_t>(h.size());
  check_pair("scatter_heads", dst, src);
  ELASTIC_CHECK(src.dim() == 3 && src.size(0) == n && src.size(1) == m * (dst.size(1) / Hkv) && src.size(2) == dst.size(2),
                "scatter_heads: src must be [" << n << ", " << m * (dst.size(1) / Hkv) << ", " << dst.size(2)
                                               << "], got " << util::describe(src));
  // A row's selected heads in one run, rows at any stride (cuDNN's outputs are views).
  auto s = src.stride(2) == 1 && src.stride(1) == src.size(2) ? src : src.contiguous();
  scatter(dst, s, token_rows(dst, s0, n, n, Hkv, s.stride(0), E), h, accumulate);
}

torch::Tensor gather_lse_heads(const torch::Tensor& lse, int64_t s0, int64_t n, const torch::Tensor& heads, int64_t Hkv) {
  check_lse("gather_lse_heads", lse, s0, n, Hkv);
  const auto h = host_heads("gather_lse_heads", heads, Hkv);
  const int64_t m = static_cast<int64_t>(h.size()), G = lse.size(0) / Hkv;
  auto out = torch::empty({m * G, n}, lse.options());
  gather(lse, out, lse_columns(lse, s0, n, Hkv, n), h);
  return out;
}

void scatter_lse_heads(const torch::Tensor& lse, const torch::Tensor& src, int64_t s0, int64_t n,
                       const torch::Tensor& heads, int64_t Hkv) {
  check_lse("scatter_lse_heads", lse, s0, n, Hkv);
  const auto h = host_heads("scatter_lse_heads", heads, Hkv);
  const int64_t m = static_cast<int64_t>(h.size()), G = lse.size(0) / Hkv;
  check_pair("scatter_lse_heads", lse, src);
  ELASTIC_CHECK(src.dim() == 2 && src.size(0) == m * G && src.size(1) == n,
                "scatter_lse_heads: src must be [" << m * G << ", " << n << "], got " << util::describe(src));
  auto s = src.stride(1) == 1 ? src : src.contiguous();  // cuDNN's log-sum-exp is a view of padded rows
  scatter(lse, s, lse_columns(lse, s0, n, Hkv, s.stride(0)), h, /*accumulate=*/false);
}

}  // namespace elastic::attention
