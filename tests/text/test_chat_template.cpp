// Chat formatting tests: ids equal to transformers' apply_chat_template(tokenize=True) on the
// golden cases in tests/data/tokenizer/{qwen3,llama3}.json.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "util/error.h"

namespace fs = std::filesystem;
using elastic::text::ChatFamily;
using elastic::text::ChatFormatter;
using elastic::text::TokenId;
using elastic::text::Tokenizer;
using json = nlohmann::json;

namespace {

std::string shared_dir(const std::string& name) { return std::string(ELASTIC_SHARED_DIR) + "/tokenizers/" + name; }

const Tokenizer& get(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) slot = std::make_unique<Tokenizer>(Tokenizer::from_dir(shared_dir(name)));
  return *slot;
}

class Chat : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!fs::exists(shared_dir(GetParam()) + "/tokenizer_config.json"))
      GTEST_SKIP() << "tokenizer files not found in " << shared_dir(GetParam());
    std::ifstream f(std::string(ELASTIC_TEST_DATA) + "/tokenizer/" + GetParam() + ".json");
    ASSERT_TRUE(f.good());
    doc_ = json::parse(f);
  }
  json doc_;
};

TEST_P(Chat, DetectsFamily) {
  const auto f = elastic::text::detect_chat_family(get(GetParam()));
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(std::string(elastic::text::chat_family_name(*f)), GetParam());
  EXPECT_EQ(elastic::text::parse_chat_family(GetParam()), *f);
}

TEST_P(Chat, MatchesTransformers) {
  const Tokenizer& tok = get(GetParam());
  const ChatFormatter fmt(tok);
  ASSERT_GE(doc_["chat"].size(), 10u);
  for (const auto& c : doc_["chat"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const std::string system = c["system"].is_null() ? "" : c["system"].get<std::string>();
    const auto r = fmt.encode(c["user"].get<std::string>(), c["answer"].get<std::string>(), system);
    EXPECT_EQ(r.text, c["text"].get<std::string>());
    EXPECT_EQ(fmt.render(c["user"].get<std::string>(), c["answer"].get<std::string>(), system), r.text);
    EXPECT_EQ(r.ids, c["ids"].get<std::vector<TokenId>>());
    EXPECT_EQ(r.answer_begin, c["answer_begin"].get<size_t>());
    EXPECT_EQ(r.answer_end, c["answer_end"].get<size_t>());
    ASSERT_LE(r.answer_end, r.ids.size());
    EXPECT_EQ(r.ids[r.answer_end - 1], fmt.end_of_turn_id());
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, Chat, ::testing::Values("qwen3", "llama3"),
                         [](const auto& info) { return info.param; });

TEST(ChatErrors, UnknownFamilyName) {
  try {
    elastic::text::parse_chat_family("mistral");
    FAIL() << "no error";
  } catch (const elastic::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("mistral"), std::string::npos);
    EXPECT_NE(m.find("qwen3"), std::string::npos);
    EXPECT_NE(m.find("llama3"), std::string::npos);
  }
}

TEST(ChatErrors, UnknownTemplateAndMissingTokens) {
  // The synthetic golden tokenizer has no tokenizer_config.json, hence no template.
  const Tokenizer tok = Tokenizer::from_dir(std::string(ELASTIC_TEST_DATA) + "/tokenizer/synthetic");
  EXPECT_FALSE(elastic::text::detect_chat_family(tok).has_value());
  try {
    ChatFormatter f(tok);
    FAIL() << "no error";
  } catch (const elastic::Error& e) {
    EXPECT_NE(std::string(e.what()).find("chat_template"), std::string::npos) << e.what();
  }
  // explicit family, but the tokenizer lacks the end-of-turn token
  EXPECT_THROW(ChatFormatter(tok, ChatFamily::qwen3), elastic::Error);
  EXPECT_THROW(ChatFormatter(tok, ChatFamily::llama3), elastic::Error);
}

}  // namespace
