// Proof-of-elasticity pipeline: the retrieval-head scorer's pieces, and tools/elasticity.sh --smoke
// end to end (tiny CPU run: data, backbone, router, baselines, report).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/synthetic.h"
#include "test_util.h"
#include "train/head_scores.h"

namespace fs = std::filesystem;
using elastic::testing::TempDir;
using namespace elastic;

TEST(Synthetic, RetrievalLayoutHasOneQueriedKeyAndItsValueAsAnswer) {
  data::SyntheticOptions o;
  o.vocab = 256;
  o.answer_len = 3;
  o.pairs = 4;
  const auto r = data::token_ranges(o.vocab);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    for (auto task : {data::SyntheticTask::retrieval, data::SyntheticTask::multihop}) {
      const int64_t len = 120 + static_cast<int64_t>(seed);
      auto s = data::make_synthetic_sample(task, len, o, seed);
      ASSERT_EQ(static_cast<int64_t>(s.tokens.size()), len);
      const int64_t pe = s.prompt_end;
      std::vector<int32_t> t(s.tokens.begin(), s.tokens.end());
      ASSERT_EQ(t[pe - 2], data::kAnswer);
      // Follow the chain by hand: each key starts exactly one pair (KEY k ..) and filler never holds it.
      int32_t key = t[pe - 1];
      ASSERT_GE(key, r.key_begin);
      ASSERT_LT(key, r.value_begin);
      int hops = 0;
      for (;;) {
        int found = 0;
        int64_t at = -1;
        for (int64_t p = 0; p < pe - 2; ++p) {
          if (t[p] == key && p > 0 && t[p - 1] == data::kKey) {
            ++found;
            at = p;
          }
        }
        ASSERT_EQ(found, 1) << "key " << key << " seed " << seed;
        if (t[at + 1] >= r.key_begin && t[at + 1] < r.value_begin) {
          key = t[at + 1];
          ++hops;
          continue;
        }
        for (int64_t a = 0; a < o.answer_len; ++a) EXPECT_EQ(t[at + 1 + a], t[pe + a]);
        break;
      }
      EXPECT_EQ(hops, task == data::SyntheticTask::multihop ? 1 : 0);
      EXPECT_EQ(t.back(), data::kEos);
      // Key and value tokens occur only inside the planted pairs and the question.
      int64_t markers = 0, planted = 0;
      for (int64_t p = 0; p < pe - 1; ++p) {
        markers += t[p] == data::kKey;
        planted += t[p] >= r.key_begin && t[p] < r.filler_begin;
      }
      EXPECT_EQ(markers, o.pairs);
      EXPECT_EQ(planted, task == data::SyntheticTask::retrieval ? o.pairs * (1 + o.answer_len)
                                                                : (o.pairs - 1) * (1 + o.answer_len) + 2);
    }
  }
}

TEST(Synthetic, RecentCopyQuestionEndsWithCopyWhereALookupHoldsItsKey) {
  data::SyntheticOptions o;
  o.vocab = 256;
  o.answer_len = 3;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const int64_t len = 100 + static_cast<int64_t>(seed);
    auto s = data::make_synthetic_sample(data::SyntheticTask::recent_copy, len, o, seed);
    auto l = data::make_synthetic_sample(data::SyntheticTask::retrieval, len, o, seed);
    ASSERT_EQ(static_cast<int64_t>(s.tokens.size()), len);
    const int64_t pe = s.prompt_end, A = o.answer_len;
    ASSERT_EQ(static_cast<int64_t>(l.prompt_end), pe);  // same question block size as a lookup
    // QUERY <A-1 filler> ANSWER COPY, then the A context tokens just before QUERY, then EOS.
    EXPECT_EQ(s.tokens[pe - A - 2], data::kQuery);
    EXPECT_EQ(s.tokens[pe - 2], data::kAnswer);
    EXPECT_EQ(s.tokens[pe - 1], data::kCopy);
    EXPECT_EQ(l.tokens[pe - 2], data::kAnswer);
    EXPECT_NE(l.tokens[pe - 1], data::kCopy);
    for (int64_t a = 0; a < A; ++a) {
      EXPECT_EQ(s.tokens[pe + a], s.tokens[pe - A - 2 - A + a]);
      EXPECT_EQ(s.labels[pe + a], 1);
    }
    EXPECT_EQ(s.tokens.back(), data::kEos);
    // kCopy occurs nowhere else: the question alone names the task.
    EXPECT_EQ(std::count(s.tokens.begin(), s.tokens.end(), data::kCopy), 1);
  }
}

