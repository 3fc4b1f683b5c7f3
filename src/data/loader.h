// Pack order and conversion of packs to tensors. The position in the stream is one global
// counter shared by all ranks, so a run resumes with any number of ranks.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "attention/packing.h"
#include "data/dataset.h"
#include "router/router.h"

namespace elastic::data {

struct Batch {
  torch::Tensor ids;     // [T] int64, CPU
  torch::Tensor labels;  // [T] uint8, CPU
  attention::Packing pack;
  std::vector<router::PromptRange> prompts;
  std::vector<int64_t> tasks;
  int64_t labelled_targets = 0;  // labelled tokens that are not the first of their sample
};

Batch make_batch(const Pack& p, torch::Device device);

class DataLoader {
 public:
  DataLoader(std::shared_ptr<Dataset> ds, uint64_t seed, bool shuffle);
  // The pack at global stream position g: epoch g / N, shuffled per epoch by (seed, epoch).
  Pack at(uint64_t g) const;
  size_t packs_per_epoch() const { return ds_->size(); }
  const Dataset& dataset() const { return *ds_; }

 private:
  const std::vector<uint32_t>& order(uint64_t epoch) const;
  std::shared_ptr<Dataset> ds_;
  uint64_t seed_;
  bool shuffle_;
  mutable uint64_t cached_epoch_ = UINT64_MAX;
  mutable std::vector<uint32_t> cached_order_;
};

}  // namespace elastic::data
