// Hybrid attention (ELASTIC.md §6): per sample b and KV head h, with routing weight
// s[b, h] (1 = full attention, 0 = streaming), O = s * FA + (1 - s) * SSA, broadcast to
// the query heads of the GQA group.
//
// Custom autograd, routing-aware: the forward runs both branches (the router needs
// dL/ds = <FA - SSA, dO>), the backward runs the attention backward only for the
// (sample, head) pairs whose branch weight is non-zero (long packs; short ones mask dO
// instead, see set_gather_min_len). With hard routing every pair is in exactly one branch,
// so this is exact and costs one attention backward, not two.
#pragma once
#include <torch/torch.h>

#include "attention/attention.h"

namespace elastic::attention {

// q [T,Hq,d], k/v [T,Hkv,d], s [B,Hkv] (any float dtype; usually exactly 0/1 in value).
torch::Tensor hybrid_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& s, const Packing& pack, MaskSpec ssa, double scale);

// The backward gathers the selected (sample, head) pairs only for packs whose longest sample has
// at least this many tokens (default 8192); shorter packs run every head with dO masked.
void set_gather_min_len(int64_t tokens);

// Reference: the same function through plain autograd over both branches (tests, benchmarks).
torch::Tensor hybrid_attention_autograd_both(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                             const torch::Tensor& s, const Packing& pack, MaskSpec ssa, double scale);

}  // namespace elastic::attention
