#include "data/synthetic.h"

#include <algorithm>
#include <random>

#include "util/error.h"

namespace elastic::data {

namespace {

struct Builder {
  std::mt19937_64 rng;
  int64_t vocab;
  std::vector<int32_t> t;
  int32_t content() { return static_cast<int32_t>(kFirstContent + rng() % (vocab - kFirstContent)); }
  void filler(int64_t n) {
    for (int64_t i = 0; i < n; ++i) t.push_back(content());
  }
};

// Distinct content tokens.
std::vector<int32_t> distinct(Builder& b, size_t n) {
  std::vector<int32_t> out;
  while (out.size() < n) {
    int32_t x = b.content();
    if (std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
  }
  return out;
}

}  // namespace

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
  ELASTIC_CHECK(opt.vocab >= kFirstContent + 32, "synthetic data: vocab must be at least " << kFirstContent + 32);
  const int64_t A = opt.answer_len;
  ELASTIC_CHECK(length >= 8 * A + 16, "synthetic data: length " << length << " too short for answer_len " << A);
  Builder b{std::mt19937_64(seed), opt.vocab, {}};
  b.t.push_back(kBos);
  std::vector<int32_t> answer;
  // Context body length: total minus BOS, the question block (<= A + 2) and answer + EOS.
  const int64_t body = length - 1 - (A + 2) - (A + 1);
  switch (task) {
    case SyntheticTask::retrieval: {
      auto key = distinct(b, A);
      auto val = distinct(b, A);
      const int64_t far = std::max<int64_t>(1, static_cast<int64_t>(opt.far_fraction * (body - 2 * A - 2)));
      const int64_t at = static_cast<int64_t>(b.rng() % far);
      b.filler(at);
      b.t.push_back(kKey);
      b.t.insert(b.t.end(), key.begin(), key.end());
      b.t.push_back(kVal);
      b.t.insert(b.t.end(), val.begin(), val.end());
      b.filler(body - at - 2 * A - 2);
      b.t.push_back(kQuery);
      b.t.insert(b.t.end(), key.begin(), key.end());
      b.t.push_back(kAnswer);
      answer = val;
      break;
    }
    case SyntheticTask::multihop: {
      auto k1 = distinct(b, A), k2 = distinct(b, A), v = distinct(b, A);
      const int64_t block = 2 * A + 2;
      const int64_t far = std::max<int64_t>(2, static_cast<int64_t>(opt.far_fraction * (body - 2 * block)));
      int64_t a1 = static_cast<int64_t>(b.rng() % far), a2 = static_cast<int64_t>(b.rng() % far);
      if (a1 > a2) std::swap(a1, a2);
      b.filler(a1);
      // The second hop is planted first so both orders of reading occur across samples.
      bool swap = b.rng() % 2;
      auto put = [&](const std::vector<int32_t>& k, const std::vector<int32_t>& val) {
        b.t.push_back(kKey);
        b.t.insert(b.t.end(), k.begin(), k.end());
        b.t.push_back(kVal);
        b.t.insert(b.t.end(), val.begin(), val.end());
      };
      if (swap) put(k2, v); else put(k1, k2);
      b.filler(a2 - a1);
      if (swap) put(k1, k2); else put(k2, v);
      b.filler(body - a2 - 2 * block);
      b.t.push_back(kQuery);
      b.t.insert(b.t.end(), k1.begin(), k1.end());
      b.t.push_back(kAnswer);
      answer = v;
      break;
    }
    case SyntheticTask::recent_copy: {
      b.filler(body);
      answer.assign(b.t.end() - A, b.t.end());
      b.t.push_back(kQuery);
      b.filler(A);  // the question block is noise of the same size as in the other tasks
      b.t.push_back(kAnswer);
      break;
    }
    case SyntheticTask::pattern: {
      const int64_t period = 3 + static_cast<int64_t>(b.rng() % 5);
      auto motif = distinct(b, period);
      const int64_t tail = std::min<int64_t>(body, 8 * period);
      b.filler(body - tail);
      for (int64_t i = 0; i < tail; ++i) b.t.push_back(motif[i % period]);
      for (int64_t i = 0; i < A; ++i) answer.push_back(motif[(tail + i) % period]);
      b.t.push_back(kQuery);
      b.filler(A);
      b.t.push_back(kAnswer);
      break;
    }
    case SyntheticTask::instruction: {
      auto instr = distinct(b, A);
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
