// Building blocks of the decoder as LibTorch modules. Parameters are registered under
// the Hugging Face names (weight, bias) and allocated uninitialised: they are filled by
// the checkpoint loader or by an explicit init, never by a constructor's random init.
#pragma once
#include <torch/torch.h>

#include "model/config.h"

namespace elastic::model {

class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool bias, const torch::TensorOptions& opts);
  torch::Tensor forward(const torch::Tensor& x) const;
  torch::Tensor weight, bias;
};
TORCH_MODULE(Linear);

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& opts);
  // Normalises over the last dimension in fp32 and returns the input dtype: on the CPU
  // transformers' exact sequence, which the golden tests pin; on GPUs one kernel, rounding once
  // where transformers rounds before the weight multiply (model::rms_norm).
  torch::Tensor forward(const torch::Tensor& x) const;
  // {h = a + b, forward(h)}: on GPUs the residual add and the norm in one kernel each way, h equal
  // to the separate add bit for bit (model::add_rms_norm).
  std::pair<torch::Tensor, torch::Tensor> forward_add(const torch::Tensor& a, const torch::Tensor& b) const;
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t vocab, int64_t dim, const torch::TensorOptions& opts);
  torch::Tensor forward(const torch::Tensor& ids) const;
  torch::Tensor weight;
};
TORCH_MODULE(Embedding);

// Rotary embedding tables for given positions: cos/sin [T, head_dim] in fp32.
struct Rope {
  torch::Tensor inv_freq;  // [head_dim / 2] fp32
  static Rope make(const ModelConfig& cfg, torch::Device device);
  std::pair<torch::Tensor, torch::Tensor> tables(const torch::Tensor& positions) const;
};

// x [T, H, d]; cos/sin [T, d] from Rope::tables. Rotate-half convention of transformers'
// Llama/Qwen; one fused kernel each way on the GPU (model/fused_ops.h).
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace elastic::model
