#include "attention/cudnn_band.h"

#include "util/error.h"
#include "util/log.h"

#ifdef ELASTIC_HAVE_CUDNN_FRONTEND
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cudnn_frontend.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>
#endif

namespace elastic::attention {

#ifdef ELASTIC_HAVE_CUDNN_FRONTEND
namespace {

namespace fe = cudnn_frontend;

enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kdO, kdQ, kdK, kdV };

struct Shape {
  bool backward;
  int64_t n, hq, hkv, d, window;  // window clipped to n: wider is plain causal
  float scale;
  torch::ScalarType dtype;
  c10::Device device;
};

// A tensor as cuDNN sees it: the caller's view, or a packed stand-in where the view's address or
// strides break cuDNN's 16-byte alignment, or where the engines rejected the caller's strides.
struct Operand {
  int64_t uid;
  torch::Tensor user, dev;
  bool output;
};

bool aligned(const torch::Tensor& t) {
  const int64_t bytes = t.element_size();
  if (reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0) return false;
  // Stats rows may start anywhere: cuDNN's own stats are packed [H, n] with any n.
  return t.scalar_type() == torch::kFloat32 || (t.stride(0) * bytes % 16 == 0 && t.stride(1) * bytes % 16 == 0);
}

void place(Operand& o, bool packed) {
  if (aligned(o.user) && (!packed || o.user.is_contiguous())) o.dev = o.user;
  else o.dev = o.output ? torch::empty(o.user.sizes(), o.user.options()) : o.user.clone(at::MemoryFormat::Contiguous);
}

// [n, H, d] seen as [1, H, n, d]; Stats [H, n] as [1, H, n, 1].
std::vector<int64_t> dims_of(const Operand& o) {
  const auto& t = o.dev;
  return o.uid == kStats ? std::vector<int64_t>{1, t.size(0), t.size(1), 1}
                         : std::vector<int64_t>{1, t.size(1), t.size(0), t.size(2)};
}
std::vector<int64_t> strides_of(const Operand& o) {
  const auto& t = o.dev;
  if (o.uid == kStats) return {t.size(0) * t.stride(0), t.stride(0), 1, 1};
  return {std::max(t.size(0) * t.stride(0), t.size(1) * t.stride(1)), t.stride(1), t.stride(0), 1};
}

std::vector<int64_t> cache_key(const Shape& s, const std::vector<Operand>& ops) {
  int32_t scale_bits;
  std::memcpy(&scale_bits, &s.scale, sizeof scale_bits);
  std::vector<int64_t> key{s.backward, s.device.index(), static_cast<int64_t>(s.dtype), s.n, s.hq, s.hkv,
                           s.d, s.window, scale_bits};
  for (const auto& o : ops) {
    const auto st = strides_of(o);
    key.insert(key.end(), st.begin(), st.end());
  }
  return key;
}

struct Plan {
  std::shared_ptr<fe::graph::Graph> graph;
  int64_t workspace = 0;
};

std::mutex g_mutex;  // guards the caches and the handles (a cudnnHandle_t is not thread-safe)
std::map<std::vector<int64_t>, std::shared_ptr<Plan>> g_plans;
std::set<std::vector<int64_t>> g_rejected;  // caller layouts the engines refused: go packed
std::map<int, cudnnHandle_t> g_handles;     // one per device, kept for the process

cudnnHandle_t handle_for(c10::Device device) {
  auto& h = g_handles[device.index()];
  if (!h) {
    const auto st = cudnnCreate(&h);
    ELASTIC_CHECK(st == CUDNN_STATUS_SUCCESS,
                  "cuDNN band attention: cudnnCreate on " << device << " failed: " << cudnnGetErrorString(st));
  }
  return h;
}

std::string describe(const Shape& s) {
  std::ostringstream os;
  os << "cuDNN band attention " << (s.backward ? "backward" : "forward") << " (n=" << s.n << ", Hq=" << s.hq
     << ", Hkv=" << s.hkv << ", d=" << s.d << ", window=" << s.window << ", " << s.dtype << ")";
  return os.str();
}

// Builds the graph for these operand layouts; an empty error string on success.
std::shared_ptr<Plan> build(const Shape& s, const std::vector<Operand>& ops, cudnnHandle_t handle, std::string& err) {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(s.dtype == torch::kBFloat16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  std::map<int64_t, const Operand*> by_uid;
  for (const auto& o : ops) by_uid[o.uid] = &o;
  auto describe_tensor = [&](fe::graph::Tensor_attributes& t, int64_t uid) {
    const Operand& o = *by_uid.at(uid);
    t.set_uid(uid).set_dim(dims_of(o)).set_stride(strides_of(o));
    if (uid == kStats) t.set_data_type(fe::DataType_t::FLOAT);
  };
  auto input = [&](int64_t uid, const char* name) {
    fe::graph::Tensor_attributes t;
    t.set_name(name);
    describe_tensor(t, uid);
    return g->tensor(t);
  };
  auto output = [&](const std::shared_ptr<fe::graph::Tensor_attributes>& t, int64_t uid) {
    t->set_output(true);
    describe_tensor(*t, uid);
  };
  // TOP_LEFT: row i and column j index the same token. The right bound 0 keeps j <= i; the left
  // bound w keeps j + w > i (see sliding_window_mask in utils/attn_score_modifiers.h), so exactly
  // i - w + 1 <= j <= i. A window covering the sequence is plain causal and needs no left bound.
  auto band = [&](auto& attrs) {
    attrs.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT).set_diagonal_band_right_bound(0);
    if (s.window < s.n) attrs.set_diagonal_band_left_bound(static_cast<int>(s.window));
  };
  auto Q = input(kQ, "Q"), K = input(kK, "K"), V = input(kV, "V");
  if (!s.backward) {
    auto attrs = fe::graph::SDPA_attributes().set_name("band_fwd").set_generate_stats(true).set_attn_scale(s.scale);
    band(attrs);
    auto [O, Stats] = g->sdpa(Q, K, V, attrs);
    output(O, kO);
    output(Stats, kStats);
  } else {
    auto O = input(kO, "O"), dO = input(kdO, "dO"), Stats = input(kStats, "Stats");
    auto attrs = fe::graph::SDPA_backward_attributes().set_name("band_bwd").set_attn_scale(s.scale);
    band(attrs);
    auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dO, Stats, attrs);
    output(dQ, kdQ);
    output(dK, kdK);
    output(dV, kdV);
  }
  auto step = [&](const char* what, fe::error_t e) {
    if (err.empty() && e.is_bad()) err = std::string(what) + ": " + e.get_message();
    return err.empty();
  };
  if (!step("validate", g->validate()) || !step("build_operation_graph", g->build_operation_graph(handle)) ||
      !step("create_execution_plans", g->create_execution_plans({fe::HeurMode_t::A})) ||
      !step("check_support", g->check_support()) || !step("build_plans", g->build_plans()))
    return nullptr;
  auto plan = std::make_shared<Plan>();
  plan->graph = g;
  if (!step("get_workspace_size", g->get_workspace_size(plan->workspace))) return nullptr;
  return plan;
}