TEST(Synthetic, PredictableLabelsMarkOnlyTheRepeatedPatternTail) {
  data::SyntheticOptions o;
  o.label_predictable = true;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto s = data::make_synthetic_sample(data::SyntheticTask::pattern, 150, o, seed);
    int64_t context_labels = 0;
    for (int64_t p = 0; p < static_cast<int64_t>(s.prompt_end); ++p) {
      if (!s.labels[p]) continue;
      ++context_labels;
      // A labelled context token repeats the token one period (3..7) back.
      bool repeats = false;
      for (int64_t period = 3; period <= 7; ++period) repeats |= p >= period && s.tokens[p] == s.tokens[p - period];
      EXPECT_TRUE(repeats) << "position " << p << " seed " << seed;
    }
    EXPECT_GE(context_labels, 9);  // 4 periods of at least 3 tokens, the first unlabelled
    // Other tasks gain no context labels.
    auto r = data::make_synthetic_sample(data::SyntheticTask::retrieval, 150, o, seed);
    for (int64_t p = 0; p < static_cast<int64_t>(r.prompt_end); ++p) EXPECT_EQ(r.labels[p], 0);
  }
}

TEST(HeadScores, NeedlePositionsFollowTheQueriedKey) {
  data::SyntheticOptions o;
  o.answer_len = 3;
  o.far_fraction = 0.5;
  for (auto task : {data::SyntheticTask::retrieval, data::SyntheticTask::multihop}) {
    auto s = data::make_synthetic_sample(task, 200, o, 7);
    std::vector<int64_t> tok(s.tokens.begin(), s.tokens.end());
    const int64_t pe = s.prompt_end;
    auto needle = train::needle_positions(tok, pe, o.answer_len);
    // retrieval: KEY k v1 v2 v3; multihop: KEY k' k and KEY k v1 v2 v3.
    const size_t want = task == data::SyntheticTask::retrieval ? 5 : 3 + 5;
    ASSERT_EQ(needle.size(), want);
    int64_t keys = 0, answer_values = 0;
    for (auto p : needle) {
      keys += tok[p] == data::kKey;
      for (int64_t a = 0; a < o.answer_len; ++a) answer_values += tok[p] == tok[pe + a];
      EXPECT_LT(p, pe - 2);
    }
    EXPECT_EQ(keys, task == data::SyntheticTask::retrieval ? 1 : 2);
    EXPECT_EQ(answer_values, o.answer_len);
    // The planted needle sits in the first far_fraction of the context.
    EXPECT_LT(needle.front(), pe / 2 + 20);
  }
  // Recent copy has no queried key: no needle.
  auto s = data::make_synthetic_sample(data::SyntheticTask::recent_copy, 200, o, 7);
  std::vector<int64_t> tok(s.tokens.begin(), s.tokens.end());
  EXPECT_TRUE(train::needle_positions(tok, s.prompt_end, o.answer_len).empty());
}

TEST(HeadScores, NeedleMassEqualsDenseSoftmax) {
  torch::manual_seed(0);
  const int64_t T = 40, Hq = 4, Hkv = 2, d = 8, G = Hq / Hkv;
  auto q = torch::randn({T, Hq, d}, torch::kFloat64), k = torch::randn({T, Hkv, d}, torch::kFloat64);
  std::vector<int64_t> rows = {30, 35, 39}, needle = {3, 4, 5, 31, 36};
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  auto got = train::needle_mass(q.to(torch::kFloat32), k.to(torch::kFloat32), rows, needle, scale);
  for (int64_t h = 0; h < Hkv; ++h) {
    double want = 0;
    for (int64_t g = 0; g < G; ++g) {
      for (auto i : rows) {
        auto s = (k.select(1, h).narrow(0, 0, i + 1).matmul(q[i][h * G + g]) * scale).softmax(0);
        for (auto j : needle)
          if (j <= i) want += s[j].item<double>();
      }
    }
    want /= static_cast<double>(G * rows.size());
    EXPECT_NEAR(got[h].item<double>(), want, 1e-5) << "kv head " << h;
  }
}

