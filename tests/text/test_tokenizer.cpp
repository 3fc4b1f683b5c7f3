// Tokenizer tests: exact equality with Hugging Face `tokenizers` on golden data written by
// tools/gen_tokenizer_golden.py (tests/data/tokenizer/), plus error handling.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "text/bpe.h"
#include "text/tokenizer.h"
#include "text/unicode.h"
#include "util/error.h"

namespace fs = std::filesystem;
using elastic::text::TokenId;
using elastic::text::Tokenizer;
using json = nlohmann::json;

namespace {

std::string golden_dir() { return std::string(ELASTIC_TEST_DATA) + "/tokenizer"; }

std::string tokenizer_dir(const std::string& name) {
  if (name == "synthetic") return golden_dir() + "/synthetic";
  return std::string(ELASTIC_SHARED_DIR) + "/tokenizers/" + name;
}

json load_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot open " + path);
  return json::parse(f);
}

// One tokenizer per name, loaded once for the whole test binary.
const Tokenizer& get_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[name];
  if (!slot) slot = std::make_unique<Tokenizer>(Tokenizer::from_dir(tokenizer_dir(name)));
  return *slot;
}

std::string first_diff(const std::vector<TokenId>& a, const std::vector<TokenId>& b) {
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  std::ostringstream os;
  os << "sizes " << a.size() << " vs " << b.size() << ", first difference at " << i;
  if (i < a.size()) os << " (got " << a[i] << ")";
  if (i < b.size()) os << " (want " << b[i] << ")";
  return os.str();
}

std::vector<TokenId> ids_of(const json& j) { return j.get<std::vector<TokenId>>(); }

struct Golden {
  json doc;
  std::vector<std::pair<std::string, std::string>> cases;  // name, text
};

const Golden& golden(const std::string& name) {
  static std::map<std::string, Golden> cache;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  Golden g;
  g.doc = load_json(golden_dir() + "/" + name + ".json");
  const json corpus = load_json(golden_dir() + "/corpus.json");
  for (const auto& c : corpus["cases"]) g.cases.emplace_back(c["name"], c["text"]);
  for (const auto& c : g.doc["extra_cases"]) g.cases.emplace_back(c["name"], c["text"]);
  return cache.emplace(name, std::move(g)).first->second;
}

class Tok : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!fs::exists(tokenizer_dir(GetParam()) + "/tokenizer.json"))
      GTEST_SKIP() << "tokenizer files not found in " << tokenizer_dir(GetParam());
  }
  const Tokenizer& tok() { return get_tokenizer(GetParam()); }
  const Golden& gold() { return golden(GetParam()); }
};

TEST_P(Tok, Metadata) {
  const json& d = gold().doc;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(tok().fingerprint()));
  EXPECT_EQ(std::string(buf), d["fingerprint_fnv1a64"].get<std::string>());
  EXPECT_EQ(tok().vocab_size(), d["vocab_size"].get<size_t>());
  EXPECT_EQ(tok().model_vocab_size(), d["vocab_size_no_added"].get<size_t>());
  for (auto it = d["token_to_id"].begin(); it != d["token_to_id"].end(); ++it) {
    auto id = tok().token_to_id(it.key());
    if (it.value().is_null())
      EXPECT_FALSE(id.has_value()) << it.key();
    else
      EXPECT_EQ(id, std::optional<TokenId>(it.value().get<TokenId>())) << it.key();
  }
  for (auto it = d["id_to_token"].begin(); it != d["id_to_token"].end(); ++it) {
    auto t = tok().id_to_token(std::stoi(it.key()));
    if (it.value().is_null())
      EXPECT_FALSE(t.has_value()) << it.key();
    else
      EXPECT_EQ(t, std::optional<std::string>(it.value().get<std::string>())) << it.key();
  }
}

TEST_P(Tok, EncodeMatchesHF) {
  const json& enc = gold().doc["encode"];
  ASSERT_GE(gold().cases.size(), 60u);
  for (const auto& [name, text] : gold().cases) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(enc.contains(name));
    const auto want = ids_of(enc[name]["ids"]);
    const auto want_ns = ids_of(enc[name]["ids_no_special"]);
    const auto got = tok().encode(text, true);
    const auto got_ns = tok().encode(text, false);
    EXPECT_EQ(got, want) << first_diff(got, want);
    EXPECT_EQ(got_ns, want_ns) << first_diff(got_ns, want_ns);
  }
}

