#include "data/dataset.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "io/atomic_file.h"
#include "util/error.h"

namespace elastic::data {

namespace {

// On-disk header, 64 bytes.
struct RawHeader {
  char magic[8];
  uint32_t version;
  uint32_t vocab_size;
  uint64_t tokenizer_fingerprint;
  uint64_t num_packs;
  uint64_t num_samples;
  uint64_t num_tokens;
  uint64_t index_offset;
  uint64_t checksum;
};
static_assert(sizeof(RawHeader) == 64);

size_t pad4(size_t n) { return (n + 3) & ~size_t(3); }

}  // namespace

uint64_t fnv1a64(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

struct DatasetWriter::Impl {
  std::string path;
  io::AtomicFile file;
  DatasetHeader h;
  std::vector<uint64_t> offsets;
  uint64_t pos = sizeof(RawHeader);
  uint64_t checksum = 1469598103934665603ull;
  bool done = false;
  Impl(const std::string& p) : path(p), file(p) {}
  void put(const void* d, size_t n) {
    file.write(d, n);
    checksum = fnv1a64(d, n, checksum);
    pos += n;
  }
};

DatasetWriter::DatasetWriter(const std::string& path, uint32_t vocab, uint64_t fp) : impl_(new Impl(path)) {
  impl_->h.vocab_size = vocab;
  impl_->h.tokenizer_fingerprint = fp;
  RawHeader placeholder{};
  impl_->file.write(&placeholder, sizeof(placeholder));  // rewritten in finish()
}

DatasetWriter::~DatasetWriter() = default;

void DatasetWriter::add(const Pack& p) {
  ELASTIC_CHECK(!impl_->done, impl_->path << ": add after finish");
  ELASTIC_CHECK(p.tokens.size() == p.labels.size(), impl_->path << ": pack tokens/labels size mismatch");
  ELASTIC_CHECK(!p.samples.empty(), impl_->path << ": empty pack");
  uint32_t covered = 0;
  for (const auto& s : p.samples) {
    ELASTIC_CHECK(s.offset == covered && s.length > 0 && s.prompt_begin < s.prompt_end && s.prompt_end <= s.length,
                  impl_->path << ": malformed sample metadata in pack " << impl_->offsets.size());
    covered += s.length;
  }
  ELASTIC_CHECK(covered == p.tokens.size(), impl_->path << ": samples do not cover pack " << impl_->offsets.size());
  for (auto t : p.tokens) {
    ELASTIC_CHECK(t >= 0 && static_cast<uint32_t>(t) < impl_->h.vocab_size,
                  impl_->path << ": token id " << t << " outside vocabulary of " << impl_->h.vocab_size);
  }
  impl_->offsets.push_back(impl_->pos);
  uint32_t counts[2] = {static_cast<uint32_t>(p.tokens.size()), static_cast<uint32_t>(p.samples.size())};
  impl_->put(counts, sizeof(counts));
  impl_->put(p.tokens.data(), p.tokens.size() * sizeof(int32_t));
  impl_->put(p.labels.data(), p.labels.size());
  static const uint8_t zeros[4] = {0, 0, 0, 0};
  impl_->put(zeros, pad4(p.labels.size()) - p.labels.size());
  impl_->put(p.samples.data(), p.samples.size() * sizeof(SampleMeta));
  impl_->h.num_packs++;
  impl_->h.num_samples += p.samples.size();
  impl_->h.num_tokens += p.tokens.size();
}

void DatasetWriter::finish() {
  auto& I = *impl_;
  I.h.index_offset = I.pos;
  I.put(I.offsets.data(), I.offsets.size() * sizeof(uint64_t));
  I.h.checksum = I.checksum;
  RawHeader r{};
  std::memcpy(r.magic, kMagic, 8);
  r.version = kVersion;
  r.vocab_size = I.h.vocab_size;
  r.tokenizer_fingerprint = I.h.tokenizer_fingerprint;
  r.num_packs = I.h.num_packs;
  r.num_samples = I.h.num_samples;
  r.num_tokens = I.h.num_tokens;
  r.index_offset = I.h.index_offset;
  r.checksum = I.h.checksum;
  // The header goes in place of the placeholder: reopen the temporary and patch it.
  I.file.commit_with_header(&r, sizeof(r));
  I.done = true;
}

std::shared_ptr<Dataset> Dataset::open(const std::string& path, bool verify) {
  std::shared_ptr<Dataset> d(new Dataset());
  d->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY);
  ELASTIC_CHECK(fd >= 0, path << ": cannot open dataset (" << std::strerror(errno) << ")");
  struct stat st{};
  ::fstat(fd, &st);
  d->bytes_ = static_cast<size_t>(st.st_size);
  if (d->bytes_ < sizeof(RawHeader)) {
    ::close(fd);
    ELASTIC_FAIL(path << ": too small to be a packed dataset (" << d->bytes_ << " bytes)");
  }
  void* p = ::mmap(nullptr, d->bytes_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  ELASTIC_CHECK(p != MAP_FAILED, path << ": mmap failed");
  d->base_ = static_cast<const uint8_t*>(p);
  RawHeader r;
  std::memcpy(&r, d->base_, sizeof(r));
  ELASTIC_CHECK(std::memcmp(r.magic, kMagic, 8) == 0, path << ": not an elastic packed dataset (bad magic)");
  ELASTIC_CHECK(r.version == kVersion, path << ": dataset format version " << r.version << ", this build reads "
                                            << kVersion);
  auto& h = d->header_;
  h.version = r.version;
  h.vocab_size = r.vocab_size;
  h.tokenizer_fingerprint = r.tokenizer_fingerprint;
  h.num_packs = r.num_packs;
  h.num_samples = r.num_samples;
  h.num_tokens = r.num_tokens;
  h.index_offset = r.index_offset;
  h.checksum = r.checksum;
  ELASTIC_CHECK(h.index_offset >= sizeof(RawHeader) && h.index_offset + h.num_packs * 8 == d->bytes_,
                path << ": index does not end the file (truncated or corrupt dataset)");
  if (verify) {
    uint64_t c = fnv1a64(d->base_ + sizeof(RawHeader), d->bytes_ - sizeof(RawHeader));
    ELASTIC_CHECK(c == h.checksum, path << ": checksum mismatch (corrupt dataset)");
  }
  d->offsets_.resize(h.num_packs);
  std::memcpy(d->offsets_.data(), d->base_ + h.index_offset, h.num_packs * 8);
  for (size_t i = 0; i < d->offsets_.size(); ++i) {
    ELASTIC_CHECK(d->offsets_[i] >= sizeof(RawHeader) && d->offsets_[i] + 8 <= h.index_offset,
                  path << ": pack " << i << " offset outside the data");
  }
  return d;
}

Dataset::~Dataset() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), bytes_);
}

