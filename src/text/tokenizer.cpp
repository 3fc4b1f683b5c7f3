#include "text/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "text/bpe.h"
#include "text/unicode.h"
#include "util/error.h"
#include "util/log.h"

namespace elastic::text {

using json = nlohmann::json;

uint64_t fnv1a64(std::string_view bytes, uint64_t h) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

namespace {

constexpr const char* kSupportedModels = "BPE";
constexpr const char* kSupportedNormalizers = "NFC, Sequence of NFC, or null";
constexpr const char* kSupportedPreTokenizers =
    "Sequence of Split (Regex pattern, behavior Isolated, invert false) followed by ByteLevel "
    "(add_prefix_space false, use_regex false), or ByteLevel alone with those settings";
constexpr const char* kSupportedPostProcessors = "ByteLevel, TemplateProcessing, Sequence of those, or null";
constexpr const char* kSupportedDecoders = "ByteLevel";

std::string read_file(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  ELASTIC_CHECK(f.good(), what << " '" << path << "': cannot open file");
  std::ostringstream ss;
  ss << f.rdbuf();
  ELASTIC_CHECK(!f.bad(), what << " '" << path << "': read error");
  return ss.str();
}

json parse_json(const std::string& text, const std::string& path, const char* what) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    ELASTIC_FAIL(what << " '" << path << "': malformed JSON: " << e.what());
  }
}

// "key 'a.b' ..." error helper
#define TOK_FAIL(key, expr) ELASTIC_FAIL("tokenizer.json '" << path_ << "': key '" << key << "': " << expr)
#define TOK_CHECK(cond, key, expr) \
  do {                             \
    if (!(cond)) TOK_FAIL(key, expr); \
  } while (0)

std::string type_of(const json& j) {
  if (j.is_object() && j.contains("type") && j["type"].is_string()) return j["type"].get<std::string>();
  return j.is_null() ? "null" : "<no type>";
}