TEST_P(Tok, DecodeMatchesHF) {
  const json& enc = gold().doc["encode"];
  for (const auto& [name, text] : gold().cases) {
    SCOPED_TRACE(name);
    const auto ids = ids_of(enc[name]["ids"]);
    EXPECT_EQ(tok().decode(ids, false), enc[name]["decoded"].get<std::string>());
    EXPECT_EQ(tok().decode(ids, true), enc[name]["decoded_skip_special"].get<std::string>());
  }
  size_t k = 0;
  for (const auto& c : gold().doc["decode"]) {
    SCOPED_TRACE("decode case " + std::to_string(k++));
    const auto ids = ids_of(c["ids"]);
    EXPECT_EQ(tok().decode(ids, false), c["decoded"].get<std::string>());
    EXPECT_EQ(tok().decode(ids, true), c["decoded_skip_special"].get<std::string>());
  }
}

TEST_P(Tok, EncodeBatchAndThreadsAgree) {
  std::vector<std::string> texts;
  for (const auto& [name, text] : gold().cases) texts.push_back(text);
  // a fresh tokenizer (cold cache) hammered by several threads at once
  const Tokenizer fresh = Tokenizer::from_dir(tokenizer_dir(GetParam()));
  const auto batch = fresh.encode_batch(texts, true, 4);
  ASSERT_EQ(batch.size(), texts.size());
  const json& enc = gold().doc["encode"];
  for (size_t i = 0; i < texts.size(); ++i)
    EXPECT_EQ(batch[i], ids_of(enc[gold().cases[i].first]["ids"])) << gold().cases[i].first;
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep)
        for (size_t i = (t * 7) % texts.size(), n = 0; n < texts.size(); ++n, i = (i + 1) % texts.size())
          if (fresh.encode(texts[i], false) != batch[i] && fresh.encode(texts[i], true) != batch[i]) ++mismatches;
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_TRUE(fresh.encode_batch({}, true, 2).empty());
}

TEST_P(Tok, InvalidUtf8IsAnError) {
  EXPECT_THROW(tok().encode(std::string("ab\xff", 3)), elastic::Error);
  EXPECT_THROW(tok().encode(std::string("\xc3", 1)), elastic::Error);
  EXPECT_THROW(tok().encode(std::string("\xed\xa0\x80", 3)), elastic::Error);  // surrogate
  EXPECT_THROW(tok().encode(std::string("\xc0\xaf", 2)), elastic::Error);      // overlong
}

INSTANTIATE_TEST_SUITE_P(Golden, Tok, ::testing::Values("qwen3", "llama3", "synthetic"),
                         [](const auto& info) { return info.param; });

TEST(TokenizerSpecial, BosEos) {
  for (const char* n : {"qwen3", "llama3"})
    if (!fs::exists(tokenizer_dir(n) + "/tokenizer.json")) GTEST_SKIP() << "no shared tokenizers";
  const Tokenizer& q = get_tokenizer("qwen3");
  EXPECT_FALSE(q.bos_id().has_value());
  EXPECT_EQ(q.eos_id(), std::optional<TokenId>(151645));  // <|im_end|>
  EXPECT_EQ(q.pad_id(), std::optional<TokenId>(151643));  // <|endoftext|>
  EXPECT_TRUE(q.is_special(151645));
  EXPECT_FALSE(q.is_special(151667));  // <think> is added but not special
  const Tokenizer& l = get_tokenizer("llama3");
  EXPECT_EQ(l.bos_id(), std::optional<TokenId>(128000));
  EXPECT_EQ(l.eos_id(), std::optional<TokenId>(128001));
  EXPECT_NE(q.fingerprint(), l.fingerprint());
}

TEST(TokenizerSynthetic, TemplateProcessingAddsSpecials) {
  const Tokenizer& t = get_tokenizer("synthetic");
  const auto with = t.encode("hello", true);
  const auto without = t.encode("hello", false);
  ASSERT_EQ(with.size(), without.size() + 2);
  EXPECT_EQ(with.front(), *t.token_to_id("<s>"));
  EXPECT_EQ(with.back(), *t.token_to_id("</s>"));
  EXPECT_EQ(t.encode("", true), (std::vector<TokenId>{*t.token_to_id("<s>"), *t.token_to_id("</s>")}));
}

