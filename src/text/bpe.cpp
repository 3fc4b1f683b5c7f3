#include "text/bpe.h"

#include <limits>
#include <queue>

namespace elastic::text::bpe {

void MergeTable::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  if (cap <= slots_.size()) return;
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(cap, Slot{kEmpty, 0, 0});
  mask_ = cap - 1;
  size_ = 0;
  for (const Slot& s : old)
    if (s.key != kEmpty) add(static_cast<Id>(s.key >> 32), static_cast<Id>(s.key & 0xffffffffu), s.rank, s.merged);
}

void MergeTable::grow() { reserve(slots_.empty() ? 8 : slots_.size()); }

void MergeTable::add(Id left, Id right, uint32_t rank, Id merged) {
  if ((size_ + 1) * 2 > slots_.size()) grow();
  const uint64_t key = pack(left, right);
  size_t i = hash(key) & mask_;
  while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
  if (slots_[i].key == kEmpty) ++size_;
  slots_[i] = Slot{key, rank, merged};
}

void merge_scan(std::vector<Id>& sym, const MergeTable& merges) {
  constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();
  const size_t n0 = sym.size();
  if (n0 < 2) return;
  // ranks[i]: rank of the pair (sym[i], sym[i+1]), kNone if it does not merge.
  uint32_t ranks_buf[64];
  Id merged_buf[64];
  std::vector<uint32_t> ranks_vec;
  std::vector<Id> merged_vec;
  uint32_t* ranks = ranks_buf;
  Id* merged = merged_buf;
  if (n0 > 64) {
    ranks_vec.resize(n0);
    merged_vec.resize(n0);
    ranks = ranks_vec.data();
    merged = merged_vec.data();
  }
  size_t n = n0;
  for (size_t i = 0; i + 1 < n; ++i)
    if (!merges.find(sym[i], sym[i + 1], &ranks[i], &merged[i])) ranks[i] = kNone;
  while (n > 1) {
    uint32_t best = kNone;
    size_t bi = 0;
    for (size_t i = 0; i + 1 < n; ++i)
      if (ranks[i] < best) best = ranks[i], bi = i;
    if (best == kNone) break;
    sym[bi] = merged[bi];
    for (size_t i = bi + 1; i + 1 < n; ++i) {
      sym[i] = sym[i + 1];
      ranks[i] = ranks[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (bi > 0 && !merges.find(sym[bi - 1], sym[bi], &ranks[bi - 1], &merged[bi - 1])) ranks[bi - 1] = kNone;
    if (bi + 1 < n) {
      if (!merges.find(sym[bi], sym[bi + 1], &ranks[bi], &merged[bi])) ranks[bi] = kNone;
    }
  }
  sym.resize(n);
}

void merge_heap(std::vector<Id>& sym, const MergeTable& merges) {
  const size_t n = sym.size();
  if (n < 2) return;
  struct Node {
    Id id;
    int32_t prev, next;
    bool alive;
  };
  struct Entry {
    uint32_t rank;
    uint32_t pos;
    Id merged;
    bool operator<(const Entry& o) const {  // max-heap on "greater" => min (rank, pos) on top
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Node> nodes(n);
  for (size_t i = 0; i < n; ++i)
    nodes[i] = Node{sym[i], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i + 1) : -1, true};
  std::vector<Entry> init;
  init.reserve(n);
  for (size_t i = 0; i + 1 < n; ++i) {
    uint32_t r;
    Id m;
    if (merges.find(sym[i], sym[i + 1], &r, &m)) init.push_back(Entry{r, static_cast<uint32_t>(i), m});
  }
  std::priority_queue<Entry> queue(std::less<Entry>(), std::move(init));
  while (!queue.empty()) {
    const Entry top = queue.top();
    queue.pop();
    Node& cur = nodes[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    const int32_t next_pos = cur.next;
    const Node right = nodes[next_pos];
    uint32_t r;
    Id m;
    if (!merges.find(cur.id, right.id, &r, &m) || m != top.merged) continue;  // stale entry
    cur.id = top.merged;
    nodes[next_pos].alive = false;
    cur.next = right.next;
    if (right.next >= 0) nodes[right.next].prev = static_cast<int32_t>(top.pos);
    if (cur.prev >= 0 && merges.find(nodes[cur.prev].id, cur.id, &r, &m))
      queue.push(Entry{r, static_cast<uint32_t>(cur.prev), m});
    if (cur.next >= 0 && merges.find(cur.id, nodes[cur.next].id, &r, &m))
      queue.push(Entry{r, top.pos, m});
  }
  size_t k = 0;
  for (size_t i = 0; i < n; ++i)
    if (nodes[i].alive) sym[k++] = nodes[i].id;
  sym.resize(k);
}

}  // namespace elastic::text::bpe