// Translates a HF (Oniguruma) regex to PCRE2. Onig's Unicode \s is White_Space-like
// (Zs, Zl, Zp, \t-\r, U+0085); PCRE2's UCP \s also takes U+180E, so \s and \S are spelled out.
// \d and \w get Onig's Unicode meaning as well.
std::string onig_to_pcre2(const std::string& pat) {
  static const std::string ws =
      "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
      "\\x{205F}\\x{3000}";
  static const std::string word = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pat.size(); ++i) {
    const char c = pat[i];
    if (c == '\\' && i + 1 < pat.size()) {
      const char e = pat[i + 1];
      ++i;
      if (e == 's') {
        out += in_class ? ws : "[" + ws + "]";
      } else if (e == 'S') {
        if (in_class) throw Error("\\S inside a character class is not supported");
        out += "[^" + ws + "]";
      } else if (e == 'd') {
        out += in_class ? "\\p{Nd}" : "\\p{Nd}";
      } else if (e == 'D') {
        if (in_class) throw Error("\\D inside a character class is not supported");
        out += "\\P{Nd}";
      } else if (e == 'w') {
        out += in_class ? word : "[" + word + "]";
      } else if (e == 'W') {
        if (in_class) throw Error("\\W inside a character class is not supported");
        out += "[^" + word + "]";
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // a leading ']' or '^]' is literal
      if (i + 1 < pat.size() && pat[i + 1] == '^') out += pat[++i];
      if (i + 1 < pat.size() && pat[i + 1] == ']') out += pat[++i];
      continue;
    }
    if (in_class && c == '[') throw Error("nested character classes are not supported");
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

struct Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
  std::string pattern;
  Regex() = default;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

// Per-thread PCRE2 scratch: match data and a JIT stack (long whitespace runs need more than
// the 32 KiB default).
struct MatchScratch {
  pcre2_match_data* md = nullptr;
  pcre2_jit_stack* stack = nullptr;
  pcre2_match_context* mctx = nullptr;
  MatchScratch() {
    md = pcre2_match_data_create(8, nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    mctx = pcre2_match_context_create(nullptr);
    if (stack && mctx) pcre2_jit_stack_assign(mctx, nullptr, stack);
  }
  ~MatchScratch() {
    if (md) pcre2_match_data_free(md);
    if (mctx) pcre2_match_context_free(mctx);
    if (stack) pcre2_jit_stack_free(stack);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

struct AddedToken {
  TokenId id;
  std::string content;
  bool single_word, lstrip, rstrip, normalized, special;
};

// Leftmost-longest matcher over a set of literal strings (aho-corasick MatchKind::LeftmostLongest
// for our purposes: at the leftmost position where any pattern matches, the longest one).
class LiteralSet {
 public:
  void add(const std::string& s, int value) {
    if (s.empty()) return;
    if (nodes_.empty()) nodes_.push_back(Node{});
    int cur = 0;
    for (unsigned char c : s) {
      int nxt = -1;
      for (auto& [ch, idx] : nodes_[cur].children)
        if (ch == c) nxt = idx;
      if (nxt < 0) {
        nxt = static_cast<int>(nodes_.size());
        nodes_[cur].children.emplace_back(c, nxt);
        nodes_.push_back(Node{});
      }
      cur = nxt;
    }
    nodes_[cur].value = value;
    first_[static_cast<unsigned char>(s[0])] = true;
  }
  bool empty() const { return nodes_.empty(); }
  // Finds the leftmost-longest match at or after `from`: returns start, sets len and value.
  size_t find(std::string_view text, size_t from, size_t* len, int* value) const {
    for (size_t i = from; i < text.size(); ++i) {
      if (!first_[static_cast<unsigned char>(text[i])]) continue;
      int cur = 0, best_val = -1;
      size_t best_len = 0;
      for (size_t k = i; k < text.size(); ++k) {
        const unsigned char c = static_cast<unsigned char>(text[k]);
        int nxt = -1;
        for (auto& [ch, idx] : nodes_[cur].children)
          if (ch == c) {
            nxt = idx;
            break;
          }
        if (nxt < 0) break;
        cur = nxt;
        if (nodes_[cur].value >= 0) best_val = nodes_[cur].value, best_len = k + 1 - i;
      }
      if (best_val >= 0) {
        *len = best_len;
        *value = best_val;
        return i;
      }
    }
    return std::string_view::npos;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int>> children;
    int value = -1;
  };
  std::vector<Node> nodes_;
  std::array<bool, 256> first_{};
};

// Unicode helpers for added-token flags (Rust regex \w and char::is_whitespace semantics).
bool is_word_cp(char32_t cp) {
  if (cp == '_') return true;
  const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  switch (cat) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO: case UTF8PROC_CATEGORY_PC:
      return true;
    default:
      return false;
  }
}
bool is_ws_cp(char32_t c) {  // Rust char::is_whitespace (White_Space property)
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}
size_t prev_cp_start(std::string_view s, size_t end) {
  size_t p = end - 1;
  while (p > 0 && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
  return p;
}

}  // namespace

struct Tokenizer::Impl {
  std::string path_;
  std::string config_path_;
  uint64_t fingerprint_ = 0;

  // model
  std::unordered_map<std::string, TokenId> vocab_;            // byte-level token string -> id
  std::unordered_map<std::string, TokenId, std::hash<std::string>> raw_vocab_;  // raw bytes -> id
  std::vector<std::string> id_to_token_;                       // model ids
  std::array<TokenId, 256> byte_ids_{};
  bpe::MergeTable merges_;
  bool ignore_merges_ = false;

  // added tokens
  std::vector<AddedToken> added_;
  std::unordered_map<std::string, size_t> added_by_content_;
  std::unordered_map<TokenId, size_t> added_by_id_;
  LiteralSet split_raw_, split_normalized_;

  // pipeline
  bool nfc_ = false;
  std::vector<std::unique_ptr<Regex>> splits_;
  std::vector<TokenId> prefix_, suffix_;  // post-processor (add_special_tokens)

  // decode
  std::vector<std::string> bytes_of_;  // id -> raw bytes (model and added)
  std::vector<uint8_t> special_;       // id -> is special added token
  size_t vocab_size_ = 0;

  // config
  std::string chat_template_;
  std::optional<std::string> bos_token_, eos_token_, pad_token_;

  // cache of pre-token bytes -> ids
  static constexpr size_t kShards = 64;
  static constexpr size_t kShardCapacity = 4096;
  static constexpr size_t kMaxCachedLen = 256;
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<TokenId>, StringHash, std::equal_to<>> map;
  };
  mutable std::array<Shard, kShards> cache_;

  void load(const std::string& tj_path, const std::string& cfg_path);
  void load_model(const json& m);
  void load_added(const json& a);
  void load_normalizer(const json& n);
  void load_pre_tokenizer(const json& p);
  void add_split(const json& s, const std::string& key);
  void load_post_processor(const json& p, const std::string& key);
  void load_decoder(const json& d);
  void load_config(const std::string& cfg_path);

  void encode_into(std::string_view text, bool add_special, std::vector<TokenId>& out) const;
  void encode_segment(std::string_view seg, std::vector<TokenId>& out) const;  // normalized text
  void encode_normalized(std::string_view seg, std::vector<TokenId>& out) const;
  void pre_tokenize(std::string_view seg, size_t level, std::vector<TokenId>& out) const;
  void bpe_word(std::string_view word, std::vector<TokenId>& out) const;
  void split_added(std::string_view text, const LiteralSet& set,
                   const std::function<void(std::string_view)>& on_text, std::vector<TokenId>& out) const;

  std::optional<TokenId> lookup(std::string_view tok) const {
    auto a = added_by_content_.find(std::string(tok));
    if (a != added_by_content_.end()) return added_[a->second].id;
    auto v = vocab_.find(std::string(tok));
    if (v != vocab_.end()) return v->second;
    return std::nullopt;
  }
};

void Tokenizer::Impl::load(const std::string& tj_path, const std::string& cfg_path) {
  path_ = tj_path;
  const std::string raw = read_file(tj_path, "tokenizer.json");
  fingerprint_ = fnv1a64(raw);
  const json j = parse_json(raw, tj_path, "tokenizer.json");
  TOK_CHECK(j.is_object(), "<root>", "expected a JSON object");
  TOK_CHECK(j.contains("model") && j["model"].is_object(), "model", "missing or not an object");
  load_model(j["model"]);
  load_added(j.value("added_tokens", json::array()));
  load_normalizer(j.value("normalizer", json()));
  load_pre_tokenizer(j.value("pre_tokenizer", json()));
  load_post_processor(j.value("post_processor", json()), "post_processor");
  load_decoder(j.value("decoder", json()));
  // Added tokens with normalized=false are matched on the raw text; the others on the
  // normalized pieces, with the normalizer applied to their content (as HF does).
  for (size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& t = added_[i];
    if (t.normalized)
      split_normalized_.add(nfc_ ? unicode::nfc(t.content) : t.content, static_cast<int>(i));
    else
      split_raw_.add(t.content, static_cast<int>(i));
  }

  // id tables for decode
  TokenId max_id = static_cast<TokenId>(id_to_token_.size()) - 1;
  for (const auto& t : added_) max_id = std::max(max_id, t.id);
  bytes_of_.assign(static_cast<size_t>(max_id) + 1, std::string());
  special_.assign(static_cast<size_t>(max_id) + 1, 0);
  std::string tmp;
  for (size_t id = 0; id < id_to_token_.size(); ++id) {
    const std::string& t = id_to_token_[id];
    if (t.empty()) continue;
    bytes_of_[id] = unicode::byte_level_decode(t, tmp) ? tmp : t;
  }
  for (const auto& t : added_) {
    bytes_of_[t.id] = unicode::byte_level_decode(t.content, tmp) ? tmp : t.content;
    special_[t.id] = t.special;
  }
  vocab_size_ = vocab_.size();
  for (const auto& t : added_)
    if (!vocab_.count(t.content)) ++vocab_size_;
  if (!cfg_path.empty()) load_config(cfg_path);
}

void Tokenizer::Impl::load_model(const json& m) {
  const std::string type = type_of(m);
  TOK_CHECK(type == "BPE", "model.type",
            "model type '" << type << "' is not supported (supported: " << kSupportedModels << ")");
  auto opt_str_empty = [&](const char* k) {
    if (!m.contains(k) || m[k].is_null()) return;
    TOK_CHECK(m[k].is_string() && m[k].get<std::string>().empty(), std::string("model.") + k,
              "only null or \"\" is supported, got " << m[k].dump());
  };
  opt_str_empty("continuing_subword_prefix");
  opt_str_empty("end_of_word_suffix");
  if (m.contains("dropout") && !m["dropout"].is_null())
    TOK_CHECK(m["dropout"].is_number() && m["dropout"].get<double>() == 0.0, "model.dropout",
              "BPE dropout is not supported, got " << m["dropout"].dump());
  TOK_CHECK(!m.value("byte_fallback", false), "model.byte_fallback", "byte_fallback true is not supported");
  TOK_CHECK(!m.contains("unk_token") || m["unk_token"].is_null(), "model.unk_token",
            "unk_token is not supported for byte-level BPE, got " << m["unk_token"].dump());
  ignore_merges_ = m.value("ignore_merges", false);

  TOK_CHECK(m.contains("vocab") && m["vocab"].is_object(), "model.vocab", "missing or not an object");
  const json& v = m["vocab"];
  vocab_.reserve(v.size());
  TokenId max_id = -1;
  for (auto it = v.begin(); it != v.end(); ++it) {
    TOK_CHECK(it.value().is_number_integer(), "model.vocab", "id of '" << it.key() << "' is not an integer");
    const auto id = it.value().get<int64_t>();
    TOK_CHECK(id >= 0 && id < (1LL << 30), "model.vocab", "id " << id << " out of range");
    vocab_[it.key()] = static_cast<TokenId>(id);
    max_id = std::max(max_id, static_cast<TokenId>(id));
  }
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  std::string tmp;
  for (const auto& [tok, id] : vocab_) {
    id_to_token_[id] = tok;
    if (unicode::byte_level_decode(tok, tmp)) raw_vocab_.emplace(tmp, id);
  }
  for (int b = 0; b < 256; ++b) {
    std::string s;
    unicode::append_utf8(s, unicode::byte_to_cp()[b]);
    auto it = vocab_.find(s);
    TOK_CHECK(it != vocab_.end(), "model.vocab",
              "byte-level symbol for byte " << b << " ('" << s << "') is missing; only byte-level BPE is supported");
    byte_ids_[b] = it->second;
  }

  TOK_CHECK(m.contains("merges") && m["merges"].is_array(), "model.merges", "missing or not an array");
  const json& merges = m["merges"];
  merges_.reserve(merges.size());
  uint32_t rank = 0;
  for (const auto& e : merges) {
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      TOK_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, "model.merges",
                "merge #" << rank << " '" << s << "' is not of the form 'a b'");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      TOK_FAIL("model.merges", "merge #" << rank << " must be \"a b\" or [\"a\", \"b\"], got " << e.dump());
    }
    auto ia = vocab_.find(a), ib = vocab_.find(b), im = vocab_.find(a + b);
    TOK_CHECK(ia != vocab_.end() && ib != vocab_.end(), "model.merges",
              "merge #" << rank << " uses a token missing from model.vocab: '" << a << "' '" << b << "'");
    TOK_CHECK(im != vocab_.end(), "model.merges",
              "merge #" << rank << " result '" << a + b << "' is missing from model.vocab");
    merges_.add(ia->second, ib->second, rank, im->second);
    ++rank;
  }
}

void Tokenizer::Impl::load_added(const json& a) {
  TOK_CHECK(a.is_array(), "added_tokens", "not an array");
  for (size_t i = 0; i < a.size(); ++i) {
    const json& t = a[i];
    const std::string key = "added_tokens[" + std::to_string(i) + "]";
    TOK_CHECK(t.is_object() && t.contains("id") && t["id"].is_number_integer() && t.contains("content") &&
                  t["content"].is_string(),
              key, "needs integer 'id' and string 'content'");
    AddedToken tok{t["id"].get<TokenId>(),       t["content"].get<std::string>(), t.value("single_word", false),
                   t.value("lstrip", false),      t.value("rstrip", false),        t.value("normalized", true),
                   t.value("special", false)};
    TOK_CHECK(tok.id >= 0 && tok.id < (1 << 30), key, "id " << tok.id << " out of range");
    auto existing = added_by_content_.find(tok.content);
    if (existing != added_by_content_.end()) {
      added_[existing->second] = tok;  // later definition wins
      added_by_id_[tok.id] = existing->second;
      continue;
    }
    added_by_content_[tok.content] = added_.size();
    added_by_id_[tok.id] = added_.size();
    added_.push_back(tok);
  }
}

void Tokenizer::Impl::load_normalizer(const json& n) {
  if (n.is_null()) return;
  const std::string type = type_of(n);
  if (type == "NFC") {
    nfc_ = true;
    return;
  }
  if (type == "Sequence" && n.contains("normalizers") && n["normalizers"].is_array()) {
    bool ok = true;
    for (const auto& x : n["normalizers"]) ok = ok && type_of(x) == "NFC";
    if (ok) {
      nfc_ = !n["normalizers"].empty();
      return;
    }
  }
  TOK_FAIL("normalizer.type", "normalizer '" << type << "' is not supported (supported: " << kSupportedNormalizers << ")");
}

void Tokenizer::Impl::add_split(const json& s, const std::string& key) {
  TOK_CHECK(s.value("behavior", std::string()) == "Isolated", key + ".behavior",
            "only behavior 'Isolated' is supported, got " << s.value("behavior", json()).dump());
  TOK_CHECK(!s.value("invert", false), key + ".invert", "invert true is not supported");
  TOK_CHECK(s.contains("pattern") && s["pattern"].is_object() && s["pattern"].contains("Regex") &&
                s["pattern"]["Regex"].is_string(),
            key + ".pattern", "only {\"Regex\": \"...\"} patterns are supported");
  const std::string hf = s["pattern"]["Regex"].get<std::string>();
  std::string pat;
  try {
    pat = onig_to_pcre2(hf);
  } catch (const Error& e) {
    TOK_FAIL(key + ".pattern.Regex", e.what());
  }
  auto re = std::make_unique<Regex>();
  re->pattern = pat;
  int err = 0;
  PCRE2_SIZE off = 0;
  re->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat.data()), pat.size(), PCRE2_UTF | PCRE2_UCP, &err, &off,
                           nullptr);
  if (!re->code) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    TOK_FAIL(key + ".pattern.Regex", "PCRE2 cannot compile '" << hf << "': " << reinterpret_cast<char*>(buf)
                                                              << " at offset " << off);
  }
  re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
  splits_.push_back(std::move(re));
}

