// Data preparation: raw JSONL -> chat samples -> packed, sharded datasets (src/data/prepare.h).
// Most tests use the small synthetic tokenizer in tests/data/prepare/tokenizer (the synthetic
// golden tokenizer plus <|im_start|>/<|im_end|>, formatted with the qwen3 template); the
// Prepare*Real tests use the real Qwen3 / Llama 3 tokenizers and skip when they are absent.
#include <gtest/gtest.h>

#ifdef ELASTIC_HAVE_TEXT

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <set>

#include "data/dataset.h"
#include "data/prepare.h"
#include "test_util.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace fs = std::filesystem;
using namespace elastic;
using data::RawRecord;
using data::Sample;
using text::Tokenizer;

namespace {

std::string fixture(const std::string& name) { return std::string(ELASTIC_TEST_DATA) + "/prepare/" + name; }
std::string synthetic_dir() { return fixture("tokenizer"); }
std::string real_dir(const std::string& name) {
  return std::string(ELASTIC_TEST_DATA) + "/../../../shared/tokenizers/" + name;
}

const Tokenizer& tokenizer(const std::string& dir) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[dir];
  if (!slot) slot = std::make_unique<Tokenizer>(Tokenizer::from_dir(dir));
  return *slot;
}

std::string decode(const Tokenizer& tok, const std::vector<int32_t>& ids, size_t b, size_t e) {
  return tok.decode(std::vector<int32_t>(ids.begin() + static_cast<long>(b), ids.begin() + static_cast<long>(e)));
}

std::string decode_labelled(const Tokenizer& tok, const Sample& s) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < s.tokens.size(); ++i)
    if (s.labels[i]) ids.push_back(s.tokens[i]);
  return tok.decode(ids);
}

// The labelled tokens form one run that ends the chat's end-of-turn token; return [first, end).
std::pair<size_t, size_t> label_run(const Sample& s) {
  size_t first = s.labels.size(), end = 0, n = 0;
  for (size_t i = 0; i < s.labels.size(); ++i) {
    if (!s.labels[i]) continue;
    first = std::min(first, i);
    end = i + 1;
    ++n;
  }
  EXPECT_EQ(end - first, n) << "labels are not contiguous";
  return {first, end};
}

RawRecord record(std::string context, std::string question, std::string answer, int32_t task, bool is_prefix) {
  RawRecord r;
  r.context = std::move(context);
  r.question = std::move(question);
  r.answer = std::move(answer);
  r.task = task;
  r.is_prefix = is_prefix;
  return r;
}

std::string kind_of(const std::string& line) {
  try {
    data::parse_raw_record(line, data::default_task_map());
  } catch (const data::InputError& e) {
    return e.kind();
  }
  return "ok";
}

