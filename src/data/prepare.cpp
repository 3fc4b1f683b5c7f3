#include "data/prepare.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <thread>

#include "text/unicode.h"
#include "util/log.h"
#include "util/progress.h"

namespace elastic::data {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// "a" + "\n" + "b", leaving out an empty part and its separator.
std::string join_nl(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  std::string r;
  r.reserve(a.size() + b.size() + 1);
  r.append(a).append("\n").append(b);
  return r;
}

std::string json_error_text(const char* what) {
  // "[json.exception.parse_error.101] parse error at ..." -> "parse error at ..."
  std::string s = what;
  if (s.rfind("[json.exception.", 0) == 0) {
    const size_t close = s.find("] ");
    if (close != std::string::npos) s = s.substr(close + 2);
  }
  return s;
}

std::string known_tasks(const TaskMap& tasks) {
  std::ostringstream os;
  bool first = true;
  for (const auto& [n, id] : tasks) {
    os << (first ? "" : ", ") << n << "=" << id;
    first = false;
  }
  return os.str();
}

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

}  // namespace

// ---------------------------------------------------------------- tasks

TaskMap default_task_map() {
  return {{"single_qa", 0}, {"multihop_qa", 1}, {"summarization", 2}, {"code", 3}, {"icl", 4}};
}

TaskMap parse_task_map(const std::string& spec, TaskMap base) {
  std::stringstream ss(spec);
  for (std::string item; std::getline(ss, item, ',');) {
    item = trim(item);
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    ELASTIC_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < item.size(),
                  "--tasks: expected name=id entries separated by commas, got '" << item << "'");
    const std::string name = trim(item.substr(0, eq)), value = trim(item.substr(eq + 1));
    long long v = -1;
    size_t pos = 0;
    try {
      v = std::stoll(value, &pos);
    } catch (...) {
      pos = 0;
    }
    ELASTIC_CHECK(pos == value.size() && v >= 0 && v <= INT32_MAX,
                  "--tasks: the id of task '" << name << "' must be an integer in [0, 2^31), got '" << value << "'");
    base[name] = static_cast<int32_t>(v);
  }
  return base;
}

std::string task_name(const TaskMap& tasks, int32_t id) {
  for (const auto& [n, i] : tasks)
    if (i == id) return n;
  return "task" + std::to_string(id);
}

// ---------------------------------------------------------------- records

RawRecord parse_raw_record(std::string_view line, const TaskMap& tasks) {
  json j;
  try {
    j = json::parse(line.begin(), line.end());
  } catch (const json::exception& e) {
    throw InputError("malformed_json", "malformed JSON: " + json_error_text(e.what()));
  }
  if (!j.is_object()) throw InputError("malformed_json", std::string("expected a JSON object, got ") + j.type_name());
  RawRecord r;
  auto text_field = [&](const char* key, std::string& out) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) throw InputError("missing_field", std::string("missing field '") + key + "'");
    if (!it->is_string())
      throw InputError("invalid_field",
                       std::string("field '") + key + "' must be a string, got " + it->type_name());
    out = it->get<std::string>();
  };
  text_field("context", r.context);
  text_field("question", r.question);
  text_field("answer", r.answer);
  if (r.answer.empty()) throw InputError("invalid_field", "field 'answer' is empty");

  auto m = j.find("metadata");
  if (m == j.end() || m->is_null()) throw InputError("missing_field", "missing field 'metadata'");
  if (!m->is_object())
    throw InputError("invalid_field", std::string("field 'metadata' must be an object, got ") + m->type_name());
  auto t = m->find("task");
  if (t == m->end() || t->is_null()) throw InputError("missing_field", "missing field 'metadata.task'");
  if (t->is_string()) {
    const std::string name = t->get<std::string>();
    auto it = tasks.find(name);
    if (it == tasks.end())
      throw InputError("unknown_task", "unknown task '" + name + "' (known: " + known_tasks(tasks) +
                                           "; add it with --tasks " + (name.empty() ? "NAME" : name) + "=ID)");
    r.task = it->second;
  } else if (t->is_number_integer()) {
    const bool neg = t->is_number_unsigned() ? false : t->get<int64_t>() < 0;
    const uint64_t v = neg ? 0 : t->get<uint64_t>();
    if (neg || v > static_cast<uint64_t>(INT32_MAX))
      throw InputError("invalid_field", "field 'metadata.task' must be a task name or an id in [0, 2^31), got " +
                                            t->dump());
    r.task = static_cast<int32_t>(v);
  } else {
    throw InputError("invalid_field",
                     std::string("field 'metadata.task' must be a task name or an integer id, got ") + t->type_name());
  }
  auto p = m->find("is_prefix");
  if (p != m->end() && !p->is_null()) {
    if (p->is_boolean()) r.is_prefix = p->get<bool>();
    else if (p->is_number_integer() && (p->get<int64_t>() == 0 || p->get<int64_t>() == 1)) r.is_prefix = p->get<int64_t>() == 1;
    else throw InputError("invalid_field", "field 'metadata.is_prefix' must be true or false, got " + p->dump());
  }
  return r;
}