void run(const Shape& s, std::vector<Operand> ops) {
  c10::cuda::CUDAGuard guard(s.device);
  std::lock_guard<std::mutex> lock(g_mutex);
  cudnnHandle_t handle = handle_for(s.device);
  bool packed = false;
  for (auto& o : ops) place(o, packed);
  auto key = cache_key(s, ops);
  if (g_rejected.count(key)) {
    packed = true;
    for (auto& o : ops) place(o, packed);
    key = cache_key(s, ops);
  }
  auto it = g_plans.find(key);
  if (it == g_plans.end()) {
    std::string err, direct_err;
    auto plan = build(s, ops, handle, err);
    if (!plan && !packed) {  // the engines may refuse the caller's strides: retry on packed stand-ins
      g_rejected.insert(key);
      direct_err = err;
      err.clear();
      packed = true;
      for (auto& o : ops) place(o, packed);
      key = cache_key(s, ops);
      plan = build(s, ops, handle, err);
    }
    ELASTIC_CHECK(plan, describe(s) << ": graph build failed: " << err
                                    << (direct_err.empty() ? "" : " (with the caller's strides: " + direct_err + ")"));
    if (!direct_err.empty())
      LOG_WARN(describe(s) << ": the caller's strides were refused (" << direct_err << "); running on packed copies");
    it = g_plans.emplace(key, plan).first;
  }
  const auto& plan = *it->second;
  const auto stream = at::cuda::getCurrentCUDAStream(s.device.index());
  const auto st = cudnnSetStream(handle, stream.stream());
  ELASTIC_CHECK(st == CUDNN_STATUS_SUCCESS, describe(s) << ": cudnnSetStream failed: " << cudnnGetErrorString(st));
  std::unordered_map<fe::graph::Tensor_attributes::uid_t, void*> pack;
  for (const auto& o : ops) pack[o.uid] = o.dev.data_ptr();
  auto ws = torch::empty({std::max<int64_t>(plan.workspace, 1)}, torch::dtype(torch::kUInt8).device(s.device));
  auto e = plan.graph->execute(handle, pack, ws.data_ptr());
  ELASTIC_CHECK(e.is_good(), describe(s) << ": execute failed: " << e.get_message());
  for (const auto& o : ops)
    if (o.output && o.dev.data_ptr() != o.user.data_ptr()) o.user.copy_(o.dev);
}

