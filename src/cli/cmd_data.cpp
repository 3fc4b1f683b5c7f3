// Data subcommands on real text: prepare-data (raw JSONL -> packed, sharded dataset) and
// inspect-data (header, one pack, and with a tokenizer the decoded prompt and answer boundaries).
// See docs/data-preparation.md. Needs the tokenizer library (ELASTIC_HAVE_TEXT).
#ifdef ELASTIC_HAVE_TEXT

#include <filesystem>
#include <iostream>
#include <thread>

#include "cli/args.h"
#include "data/dataset.h"
#include "data/prepare.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/log.h"

namespace elastic::cli {

int cmd_prepare_data(int argc, char** argv);
int cmd_inspect_data2(int argc, char** argv);

namespace {

void log_level_from(const Args& a) {
  if (!a.has("log-level")) return;
  log::Level l;
  ELASTIC_CHECK(log::parse_level(a.get("log-level", ""), &l),
                "--log-level: expected debug, info, warn or error, got '" << a.get("log-level", "") << "'");
  log::set_level(l);
}

}  // namespace

int cmd_prepare_data(int argc, char** argv) {
  Args a("prepare-data", argc, argv,
         {"input", "tokenizer", "out", "pack-tokens", "min-tokens", "seed", "shards", "threads", "chat", "tasks",
          "on-error", "log-level"},
         {"no-shuffle", "no-progress", "help"});
  if (a.flag("help")) {
    std::cout
        << "elastic prepare-data --input A.jsonl [--input B.jsonl ...] --tokenizer MODEL_DIR --out DATASET\n"
           "  [--pack-tokens 65536] [--min-tokens 64] [--seed 0] [--no-shuffle] [--shards 1] [--threads N]\n"
           "  [--chat auto|qwen3|llama3] [--tasks name=id,...] [--on-error skip|fail] [--no-progress]\n"
           "  [--log-level info]\n\n"
           "Tokenizes raw JSON lines {context, question, answer, metadata: {task, is_prefix}} with the model's\n"
           "chat template, labels the answer and end-of-turn token, packs samples first-fit decreasing into\n"
           "--pack-tokens and writes DATASET (or DATASET.00000-of-0000N ... with --shards N).\n"
           "Default tasks: single_qa=0, multihop_qa=1, summarization=2, code=3, icl=4 (--tasks adds or\n"
           "overrides names). See docs/data-preparation.md.\n";
    return 0;
  }
  ELASTIC_CHECK(a.positional().empty(), "prepare-data: unexpected argument '" << a.positional()[0]
                                                                              << "' (inputs go with --input)");
  log_level_from(a);
  data::PrepareOptions o;
  o.inputs = a.all("input");
  ELASTIC_CHECK(!o.inputs.empty(), "prepare-data: missing required option --input FILE.jsonl (repeatable)");
  o.tokenizer_dir = a.require("tokenizer");
  o.out = a.require("out");
  o.pack_tokens = a.get_int("pack-tokens", 65536);
  o.min_tokens = a.get_int("min-tokens", 64);
  o.seed = static_cast<uint64_t>(a.get_int("seed", 0));
  o.shuffle = !a.flag("no-shuffle");
  const int64_t shards = a.get_int("shards", 1);
  ELASTIC_CHECK(shards >= 1 && shards <= 99999, "prepare-data: --shards must be in [1, 99999], got " << shards);
  o.shards = static_cast<int>(shards);
  const int64_t threads = a.get_int("threads", 0);
  ELASTIC_CHECK(threads >= 0 && threads <= 4096, "prepare-data: --threads must be in [0, 4096], got " << threads);
  o.threads = static_cast<int>(threads);
  o.chat = a.get("chat", "auto");
  ELASTIC_CHECK(o.chat == "auto" || o.chat == "qwen3" || o.chat == "llama3",
                "prepare-data: --chat must be auto, qwen3 or llama3, got '" << o.chat << "'");
  if (a.has("tasks")) o.tasks = data::parse_task_map(a.get("tasks", ""));
  const std::string on_error = a.get("on-error", "skip");
  ELASTIC_CHECK(on_error == "skip" || on_error == "fail",
                "prepare-data: --on-error must be skip or fail, got '" << on_error << "'");
  o.on_error = on_error == "fail" ? data::OnError::fail : data::OnError::skip;
  o.progress = !a.flag("no-progress");

  const auto rep = data::prepare_dataset(o);
  std::cout << rep.format(o.tasks) << std::flush;
  return 0;
}

int cmd_inspect_data2(int argc, char** argv) {
  Args a("inspect-data", argc, argv, {"pack", "tokenizer", "chars", "tasks"}, {"help"});
  if (a.flag("help")) {
    std::cout << "elastic inspect-data DATASET [--pack 0] [--tokenizer MODEL_DIR] [--chars 80] [--tasks name=id,...]\n\n"
                 "Prints the header and one pack's samples (task, token range, prompt range, labelled tokens,\n"
                 "coverage). With --tokenizer, also the decoded first/last --chars characters of each prompt and\n"
                 "the decoded labelled tokens, to check the boundaries.\n";
    return 0;
  }
  ELASTIC_CHECK(a.positional().size() == 1,
                "inspect-data: usage: elastic inspect-data DATASET [--pack N] [--tokenizer DIR] [--chars 80]");
  auto ds = data::Dataset::open(a.positional()[0]);
  std::cout << data::describe_header(*ds);
  const int64_t i = a.get_int("pack", 0);
  ELASTIC_CHECK(i >= 0 && static_cast<size_t>(i) < ds->size(),
                "inspect-data: --pack " << i << " is out of range (" << ds->size() << " packs)");
  const int64_t chars = a.get_int("chars", 80);
  ELASTIC_CHECK(chars >= 1, "inspect-data: --chars must be >= 1");
  const data::TaskMap tasks = a.has("tasks") ? data::parse_task_map(a.get("tasks", "")) : data::default_task_map();
  std::unique_ptr<text::Tokenizer> tok;
  if (a.has("tokenizer")) {
    const std::string dir = a.get("tokenizer", "");
    ELASTIC_CHECK(std::filesystem::is_directory(dir), "inspect-data: tokenizer directory '" << dir << "' does not exist");
    tok = std::make_unique<text::Tokenizer>(text::Tokenizer::from_dir(dir));
    if (ds->header().tokenizer_fingerprint != tok->fingerprint())
      LOG_WARN("inspect-data: " << dir << "/tokenizer.json is not the tokenizer this dataset was made with "
                                << "(fingerprints differ); decoded text may be wrong");
  }
  std::cout << "\n" << data::describe_pack(*ds, static_cast<size_t>(i), tok.get(), tasks, static_cast<size_t>(chars));
  return 0;
}

}  // namespace elastic::cli

