#include "data/synthetic.h"

#include <algorithm>
#include <random>

#include "util/error.h"

namespace elastic::data {

namespace {

struct Builder {
  std::mt19937_64 rng;
  TokenRanges r;
  std::vector<int32_t> t;
  int32_t draw(int32_t lo, int32_t hi) { return static_cast<int32_t>(lo + rng() % static_cast<uint64_t>(hi - lo)); }
  int32_t filler_token() { return draw(r.filler_begin, r.vocab); }
  void filler(int64_t n) {
    for (int64_t i = 0; i < n; ++i) t.push_back(filler_token());
  }
  // n distinct tokens from [lo, hi).
  std::vector<int32_t> distinct(int32_t lo, int32_t hi, size_t n) {
    std::vector<int32_t> out;
    while (out.size() < n) {
      int32_t x = draw(lo, hi);
      if (std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
    }
    return out;
  }
};

// A key-value pair as planted in the context: KEY k v_1..v_m.
struct Pair {
  int32_t key;
  std::vector<int32_t> value;
  int64_t size() const { return 2 + static_cast<int64_t>(value.size()); }
};

// Plants the pairs into `space` tokens of filler: pair i goes after at[i] filler tokens, so pairs
// never overlap whatever the offsets.
void plant(Builder& b, const std::vector<Pair>& pairs, const std::vector<int64_t>& at, int64_t space) {
  std::vector<size_t> order(pairs.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return at[x] < at[y]; });
  int64_t done = 0;
  for (size_t i : order) {
    b.filler(at[i] - done);
    done = at[i];
    b.t.push_back(kKey);
    b.t.push_back(pairs[i].key);
    b.t.insert(b.t.end(), pairs[i].value.begin(), pairs[i].value.end());
  }
  b.filler(space - done);
}

}  // namespace

TokenRanges token_ranges(int64_t vocab) {
  const int64_t content = vocab - kFirstContent;
  const int64_t n = std::max<int64_t>(8, content / 6);
  TokenRanges r;
  r.vocab = static_cast<int32_t>(vocab);
  r.key_begin = kFirstContent;
  r.value_begin = static_cast<int32_t>(kFirstContent + n);
  r.filler_begin = static_cast<int32_t>(kFirstContent + 2 * n);
  return r;
}

const char* synthetic_task_name(SyntheticTask t) {
  switch (t) {
    case SyntheticTask::retrieval: return "retrieval";
    case SyntheticTask::multihop: return "multihop";
    case SyntheticTask::recent_copy: return "recent_copy";
    case SyntheticTask::pattern: return "pattern";
    case SyntheticTask::instruction: return "instruction";
  }
  return "?";
}

SyntheticTask parse_synthetic_task(const std::string& n) {
  for (auto t : {SyntheticTask::retrieval, SyntheticTask::multihop, SyntheticTask::recent_copy, SyntheticTask::pattern,
                 SyntheticTask::instruction}) {
    if (n == synthetic_task_name(t)) return t;
  }
  ELASTIC_FAIL("unknown synthetic task '" << n << "' (expected retrieval, multihop, recent_copy, pattern, instruction)");
}

Sample make_synthetic_sample(SyntheticTask task, int64_t length, const SyntheticOptions& opt, uint64_t seed) {
  const int64_t A = opt.answer_len;
  const auto r = token_ranges(opt.vocab);
  const int64_t P = std::max<int64_t>(2, opt.pairs);
  ELASTIC_CHECK(A >= 1, "synthetic data: answer_len must be at least 1, got " << A);
  ELASTIC_CHECK(r.value_begin - r.key_begin >= P + 1 && r.filler_begin - r.value_begin >= P * A &&
                    opt.vocab - r.filler_begin >= 16,
                "synthetic data: vocab " << opt.vocab << " too small for " << P << " pairs of answer_len " << A
                                         << " (need distinct keys, values and 16 filler tokens)");
  ELASTIC_CHECK(length >= P * (A + 2) + 3 * A + 16,
                "synthetic data: length " << length << " too short for " << P << " pairs and answer_len " << A);
  Builder b{std::mt19937_64(seed), r, {}};
  std::vector<int64_t> predictable;  // context positions determined by earlier tokens
  b.t.push_back(kBos);
  std::vector<int32_t> answer;
  // Context body: total minus BOS, the question block (A + 2 tokens) and answer + EOS.
  const int64_t body = length - 1 - (A + 2) - (A + 1);
  // A uniform offset in [0, n) of the body's free space.
  auto offset = [&](int64_t n) { return static_cast<int64_t>(b.rng() % std::max<int64_t>(1, n)); };
  switch (task) {
    case SyntheticTask::retrieval:
    case SyntheticTask::multihop: {
      // Keys and values come from ranges that filler never uses, so the question's key occurs
      // exactly once in the context: the answer is found by looking it up, never by guessing.
      const bool hop = task == SyntheticTask::multihop;
      auto keys = b.distinct(r.key_begin, r.value_begin, static_cast<size_t>(P + 1));
      auto vals = b.distinct(r.value_begin, r.filler_begin, static_cast<size_t>(P * A));
      std::vector<Pair> pairs;
      for (int64_t i = 0; i < P; ++i) pairs.push_back({keys[i], {vals.begin() + i * A, vals.begin() + (i + 1) * A}});
      if (hop) pairs[1] = {keys[P], {keys[0]}};  // the first hop: KEY k_P k_0, then KEY k_0 v..
      answer = pairs[0].value;
      int64_t space = body;
      for (const auto& p : pairs) space -= p.size();
      // Needles (pair 0, and the hop pair) sit in the first far_fraction of the context; the
      // distractor pairs anywhere. Offsets are into the free space, so pairs never overlap.
      const int64_t far = std::max<int64_t>(1, static_cast<int64_t>(opt.far_fraction * space));
      std::vector<int64_t> at;
      for (int64_t i = 0; i < P; ++i) at.push_back(i < (hop ? 2 : 1) ? offset(far) : offset(space + 1));
      plant(b, pairs, at, space);
      b.t.push_back(kQuery);
      b.filler(A - 1);
      b.t.push_back(kAnswer);
      b.t.push_back(hop ? keys[P] : keys[0]);  // the question ends with its key: the answer follows it
      break;
    }
    case SyntheticTask::recent_copy: {
      b.filler(body);
      answer.assign(b.t.end() - A, b.t.end());
      b.t.push_back(kQuery);
      b.filler(A - 1);
      b.t.push_back(kAnswer);
      b.t.push_back(kCopy);  // where a lookup's question holds its key
      break;
    }
    case SyntheticTask::pattern: {
      const int64_t period = 3 + static_cast<int64_t>(b.rng() % 5);
      auto motif = b.distinct(r.filler_begin, r.vocab, static_cast<size_t>(period));
      const int64_t tail = std::min<int64_t>(body, 4 * period);
      b.filler(body - tail);
      for (int64_t i = 0; i < tail; ++i) {
        if (i >= period) predictable.push_back(static_cast<int64_t>(b.t.size()));
        b.t.push_back(motif[i % period]);
      }
      for (int64_t i = 0; i < A; ++i) answer.push_back(motif[(tail + i) % period]);
      b.t.push_back(kQuery);
      b.filler(A);
      b.t.push_back(kAnswer);
      break;
    }
    case SyntheticTask::instruction: {
      auto instr = b.distinct(r.filler_begin, r.vocab, static_cast<size_t>(A));
      b.t.push_back(kKey);
      b.t.insert(b.t.end(), instr.begin(), instr.end());
      b.filler(body - A - 1);
      b.t.push_back(kQuery);
      b.filler(A);
      b.t.push_back(kAnswer);
      answer = instr;
      break;
    }
  }
  Sample s;
  s.task = static_cast<int32_t>(task);
  s.prompt_begin = 0;
  s.prompt_end = static_cast<uint32_t>(b.t.size());
  s.tokens = b.t;
  s.labels.assign(s.tokens.size(), 0);
  for (auto x : answer) {
    s.tokens.push_back(x);
    s.labels.push_back(1);
  }
  s.tokens.push_back(kEos);
  s.labels.push_back(1);
  ELASTIC_CHECK(static_cast<int64_t>(s.tokens.size()) == length,
                "synthetic data: built " << s.tokens.size() << " tokens for a sample of length " << length);
  if (opt.label_predictable) {
    for (auto p : predictable) s.labels[p] = 1;
  }
  if (opt.label_all) std::fill(s.labels.begin() + 1, s.labels.end(), 1);
  return s;
}
std::vector<Sample> make_synthetic_samples(const SyntheticOptions& opt) {
  ELASTIC_CHECK(!opt.tasks.empty(), "synthetic data: no tasks selected");
  ELASTIC_CHECK(opt.min_len <= opt.max_len, "synthetic data: min_len " << opt.min_len << " > max_len " << opt.max_len);
  std::mt19937_64 rng(opt.seed);
  std::vector<Sample> out;
  for (int64_t i = 0; i < opt.num_samples; ++i) {
    auto task = opt.tasks[static_cast<size_t>(i) % opt.tasks.size()];
    const int64_t len = opt.min_len + static_cast<int64_t>(rng() % (opt.max_len - opt.min_len + 1));
    out.push_back(make_synthetic_sample(task, len, opt, rng()));
  }
  return out;
}

}  // namespace elastic::data
