// Cross-entropy of a frozen output projection, summed over selected rows, with nothing of the logits
// kept for the backward. Logits are [rows, vocab] (151,936 columns on Qwen3); autograd through a
// chunk's log-softmax keeps its fp32 result until the backward, 2.5 GB per 4,096 labelled rows, and
// builds as much again there. Since the projection is frozen, the gradient with respect to the rows,
// (softmax - onehot) · W, is all the backward needs: it is formed chunk by chunk in the forward and
// kept as [rows, D] in the hidden dtype.
#pragma once
#include <torch/torch.h>

namespace elastic::train {

// Σ_i CE(hidden[rows[i]] · Wᵀ, targets[i]) as an fp32 scalar, differentiable in hidden only (weight
// [V, D] must not require grad). `chunk` rows at a time: the transient is about 6 bytes × chunk × V.
// The logits are those of torch::nn::functional::linear in hidden's dtype, then fp32, as the autograd
// composition (linear, .to(fp32), cross_entropy) computes them, and so is the gradient up to one
// rounding: it is formed for an output gradient of 1 and scaled in the backward.
torch::Tensor linear_cross_entropy_sum(const torch::Tensor& hidden, const torch::Tensor& rows,
                                       const torch::Tensor& targets, const torch::Tensor& weight, int64_t chunk);

}  // namespace elastic::train
