// The rows of streaming attention that see only a prefix of their sample's sink keys: positions
// window .. window + sink - 2, where row i sees sink keys j <= i - window on top of its window.
// The flash path computes the window (and, for later rows, all sinks) with FlashAttention and adds
// these sink prefixes exactly through the log-sum-exp. All samples of a pack go through one batched
// computation ([samples, heads, sink - 1, sink - 1] scores, never tokens x tokens): a loop per
// sample made packs of many short samples launch-bound (about 1 s per step for packs of a few
// hundred 64-256-token samples).
#pragma once
#include <torch/torch.h>

#include "attention/attention.h"

namespace elastic::attention {

// f: the window-only forward of q/k/v (output [T, Hq, d], lse [Hq, T]); merges the sink prefixes
// of the affected rows into f in place.
void merge_sink_prefix_rows(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                            const Packing& pack, MaskSpec mask, double scale, AttnForward& f);

// Adds the sink prefixes' share of the gradients to g, given the merged forward fwd.
void sink_prefix_rows_backward(const torch::Tensor& dout, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const AttnForward& fwd, const Packing& pack, MaskSpec mask,
                               double scale, AttnGrads& g);

}  // namespace elastic::attention