void check_args(const char* op, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                const torch::Tensor& lse, int64_t window, double scale) {
  ELASTIC_CHECK(cudnn_band_supported(q), op << ": needs a CUDA bf16/fp16 q [n, H, d] with d % 8 == 0 and d <= 128, got "
                                            << q.sizes() << " " << q.scalar_type() << " on " << q.device());
  const int64_t n = q.size(0), hq = q.size(1), d = q.size(2);
  for (const auto* t : {&k, &v}) {
    ELASTIC_CHECK(t->dim() == 3 && t->size(0) == n && t->size(2) == d && t->size(1) > 0 && hq % t->size(1) == 0 &&
                      t->size(1) == k.size(1) && t->scalar_type() == q.scalar_type() && t->device() == q.device(),
                  op << ": k/v must be [n, Hkv, d] like q " << q.sizes() << " with Hq % Hkv == 0, got " << t->sizes());
  }
  for (const auto* t : {&q, &k, &v})
    ELASTIC_CHECK(t->stride(2) == 1, op << ": the head dimension must be contiguous (stride " << t->stride(2) << ")");
  ELASTIC_CHECK(lse.scalar_type() == torch::kFloat32 && lse.dim() == 2 && lse.size(0) == hq && lse.size(1) == n &&
                    lse.stride(1) == 1 && lse.device() == q.device(),
                op << ": lse must be fp32 [Hq, n] = [" << hq << ", " << n << "] with stride(1) == 1, got "
                   << lse.sizes() << " " << lse.scalar_type() << " strides " << lse.strides());
  ELASTIC_CHECK(window >= 1 && scale > 0, op << ": window must be >= 1 and scale > 0, got " << window << ", " << scale);
}

void check_like(const char* op, const char* name, const torch::Tensor& t, const torch::Tensor& ref) {
  ELASTIC_CHECK(t.sizes() == ref.sizes() && t.scalar_type() == ref.scalar_type() && t.device() == ref.device() &&
                    t.stride(2) == 1,
                op << ": " << name << " must be " << ref.sizes() << " " << ref.scalar_type()
                   << " with a contiguous head dimension, got " << t.sizes() << " " << t.scalar_type());
}

Shape shape_of(bool backward, const torch::Tensor& q, const torch::Tensor& k, int64_t window, double scale) {
  return {backward, q.size(0), q.size(1), k.size(1), q.size(2), std::min(window, q.size(0)),
          static_cast<float>(scale), q.scalar_type(), q.device()};
}