TEST(HeadScores, MaskKeepsTopHeadsAtTheRequestedSparsity) {
  auto scores = torch::tensor({0.1, 0.9, 0.3, 0.5, 0.0, 0.7, 0.2, 0.4, 0.6, 0.8}, torch::kFloat64).view({5, 2});
  auto mask = train::mask_from_scores(scores, 0.7);  // keep round(0.3 * 10) = 3 heads
  EXPECT_EQ(mask.sum().item<double>(), 3.0);
  EXPECT_EQ(mask[0][1].item<double>(), 1.0);  // 0.9
  EXPECT_EQ(mask[4][1].item<double>(), 1.0);  // 0.8
  EXPECT_EQ(mask[2][1].item<double>(), 1.0);  // 0.7
  EXPECT_EQ(train::mask_from_scores(scores, 1.0).sum().item<double>(), 0.0);
  EXPECT_EQ(train::mask_from_scores(scores, 0.0).sum().item<double>(), 10.0);
}

TEST(ElasticitySmoke, PipelineWritesParsableReport) {
  if (std::system("command -v bash > /dev/null 2>&1") != 0) GTEST_SKIP() << "bash not found";
  const fs::path script = fs::path(ELASTIC_TEST_DATA) / ".." / ".." / "tools" / "elasticity.sh";
  ASSERT_TRUE(fs::exists(script)) << script;
  // ELASTIC_BIN in the environment overrides the binary built with the tests.
  const char* env_bin = std::getenv("ELASTIC_BIN");
  const std::string bin = env_bin && *env_bin ? env_bin : ELASTIC_BINARY;
  TempDir d;
  const std::string log = d.str("smoke.log");
  const std::string cmd = "ELASTIC_BIN='" + bin + "' OMP_NUM_THREADS=1 bash '" + script.string() +
                          "' --smoke --out '" + d.str("run") + "' > '" + log + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream lf(log);
  std::stringstream ls;
  ls << lf.rdbuf();
  const std::string text = ls.str();
  ASSERT_EQ(rc, 0) << "tools/elasticity.sh --smoke failed; last output:\n" << text.substr(text.size() > 3000 ? text.size() - 3000 : 0);

  const fs::path run = d.path / "run";
  for (auto f : {"results.json", "results.md", "mask.csv", "mask.scores.csv", "commands.txt", "router/metrics.jsonl",
                 "router/router.safetensors", "backbone/model/config.json", "eval/router/fa_heatmap.svg"})
    EXPECT_TRUE(fs::exists(run / f)) << f;
  std::ifstream rf(run / "results.json");
  auto res = nlohmann::json::parse(rf);
  const std::vector<std::string> methods = {"full", "router", "fixed", "streaming"};
  ASSERT_EQ(res["methods"].size(), methods.size());
  for (const auto& m : methods) {
    std::ifstream ef(run / "eval" / m / "eval.json");
    auto ev = nlohmann::json::parse(ef);
    EXPECT_EQ(ev["tasks"].size(), 5u) << m;
    const auto& r = res["eval"][m];
    for (auto key : {"accuracy", "lm_loss", "omega_msr", "omega_esr"}) EXPECT_TRUE(r["overall"][key].is_number()) << m << " " << key;
    for (const auto& t : {"retrieval", "multihop", "recent_copy", "pattern", "instruction"})
      EXPECT_TRUE(r["tasks"].contains(t)) << m << " " << t;
  }
  // The baselines' sparsity is what they claim: full 0, streaming 1; the static mask is within one head
  // of the router's average Ω_MSR.
  EXPECT_NEAR(res["eval"]["full"]["overall"]["omega_msr"].get<double>(), 0.0, 1e-9);
  EXPECT_NEAR(res["eval"]["streaming"]["overall"]["omega_msr"].get<double>(), 1.0, 1e-9);
  // Mask: header row plus one row per layer of 0/1 values.
  std::ifstream mf(run / "mask.csv");
  std::string line;
  std::getline(mf, line);
  EXPECT_EQ(line.rfind("layer,kv_head0", 0), 0u) << line;
  int rows = 0;
  while (std::getline(mf, line)) ++rows;
  EXPECT_GT(rows, 0);
  EXPECT_EQ(res["router_train"]["steps"].get<int>(), 8);
}