// ---------------------------------------------------------------------------------------------
// BPE core: the scan and heap merge loops agree.

TEST(Bpe, ScanAndHeapAgree) {
  using namespace elastic::text::bpe;
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    const int alphabet = 2 + trial % 5;
    MergeTable table;
    Id next = alphabet;
    std::vector<Id> ids;
    for (int i = 0; i < alphabet; ++i) ids.push_back(i);
    uint32_t rank = 0;
    for (int m = 0; m < 40; ++m) {
      const Id a = ids[rng() % ids.size()], b = ids[rng() % ids.size()];
      uint32_t r;
      Id x;
      if (table.find(a, b, &r, &x)) continue;
      table.add(a, b, rank++, next);
      ids.push_back(next++);
    }
    for (int w = 0; w < 40; ++w) {
      std::vector<Id> word(1 + rng() % 200);
      for (auto& s : word) s = static_cast<Id>(rng() % alphabet);
      auto a = word, b = word;
      merge_scan(a, table);
      merge_heap(b, table);
      ASSERT_EQ(a, b) << "trial " << trial << " word " << w;
    }
  }
}

TEST(Unicode, LossyMatchesMaximalSubpart) {
  using elastic::text::unicode::utf8_lossy;
  EXPECT_EQ(utf8_lossy("abc"), "abc");
  EXPECT_EQ(utf8_lossy(std::string("\xF0\x9F\x98", 3)), "\xEF\xBF\xBD");          // truncated 4-byte: one U+FFFD
  EXPECT_EQ(utf8_lossy(std::string("\xF0\x9F\x98" "a", 4)), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(utf8_lossy(std::string("\xC0\xAF", 2)), "\xEF\xBF\xBD\xEF\xBF\xBD");   // overlong: two
  EXPECT_EQ(utf8_lossy(std::string("\xED\xA0\x80", 3)), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8_lossy(std::string("\xE2\x82", 2)), "\xEF\xBF\xBD");
}

TEST(Unicode, NfcFastPathIsSafe) {
  using namespace elastic::text::unicode;
  // every code point below U+0300, alone and next to its neighbours, is already NFC
  std::string s;
  for (char32_t c = 1; c < 0x300; ++c) append_utf8(s, c);
  ASSERT_TRUE(nfc_trivially_stable(s));
  std::string forced = s + "\xCC\x80";  // + U+0300 forces the utf8proc path
  EXPECT_EQ(nfc(forced).substr(0, s.size() - 2), s.substr(0, s.size() - 2));
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");
}

// ---------------------------------------------------------------------------------------------
// Errors name the file and the JSON key.

class TokErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("elastic_tok_err_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                        "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  // A valid minimal byte-level BPE (all 256 byte symbols, one merge), with `patch` applied.
  json minimal() {
    json vocab = json::object();
    int id = 0;
    for (char32_t cp : elastic::text::unicode::byte_to_cp()) {
      std::string s;
      elastic::text::unicode::append_utf8(s, cp);
      vocab[s] = id++;
    }
    vocab["ab"] = id++;
    json j = {{"version", "1.0"},
              {"added_tokens", json::array({{{"id", id}, {"content", "<eos>"}, {"single_word", false}, {"lstrip", false},
                                             {"rstrip", false}, {"normalized", false}, {"special", true}}})},
              {"normalizer", nullptr},
              {"pre_tokenizer",
               {{"type", "Sequence"},
                {"pretokenizers",
                 json::array({{{"type", "Split"}, {"pattern", {{"Regex", "\\s+|\\S+"}}}, {"behavior", "Isolated"},
                               {"invert", false}},
                              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
              {"post_processor", nullptr},
              {"decoder", {{"type", "ByteLevel"}}},
              {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a b"})}}}};
    return j;
  }
  std::string error_of(const json& j) {
    const std::string p = write("tokenizer.json", j.dump());
    try {
      Tokenizer::from_files(p);
    } catch (const elastic::Error& e) {
      return e.what();
    }
    return "<no error>";
  }
  fs::path dir_;
};

TEST_F(TokErrors, MinimalLoadsAndEncodes) {
  const std::string p = write("tokenizer.json", minimal().dump());
  const Tokenizer t = Tokenizer::from_files(p);
  EXPECT_EQ(t.encode("ab a<eos>"), (std::vector<TokenId>{256, *t.token_to_id("Ġ"), *t.token_to_id("a"), 257}));
  EXPECT_EQ(t.decode(t.encode("ab a<eos>"), true), "ab a");
  EXPECT_EQ(t.decode(t.encode("ab a<eos>"), false), "ab a<eos>");
  EXPECT_TRUE(t.chat_template().empty());
  EXPECT_FALSE(t.eos_id().has_value());
}

TEST_F(TokErrors, MissingFile) {
  const std::string p = (dir_ / "nope" / "tokenizer.json").string();
  try {
    Tokenizer::from_files(p);
    FAIL() << "no error";
  } catch (const elastic::Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
  EXPECT_THROW(Tokenizer::from_dir((dir_ / "nope").string()), elastic::Error);
}

TEST_F(TokErrors, MalformedJson) {
  const std::string p = write("tokenizer.json", "{\"model\": {\"type\": \"BPE\",");
  try {
    Tokenizer::from_files(p);
    FAIL() << "no error";
  } catch (const elastic::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(p), std::string::npos) << m;
    EXPECT_NE(m.find("malformed JSON"), std::string::npos) << m;
  }
}

TEST_F(TokErrors, MalformedConfig) {
  const std::string tj = write("tokenizer.json", minimal().dump());
  const std::string cfg = write("tokenizer_config.json", "[not json");
  try {
    Tokenizer::from_files(tj, cfg);
    FAIL() << "no error";
  } catch (const elastic::Error& e) {
    EXPECT_NE(std::string(e.what()).find(cfg), std::string::npos) << e.what();
  }
  write("tokenizer_config.json", R"({"eos_token": 5})");
  try {
    Tokenizer::from_files(tj, cfg);
    FAIL() << "no error";
  } catch (const elastic::Error& e) {
    EXPECT_NE(std::string(e.what()).find("eos_token"), std::string::npos) << e.what();
  }
}

TEST_F(TokErrors, UnsupportedModelType) {
  json j = minimal();
  j["model"]["type"] = "WordPiece";
  const std::string m = error_of(j);
  EXPECT_NE(m.find((dir_ / "tokenizer.json").string()), std::string::npos) << m;
  EXPECT_NE(m.find("model.type"), std::string::npos) << m;
  EXPECT_NE(m.find("WordPiece"), std::string::npos) << m;
  EXPECT_NE(m.find("supported: BPE"), std::string::npos) << m;
}

TEST_F(TokErrors, UnsupportedPieces) {
  struct Case {
    const char* key;
    std::function<void(json&)> patch;
  };
  const std::vector<Case> cases = {
      {"normalizer.type", [](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }},
      {"pre_tokenizer.type", [](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }},
      {"pre_tokenizer.pretokenizers[0].behavior", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; }},
      {"pre_tokenizer.pretokenizers[1].use_regex", [](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["use_regex"] = true; }},
      {"pre_tokenizer.pretokenizers[0].pattern.Regex", [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; }},
      {"decoder.type", [](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }},
      {"post_processor.type", [](json& j) { j["post_processor"] = {{"type", "BertProcessing"}}; }},
      {"model.byte_fallback", [](json& j) { j["model"]["byte_fallback"] = true; }},
      {"model.merges", [](json& j) { j["model"]["merges"] = json::array({"a zz"}); }},
      {"model.vocab", [](json& j) { j["model"]["vocab"].erase("a"); j["model"]["merges"] = json::array(); }},
      {"model", [](json& j) { j.erase("model"); }},
  };
  for (const auto& c : cases) {
    json j = minimal();
    c.patch(j);
    const std::string m = error_of(j);
    EXPECT_NE(m.find(std::string("key '") + c.key + "'"), std::string::npos) << c.key << ": " << m;
    EXPECT_NE(m.find((dir_ / "tokenizer.json").string()), std::string::npos) << c.key << ": " << m;
  }
}

TEST_F(TokErrors, MergesAsPairs) {
  json j = minimal();
  j["model"]["merges"] = json::array({json::array({"a", "b"})});
  const std::string p = write("tokenizer.json", j.dump());
  EXPECT_EQ(Tokenizer::from_files(p).encode("ab"), std::vector<TokenId>{256});
}

}  // namespace
