// Hybrid attention (ELASTIC.md §6): per sample b and KV head h, with routing weight
// s[b, h] (1 = full attention, 0 = streaming), O = s * FA + (1 - s) * SSA, broadcast to
// the query heads of the GQA group.
//
// Custom autograd, routing-aware. The router needs dL/ds = <FA - SSA, dO>, so both branches run on
// every head; the backward runs the attention backward only for the (sample, head) pairs whose
// branch weight is non-zero (or, below set_gather_min_len, masks dO over every head). With hard
// routing every pair is in exactly one branch, so this is exact and costs one attention backward,
// not two. Hard routing also runs only each pair's selected branch in the forward and the other one
// in the backward, where dO is known, so the step holds one branch's output per head, not two; and
// without grad only the selected branch runs, which a checkpointed layer can keep for its recompute
// (`kept` below). Soft weights run both branches in the forward.
#pragma once
#include <torch/torch.h>

#include <functional>

#include "attention/attention.h"
#include "util/host_copy.h"

namespace elastic::attention {

// Makes q or k again, bit for bit, from tensors the caller's graph keeps anyway, so that the
// attention's backward keeps no copy of its own. The model's q and k come from projections that its
// q/k norms keep for their backward: remaking them there (norm and RoPE, two small kernels) saves
// 0.34 GB a kept Qwen3-8B layer at 32K. Empty: the attention keeps the tensor.
struct Remake {
  std::function<torch::Tensor()> q, k;
};

// q [T,Hq,d], k/v [T,Hkv,d], s [B,Hkv] (any float dtype; usually exactly 0/1 in value).
// s_host: a copy of s to the host that the caller started early (the model starts it before the
// query and value projections, so waiting for it leaves those queued); made here when absent.
// kept: a checkpointed layer's store for its attention (ForwardContext::keep_attention). A forward
// without grad that routes hard fills it with what it ran: each head's selected branch, output [T, Hq, d]
// and log-sum-exp [Hq, T]. A forward with grad given a filled store runs no attention: that output is the
// hybrid's, and the backward runs each pair's other branch forward for the router gradient, then the
// selected branches' backward. Everything else (soft weights, short packs below set_gather_min_len)
// leaves the store empty and runs as without it. remake: how the backward gets q and k (above).
torch::Tensor hybrid_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& s, const Packing& pack, MaskSpec ssa, double scale,
                               c10::intrusive_ptr<util::HostCopy> s_host = {}, AttnForward* kept = nullptr,
                               Remake remake = {});

// The backward gathers the selected (sample, head) pairs, and a forward without grad runs only the
// selected branch of each pair, for packs whose longest sample has at least this many tokens
// (default 0: always); shorter packs run both branches over every head (dO masked in the backward).
void set_gather_min_len(int64_t tokens);
int64_t gather_min_len();

// Reference: the same function through plain autograd over both branches (tests, benchmarks).
torch::Tensor hybrid_attention_autograd_both(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                             const torch::Tensor& s, const Packing& pack, MaskSpec ssa, double scale);

}  // namespace elastic::attention
