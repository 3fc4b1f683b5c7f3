#include "router/gumbel.h"

#include <ATen/CPUGeneratorImpl.h>

#include "util/device_copy.h"

namespace elastic::router {

torch::Tensor gumbel_noise(const torch::Tensor& like, torch::Generator& gen) {
  constexpr double eps = 1e-8;
  auto u = torch::rand(like.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32));
  auto g = -torch::log(-torch::log(u + eps) + eps);
  return util::to_device(g, like.device()).to(like.scalar_type());
}

torch::Tensor gumbel_softmax_ste(const torch::Tensor& z, const torch::Tensor& noise, double tau) {
  auto soft = torch::softmax((z + noise) / tau, -1);
  auto hard = torch::zeros_like(soft).scatter_(-1, soft.argmax(-1, true), 1.0);
  // (soft - soft.detach()) is exactly zero in value, so the forward value is exactly hard.
  return hard + (soft - soft.detach());
}

torch::Tensor hard_decision(const torch::Tensor& z) {
  return z.detach().argmax(-1).to(torch::kFloat32);
}

torch::Generator routing_generator(uint64_t seed, int64_t rank, int64_t step) {
  // splitmix64 over the triple: nearby (rank, step) pairs get unrelated streams.
  auto mix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  };
  uint64_t s = mix(mix(mix(seed) ^ static_cast<uint64_t>(rank)) ^ static_cast<uint64_t>(step));
  return at::make_generator<at::CPUGeneratorImpl>(s);
}

}  // namespace elastic::router