#else  // !ELASTIC_HAVE_TEXT: a build without the tokenizer (no PCRE2/utf8proc) keeps both commands
       // registered: prepare-data explains what is missing, inspect-data works without --tokenizer.

#include <iostream>

#include "cli/args.h"
#include "data/dataset.h"
#include "util/error.h"

namespace elastic::cli {

int cmd_prepare_data(int argc, char** argv);
int cmd_inspect_data2(int argc, char** argv);

int cmd_prepare_data(int, char**) {
  ELASTIC_FAIL("prepare-data: this build has no tokenizer (PCRE2 or utf8proc were not found at configure time); "
               "install libpcre2-dev and libutf8proc-dev (tools/setup.sh does) and re-run cmake");
}

int cmd_inspect_data2(int argc, char** argv) {
  Args a("inspect-data", argc, argv, {"pack", "tokenizer", "chars", "tasks"}, {"help"});
  if (a.flag("help")) {
    std::cout << "elastic inspect-data DATASET [--pack 0]   (--tokenizer needs a build with the tokenizer)\n";
    return 0;
  }
  ELASTIC_CHECK(a.positional().size() == 1, "inspect-data: usage: elastic inspect-data DATASET [--pack N]");
  ELASTIC_CHECK(!a.has("tokenizer"), "inspect-data: --tokenizer needs a build with the tokenizer (PCRE2, utf8proc)");
  auto ds = data::Dataset::open(a.positional()[0]);
  const auto& h = ds->header();
  std::cout << "dataset           " << ds->path() << "\nformat version    " << h.version << "\nvocab size        "
            << h.vocab_size << "\ntokenizer         " << std::hex << h.tokenizer_fingerprint << std::dec
            << "\npacks             " << h.num_packs << "\nsamples           " << h.num_samples
            << "\ntokens            " << h.num_tokens << "\n";
  const int64_t i = a.get_int("pack", 0);
  ELASTIC_CHECK(i >= 0 && static_cast<size_t>(i) < ds->size(),
                "inspect-data: --pack " << i << " is out of range (" << ds->size() << " packs)");
  const auto p = ds->pack(static_cast<size_t>(i));
  std::cout << "\npack " << i << ": " << p.tokens.size() << " tokens, " << p.samples.size() << " samples\n";
  for (size_t s = 0; s < p.samples.size(); ++s) {
    const auto& m = p.samples[s];
    int64_t labelled = 0;
    for (uint32_t t = 0; t < m.length; ++t) labelled += p.labels[m.offset + t];
    std::cout << "  sample " << s << ": task " << m.task << ", tokens [" << m.offset << ", " << m.offset + m.length
              << "), prompt [" << m.prompt_begin << ", " << m.prompt_end << "), labelled " << labelled
              << ", coverage " << 100.0 * static_cast<double>(labelled) / m.length << "%\n";
  }
  return 0;
}

}  // namespace elastic::cli

#endif  // ELASTIC_HAVE_TEXT
