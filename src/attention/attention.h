// Varlen causal attention over a packed batch, full or streaming (sink + window),
// with an explicit forward (output + log-sum-exp) and backward, so that callers can
// build custom autograd functions (the routing-aware hybrid backward).
//
// Layouts follow FlashAttention varlen: q [T, Hq, d], k/v [T, Hkv, d], lse [Hq, T] fp32.
// GQA: query head h reads kv head h / (Hq / Hkv).
//
// Two implementations, the same maths:
//  * blocked: query blocks against only the keys they can see, plain tensor ops, any
//    device and dtype (the exact path used on CPU and as the reference);
//  * flash: on CUDA for fp16/bf16, full attention through FlashAttention-2 or cuDNN;
//    streaming attention's forward through our one-launch sink + window kernel
//    (kernels/streaming_attention.cu) or cuDNN's band, its backward through FlashAttention-2 or
//    cuDNN's band, with the sink part merged exactly through the log-sum-exp.
// Neither builds a tokens x tokens tensor: the blocked path holds at most
// block x visible-keys scores per head at a time.
#pragma once
#include <torch/torch.h>

#include "attention/packing.h"

namespace elastic::attention {

struct AttnForward {
  torch::Tensor out;  // [T, Hq, d], dtype of q
  torch::Tensor lse;  // [Hq, T], fp32 (fp64 for fp64 inputs)
};

struct AttnGrads {
  torch::Tensor dq, dk, dv;
};

AttnForward attention_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                              const Packing& pack, MaskSpec mask, double scale);

AttnGrads attention_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                             const torch::Tensor& v, const AttnForward& fwd, const Packing& pack,
                             MaskSpec mask, double scale);

// Streaming attention's forward as a composition (a windowed pass, on FlashAttention-2 or, with
// set_streaming_backend("cudnn"), cuDNN's band; the sink keys merged through the log-sum-exp): what
// attention_forward runs on CUDA for head sizes the one-launch kernel (attention/streaming_kernel.h)
// does not take; callable for tests and benchmarks.
AttnForward flash_streaming_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                    const Packing& pack, MaskSpec mask, double scale);

// Attention over some of each sample's KV heads (with their query groups), for the hybrid attention's
// branches, one call per sample on that sample's selected heads, so a branch costs its share of the
// heads. heads[b]: sample b's KV heads, distinct, an int64 tensor on the host (undefined or empty:
// none); the heads ride in the copies' launch arguments (attention/head_rows.h). The forward
// writes `out` [T, Hq, d] (and, when given, `lse` [Hq, T] fp32) at those heads; the backward writes (or, with accumulate, adds) dq/dk/dv at
// those heads. Other heads are left untouched. Works for any mask and device; per_sample_heads says
// where it is the fast path: full attention where it runs sample by sample anyway (cuDNN, or the
// blocked path), streaming attention where cuDNN runs its band (set_streaming_backend) in that
// direction.
bool per_sample_heads(const torch::Tensor& q, const Packing& pack, MaskSpec mask, bool backward);
void attention_forward_heads(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const Packing& pack, const std::vector<torch::Tensor>& heads, MaskSpec mask,
                             double scale, const torch::Tensor& out, const torch::Tensor& lse = {});
void attention_backward_heads(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                              const torch::Tensor& v, const AttnForward& fwd, const Packing& pack,
                              const std::vector<torch::Tensor>& heads, MaskSpec mask, double scale,
                              bool accumulate, const AttnGrads& into);
// Samples of at least this many tokens run a subset of their KV heads (more than one, fewer than all)
// one KV head a call instead of all in one. PyTorch keys cuDNN's plans by shape, head count included,
// so one call per head leaves two keys per padded length (every head, one head) instead of one per
// head count. Off (the largest int64): on one H100 it built a third of the plans but cost 1.5% of
// every Qwen3-8B 64K step (docs/performance.md, session 16); bench-train --head-split-min-len.
void set_head_split_min_len(int64_t tokens);
int64_t head_split_min_len();

// Throws unless q/k/v are [tokens, heads, head_dim] with the pack's tokens and grouped-query heads.
void check_attention_inputs(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const Packing& pack);

// Differentiable attention (custom autograd: the backward recomputes, nothing T x T is saved).
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                        const Packing& pack, MaskSpec mask, double scale);

// Force the blocked implementation even where flash is available (tests, reference).
void set_force_blocked(bool on);
// fp32 inputs on a GPU: attention in bf16 through flash (fast, about 3e-3 relative error against
// fp32 logits) instead of the exact blocked path. Off by default; the trainer turns it on.
void set_fp32_attention_in_bf16(bool on);
// Kernel for full causal attention on GPUs in bf16/fp16: "flash" (FlashAttention-2), "cudnn"
// (cuDNN fused attention through PyTorch's operator, per sample) or "auto" (the default: cuDNN when
// the longest sample has at least 1024 tokens). PyTorch caches cuDNN's plans per shape, so samples
// run at padded lengths that repeat from step to step (attention/cudnn_sample.h); bench-train
// --vary-lengths measures what new lengths cost.
void set_full_attention_backend(const std::string& name);
std::string full_attention_backend();
// Streaming attention's window band on GPUs: "flash" (forward: our one-launch kernel; backward:
// FlashAttention-2), "cudnn-bwd" (the backward's band through cuDNN, per sample), "cudnn" (both
// directions through cuDNN) or "auto". The sink part stays exact through the log-sum-exp either way.
// cuDNN needs this build to have the cuDNN frontend (attention/cudnn_band.h); elsewhere flash runs.
void set_streaming_backend(const std::string& name);
std::string streaming_backend();
bool uses_flash(const torch::Tensor& q);

// Keys visible to query rows [a, b) of one sample, as at most two half-open ranges.
std::vector<std::pair<int64_t, int64_t>> visible_key_ranges(int64_t a, int64_t b, MaskSpec mask);

}  // namespace elastic::attention