std::string build_user_turn(const RawRecord& r) {
  const std::string body = r.is_prefix ? join_nl(r.question, r.context) : join_nl(r.context, r.question);
  if (r.task == kSummarizationTask) return join_nl(kSummarizationInstruction, body) + kSummarizationSuffix;
  if (r.task == kCodeTask) return join_nl(kCodeInstruction, body);
  return body;
}

// ---------------------------------------------------------------- samples

SampleBuilder::SampleBuilder(const text::Tokenizer& tok, text::ChatFamily family) : tok_(&tok), fmt_(tok, family) {}

Sample SampleBuilder::build(const RawRecord& r) const { return build(build_user_turn(r), r.answer, r.task); }

Sample SampleBuilder::build(const std::string& user, const std::string& answer, int32_t task) const {
  text::ChatEncoding enc;
  try {
    enc = fmt_.encode(user, answer);
  } catch (const Error& e) {
    throw InputError("tokenize_error", e.what());
  }
  // Locate the user content in the rendered text: the template around it does not depend on it,
  // so render once more with a sentinel as the user turn; what precedes the sentinel is the head,
  // what follows it the tail, and the real text must be head + content + tail.
  static const std::string kSentinel = "\x01" "elastic-user-turn" "\x01";
  const std::string probe = fmt_.render(kSentinel, answer);
  const size_t h = probe.find(kSentinel);
  const std::string_view shown =
      fmt_.family() == text::ChatFamily::llama3 ? text::unicode::py_strip(user) : std::string_view(user);
  const std::string& t = enc.text;
  const size_t tail = h == std::string::npos ? 0 : probe.size() - h - kSentinel.size();
  const bool located = h != std::string::npos && t.size() == h + shown.size() + tail &&
                       t.compare(0, h, probe, 0, h) == 0 && t.compare(h, shown.size(), shown) == 0 &&
                       t.compare(h + shown.size(), tail, probe, h + kSentinel.size(), tail) == 0;
  if (!located) throw InputError("tokenize_error", "cannot locate the user turn inside the rendered chat template");
  if (shown.empty()) throw InputError("invalid_field", "the user turn is empty (context and question are both empty)");

  // Token i covers bytes [end[i] - len_i, end[i]) of the normalized text.
  const auto& ids = enc.ids;
  ELASTIC_CHECK(ids.size() < UINT32_MAX, "sample of " << ids.size() << " tokens is too long");
  std::vector<size_t> end(ids.size());
  size_t cum = 0;
  for (size_t i = 0; i < ids.size(); ++i) end[i] = (cum += tok_->token_bytes(ids[i]).size());
  size_t ub = h, ue = h + shown.size();
  if (cum != t.size()) {
    // The normalizer (NFC) changed byte lengths: measure the normalized prefixes instead. Both end
    // before an added token or after "\n", so they normalize as prefixes of the whole.
    auto bytes_of = [&](const std::string& s) {
      size_t n = 0;
      for (auto id : tok_->encode(s, false)) n += tok_->token_bytes(id).size();
      return n;
    };
    ub = bytes_of(t.substr(0, h));
    ue = bytes_of(t.substr(0, h + shown.size()));
  }
  // First token holding a byte at or after ub; one past the last token starting before ue.
  const size_t pb = static_cast<size_t>(std::upper_bound(end.begin(), end.end(), ub) - end.begin());
  size_t pe = pb;
  while (pe < ids.size() && (pe == 0 ? 0 : end[pe - 1]) < ue) ++pe;
  if (!(pb < pe && pe <= enc.answer_begin))
    throw InputError("tokenize_error", "prompt tokens [" + std::to_string(pb) + ", " + std::to_string(pe) +
                                           ") do not precede the answer at token " + std::to_string(enc.answer_begin));
  Sample s;
  s.tokens.assign(ids.begin(), ids.end());
  s.labels.assign(ids.size(), 0);
  std::fill(s.labels.begin() + enc.answer_begin, s.labels.begin() + enc.answer_end, uint8_t{1});
  s.prompt_begin = static_cast<uint32_t>(pb);
  s.prompt_end = static_cast<uint32_t>(pe);
  s.task = task;
  return s;
}

