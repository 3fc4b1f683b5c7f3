#include "data/loader.h"

#include <numeric>
#include <random>

#include "util/error.h"

namespace elastic::data {

Batch make_batch(const Pack& p, torch::Device device) {
  Batch b;
  std::vector<int64_t> lengths;
  for (const auto& s : p.samples) {
    lengths.push_back(s.length);
    b.prompts.push_back({static_cast<int64_t>(s.prompt_begin), static_cast<int64_t>(s.prompt_end)});
    b.tasks.push_back(s.task);
    for (uint32_t i = 1; i < s.length; ++i) b.labelled_targets += p.labels[s.offset + i] != 0;
  }
  b.pack = attention::Packing::from_lengths(lengths, device);
  b.ids = torch::tensor(std::vector<int64_t>(p.tokens.begin(), p.tokens.end()), torch::TensorOptions().dtype(torch::kInt64));
  b.labels = torch::from_blob(const_cast<uint8_t*>(p.labels.data()), {static_cast<int64_t>(p.labels.size())},
                              torch::TensorOptions().dtype(torch::kUInt8))
                 .clone();
  return b;
}

DataLoader::DataLoader(std::shared_ptr<Dataset> ds, uint64_t seed, bool shuffle)
    : ds_(std::move(ds)), seed_(seed), shuffle_(shuffle) {
  ELASTIC_CHECK(ds_->size() > 0, ds_->path() << ": dataset has no packs");
}

const std::vector<uint32_t>& DataLoader::order(uint64_t epoch) const {
  if (epoch != cached_epoch_) {
    cached_order_.resize(ds_->size());
    std::iota(cached_order_.begin(), cached_order_.end(), 0u);
    if (shuffle_) {
      std::mt19937_64 rng(seed_ * 1000003ull + epoch);
      std::shuffle(cached_order_.begin(), cached_order_.end(), rng);
    }
    cached_epoch_ = epoch;
  }
  return cached_order_;
}

Pack DataLoader::at(uint64_t g) const {
  const uint64_t n = ds_->size();
  return ds_->pack(order(g / n)[g % n]);
}

}  // namespace elastic::data
