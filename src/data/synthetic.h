// Synthetic long-context tasks with the reference's task ids (ELASTIC.md §8), for demos,
// tests and the elasticity benchmark. Sparsity-sensitive tasks need tokens far outside a
// local window; sparsity-robust ones need only recent tokens and the sequence start.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace elastic::data {

// Reserved token ids; content tokens come from [kFirstContent, vocab), split by token_ranges().
// kCopy ends recent_copy's question where a lookup's question holds its key: a prompt that says
// which task it is, as real prompts do ("repeat the last line"). With noise there instead (suites
// before session 9) a recent_copy prompt differed from a lookup's in one pooled token of 32, and no
// router told them apart (docs/elasticity.md, session 8).
enum SyntheticToken : int32_t {
  kPad = 0,
  kBos = 1,
  kEos = 2,
  kKey = 3,
  kQuery = 5,
  kAnswer = 6,
  kCopy = 7,
  kFirstContent = 16
};

// Disjoint ranges of content tokens: keys [key_begin, value_begin), values [value_begin,
// filler_begin), filler [filler_begin, vocab). Filler never contains a key or a value, so a
// question's key occurs exactly once in the context.
struct TokenRanges {
  int32_t key_begin, value_begin, filler_begin, vocab;
};
TokenRanges token_ranges(int64_t vocab);

// Layout of the retrieval tasks: the context holds `pairs` pairs `KEY k v_1..v_A` (distractors
// included); the question block is `QUERY <A-1 filler> ANSWER k` and the answer v_1..v_A, EOS
// follows the key, as in associative recall.
enum class SyntheticTask : int32_t {
  retrieval = 0,   // single_qa: the value of the queried key, planted far back among distractors (sensitive)
  multihop = 1,    // multihop_qa: KEY k' k then KEY k v..: the question gives k' (sensitive)
  recent_copy = 2, // summarization slot: repeat the tokens just before `QUERY <A-1 filler> ANSWER COPY` (robust)
  pattern = 3,     // code slot: continue a periodic pattern of the recent text (robust)
  instruction = 4, // icl slot: answer the token given right after BOS (robust with a sink)
};

struct SyntheticOptions {
  int64_t vocab = 512;
  int64_t num_samples = 64;
  int64_t min_len = 128;
  int64_t max_len = 512;
  int64_t answer_len = 4;
  std::vector<SyntheticTask> tasks = {SyntheticTask::retrieval, SyntheticTask::multihop, SyntheticTask::recent_copy,
                                      SyntheticTask::pattern, SyntheticTask::instruction};
  // Keys for the sensitive tasks are planted in the first `far_fraction` of the context.
  double far_fraction = 0.5;
  // Key-value pairs in a retrieval / multihop context (the needles plus distractors), >= 2.
  int64_t pairs = 4;
  uint64_t seed = 0;
  // Label every token after BOS, not just the answer: a dense LM signal for training a backbone
  // from scratch (copying and induction form much sooner). Keep answer-only labels for routers/eval.
  bool label_all = false;
  // Also label the context tokens that are determined by earlier ones (a periodic tail after its
  // first period): more lookup signal than answers alone, none of the noise of random filler.
  bool label_predictable = false;
};

Sample make_synthetic_sample(SyntheticTask task, int64_t length, const SyntheticOptions& opt, uint64_t seed);
std::vector<Sample> make_synthetic_samples(const SyntheticOptions& opt);
SyntheticTask parse_synthetic_task(const std::string& name);
const char* synthetic_task_name(SyntheticTask t);

}  // namespace elastic::data