// ---------------------------------------------------------------- packing

void shuffle_indices(std::vector<size_t>& v, uint64_t seed) {
  uint64_t s = seed;
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[splitmix64(s) % i]);
}

std::vector<std::string> shard_paths(const std::string& out, int shards) {
  ELASTIC_CHECK(shards >= 1 && shards <= 99999, "--shards must be in [1, 99999], got " << shards);
  if (shards == 1) return {out};
  std::vector<std::string> r;
  for (int i = 0; i < shards; ++i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, ".%05d-of-%05d", i, shards);
    r.push_back(out + buf);
  }
  return r;
}

// ---------------------------------------------------------------- pipeline

int64_t PrepareReport::bad_total() const {
  int64_t n = 0;
  for (const auto& [k, v] : bad_lines) n += v;
  return n;
}

int64_t PrepareReport::dropped_total() const {
  int64_t n = 0;
  for (const auto& [k, v] : dropped) n += v;
  return n;
}

std::string PrepareReport::format(const TaskMap& task_map) const {
  std::ostringstream os;
  auto row = [&](const std::string& k) -> std::ostream& { return os << "  " << std::left << std::setw(16) << k << std::right; };
  os << "prepare-data report\n";
  row("inputs") << inputs.size() << " file" << (inputs.size() == 1 ? "" : "s") << ", " << lines << " lines ("
                << blank_lines << " blank)\n";
  row("samples read") << records << "\n";
  row("bad lines") << bad_total();
  if (bad_total()) {
    os << " skipped:";
    const char* sep = " ";
    for (const auto& [k, v] : bad_lines) {
      os << sep << k << " " << v;
      sep = ", ";
    }
  }
  os << "\n";
  row("dropped") << dropped_total();
  if (dropped_total()) {
    os << ":";
    if (dropped.count("too_short")) os << " too_short " << dropped.at("too_short") << " (< " << min_tokens << " tokens)";
    if (dropped.count("too_short") && dropped.count("too_long")) os << ",";
    if (dropped.count("too_long")) os << " too_long " << dropped.at("too_long") << " (> " << budget << " tokens)";
  }
  os << "\n";
  int64_t labelled = 0;
  for (const auto& [id, t] : tasks) labelled += t.labelled;
  row("kept") << kept << " samples, " << tokens << " tokens (" << labelled << " labelled)\n";
  os << "  " << std::left << std::setw(22) << "task" << std::right << std::setw(10) << "samples" << std::setw(14)
     << "tokens" << std::setw(11) << "mean len" << std::setw(12) << "labelled" << std::setw(12) << "prompt" << "\n";
  for (const auto& [id, t] : tasks) {
    os << "  " << std::left << std::setw(22) << (task_name(task_map, id) + " (" + std::to_string(id) + ")")
       << std::right << std::setw(10) << t.samples << std::setw(14) << t.tokens << std::setw(11)
       << (t.samples ? t.tokens / t.samples : 0) << std::setw(12) << t.labelled << std::setw(12) << t.prompt_tokens
       << "\n";
  }
  row("packs") << packs << " of " << budget << " tokens, fill " << fixed(100 * fill, 2) << "%\n";
  for (size_t i = 0; i < outputs.size(); ++i) {
    row(i == 0 ? (outputs.size() == 1 ? "output" : "shards") : "") << outputs[i] << " (" << shard_packs[i]
                                                                     << " packs, " << shard_samples[i] << " samples, "
                                                                     << shard_tokens[i] << " tokens)\n";
  }
  row("tokenizer") << tokenizer_dir << " (chat " << chat_family << ", vocab " << vocab_size << ", fingerprint "
                   << hex64(fingerprint) << ")\n";
  row("time") << fixed(seconds, 2) << " s (tokenize " << fixed(tokenize_seconds, 2) << " s on " << threads
              << " thread" << (threads == 1 ? "" : "s") << ", pack " << fixed(pack_seconds, 2) << " s, write "
              << fixed(write_seconds, 2) << " s)\n";
  if (!messages.empty()) {
    os << "  first bad lines:\n";
    for (const auto& m : messages) os << "    " << m << "\n";
    if (static_cast<int64_t>(messages.size()) < bad_total())
      os << "    ... " << bad_total() - static_cast<int64_t>(messages.size()) << " more\n";
  }
  return os.str();
}

