#include "test_util.h"

#include "io/atomic_file.h"
#include "util/error.h"

#include <gtest/gtest.h>

#include <random>

namespace elastic::testing {

TempDir::TempDir() {
  static std::mt19937_64 rng{std::random_device{}()};
  path = std::filesystem::temp_directory_path() / ("elastic_test_" + std::to_string(rng()));
  std::filesystem::create_directories(path);
}

TempDir::~TempDir() {
  try {
    io::remove_tree(path.string());
  } catch (...) {
  }
}

SampleAttention reference_sample_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                           int64_t s0, int64_t n, attention::MaskSpec mask, double scale) {
  const int64_t G = q.size(1) / k.size(1);
  SampleAttention a;
  a.q = q.narrow(0, s0, n).to(torch::kFloat64).permute({1, 0, 2});
  a.k = k.narrow(0, s0, n).to(torch::kFloat64).repeat_interleave(G, 1).permute({1, 0, 2});
  a.v = v.narrow(0, s0, n).to(torch::kFloat64).repeat_interleave(G, 1).permute({1, 0, 2});
  auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(q.device());
  auto i = torch::arange(n, i64).unsqueeze(1), j = torch::arange(n, i64).unsqueeze(0);
  auto vis = j <= i;
  if (!mask.full()) vis = vis & ((j < mask.sink) | ((i - j) < mask.window));
  auto sc = (torch::matmul(a.q, a.k.transpose(1, 2)) * scale).masked_fill(vis.logical_not(), -INFINITY);
  a.lse = torch::logsumexp(sc, -1);
  a.p = torch::exp(sc - a.lse.unsqueeze(-1));
  return a;
}

torch::Tensor reference_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const attention::Packing& pack, attention::MaskSpec mask, double scale) {
  std::vector<torch::Tensor> outs;
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const auto a = reference_sample_attention(q, k, v, pack.begin(b), pack.length(b), mask, scale);
    outs.push_back(torch::matmul(a.p, a.v).permute({1, 0, 2}));
  }
  return torch::cat(outs, 0);
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  auto a64 = a.to(torch::kFloat64), b64 = b.to(torch::kFloat64);
  return ((a64 - b64).norm() / b64.norm().clamp_min(1e-300)).item<double>();
}

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

}  // namespace elastic::testing
