// Exact streaming attention (sink + local window) forward in one launch, FlashAttention-2 style:
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

}  // namespace elastic::kernels