namespace {

// Progress updates at most every 0.1 s on a terminal and every 10 s in a log: Progress logs a
// line per update when stderr is not a terminal.
class ThrottledProgress {
 public:
  ThrottledProgress(const std::string& what, int64_t total)
      : p_(what, total), interval_(log::stderr_is_tty() ? 0.1 : 10.0), last_(Clock::now()) {}
  void update(int64_t done, const std::string& status, bool force = false) {
    if (!force && seconds_since(last_) < interval_) return;
    last_ = Clock::now();
    p_.update(done, status);
  }
  void finish(const std::string& status) { p_.finish(status); }

 private:
  Progress p_;
  double interval_;
  Clock::time_point last_;
};

struct Line {
  int file = 0;
  int64_t number = 0;
  std::string text;
};

struct Outcome {
  enum Status : uint8_t { ok, blank, too_short, too_long, bad } status = ok;
  bool processed = false;
  std::string kind, message;
  Sample sample;
};

int64_t count_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ELASTIC_CHECK(in, "prepare-data: cannot open input file '" << path << "' (" << std::strerror(errno) << ")");
  std::vector<char> buf(1 << 20);
  int64_t n = 0;
  char last = '\n';
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto got = in.gcount();
    if (got <= 0) break;
    n += std::count(buf.begin(), buf.begin() + got, '\n');
    last = buf[static_cast<size_t>(got) - 1];
  }
  return n + (last != '\n' ? 1 : 0);
}

}  // namespace