void Tokenizer::Impl::load_pre_tokenizer(const json& p) {
  auto check_byte_level = [&](const json& b, const std::string& key) {
    TOK_CHECK(!b.value("add_prefix_space", false), key + ".add_prefix_space", "only false is supported");
    TOK_CHECK(!b.value("use_regex", true), key + ".use_regex",
              "only false is supported (put the regex in a Split before ByteLevel)");
  };
  const std::string type = type_of(p);
  if (type == "ByteLevel") {
    check_byte_level(p, "pre_tokenizer");
    return;
  }
  TOK_CHECK(type == "Sequence" && p.contains("pretokenizers") && p["pretokenizers"].is_array(), "pre_tokenizer.type",
            "pre_tokenizer '" << type << "' is not supported (supported: " << kSupportedPreTokenizers << ")");
  const json& seq = p["pretokenizers"];
  bool byte_level = false;
  for (size_t i = 0; i < seq.size(); ++i) {
    const std::string key = "pre_tokenizer.pretokenizers[" + std::to_string(i) + "]";
    const std::string t = type_of(seq[i]);
    TOK_CHECK(!byte_level, key + ".type", "'" << t << "' after ByteLevel is not supported (supported: "
                                              << kSupportedPreTokenizers << ")");
    if (t == "Split") {
      add_split(seq[i], key);
    } else if (t == "ByteLevel") {
      check_byte_level(seq[i], key);
      byte_level = true;
    } else {
      TOK_FAIL(key + ".type",
               "pre_tokenizer '" << t << "' is not supported (supported: " << kSupportedPreTokenizers << ")");
    }
  }
  TOK_CHECK(byte_level, "pre_tokenizer.pretokenizers", "a ByteLevel pre-tokenizer is required (supported: "
                                                           << kSupportedPreTokenizers << ")");
}

