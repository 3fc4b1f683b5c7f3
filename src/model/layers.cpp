#include "model/layers.h"

#include <cmath>

#include "model/fused_ops.h"

namespace elastic::model {

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias, const torch::TensorOptions& opts) {
  weight = register_parameter("weight", torch::empty({out, in}, opts), false);
  if (with_bias) bias = register_parameter("bias", torch::empty({out}, opts), false);
}

torch::Tensor LinearImpl::forward(const torch::Tensor& x) const { return torch::nn::functional::linear(x, weight, bias); }

RMSNormImpl::RMSNormImpl(int64_t dim, double eps_, const torch::TensorOptions& opts) : eps(eps_) {
  weight = register_parameter("weight", torch::empty({dim}, opts), false);
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) const { return rms_norm(x, weight, eps); }

std::pair<torch::Tensor, torch::Tensor> RMSNormImpl::forward_add(const torch::Tensor& a, const torch::Tensor& b) const {
  return add_rms_norm(a, b, weight, eps);
}

EmbeddingImpl::EmbeddingImpl(int64_t vocab, int64_t dim, const torch::TensorOptions& opts) {
  weight = register_parameter("weight", torch::empty({vocab, dim}, opts), false);
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) const {
  return torch::nn::functional::embedding(ids, weight);
}

Rope Rope::make(const ModelConfig& cfg, torch::Device device) {
  const int64_t d = cfg.head_dim;
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  auto exponent = torch::arange(0, d, 2, torch::TensorOptions().dtype(torch::kInt64)).to(torch::kFloat32) /
                  static_cast<double>(d);
  auto inv = 1.0 / torch::pow(torch::tensor(cfg.rope_theta, f32), exponent);
  if (cfg.rope_scaling && cfg.rope_scaling->type == "llama3") {
    const auto& s = *cfg.rope_scaling;
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    auto wavelen = 2.0 * M_PI / inv;
    auto inv_llama = torch::where(wavelen > low_wavelen, inv / s.factor, inv);
    auto smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    auto smoothed = (1 - smooth) * inv_llama / s.factor + smooth * inv_llama;
    auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    inv = torch::where(medium, smoothed, inv_llama);
  }
  return Rope{inv.to(device)};
}

std::pair<torch::Tensor, torch::Tensor> Rope::tables(const torch::Tensor& positions) const {
  auto freqs = positions.to(torch::kFloat32).unsqueeze(1) * inv_freq.unsqueeze(0);  // [T, d/2]
  auto emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return rope(x, cos, sin);
}

}  // namespace elastic::model
