// Packed dataset format v1 (docs/dataset-format.md): a memory-mapped file of packs, each a
// concatenation of whole samples with token ids, a label mask, and per-sample metadata.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace elastic::data {

inline constexpr char kMagic[8] = {'E', 'L', 'A', 'S', 'T', 'P', 'K', '1'};
inline constexpr uint32_t kVersion = 1;

struct SampleMeta {
  uint32_t offset = 0;        // first token inside the pack
  uint32_t length = 0;        // tokens
  uint32_t prompt_begin = 0;  // prompt range [begin, end) in positions inside the sample
  uint32_t prompt_end = 0;
  int32_t task = 0;
};

// One sample before packing.
struct Sample {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> labels;  // 1: the token is a target of the LM loss
  uint32_t prompt_begin = 0, prompt_end = 0;
  int32_t task = 0;
};

struct Pack {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> labels;
  std::vector<SampleMeta> samples;
};

struct DatasetHeader {
  uint32_t version = kVersion;
  uint32_t vocab_size = 0;
  uint64_t tokenizer_fingerprint = 0;  // 0 when made without a tokenizer (synthetic)
  uint64_t num_packs = 0, num_samples = 0, num_tokens = 0;
  uint64_t index_offset = 0;
  uint64_t checksum = 0;  // FNV-1a 64 over everything after the header
};

// Streams packs to `path` (under a temporary name; renamed by finish()).
class DatasetWriter {
 public:
  DatasetWriter(const std::string& path, uint32_t vocab_size, uint64_t tokenizer_fingerprint);
  ~DatasetWriter();
  void add(const Pack& pack);
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Read-only, memory-mapped. Validates header, bounds and (optionally) the checksum on open.
class Dataset {
 public:
  static std::shared_ptr<Dataset> open(const std::string& path, bool verify_checksum = true);
  ~Dataset();
  const DatasetHeader& header() const { return header_; }
  size_t size() const { return header_.num_packs; }
  Pack pack(size_t i) const;
  const std::string& path() const { return path_; }

 private:
  Dataset() = default;
  std::string path_;
  DatasetHeader header_;
  const uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  std::vector<uint64_t> offsets_;
};

// First-fit decreasing: stable sort by length, longest first; each sample goes to the first pack
// with room (found in O(log packs)). Returns, per pack, the indices of its samples in placement
// order. Lengths must be in [1, budget].
std::vector<std::vector<size_t>> plan_packs(const std::vector<uint32_t>& lengths, int64_t budget);

// Appends a sample at the end of a pack (tokens, labels and its metadata).
void append_sample(Pack& pack, const Sample& sample);

// Packs samples into packs of at most `budget` tokens with plan_packs. Empty samples and samples
// longer than the budget are dropped (counted in *dropped).
std::vector<Pack> pack_samples(const std::vector<Sample>& samples, int64_t budget, int64_t* dropped = nullptr);

uint64_t fnv1a64(const void* data, size_t n, uint64_t h = 1469598103934665603ull);

}  // namespace elastic::data
