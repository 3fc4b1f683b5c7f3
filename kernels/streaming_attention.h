// Exact streaming attention (sink + local window) forward in one launch, and its backward, FlashAttention-2 style:
// every (query block, head, sample) walks the key blocks it can see, the sink blocks first, then
// the window blocks that do not overlap them, with one online softmax over both. It gives what the
// windowed flash pass, the sink-prefix rows and the sink merge give together (attention.cpp's
// flash_forward), so the flash backward consumes its (out, lse) unchanged. Plain CUDA: the C++
// side (src/attention/streaming_kernel.cpp) checks the tensors.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace elastic::kernels {

enum class AttentionDtype { kFloat16, kBFloat16 };

// Query i of a sample sees key j of the same sample iff j <= i and (j < sink or i - j < window).
// Layouts are contiguous, FlashAttention varlen: q and out [tokens, q_heads, head_dim], k and v
// [tokens, kv_heads, head_dim], lse [q_heads, tokens] fp32 (natural log of the sum of exp(scale *
// q.k) over the visible keys). Sample b holds tokens cu_seqlens[b] .. cu_seqlens[b + 1].
// Query head h reads kv head h / (q_heads / kv_heads). head_dim 64 or 128, window >= 1.
struct StreamingAttentionArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  const int32_t* cu_seqlens = nullptr;  // [samples + 1], on the device
  int64_t samples = 0, tokens = 0, max_len = 0;
  int64_t q_heads = 0, kv_heads = 0, head_dim = 0;
  int64_t sink = 0, window = 1;
  float scale = 1.f;
  AttentionDtype dtype = AttentionDtype::kBFloat16;
};

// Enqueues the forward on `stream`; throws std::invalid_argument on unsupported arguments and
// std::runtime_error on a launch error.
void streaming_attention_forward(const StreamingAttentionArgs& args, cudaStream_t stream);

// The checks of args both launchers share: head_dim, heads, mask, scale, sizes within the kernels'
// 32-bit positions, q, k, v and out 16-byte aligned, lse and cu_seqlens set. Throws
// std::invalid_argument naming `fn`; returns false when there is nothing to compute. The grid's
// limit on heads is each launcher's own (query heads forward, kv heads backward).
bool check_streaming_attention_args(const StreamingAttentionArgs& args, const char* fn);

// The launch parameters both kernels take from args alike (their Params structs share these names).
template <class Params>
void set_shared_params(Params& p, const StreamingAttentionArgs& a) {
  p.q = a.q;
  p.k = a.k;
  p.v = a.v;
  p.lse = a.lse;
  p.cu_seqlens = a.cu_seqlens;
  p.tokens = a.tokens;
  p.q_stride = a.q_heads * a.head_dim;
  p.kv_stride = a.kv_heads * a.head_dim;
  p.q_heads = static_cast<int>(a.q_heads);
  p.kv_heads = static_cast<int>(a.kv_heads);
  // Beyond max_len both bounds hide nothing: clamped, they fit the kernels' 32-bit positions.
  p.sink = static_cast<int>(a.sink < a.max_len ? a.sink : a.max_len);
  p.window = static_cast<int>(a.window < a.max_len ? a.window : a.max_len);
  p.scale = a.scale;
  p.scale_log2 = a.scale * 1.4426950408889634f;  // log2(e): exp(x) = exp2(x * log2(e))
}

// The backward of the same attention (kernels/streaming_attention_bwd.cu), exact with fp32
// accumulation: from dout [tokens, q_heads, head_dim] and the forward's out and lse, dq like q and
// dk, dv like k (dk and dv summed over the query heads of each kv head). The scratch buffers are
// the caller's (the kernels allocate nothing); their contents on entry do not matter:
//   dq_accum: tokens * q_heads * head_dim floats (dq in fp32, accumulated across key blocks);
//   delta: q_heads * tokens floats (dout . out per row);
//   dkv_sink: streaming_attention_backward_sink_floats(args) floats (dk and dv of the keys in the
//     sink's key blocks, accumulated across the query chunks that share them; null when 0).
struct StreamingAttentionBackwardArgs {
  StreamingAttentionArgs fwd;  // q, k, v, out, lse, shapes, mask and scale of the forward
  const void* dout = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  float* dq_accum = nullptr;
  float* delta = nullptr;
  float* dkv_sink = nullptr;
};

int64_t streaming_attention_backward_sink_floats(const StreamingAttentionBackwardArgs& args);

// Enqueues the backward on `stream`; throws like streaming_attention_forward.
void streaming_attention_backward(const StreamingAttentionBackwardArgs& args, cudaStream_t stream);

}  // namespace elastic::kernels