void Tokenizer::Impl::load_post_processor(const json& p, const std::string& key) {
  if (p.is_null()) return;
  const std::string type = type_of(p);
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence" && p.contains("processors") && p["processors"].is_array()) {
    for (size_t i = 0; i < p["processors"].size(); ++i)
      load_post_processor(p["processors"][i], key + ".processors[" + std::to_string(i) + "]");
    return;
  }
  if (type == "TemplateProcessing") {
    TOK_CHECK(p.contains("single") && p["single"].is_array(), key + ".single", "missing or not an array");
    TOK_CHECK(prefix_.empty() && suffix_.empty(), key, "more than one TemplateProcessing is not supported");
    const json& sp = p.value("special_tokens", json::object());
    bool seen_seq = false;
    for (const auto& item : p["single"]) {
      if (item.contains("Sequence")) {
        TOK_CHECK(!seen_seq && item["Sequence"].value("id", std::string()) == "A", key + ".single",
                  "exactly one {\"Sequence\": {\"id\": \"A\"}} is supported");
        seen_seq = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = item["SpecialToken"].value("id", std::string());
        TOK_CHECK(sp.contains(name) && sp[name].contains("ids") && sp[name]["ids"].is_array(),
                  key + ".special_tokens", "no ids for '" << name << "'");
        for (const auto& id : sp[name]["ids"]) (seen_seq ? suffix_ : prefix_).push_back(id.get<TokenId>());
      } else {
        TOK_FAIL(key + ".single", "unsupported template item " << item.dump());
      }
    }
    TOK_CHECK(seen_seq, key + ".single", "no {\"Sequence\": {\"id\": \"A\"}} item");
    return;
  }
  TOK_FAIL(key + ".type",
           "post_processor '" << type << "' is not supported (supported: " << kSupportedPostProcessors << ")");
}