PrepareReport prepare_dataset(const PrepareOptions& o) {
  const auto t0 = Clock::now();
  // ---- options and files, before any expensive work
  ELASTIC_CHECK(!o.inputs.empty(), "prepare-data: no input file (--input FILE.jsonl)");
  for (const auto& in : o.inputs) {
    ELASTIC_CHECK(fs::exists(in), "prepare-data: input file '" << in << "' does not exist");
    ELASTIC_CHECK(fs::is_regular_file(in), "prepare-data: input '" << in << "' is not a regular file");
  }
  ELASTIC_CHECK(!o.tokenizer_dir.empty(), "prepare-data: no tokenizer directory (--tokenizer DIR)");
  ELASTIC_CHECK(fs::is_directory(o.tokenizer_dir),
                "prepare-data: tokenizer directory '" << o.tokenizer_dir << "' does not exist");
  ELASTIC_CHECK(fs::is_regular_file(fs::path(o.tokenizer_dir) / "tokenizer.json"),
                "prepare-data: tokenizer directory '" << o.tokenizer_dir << "' has no tokenizer.json");
  ELASTIC_CHECK(!o.out.empty(), "prepare-data: no output path (--out DATASET)");
  ELASTIC_CHECK(o.pack_tokens >= 1 && o.pack_tokens <= INT32_MAX,
                "prepare-data: --pack-tokens must be in [1, 2^31), got " << o.pack_tokens);
  ELASTIC_CHECK(o.min_tokens >= 0 && o.min_tokens <= o.pack_tokens,
                "prepare-data: --min-tokens must be in [0, --pack-tokens], got " << o.min_tokens);
  ELASTIC_CHECK(o.threads >= 0, "prepare-data: --threads must be >= 0, got " << o.threads);
  const auto paths = shard_paths(o.out, o.shards);

  PrepareReport rep;
  rep.inputs = o.inputs;
  rep.budget = o.pack_tokens;
  rep.min_tokens = o.min_tokens;
  rep.tokenizer_dir = o.tokenizer_dir;
  rep.threads = o.threads > 0 ? o.threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  const text::Tokenizer tok = text::Tokenizer::from_dir(o.tokenizer_dir);
  text::ChatFamily family;
  if (o.chat == "auto") {
    auto f = text::detect_chat_family(tok);
    ELASTIC_CHECK(f.has_value(), "prepare-data: cannot detect the chat template family of '"
                                     << o.tokenizer_dir << "' (tokenizer_config.json chat_template); pass "
                                     << "--chat qwen3 or --chat llama3");
    family = *f;
  } else {
    family = text::parse_chat_family(o.chat);
  }
  const SampleBuilder builder(tok, family);
  rep.chat_family = text::chat_family_name(family);
  rep.fingerprint = tok.fingerprint();

  // ---- read, parse and tokenize, chunk by chunk, on worker threads
  const auto t_tok = Clock::now();
  int64_t total_lines = 0;
  for (const auto& in : o.inputs) total_lines += count_lines(in);
  std::unique_ptr<ThrottledProgress> prog;
  if (o.progress) prog = std::make_unique<ThrottledProgress>("tokenizing", total_lines);
  std::vector<Sample> samples;  // kept, in input order
  int64_t lines_done = 0;
  int64_t max_id = -1;

  auto process = [&](const Line& line, Outcome& out) {
    std::string_view text = line.text;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) {
      out.status = Outcome::blank;
      return;
    }
    try {
      const RawRecord r = parse_raw_record(text, o.tasks);
      out.sample = builder.build(r);
      const int64_t n = static_cast<int64_t>(out.sample.tokens.size());
      if (n < o.min_tokens) out.status = Outcome::too_short;
      else if (n > o.pack_tokens) out.status = Outcome::too_long;
      if (out.status != Outcome::ok) out.sample = Sample{};
    } catch (const InputError& e) {
      out.status = Outcome::bad;
      out.kind = e.kind();
      out.message = e.what();
    } catch (const Error& e) {
      out.status = Outcome::bad;
      out.kind = "tokenize_error";
      out.message = e.what();
    }
  };

  auto run_chunk = [&](std::vector<Line>& chunk) {
    if (chunk.empty()) return;
    std::vector<Outcome> outs(chunk.size());
    std::atomic<size_t> next{0}, done{0};
    std::atomic<int> running{0};
    std::atomic<bool> stop{false};
    const int nt = static_cast<int>(std::min<size_t>(static_cast<size_t>(rep.threads), chunk.size()));
    std::vector<std::exception_ptr> fatal(static_cast<size_t>(nt));
    std::vector<std::thread> pool;
    running = nt;
    for (int w = 0; w < nt; ++w) {
      pool.emplace_back([&, w] {
        try {
          while (!stop.load(std::memory_order_relaxed)) {
            const size_t i = next.fetch_add(1);
            if (i >= chunk.size()) break;
            process(chunk[i], outs[i]);
            outs[i].processed = true;
            if (outs[i].status == Outcome::bad && o.on_error == OnError::fail) stop = true;
            done.fetch_add(1);
          }
        } catch (...) {
          fatal[static_cast<size_t>(w)] = std::current_exception();
          stop = true;
        }
        running.fetch_sub(1);
      });
    }
    auto status = [&] {
      return std::to_string(rep.kept) + " kept, " + std::to_string(rep.bad_total()) + " bad, " +
             std::to_string(rep.dropped_total()) + " dropped";
    };
    while (running.load() > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      if (prog) prog->update(lines_done + static_cast<int64_t>(done.load()), status());
    }
    for (auto& th : pool) th.join();
    for (auto& f : fatal)
      if (f) std::rethrow_exception(f);
    // Every index below the first failure was taken, hence finished: results are in input order.
    for (size_t i = 0; i < chunk.size(); ++i) {
      auto& r = outs[i];
      const auto& line = chunk[i];
      if (!r.processed) break;  // fail mode stopped early; everything before was processed
      ++rep.lines;
      switch (r.status) {
        case Outcome::blank: ++rep.blank_lines; break;
        case Outcome::bad: {
          ++rep.records;
          const std::string where = o.inputs[static_cast<size_t>(line.file)] + ":" + std::to_string(line.number);
          if (o.on_error == OnError::fail)
            ELASTIC_FAIL(where << ": " << r.message << " (" << r.kind << "; stopping because of --on-error fail)");
          ++rep.bad_lines[r.kind];
          const int64_t n = rep.bad_total();
          if (n <= static_cast<int64_t>(PrepareReport::kMaxMessages)) {
            rep.messages.push_back(where + ": " + r.message);
            LOG_WARN(where << ": " << r.message << " (" << r.kind << ", line skipped)");
            if (n == static_cast<int64_t>(PrepareReport::kMaxMessages))
              LOG_WARN("further bad lines are counted but not logged");
          }
          break;
        }
        case Outcome::too_short: ++rep.records; ++rep.dropped["too_short"]; break;
        case Outcome::too_long: ++rep.records; ++rep.dropped["too_long"]; break;
        case Outcome::ok: {
          ++rep.records;
          ++rep.kept;
          auto& st = rep.tasks[r.sample.task];
          const auto& s = r.sample;
          st.samples++;
          st.tokens += static_cast<int64_t>(s.tokens.size());
          st.labelled += std::count(s.labels.begin(), s.labels.end(), uint8_t{1});
          st.prompt_tokens += s.prompt_end - s.prompt_begin;
          for (auto id : s.tokens) max_id = std::max<int64_t>(max_id, id);
          samples.push_back(std::move(r.sample));
          break;
        }
      }
    }
    lines_done += static_cast<int64_t>(chunk.size());
    if (prog) prog->update(lines_done, status(), lines_done == total_lines);
    chunk.clear();
  };

  constexpr size_t kChunkLines = 16384;
  constexpr size_t kChunkBytes = size_t{256} << 20;
  std::vector<Line> chunk;
  size_t chunk_bytes = 0;
  for (size_t f = 0; f < o.inputs.size(); ++f) {
    std::ifstream in(o.inputs[f], std::ios::binary);
    ELASTIC_CHECK(in, "prepare-data: cannot open input file '" << o.inputs[f] << "' (" << std::strerror(errno) << ")");
    int64_t number = 0;
    for (std::string s; std::getline(in, s);) {
      chunk_bytes += s.size();
      chunk.push_back(Line{static_cast<int>(f), ++number, std::move(s)});
      if (chunk.size() >= kChunkLines || chunk_bytes >= kChunkBytes) {
        run_chunk(chunk);
        chunk_bytes = 0;
      }
    }
    ELASTIC_CHECK(in.eof(), "prepare-data: error reading '" << o.inputs[f] << "' after line " << number);
  }
  run_chunk(chunk);
  if (prog) prog->finish(std::to_string(rep.kept) + " samples kept");
  rep.tokenize_seconds = seconds_since(t_tok);
  ELASTIC_CHECK(!samples.empty(), "prepare-data: no sample left to write (" << rep.records << " records, "
                                      << rep.bad_total() << " bad lines, " << rep.dropped_total()
                                      << " dropped as shorter than --min-tokens " << o.min_tokens
                                      << " or longer than --pack-tokens " << o.pack_tokens << ")");

  // ---- pack: shuffle samples (ties of equal length and pack contents mix tasks), FFD, shuffle packs
  const auto t_pack = Clock::now();
  std::vector<size_t> order(samples.size());
  std::iota(order.begin(), order.end(), size_t{0});
  if (o.shuffle) shuffle_indices(order, o.seed);
  std::vector<uint32_t> lengths(order.size());
  for (size_t k = 0; k < order.size(); ++k) lengths[k] = static_cast<uint32_t>(samples[order[k]].tokens.size());
  auto plan = plan_packs(lengths, o.pack_tokens);
  for (auto& p : plan)
    for (auto& k : p) k = order[k];
  std::vector<size_t> pack_order(plan.size());
  std::iota(pack_order.begin(), pack_order.end(), size_t{0});
  if (o.shuffle) shuffle_indices(pack_order, o.seed ^ 0x7061636b6f726465ull);
  rep.pack_seconds = seconds_since(t_pack);
  rep.packs = static_cast<int64_t>(plan.size());
  ELASTIC_CHECK(static_cast<int64_t>(o.shards) <= rep.packs,
                "prepare-data: --shards " << o.shards << " is more than the " << rep.packs
                                          << " packs made; use fewer shards or a smaller --pack-tokens");

  // ---- write: pack k goes to shard k % shards
  const auto t_write = Clock::now();
  rep.vocab_size = static_cast<uint32_t>(std::max<int64_t>(static_cast<int64_t>(tok.vocab_size()), max_id + 1));
  for (const auto& p : paths)
    if (fs::path(p).has_parent_path()) fs::create_directories(fs::path(p).parent_path());
  std::vector<std::unique_ptr<DatasetWriter>> writers;
  for (const auto& p : paths) writers.push_back(std::make_unique<DatasetWriter>(p, rep.vocab_size, rep.fingerprint));
  rep.outputs = paths;
  rep.shard_packs.assign(paths.size(), 0);
  rep.shard_samples.assign(paths.size(), 0);
  rep.shard_tokens.assign(paths.size(), 0);
  std::unique_ptr<ThrottledProgress> wprog;
  if (o.progress) wprog = std::make_unique<ThrottledProgress>("writing", rep.packs);
  for (size_t k = 0; k < pack_order.size(); ++k) {
    Pack pk;
    for (size_t idx : plan[pack_order[k]]) {
      Sample& s = samples[idx];
      append_sample(pk, s);
      std::vector<int32_t>().swap(s.tokens);  // release as we go
      std::vector<uint8_t>().swap(s.labels);
    }
    const size_t shard = k % paths.size();
    writers[shard]->add(pk);
    rep.shard_packs[shard]++;
    rep.shard_samples[shard] += static_cast<int64_t>(pk.samples.size());
    rep.shard_tokens[shard] += static_cast<int64_t>(pk.tokens.size());
    rep.tokens += static_cast<int64_t>(pk.tokens.size());
    if (wprog) wprog->update(static_cast<int64_t>(k + 1), "", k + 1 == pack_order.size());
  }
  for (auto& w : writers) w->finish();
  if (wprog) wprog->finish(std::to_string(paths.size()) + " file" + (paths.size() == 1 ? "" : "s"));
  rep.write_seconds = seconds_since(t_write);
  rep.fill = static_cast<double>(rep.tokens) / (static_cast<double>(rep.packs) * static_cast<double>(rep.budget));
  rep.seconds = seconds_since(t0);
  return rep;
}