Pack Dataset::pack(size_t i) const {
  ELASTIC_CHECK(i < offsets_.size(), path_ << ": pack " << i << " out of range (" << offsets_.size() << " packs)");
  const uint8_t* p = base_ + offsets_[i];
  uint32_t counts[2];
  std::memcpy(counts, p, 8);
  const size_t nt = counts[0], ns = counts[1];
  const size_t need = 8 + nt * 4 + pad4(nt) + ns * sizeof(SampleMeta);
  ELASTIC_CHECK(offsets_[i] + need <= header_.index_offset, path_ << ": pack " << i << " runs past the data");
  Pack out;
  out.tokens.resize(nt);
  out.labels.resize(nt);
  out.samples.resize(ns);
  std::memcpy(out.tokens.data(), p + 8, nt * 4);
  std::memcpy(out.labels.data(), p + 8 + nt * 4, nt);
  std::memcpy(out.samples.data(), p + 8 + nt * 4 + pad4(nt), ns * sizeof(SampleMeta));
  uint32_t covered = 0;
  for (const auto& s : out.samples) {
    ELASTIC_CHECK(s.offset == covered && s.length > 0 && s.prompt_end <= s.length && s.prompt_begin < s.prompt_end,
                  path_ << ": pack " << i << " has malformed sample metadata");
    covered += s.length;
  }
  ELASTIC_CHECK(covered == nt, path_ << ": pack " << i << " samples do not cover its tokens");
  return out;
}

std::vector<std::vector<size_t>> plan_packs(const std::vector<uint32_t>& lengths, int64_t budget) {
  const size_t n = lengths.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
  // Max-tree over the room of packs 0..cap-1; packs not opened yet have the whole budget, and they
  // all come after the opened ones, so the leftmost leaf with room is exactly first fit.
  size_t cap = 1;
  while (cap < std::max<size_t>(n, 1)) cap <<= 1;
  std::vector<int64_t> tree(2 * cap, budget);
  std::vector<std::vector<size_t>> packs;
  for (size_t idx : order) {
    const int64_t len = lengths[idx];
    ELASTIC_CHECK(len >= 1 && len <= budget, "plan_packs: sample of " << len << " tokens for a budget of " << budget);
    size_t node = 1;
    while (node < cap) node = tree[2 * node] >= len ? 2 * node : 2 * node + 1;
    const size_t p = node - cap;
    if (p == packs.size()) packs.emplace_back();
    packs[p].push_back(idx);
    tree[node] -= len;
    for (node >>= 1; node; node >>= 1) tree[node] = std::max(tree[2 * node], tree[2 * node + 1]);
  }
  return packs;
}

void append_sample(Pack& pk, const Sample& s) {
  SampleMeta m;
  m.offset = static_cast<uint32_t>(pk.tokens.size());
  m.length = static_cast<uint32_t>(s.tokens.size());
  m.prompt_begin = s.prompt_begin;
  m.prompt_end = s.prompt_end;
  m.task = s.task;
  pk.tokens.insert(pk.tokens.end(), s.tokens.begin(), s.tokens.end());
  pk.labels.insert(pk.labels.end(), s.labels.begin(), s.labels.end());
  pk.samples.push_back(m);
}

std::vector<Pack> pack_samples(const std::vector<Sample>& samples, int64_t budget, int64_t* dropped) {
  std::vector<size_t> kept;
  std::vector<uint32_t> lengths;
  for (size_t i = 0; i < samples.size(); ++i) {
    const int64_t n = static_cast<int64_t>(samples[i].tokens.size());
    if (n == 0 || n > budget) continue;
    kept.push_back(i);
    lengths.push_back(static_cast<uint32_t>(n));
  }
  if (dropped) *dropped = static_cast<int64_t>(samples.size() - kept.size());
  std::vector<Pack> packs;
  for (const auto& plan : plan_packs(lengths, budget)) {
    packs.emplace_back();
    for (size_t k : plan) append_sample(packs.back(), samples[kept[k]]);
  }
  return packs;
}

}  // namespace elastic::data
