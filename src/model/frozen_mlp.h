// The MLP of a frozen backbone while training, down(silu(gate(x)) * up(x)) with no weight gradients.
// Its backward needs only g = gate(x) and u = up(x): it forms dL/d(act) a row chunk at a time and
// writes dL/dg and dL/du over g and u, so neither the activation, its gradient nor a separate
// dg/du pair ever exists whole ([T, I] each: 1.6 GB at 64K tokens on Qwen3-8B). The forward builds
// the activation a chunk at a time too.
#pragma once
#include <torch/torch.h>

#include <utility>

namespace elastic::model {

// Rows per chunk of the [rows, intermediate] temporaries: 8192 rows of Qwen3-8B's 12288 columns are
// 200 MB in bf16, and the chunk's matmuls ([8192, 12288] x [12288, 4096]) are still large.
inline constexpr int64_t kMlpRowChunk = 8192;

struct FrozenMlpWeights {
  torch::Tensor gate, up, down;  // [I, D], [I, D], [D, I], none requiring grad
};

// down(silu(gate(x)) * up(x)) for x [..., D], differentiable in x only. Holds g and u for the backward.
torch::Tensor frozen_mlp(const torch::Tensor& x, const FrozenMlpWeights& w, int64_t row_chunk = kMlpRowChunk);

// The two halves, for a recompute that never needs the output: {gate(x), up(x)} [rows, I] without
// grad, and dL/dx [rows, D] from dL/dy, which overwrites g and u (they are spent after it).
std::pair<torch::Tensor, torch::Tensor> frozen_mlp_gate_up(const torch::Tensor& x, const FrozenMlpWeights& w);
torch::Tensor frozen_mlp_backward(const torch::Tensor& dy, const torch::Tensor& g, const torch::Tensor& u,
                                  const FrozenMlpWeights& w, int64_t row_chunk = kMlpRowChunk);

}  // namespace elastic::model
