// Routing decisions from router logits (ELASTIC.md §5).
#pragma once
#include <torch/torch.h>

namespace elastic::router {

// Gumbel noise g = -log(-log(u + eps) + eps), u ~ U(0,1) drawn on the CPU from `gen`
// (so runs reproduce across devices), moved to `like`'s device.
torch::Tensor gumbel_noise(const torch::Tensor& like, torch::Generator& gen);

// Straight-through Gumbel-softmax: forward value exactly one-hot, gradient of the soft
// sample. z [..., 2] -> r [..., 2].
torch::Tensor gumbel_softmax_ste(const torch::Tensor& z, const torch::Tensor& noise, double tau);

// Full-attention weight s = r[..., 1].
inline torch::Tensor fa_weight(const torch::Tensor& r) { return r.select(-1, 1); }

// Evaluation: argmax without noise, s in {0, 1}, no gradient.
torch::Tensor hard_decision(const torch::Tensor& z);

// Generator seeded from (seed, rank, step): reproducible and distinct per rank and step.
torch::Generator routing_generator(uint64_t seed, int64_t rank, int64_t step);

}  // namespace elastic::router