// One token sees only itself, and cuDNN's backward refuses s_q = s_kv = 1: plain tensor maths.
void single_token(const torch::Tensor* dout, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                  const torch::Tensor& out, const torch::Tensor& lse, double scale, const torch::Tensor* dq,
                  const torch::Tensor* dk, const torch::Tensor* dv) {
  const int64_t hq = q.size(1), hkv = k.size(1), g = hq / hkv;
  auto qf = q[0].to(torch::kFloat32), kf = k[0].to(torch::kFloat32).repeat_interleave(g, 0),
       vf = v[0].to(torch::kFloat32).repeat_interleave(g, 0);  // [Hq, d]
  auto s = (qf * kf).sum(-1) * scale;                          // [Hq]
  if (!dout) {
    out[0].copy_(vf);
    lse.select(1, 0).copy_(s);
    return;
  }
  auto p = (s - lse.select(1, 0)).exp().unsqueeze(1);  // the band's share of a possibly larger softmax
  auto go = (*dout)[0].to(torch::kFloat32), of = out[0].to(torch::kFloat32);
  auto ds = p * ((go * vf).sum(-1, true) - (go * of).sum(-1, true));
  auto per_kv = [&](const torch::Tensor& t) { return t.view({hkv, g, -1}).sum(1); };
  (*dq)[0].copy_(ds * kf * scale);
  (*dk)[0].copy_(per_kv(ds * qf * scale));
  (*dv)[0].copy_(per_kv(p * go));
}

}  // namespace

bool cudnn_band_supported(const torch::Tensor& q) {
  if (!q.defined() || !q.is_cuda() || q.dim() != 3) return false;
  if (q.scalar_type() != torch::kBFloat16 && q.scalar_type() != torch::kFloat16) return false;
  if (q.size(2) % 8 != 0 || q.size(2) > 128) return false;
  return at::cuda::getDeviceProperties(q.device().index())->major >= 8;
}

void cudnn_band_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t window, double scale,
                        const torch::Tensor& out, const torch::Tensor& lse) {
  const char* op = "cudnn_band_forward";
  check_args(op, q, k, v, lse, window, scale);
  check_like(op, "out", out, q);
  if (q.size(0) == 0) return;
  if (q.size(0) == 1) return single_token(nullptr, q, k, v, out, lse, scale, nullptr, nullptr, nullptr);
  run(shape_of(false, q, k, window, scale),
      {{kQ, q, {}, false}, {kK, k, {}, false}, {kV, v, {}, false}, {kO, out, {}, true}, {kStats, lse, {}, true}});
}

void cudnn_band_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                         const torch::Tensor& out, const torch::Tensor& lse, int64_t window, double scale,
                         const torch::Tensor& dq, const torch::Tensor& dk, const torch::Tensor& dv) {
  const char* op = "cudnn_band_backward";
  check_args(op, q, k, v, lse, window, scale);
  check_like(op, "out", out, q);
  check_like(op, "dout", dout, q);
  check_like(op, "dq", dq, q);
  check_like(op, "dk", dk, k);
  check_like(op, "dv", dv, v);
  if (q.size(0) == 0) return;
  if (q.size(0) == 1) return single_token(&dout, q, k, v, out, lse, scale, &dq, &dk, &dv);
  run(shape_of(true, q, k, window, scale),
      {{kQ, q, {}, false}, {kK, k, {}, false}, {kV, v, {}, false}, {kO, out, {}, false}, {kdO, dout, {}, false},
       {kStats, lse, {}, false}, {kdQ, dq, {}, true}, {kdK, dk, {}, true}, {kdV, dv, {}, true}});
}

#else  // no cuDNN frontend in this build

bool cudnn_band_supported(const torch::Tensor&) { return false; }

void cudnn_band_forward(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, int64_t, double,
                        const torch::Tensor&, const torch::Tensor&) {
  ELASTIC_FAIL("cudnn_band_forward: this build has no cuDNN frontend (configure with ELASTIC_CUDA=ON and the "
               "nvidia-cudnn-frontend headers; tools/setup.sh installs them)");
}

void cudnn_band_backward(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                         const torch::Tensor&, const torch::Tensor&, int64_t, double, const torch::Tensor&,
                         const torch::Tensor&, const torch::Tensor&) {
  ELASTIC_FAIL("cudnn_band_backward: this build has no cuDNN frontend (configure with ELASTIC_CUDA=ON and the "
               "nvidia-cudnn-frontend headers; tools/setup.sh installs them)");
}

#endif

}  // namespace elastic::attention
