// Data preparation: raw JSONL (ELASTIC.md §10) -> tokenized chat samples -> packed, sharded
// datasets (docs/dataset-format.md). Used by `elastic prepare-data` and `elastic inspect-data`;
// see docs/data-preparation.md. Built only with the tokenizer (ELASTIC_HAVE_TEXT).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace elastic::data {

// ---- tasks ----
// Task name -> id. Default: single_qa 0, multihop_qa 1, summarization 2, code 3, icl 4 (ELASTIC.md §8).
using TaskMap = std::map<std::string, int32_t>;
TaskMap default_task_map();
// "name=id,name=id,...": the entries are added to `base`, replacing a name already there.
TaskMap parse_task_map(const std::string& spec, TaskMap base = default_task_map());
// The (first, alphabetically) name of an id, or "task<id>".
std::string task_name(const TaskMap& tasks, int32_t id);

// Prompt rules keyed by task id.
inline constexpr int32_t kSummarizationTask = 2;
inline constexpr int32_t kCodeTask = 3;
inline constexpr const char* kSummarizationInstruction =
    "You are given several news passages. Write a one-page summary of all news.";
inline constexpr const char* kSummarizationSuffix = "\n\nSummary:";
inline constexpr const char* kCodeInstruction = "Please complete the code given below.";

// ---- one record ----
struct RawRecord {
  std::string context, question, answer;
  int32_t task = 0;
  bool is_prefix = false;
};

// A bad input line. `kind` is one of malformed_json, missing_field, invalid_field, unknown_task,
// tokenize_error; the message does not carry the file and line (the caller adds them).
class InputError : public Error {
 public:
  InputError(std::string kind, const std::string& message) : Error(message), kind_(std::move(kind)) {}
  const std::string& kind() const { return kind_; }

 private:
  std::string kind_;
};

// Parses one JSON line of the raw schema; throws InputError.
RawRecord parse_raw_record(std::string_view line, const TaskMap& tasks);

// The user-turn content (docs/data-preparation.md, "Prompt building"):
//   body = is_prefix ? question + "\n" + context : context + "\n" + question   (an empty part and its "\n" are left out)
//   summarization: kSummarizationInstruction + "\n" + body + "\n\nSummary:"
//   code:          kCodeInstruction + "\n" + body
//   other tasks:   body
std::string build_user_turn(const RawRecord& r);

// Turns records into samples: chat ids, labels on the answer + end-of-turn token (ChatFormatter's
// answer span), and the prompt range = the tokens holding the user-turn content. Thread-safe.
class SampleBuilder {
 public:
  SampleBuilder(const text::Tokenizer& tok, text::ChatFamily family);
  const text::ChatFormatter& formatter() const { return fmt_; }
  Sample build(const RawRecord& r) const;
  // Throws InputError(tokenize_error) when the text cannot be encoded or the prompt is empty.
  Sample build(const std::string& user, const std::string& answer, int32_t task) const;

 private:
  const text::Tokenizer* tok_;
  text::ChatFormatter fmt_;
};

// ---- packing (first-fit decreasing: data::plan_packs in data/dataset.h) ----
// Deterministic Fisher-Yates shuffle (splitmix64 stream), identical on every platform.
void shuffle_indices(std::vector<size_t>& v, uint64_t seed);

// "OUT.00000-of-00004", ... for shards > 1; {OUT} for 1.
std::vector<std::string> shard_paths(const std::string& out, int shards);

// ---- the pipeline ----
enum class OnError { skip, fail };

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string tokenizer_dir;
  std::string out;
  int64_t pack_tokens = 65536;
  int64_t min_tokens = 64;
  uint64_t seed = 0;
  bool shuffle = true;
  int shards = 1;
  int threads = 0;            // 0: hardware concurrency
  std::string chat = "auto";  // auto | qwen3 | llama3
  TaskMap tasks = default_task_map();
  OnError on_error = OnError::skip;
  bool progress = true;  // progress bar / lines on stderr
};

struct PrepareReport {
  struct TaskStats {
    int64_t samples = 0, tokens = 0, labelled = 0, prompt_tokens = 0;
  };
  std::vector<std::string> inputs;
  int64_t lines = 0;        // lines read (blank ones included)
  int64_t blank_lines = 0;  // ignored
  int64_t records = 0;      // non-blank lines
  int64_t kept = 0;         // samples written
  std::map<std::string, int64_t> bad_lines;  // by InputError kind
  std::map<std::string, int64_t> dropped;    // too_short, too_long
  std::vector<std::string> messages;         // "FILE:LINE: kind: message", the first kMaxMessages
  static constexpr size_t kMaxMessages = 20;
  std::map<int32_t, TaskStats> tasks;        // kept samples only
  int64_t packs = 0, tokens = 0, budget = 0, min_tokens = 0;
  double fill = 0;  // tokens / (packs * budget)
  std::vector<std::string> outputs;
  std::vector<int64_t> shard_packs, shard_samples, shard_tokens;
  std::string tokenizer_dir, chat_family;
  uint64_t fingerprint = 0;
  uint32_t vocab_size = 0;
  int threads = 0;
  double seconds = 0, tokenize_seconds = 0, pack_seconds = 0, write_seconds = 0;

  int64_t bad_total() const;
  int64_t dropped_total() const;
  // The human-readable report `prepare-data` prints.
  std::string format(const TaskMap& tasks) const;
};

// Runs the whole pipeline. Throws elastic::Error on a missing input / tokenizer, bad options, or
// (with OnError::fail) the first bad line, naming FILE:LINE.
PrepareReport prepare_dataset(const PrepareOptions& o);

// ---- inspection ----
// A text description of pack `index` of `ds`: one line per sample (task, token range, prompt
// range, labelled count and span, coverage) and, with a tokenizer, the first/last `chars`
// characters of the decoded prompt and the decoded labelled tokens (escaped, one line each).
std::string describe_pack(const Dataset& ds, size_t index, const text::Tokenizer* tok, const TaskMap& tasks,
                          size_t chars = 80);
// The header fields, one per line.
std::string describe_header(const Dataset& ds);
// `s` with \n, \t, \r, \\ and other control characters escaped; at most `chars` code points from the
// start (from_end = false) or the end (true), with "…" where cut.
std::string preview(std::string_view s, size_t chars, bool from_end);

}  // namespace elastic::data