// ---------------------------------------------------------------- inspection

std::string preview(std::string_view raw, size_t chars, bool from_end) {
  std::string valid;
  if (text::unicode::find_invalid_utf8(raw) != std::string_view::npos) {
    valid = text::unicode::utf8_lossy(raw);
    raw = valid;
  }
  std::vector<size_t> starts;  // byte offset of each code point
  for (size_t i = 0; i < raw.size();) {
    starts.push_back(i);
    text::unicode::next_cp(raw, i);
  }
  const size_t n = starts.size();
  const bool cut = n > chars;
  const size_t b = cut && from_end ? starts[n - chars] : 0;
  const size_t e = cut && !from_end ? starts[chars] : raw.size();
  std::string out;
  if (cut && from_end) out += "…";
  for (size_t i = b; i < e; ++i) {
    const unsigned char c = static_cast<unsigned char>(raw[i]);
    switch (c) {
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      case '\\': out += "\\\\"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  if (cut && !from_end) out += "…";
  return out;
}

std::string describe_header(const Dataset& ds) {
  const auto& h = ds.header();
  std::ostringstream os;
  os << "dataset           " << ds.path() << "\nformat version    " << h.version << "\nvocab size        "
     << h.vocab_size << "\ntokenizer         " << hex64(h.tokenizer_fingerprint)
     << (h.tokenizer_fingerprint ? "" : " (synthetic)") << "\npacks             " << h.num_packs
     << "\nsamples           " << h.num_samples << "\ntokens            " << h.num_tokens
     << "\nmean pack         " << (h.num_packs ? h.num_tokens / h.num_packs : 0) << " tokens\n";
  return os.str();
}

std::string describe_pack(const Dataset& ds, size_t index, const text::Tokenizer* tok, const TaskMap& tasks,
                          size_t chars) {
  const Pack p = ds.pack(index);
  std::ostringstream os;
  const int64_t labelled_all = std::count(p.labels.begin(), p.labels.end(), uint8_t{1});
  os << "pack " << index << ": " << p.tokens.size() << " tokens, " << p.samples.size() << " samples, " << labelled_all
     << " labelled\n";
  auto show = [&](const char* what, const std::vector<int32_t>& ids) {
    const std::string t = tok->decode(ids, false);
    size_t ncp = 0;
    for (size_t i = 0; i < t.size(); ++i) ncp += (static_cast<unsigned char>(t[i]) & 0xC0) != 0x80;
    if (ncp <= 2 * chars) {
      os << "      " << std::left << std::setw(13) << what << "\"" << preview(t, 2 * chars, false) << "\"\n";
    } else {
      os << "      " << std::left << std::setw(13) << (std::string(what) + " head") << "\"" << preview(t, chars, false)
         << "\"\n";
      os << "      " << std::left << std::setw(13) << (std::string(what) + " tail") << "\"" << preview(t, chars, true)
         << "\"\n";
    }
    os << std::right;
  };
  for (size_t s = 0; s < p.samples.size(); ++s) {
    const auto& m = p.samples[s];
    int64_t labelled = 0, first = -1, last = -1;
    for (uint32_t t = 0; t < m.length; ++t) {
      if (!p.labels[m.offset + t]) continue;
      ++labelled;
      if (first < 0) first = t;
      last = t;
    }
    os << "  sample " << s << ": task " << task_name(tasks, m.task) << " (" << m.task << "), tokens [" << m.offset
       << ", " << m.offset + m.length << "), prompt [" << m.prompt_begin << ", " << m.prompt_end << "), labelled "
       << labelled;
    if (labelled) {
      os << " at [" << first << ", " << last + 1 << ")";
      if (last + 1 - first != labelled) os << " (not contiguous)";
    }
    os << ", coverage " << fixed(100.0 * static_cast<double>(labelled) / m.length, 2) << "%\n";
    if (!tok) continue;
    const auto* base = p.tokens.data() + m.offset;
    show("prompt", std::vector<int32_t>(base + m.prompt_begin, base + m.prompt_end));
    std::vector<int32_t> ans;
    for (uint32_t t = 0; t < m.length; ++t)
      if (p.labels[m.offset + t]) ans.push_back(base[t]);
    show("labelled", ans);
  }
  return os.str();
}

}  // namespace elastic::data
