// BPE merge core (internal to the tokenizer; exposed for tests).
#pragma once
#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace elastic::text::bpe {

using Id = int32_t;

// (left id, right id) -> (rank, merged id), packed for a flat hash map.
class MergeTable {
 public:
  void reserve(size_t n);
  // Later duplicates overwrite earlier ones (as HF's HashMap::collect does).
  void add(Id left, Id right, uint32_t rank, Id merged);
  // True and fills rank/merged when (left, right) merges.
  bool find(Id left, Id right, uint32_t* rank, Id* merged) const {
    if (slots_.empty()) return false;
    const uint64_t key = pack(left, right);
    size_t i = hash(key) & mask_;
    while (true) {
      const Slot& s = slots_[i];
      if (s.key == key) {
        *rank = s.rank;
        *merged = s.merged;
        return true;
      }
      if (s.key == kEmpty) return false;
      i = (i + 1) & mask_;
    }
  }
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t key;
    uint32_t rank;
    Id merged;
  };
  static constexpr uint64_t kEmpty = ~0ULL;
  static uint64_t pack(Id a, Id b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  void grow();
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// Merges `symbols` in place the way HF tokenizers' Word::merge_all does (lowest rank first,
// leftmost on ties). merge_scan is O(n^2) and fast for short words; merge_heap is the
// priority-queue version for long ones. Both give identical results.
void merge_scan(std::vector<Id>& symbols, const MergeTable& merges);
void merge_heap(std::vector<Id>& symbols, const MergeTable& merges);
inline void merge(std::vector<Id>& symbols, const MergeTable& merges) {
  if (symbols.size() <= 48)
    merge_scan(symbols, merges);
  else
    merge_heap(symbols, merges);
}

}  // namespace elastic::text::bpe