void Tokenizer::Impl::load_decoder(const json& d) {
  const std::string type = type_of(d);
  TOK_CHECK(type == "ByteLevel", "decoder.type",
            "decoder '" << type << "' is not supported (supported: " << kSupportedDecoders << ")");
}

void Tokenizer::Impl::load_config(const std::string& cfg_path) {
  config_path_ = cfg_path;
  const json c = parse_json(read_file(cfg_path, "tokenizer_config.json"), cfg_path, "tokenizer_config.json");
  ELASTIC_CHECK(c.is_object(), "tokenizer_config.json '" << cfg_path << "': expected a JSON object");
  auto token_field = [&](const char* k) -> std::optional<std::string> {
    if (!c.contains(k) || c[k].is_null()) return std::nullopt;
    const json& v = c[k];
    if (v.is_string()) return v.get<std::string>();
    if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
    ELASTIC_FAIL("tokenizer_config.json '" << cfg_path << "': key '" << k
                                           << "': expected a string, {\"content\": ...} or null, got " << v.dump());
  };
  bos_token_ = token_field("bos_token");
  eos_token_ = token_field("eos_token");
  pad_token_ = token_field("pad_token");
  if (c.contains("chat_template") && !c["chat_template"].is_null()) {
    const json& t = c["chat_template"];
    if (t.is_string()) {
      chat_template_ = t.get<std::string>();
    } else if (t.is_array()) {
      for (const auto& e : t)
        if (e.is_object() && e.value("name", std::string()) == "default" && e.contains("template"))
          chat_template_ = e["template"].get<std::string>();
      ELASTIC_CHECK(!chat_template_.empty(), "tokenizer_config.json '" << cfg_path
                                                 << "': key 'chat_template': no entry named 'default'");
    } else {
      ELASTIC_FAIL("tokenizer_config.json '" << cfg_path << "': key 'chat_template': expected a string or a list");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// encoding

void Tokenizer::Impl::split_added(std::string_view text, const LiteralSet& set,
                                  const std::function<void(std::string_view)>& on_text,
                                  std::vector<TokenId>& out) const {
  if (set.empty()) {
    if (!text.empty()) on_text(text);
    return;
  }
  size_t start_offset = 0, search = 0;
  while (search < text.size()) {
    size_t len = 0;
    int idx = -1;
    size_t start = set.find(text, search, &len, &idx);
    if (start == std::string_view::npos) break;
    size_t stop = start + len;
    search = stop;
    const AddedToken& tok = added_[static_cast<size_t>(idx)];
    if (tok.single_word) {
      bool start_space = start == 0, stop_space = stop == text.size();
      if (!start_space) {
        size_t p = prev_cp_start(text, start);
        start_space = !is_word_cp(unicode::next_cp(text, p));
      }
      if (!stop_space) {
        size_t p = stop;
        stop_space = !is_word_cp(unicode::next_cp(text, p));
      }
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) {
      size_t s = start;
      while (s > 0) {
        const size_t p = prev_cp_start(text, s);
        size_t q = p;
        if (!is_ws_cp(unicode::next_cp(text, q))) break;
        s = p;
      }
      start = std::max(s, start_offset);
    }
    if (tok.rstrip) {
      while (stop < text.size()) {
        size_t q = stop;
        if (!is_ws_cp(unicode::next_cp(text, q))) break;
        stop = q;
      }
      search = stop;
    }
    if (start > start_offset) on_text(text.substr(start_offset, start - start_offset));
    out.push_back(tok.id);
    start_offset = stop;
  }
  if (start_offset < text.size()) on_text(text.substr(start_offset));
}

void Tokenizer::Impl::encode_into(std::string_view text, bool add_special, std::vector<TokenId>& out) const {
  const size_t bad = unicode::find_invalid_utf8(text);
  ELASTIC_CHECK(bad == std::string_view::npos, "Tokenizer::encode: input is not valid UTF-8 (byte offset " << bad
                                                                                                        << ")");
  if (add_special) out.insert(out.end(), prefix_.begin(), prefix_.end());
  split_added(text, split_raw_, [&](std::string_view seg) { encode_segment(seg, out); }, out);
  if (add_special) out.insert(out.end(), suffix_.begin(), suffix_.end());
}

void Tokenizer::Impl::encode_segment(std::string_view seg, std::vector<TokenId>& out) const {
  if (nfc_ && !unicode::nfc_trivially_stable(seg)) {
    const std::string norm = unicode::nfc(seg);
    split_added(norm, split_normalized_, [&](std::string_view s) { pre_tokenize(s, 0, out); }, out);
  } else {
    split_added(seg, split_normalized_, [&](std::string_view s) { pre_tokenize(s, 0, out); }, out);
  }
}

void Tokenizer::Impl::pre_tokenize(std::string_view seg, size_t level, std::vector<TokenId>& out) const {
  if (seg.empty()) return;
  if (level == splits_.size()) {
    bpe_word(seg, out);
    return;
  }
  const Regex& re = *splits_[level];
  MatchScratch& sc = scratch();
  const auto* subj = reinterpret_cast<PCRE2_SPTR>(seg.data());
  size_t pos = 0, prev = 0;
  while (pos <= seg.size()) {
    const int rc = re.jit ? pcre2_jit_match(re.code, subj, seg.size(), pos, 0, sc.md, sc.mctx)
                          : pcre2_match(re.code, subj, seg.size(), pos, PCRE2_NO_UTF_CHECK, sc.md, sc.mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(rc, buf, sizeof buf);
      ELASTIC_FAIL("tokenizer.json '" << path_ << "': pre_tokenizer regex failed: " << reinterpret_cast<char*>(buf));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(sc.md);
    const size_t s = ov[0], e = ov[1];
    if (e == s) {  // empty match: skip one code point
      if (s >= seg.size()) break;
      size_t q = s;
      unicode::next_cp(seg, q);
      pos = q;
      continue;
    }
    if (s > prev) pre_tokenize(seg.substr(prev, s - prev), level + 1, out);
    pre_tokenize(seg.substr(s, e - s), level + 1, out);
    prev = pos = e;
  }
  if (prev < seg.size()) pre_tokenize(seg.substr(prev), level + 1, out);
}

void Tokenizer::Impl::bpe_word(std::string_view word, std::vector<TokenId>& out) const {
  if (ignore_merges_) {
    auto it = raw_vocab_.find(std::string(word));
    if (it != raw_vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedLen;
  Shard* shard = nullptr;
  if (cacheable) {
    const size_t h = StringHash{}(word);
    shard = &cache_[(h >> 7) % kShards];
    std::lock_guard<std::mutex> lock(shard->mu);
    auto it = shard->map.find(word);
    if (it != shard->map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<TokenId> sym;
  sym.reserve(word.size());
  for (unsigned char c : word) sym.push_back(byte_ids_[c]);
  bpe::merge(sym, merges_);
  out.insert(out.end(), sym.begin(), sym.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(shard->mu);
    if (shard->map.size() < kShardCapacity) shard->map.emplace(std::string(word), std::move(sym));
  }
}

// ---------------------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_files(const std::string& tokenizer_json, const std::string& config_json) {
  auto impl = std::make_unique<Impl>();
  impl->load(tokenizer_json, config_json);
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_dir(const std::string& dir) {
  const std::string tj = dir + "/tokenizer.json";
  const std::string cfg = dir + "/tokenizer_config.json";
  std::ifstream probe(cfg);
  return from_files(tj, probe.good() ? cfg : std::string());
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 4);
  impl_->encode_into(text, add_special_tokens, out);
  return out;
}

std::vector<std::vector<TokenId>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special_tokens, int n_threads) const {
  std::vector<std::vector<TokenId>> out(texts.size());
  size_t nt = n_threads > 0 ? static_cast<size_t>(n_threads) : std::max(1u, std::thread::hardware_concurrency());
  nt = std::min(nt, texts.size());
  if (nt <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) out[i] = encode(texts[i], add_special_tokens);
    return out;
  }
  std::atomic<size_t> next{0};
  std::mutex err_mu;
  std::exception_ptr err;
  auto worker = [&] {
    try {
      for (size_t i; (i = next.fetch_add(1)) < texts.size();) out[i] = encode(texts[i], add_special_tokens);
    } catch (...) {
      std::lock_guard<std::mutex> lock(err_mu);
      if (!err) err = std::current_exception();
      next = texts.size();
    }
  };
  std::vector<std::thread> threads;
  for (size_t t = 0; t < nt; ++t) threads.emplace_back(worker);
  for (auto& t : threads) t.join();
  if (err) std::rethrow_exception(err);
  return out;
}

std::string Tokenizer::decode(std::span<const TokenId> ids, bool skip_special_tokens) const {
  std::string bytes;
  for (TokenId id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= impl_->bytes_of_.size()) continue;
    if (!impl_->added_by_id_.count(id) &&
        (static_cast<size_t>(id) >= impl_->id_to_token_.size() || impl_->id_to_token_[id].empty()))
      continue;  // hole in the id space
    if (skip_special_tokens && impl_->special_[id]) continue;
    bytes += impl_->bytes_of_[id];
  }
  return unicode::utf8_lossy(bytes);
}

size_t Tokenizer::vocab_size() const { return impl_->vocab_size_; }
size_t Tokenizer::model_vocab_size() const { return impl_->vocab_.size(); }

std::optional<TokenId> Tokenizer::token_to_id(std::string_view token) const { return impl_->lookup(token); }

std::optional<std::string> Tokenizer::id_to_token(TokenId id) const {
  auto a = impl_->added_by_id_.find(id);
  if (a != impl_->added_by_id_.end()) return impl_->added_[a->second].content;
  if (id >= 0 && static_cast<size_t>(id) < impl_->id_to_token_.size() && !impl_->id_to_token_[id].empty())
    return impl_->id_to_token_[id];
  return std::nullopt;
}

std::string Tokenizer::token_bytes(TokenId id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->bytes_of_.size()) return {};
  return impl_->bytes_of_[id];
}

bool Tokenizer::is_special(TokenId id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special_.size() && impl_->special_[id];
}

std::optional<TokenId> Tokenizer::bos_id() const {
  return impl_->bos_token_ ? impl_->lookup(*impl_->bos_token_) : std::nullopt;
}
std::optional<TokenId> Tokenizer::eos_id() const {
  return impl_->eos_token_ ? impl_->lookup(*impl_->eos_token_) : std::nullopt;
}
std::optional<TokenId> Tokenizer::pad_id() const {
  return impl_->pad_token_ ? impl_->lookup(*impl_->pad_token_) : std::nullopt;
}
std::optional<std::string> Tokenizer::bos_token() const { return impl_->bos_token_; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template_; }
uint64_t Tokenizer::fingerprint() const { return impl_->fingerprint_; }
const std::string& Tokenizer::path() const { return impl_->path_; }

}  // namespace elastic::text
