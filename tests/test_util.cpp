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

torch::Tensor reference_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                  const attention::Packing& pack, attention::MaskSpec mask, double scale) {
  const int64_t Hq = q.size(1), Hkv = k.size(1), G = Hq / Hkv;
  std::vector<torch::Tensor> outs;
  for (int64_t b = 0; b < pack.num_samples(); ++b) {
    const int64_t s0 = pack.begin(b), n = pack.length(b);
    auto qs = q.narrow(0, s0, n).to(torch::kFloat64).permute({1, 0, 2});                         // [Hq,n,d]
    auto ks = k.narrow(0, s0, n).to(torch::kFloat64).repeat_interleave(G, 1).permute({1, 0, 2});  // [Hq,n,d]
    auto vs = v.narrow(0, s0, n).to(torch::kFloat64).repeat_interleave(G, 1).permute({1, 0, 2});
    auto sc = torch::matmul(qs, ks.transpose(1, 2)) * scale;
    auto i = torch::arange(n).unsqueeze(1), j = torch::arange(n).unsqueeze(0);
    auto vis = j <= i;
    if (!mask.full()) vis = vis & ((j < mask.sink) | ((i - j) < mask.window));
    sc = sc.masked_fill(vis.logical_not(), -INFINITY);
    outs.push_back(torch::matmul(torch::softmax(sc, -1), vs).permute({1, 0, 2}));
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