data::PrepareOptions synthetic_options(const elastic::testing::TempDir& dir) {
  data::PrepareOptions o;
  o.inputs = {fixture("mixed.jsonl"), fixture("bad.jsonl")};
  o.tokenizer_dir = synthetic_dir();
  o.out = dir.str("out/data.pk");
  o.pack_tokens = 512;
  o.min_tokens = 40;
  o.threads = 3;
  o.progress = false;
  return o;
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace

// ------------------------------------------------------------ tasks, records, prompts

TEST(PrepareTasks, DefaultMapAndOverrides) {
  const auto d = data::default_task_map();
  EXPECT_EQ(d.at("single_qa"), 0);
  EXPECT_EQ(d.at("multihop_qa"), 1);
  EXPECT_EQ(d.at("summarization"), 2);
  EXPECT_EQ(d.at("code"), 3);
  EXPECT_EQ(d.at("icl"), 4);
  const auto m = data::parse_task_map(" poetry=7, code=5 ,");
  EXPECT_EQ(m.at("poetry"), 7);
  EXPECT_EQ(m.at("code"), 5);
  EXPECT_EQ(m.at("single_qa"), 0);
  EXPECT_EQ(data::task_name(m, 7), "poetry");
  EXPECT_EQ(data::task_name(m, 99), "task99");
  EXPECT_THROW(data::parse_task_map("poetry"), Error);
  EXPECT_THROW(data::parse_task_map("poetry=x"), Error);
  EXPECT_THROW(data::parse_task_map("poetry=-1"), Error);
}

TEST(PrepareRecord, ParsesSchema) {
  const auto tasks = data::parse_task_map("poetry=9");
  auto r = data::parse_raw_record(
      R"({"context":"C","question":"Q","answer":"A","metadata":{"task":"multihop_qa","is_prefix":true},"x":1})", tasks);
  EXPECT_EQ(r.context, "C");
  EXPECT_EQ(r.question, "Q");
  EXPECT_EQ(r.answer, "A");
  EXPECT_EQ(r.task, 1);
  EXPECT_TRUE(r.is_prefix);
  r = data::parse_raw_record(R"({"context":"","question":"Q","answer":"A","metadata":{"task":3}})", tasks);
  EXPECT_EQ(r.task, 3);
  EXPECT_FALSE(r.is_prefix);
  r = data::parse_raw_record(R"({"context":"C","question":"","answer":"A","metadata":{"task":"poetry","is_prefix":0}})",
                             tasks);
  EXPECT_EQ(r.task, 9);
  EXPECT_FALSE(r.is_prefix);
}

TEST(PrepareRecord, ErrorKinds) {
  EXPECT_EQ(kind_of(R"({"context":"C","question":"Q","answer":"A","metadata":{"task":"icl"}})"), "ok");
  EXPECT_EQ(kind_of(R"({"context":"C","question":)"), "malformed_json");
  EXPECT_EQ(kind_of(R"([1,2])"), "malformed_json");
  EXPECT_EQ(kind_of("{\"context\":\"\xff\",\"question\":\"Q\",\"answer\":\"A\",\"metadata\":{\"task\":0}}"),
            "malformed_json");  // invalid UTF-8
  EXPECT_EQ(kind_of(R"({"context":"C","question":"Q","metadata":{"task":"icl"}})"), "missing_field");
  EXPECT_EQ(kind_of(R"({"context":"C","question":"Q","answer":"A"})"), "missing_field");
  EXPECT_EQ(kind_of(R"({"context":"C","question":"Q","answer":"A","metadata":{}})"), "missing_field");
  EXPECT_EQ(kind_of(R"({"context":"C","question":"Q","answer":"A","metadata":{"task":"poetry"}})"), "unknown_task");
  EXPECT_EQ(kind_of(R"({"context":1,"question":"Q","answer":"A","metadata":{"task":"icl"}})"), "invalid_field");
  EXPECT_EQ(kind_of(R"({"context":"C","question":"Q","answer":"","metadata":{"task":"icl"}})"), "invalid_field");
  EXPECT_EQ(kind_of(R"({"context":"C","question":"Q","answer":"A","metadata":{"task":-1}})"), "invalid_field");
  EXPECT_EQ(kind_of(R"({"context":"C","question":"Q","answer":"A","metadata":{"task":1.5}})"), "invalid_field");
  EXPECT_EQ(kind_of(R"({"context":"C","question":"Q","answer":"A","metadata":{"task":1,"is_prefix":"yes"}})"),
            "invalid_field");
  try {
    data::parse_raw_record(R"({"context":"C","question":"Q","answer":"A","metadata":{"task":"poetry"}})",
                           data::default_task_map());
  } catch (const data::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("poetry"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--tasks"), std::string::npos) << e.what();
  }
}

TEST(PrepareRecord, UserTurnJoining) {
  EXPECT_EQ(data::build_user_turn(record("CTX", "Q?", "A", 0, false)), "CTX\nQ?");
  EXPECT_EQ(data::build_user_turn(record("CTX", "Q?", "A", 1, true)), "Q?\nCTX");
  EXPECT_EQ(data::build_user_turn(record("CTX", "", "A", 0, false)), "CTX");
  EXPECT_EQ(data::build_user_turn(record("", "Q?", "A", 4, true)), "Q?");
  EXPECT_EQ(data::build_user_turn(record("NEWS", "", "A", 2, false)),
            "You are given several news passages. Write a one-page summary of all news.\nNEWS\n\nSummary:");
  EXPECT_EQ(data::build_user_turn(record("NEWS", "Focus on storms.", "A", 2, true)),
            "You are given several news passages. Write a one-page summary of all news.\nFocus on storms.\nNEWS"
            "\n\nSummary:");
  EXPECT_EQ(data::build_user_turn(record("def f():\n", "", "A", 3, false)),
            "Please complete the code given below.\ndef f():\n");
}

// ------------------------------------------------------------ packing, shuffling, shards

// First-fit decreasing written the obvious way: the reference for plan_packs' tree search.
std::vector<std::vector<size_t>> reference_ffd(const std::vector<uint32_t>& lengths, int64_t budget) {
  std::vector<size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<size_t>> packs;
  std::vector<int64_t> room;
  for (size_t idx : order) {
    size_t p = 0;
    while (p < packs.size() && room[p] < lengths[idx]) ++p;
    if (p == packs.size()) packs.emplace_back(), room.push_back(budget);
    packs[p].push_back(idx);
    room[p] -= lengths[idx];
  }
  return packs;
}

TEST(PreparePack, PlanMatchesPackSamples) {
  uint64_t s = 7;
  for (int trial = 0; trial < 5; ++trial) {
    const int64_t budget = 100 + 37 * trial;
    std::vector<uint32_t> lengths;
    std::vector<Sample> samples;
    for (int i = 0; i < 300; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const uint32_t n = 1 + static_cast<uint32_t>((s >> 33) % static_cast<uint64_t>(budget));
      lengths.push_back(n);
      Sample x;
      x.tokens.assign(n, i);  // the token value names the sample
      x.labels.assign(n, 0);
      samples.push_back(std::move(x));
    }
    const auto plan = data::plan_packs(lengths, budget);
    EXPECT_EQ(plan, reference_ffd(lengths, budget));
    const auto packs = data::pack_samples(samples, budget);
    ASSERT_EQ(plan.size(), packs.size());
    size_t placed = 0;
    for (size_t p = 0; p < plan.size(); ++p) {
      ASSERT_EQ(plan[p].size(), packs[p].samples.size());
      int64_t used = 0;
      for (size_t k = 0; k < plan[p].size(); ++k) {
        EXPECT_EQ(packs[p].tokens[packs[p].samples[k].offset], static_cast<int32_t>(plan[p][k]));
        used += lengths[plan[p][k]];
      }
      EXPECT_LE(used, budget);
      placed += plan[p].size();
    }
    EXPECT_EQ(placed, lengths.size());
  }
}

TEST(PreparePack, ShuffleIsADeterministicPermutation) {
  std::vector<size_t> a(1000), b, c;
  std::iota(a.begin(), a.end(), size_t{0});
  b = a;
  c = a;
  data::shuffle_indices(a, 1);
  data::shuffle_indices(b, 1);
  data::shuffle_indices(c, 2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::sort(c.begin(), c.end());
  for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(c[i], i);
}

TEST(PrepareShards, Names) {
  EXPECT_EQ(data::shard_paths("d.pk", 1), std::vector<std::string>{"d.pk"});
  EXPECT_EQ(data::shard_paths("d.pk", 3),
            (std::vector<std::string>{"d.pk.00000-of-00003", "d.pk.00001-of-00003", "d.pk.00002-of-00003"}));
  EXPECT_THROW(data::shard_paths("d.pk", 0), Error);
}

// ------------------------------------------------------------ samples (synthetic tokenizer)

TEST(PrepareSynthetic, LabelsAnswerAndPromptRange) {
  const Tokenizer& tok = tokenizer(synthetic_dir());
  const data::SampleBuilder b(tok, *text::detect_chat_family(tok));
  ASSERT_EQ(b.formatter().family(), text::ChatFamily::qwen3);
  const std::vector<RawRecord> recs = {
      record("The tower was built in 1871.", "When was the tower built?", "In 1871.", 0, false),
      record("The tower was built in 1871.", "When was the tower built?", "In 1871.", 1, true),
      record("Storms closed harbours.", "", "Harbours closed.", 2, false),
      record("def add(a, b):\n    ", "", "return a + b", 3, false),
      record("  padded context  ", "question ", " answer with spaces ", 4, false),
      // NFC changes byte lengths: e + U+0301 becomes U+00E9.
      record("Cafe\u0301 de\u0301cor.", "Which cafe\u0301?", "The cafe\u0301.", 0, true),
  };
  for (const auto& r : recs) {
    SCOPED_TRACE(r.question + " / task " + std::to_string(r.task));
    const Sample s = b.build(r);
    ASSERT_EQ(s.tokens.size(), s.labels.size());
    EXPECT_EQ(s.task, r.task);
    const auto [l0, l1] = label_run(s);
    EXPECT_EQ(s.tokens[l1 - 1], b.formatter().end_of_turn_id());
    EXPECT_EQ(decode_labelled(tok, s), text::unicode::nfc(r.answer) + "<|im_end|>");
    ASSERT_LT(s.prompt_begin, s.prompt_end);
    EXPECT_LE(s.prompt_end, l0);
    const std::string user = data::build_user_turn(r);
    EXPECT_EQ(decode(tok, s.tokens, s.prompt_begin, s.prompt_end), text::unicode::nfc(user));
    // Just outside the prompt: the template.
    EXPECT_EQ(decode(tok, s.tokens, 0, s.prompt_begin), "<|im_start|>user\n");
    EXPECT_EQ(tok.decode(std::vector<int32_t>{s.tokens[s.prompt_end]}), "<|im_end|>");
  }
}

// ------------------------------------------------------------ the pipeline

TEST(PrepareSynthetic, EndToEndShardsAreDisjointAndComplete) {
  elastic::testing::TempDir dir;
  auto o = synthetic_options(dir);
  o.shards = 2;
  const auto rep = data::prepare_dataset(o);
  const std::string text = rep.format(o.tasks);
  SCOPED_TRACE(text);
  // mixed.jsonl: 10 records, one too short, one too long; bad.jsonl: 7 lines, 1 blank, 4 bad, 2 good.
  EXPECT_EQ(rep.lines, 17);
  EXPECT_EQ(rep.blank_lines, 1);
  EXPECT_EQ(rep.records, 16);
  EXPECT_EQ(rep.bad_total(), 4);
  EXPECT_EQ(rep.bad_lines.at("malformed_json"), 1);
  EXPECT_EQ(rep.bad_lines.at("missing_field"), 2);
  EXPECT_EQ(rep.bad_lines.at("unknown_task"), 1);
  EXPECT_EQ(rep.dropped.at("too_short"), 1);
  EXPECT_EQ(rep.dropped.at("too_long"), 1);
  EXPECT_EQ(rep.kept, 10);
  ASSERT_EQ(rep.messages.size(), 4u);
  EXPECT_NE(rep.messages[0].find("bad.jsonl:2: malformed JSON"), std::string::npos) << rep.messages[0];
  EXPECT_NE(rep.messages[1].find("bad.jsonl:3: missing field 'answer'"), std::string::npos) << rep.messages[1];
  EXPECT_NE(rep.messages[2].find("bad.jsonl:4: unknown task 'poetry'"), std::string::npos) << rep.messages[2];
  EXPECT_NE(rep.messages[3].find("bad.jsonl:7: missing field 'metadata'"), std::string::npos) << rep.messages[3];
  EXPECT_NE(text.find("bad.jsonl:2"), std::string::npos);
  EXPECT_NE(text.find("summarization (2)"), std::string::npos);
  EXPECT_EQ(rep.tasks.at(0).samples, 5);  // single_qa: 3 kept from mixed.jsonl, 2 from bad.jsonl
  ASSERT_EQ(rep.outputs.size(), 2u);
  EXPECT_EQ(rep.outputs[0], o.out + ".00000-of-00002");
  EXPECT_FALSE(fs::exists(o.out));

  const Tokenizer& tok = tokenizer(synthetic_dir());
  std::multiset<std::vector<int32_t>> seen;
  int64_t samples = 0, tokens = 0, packs = 0;
  for (size_t k = 0; k < rep.outputs.size(); ++k) {
    auto ds = data::Dataset::open(rep.outputs[k], /*verify_checksum=*/true);
    EXPECT_EQ(ds->header().tokenizer_fingerprint, tok.fingerprint());
    EXPECT_EQ(ds->header().vocab_size, tok.vocab_size());
    EXPECT_EQ(static_cast<int64_t>(ds->size()), rep.shard_packs[k]);
    EXPECT_GE(ds->size(), 1u);
    for (size_t p = 0; p < ds->size(); ++p) {
      const auto pk = ds->pack(p);
      EXPECT_LE(static_cast<int64_t>(pk.tokens.size()), o.pack_tokens);
      for (const auto& m : pk.samples) {
        Sample s;
        s.tokens.assign(pk.tokens.begin() + m.offset, pk.tokens.begin() + m.offset + m.length);
        s.labels.assign(pk.labels.begin() + m.offset, pk.labels.begin() + m.offset + m.length);
        EXPECT_GE(static_cast<int64_t>(m.length), o.min_tokens);
        const auto [l0, l1] = label_run(s);
        EXPECT_LE(m.prompt_end, l0);
        EXPECT_EQ(tok.decode(std::vector<int32_t>{s.tokens[l1 - 1]}), "<|im_end|>");
        EXPECT_EQ(tok.decode(std::vector<int32_t>{s.tokens[m.prompt_end]}), "<|im_end|>");
        seen.insert(s.tokens);
        ++samples;
      }
      tokens += static_cast<int64_t>(pk.tokens.size());
      ++packs;
    }
  }
  EXPECT_EQ(samples, rep.kept);
  EXPECT_EQ(tokens, rep.tokens);
  EXPECT_EQ(packs, rep.packs);
  // Disjoint and complete: the same samples as an unsharded run.
  auto o1 = o;
  o1.shards = 1;
  o1.out = dir.str("one.pk");
  const auto rep1 = data::prepare_dataset(o1);
  std::multiset<std::vector<int32_t>> all;
  auto ds1 = data::Dataset::open(o1.out);
  for (size_t p = 0; p < ds1->size(); ++p) {
    const auto pk = ds1->pack(p);
    for (const auto& m : pk.samples)
      all.insert(std::vector<int32_t>(pk.tokens.begin() + m.offset, pk.tokens.begin() + m.offset + m.length));
  }
  EXPECT_EQ(seen, all);
  EXPECT_DOUBLE_EQ(rep1.fill, static_cast<double>(rep1.tokens) / (rep1.packs * o.pack_tokens));
}

TEST(PrepareSynthetic, DeterministicAcrossThreadCounts) {
  elastic::testing::TempDir dir;
  auto o = synthetic_options(dir);
  o.threads = 1;
  o.out = dir.str("a.pk");
  data::prepare_dataset(o);
  o.threads = 4;
  o.out = dir.str("b.pk");
  data::prepare_dataset(o);
  o.seed = 5;
  o.out = dir.str("c.pk");
  data::prepare_dataset(o);
  o.shuffle = false;
  o.out = dir.str("d.pk");
  data::prepare_dataset(o);
  EXPECT_EQ(file_bytes(dir.str("a.pk")), file_bytes(dir.str("b.pk")));
  EXPECT_EQ(data::Dataset::open(dir.str("c.pk"))->header().num_samples, 10u);
  EXPECT_EQ(data::Dataset::open(dir.str("d.pk"))->header().num_samples, 10u);
}

TEST(PrepareSynthetic, OnErrorFailNamesFileAndLine) {
  elastic::testing::TempDir dir;
  auto o = synthetic_options(dir);
  o.on_error = data::OnError::fail;
  try {
    data::prepare_dataset(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2: malformed JSON"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(o.out));
  // Only the good file: no error.
  o.inputs = {fixture("mixed.jsonl")};
  EXPECT_EQ(data::prepare_dataset(o).kept, 8);
}

TEST(PrepareSynthetic, ClearErrorsForBadSetup) {
  elastic::testing::TempDir dir;
  auto expect_error = [](const data::PrepareOptions& o, const std::string& needle) {
    try {
      data::prepare_dataset(o);
      ADD_FAILURE() << "expected an error containing " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto o = synthetic_options(dir);
  o.inputs.push_back(dir.str("nope.jsonl"));
  expect_error(o, "nope.jsonl' does not exist");
  o = synthetic_options(dir);
  o.tokenizer_dir = dir.str("no-tokenizer");
  expect_error(o, "no-tokenizer' does not exist");
  o = synthetic_options(dir);
  o.tokenizer_dir = dir.str();
  expect_error(o, "has no tokenizer.json");
  o = synthetic_options(dir);
  o.shards = 1000;
  expect_error(o, "--shards 1000 is more than");
  o = synthetic_options(dir);
  o.min_tokens = 100000;
  expect_error(o, "--min-tokens");
  o = synthetic_options(dir);
  o.inputs = {fixture("bad.jsonl")};
  o.min_tokens = 500;
  expect_error(o, "no sample left");
}

TEST(PrepareSynthetic, InspectShowsBoundaries) {
  elastic::testing::TempDir dir;
  auto o = synthetic_options(dir);
  o.inputs = {fixture("bad.jsonl")};  // two good samples
  o.shuffle = false;
  data::prepare_dataset(o);
  auto ds = data::Dataset::open(o.out);
  const Tokenizer& tok = tokenizer(synthetic_dir());
  EXPECT_NE(data::describe_header(*ds).find("samples           2"), std::string::npos) << data::describe_header(*ds);
  const std::string d = data::describe_pack(*ds, 0, &tok, data::default_task_map(), 40);
  EXPECT_NE(d.find("task single_qa (0)"), std::string::npos) << d;
  EXPECT_NE(d.find("prompt head  \"Passage 1: The lighthouse"), std::string::npos) << d;
  EXPECT_NE(d.find("prompt tail  \"…"), std::string::npos) << d;
  EXPECT_NE(d.find("labelled     \"In 1871.<|im_end|>\""), std::string::npos) << d;
  EXPECT_NE(d.find("labelled     \"In the keeper's cottage.<|im_end|>\""), std::string::npos) << d;
  const std::string plain = data::describe_pack(*ds, 0, nullptr, data::default_task_map());
  EXPECT_EQ(plain.find("prompt head"), std::string::npos);
  EXPECT_EQ(data::preview("a\nb\\c", 10, false), "a\\nb\\\\c");
  EXPECT_EQ(data::preview("héllo", 2, false), "hé…");
  EXPECT_EQ(data::preview("héllo", 2, true), "…lo");
}

// ------------------------------------------------------------ real tokenizers

class PrepareReal : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!fs::exists(real_dir(GetParam()) + "/tokenizer_config.json"))
      GTEST_SKIP() << "tokenizer files not found in " << real_dir(GetParam());
  }
};

TEST_P(PrepareReal, PromptAndAnswerBoundaries) {
  const Tokenizer& tok = tokenizer(real_dir(GetParam()));
  const data::SampleBuilder b(tok, *text::detect_chat_family(tok));
  const bool qwen = GetParam() == "qwen3";
  const std::string eot = qwen ? "<|im_end|>" : "<|eot_id|>";
  const std::string ctx =
      "Passage 1: The lighthouse on Gull Island was built in 1871.\nPassage 2: It was automated in 1989.";
  const std::vector<RawRecord> recs = {
      record(ctx, "When was the lighthouse automated?", "It was automated in 1989.", 0, false),
      record(ctx, "When was the lighthouse built?", "In 1871.", 1, true),
      record("Storms closed three harbours on Tuesday.", "", "Storms closed harbours.", 2, false),
      record("def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    ", "", "return a * b", 3, false),
      record("cat -> animal; rose -> plant", "dog ->", "animal", 4, true),
      record("Café décor, 東京, emoji 🙂.", "Wo?", "In Tōkyō.", 0, false),
  };
  for (const auto& r : recs) {
    SCOPED_TRACE(GetParam() + ": " + r.question + " / task " + std::to_string(r.task));
    const Sample s = b.build(r);
    const auto [l0, l1] = label_run(s);
    EXPECT_EQ(decode_labelled(tok, s), r.answer + eot);
    EXPECT_EQ(s.tokens[l1 - 1], b.formatter().end_of_turn_id());
    // The Llama 3 template trims the message contents.
    const std::string built = data::build_user_turn(r);
    const std::string user = qwen ? built : std::string(text::unicode::py_strip(built));
    const std::string prompt = decode(tok, s.tokens, s.prompt_begin, s.prompt_end);
    EXPECT_EQ(prompt, user);
    const std::string& first = r.task == 2   ? std::string(data::kSummarizationInstruction)
                               : r.task == 3 ? std::string(data::kCodeInstruction)
                               : r.is_prefix ? r.question
                                             : r.context;
    EXPECT_EQ(prompt.substr(0, first.size()), first);
    if (r.task == 2) EXPECT_EQ(prompt.substr(prompt.size() - 10), "\n\nSummary:");
    EXPECT_LE(s.prompt_end, l0);
    EXPECT_EQ(tok.decode(std::vector<int32_t>{s.tokens[s.prompt_end]}), eot);
  }
}

INSTANTIATE_TEST_SUITE_P(Prepare, PrepareReal, ::testing::Values("qwen3", "llama3"),
                         [](const auto& info) { return info.param; });

#endif  // ELASTIC_HAVE_TEXT
