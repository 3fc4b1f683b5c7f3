// Tokenizer throughput benchmark and id dumper.
//   bench_tokenizer TOKENIZER_DIR DOCS_JSONL [--threads N] [--reps R]
//     DOCS_JSONL has one JSON string (a document) per line. Encodes all documents
//     (add_special_tokens=false) R times, prints one JSON object with bytes/s. --threads 1
//     uses encode(); more uses encode_batch(). The first pass is a warm-up (fills the cache).
//   bench_tokenizer TOKENIZER_DIR --dump JSONL_FILE
//     Each line is a JSON string; prints the ids of encode(text, false) as a JSON array per line.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "text/tokenizer.h"
#include "util/error.h"

using elastic::text::Tokenizer;

int main(int argc, char** argv) {
  try {
    if (argc < 3) {
      std::cerr << "usage: bench_tokenizer TOKENIZER_DIR DOCS_JSONL [--threads N] [--reps R]\n"
                   "       bench_tokenizer TOKENIZER_DIR --dump JSONL_FILE\n";
      return 2;
    }
    const std::string dir = argv[1];
    int threads = 1, reps = 3;
    std::string dump, text_file;
    for (int i = 2; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        ELASTIC_CHECK(i + 1 < argc, "missing value after " << a);
        return argv[++i];
      };
      if (a == "--threads") threads = std::stoi(next());
      else if (a == "--reps") reps = std::stoi(next());
      else if (a == "--dump") dump = next();
      else text_file = a;
    }
    const auto t_load0 = std::chrono::steady_clock::now();
    const Tokenizer tok = Tokenizer::from_dir(dir);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load0).count();

    if (!dump.empty()) {
      std::ifstream f(dump);
      ELASTIC_CHECK(f.good(), "cannot open " << dump);
      std::string line;
      while (std::getline(f, line)) {
        const std::string text = nlohmann::json::parse(line).get<std::string>();
        std::cout << nlohmann::json(tok.encode(text, false)).dump() << "\n";
      }
      return 0;
    }

    std::ifstream f(text_file);
    ELASTIC_CHECK(f.good(), "cannot open " << text_file);
    std::vector<std::string> docs;
    size_t n_bytes = 0;
    for (std::string line; std::getline(f, line);) {
      docs.push_back(nlohmann::json::parse(line).get<std::string>());
      n_bytes += docs.back().size();
    }
    auto run = [&]() {
      size_t n_tokens = 0;
      if (threads <= 1) {
        for (const auto& d : docs) n_tokens += tok.encode(d, false).size();
      } else {
        for (const auto& ids : tok.encode_batch(docs, false, threads)) n_tokens += ids.size();
      }
      return n_tokens;
    };
    const auto t_warm = std::chrono::steady_clock::now();
    size_t n_tokens = run();  // warm-up, cold pre-token cache
    const double cold_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_warm).count();
    std::vector<double> secs;
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      n_tokens = run();
      secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    double best = secs[0];
    for (double s : secs) best = std::min(best, s);
    nlohmann::json out = {{"impl", "elastic"},
                          {"threads", threads},
                          {"bytes", n_bytes},
                          {"docs", docs.size()},
                          {"tokens", n_tokens},
                          {"seconds", secs},
                          {"best_bytes_per_s", static_cast<double>(n_bytes) / best},
                          {"cold_seconds", cold_s},
                          {"cold_bytes_per_s", static_cast<double>(n_bytes) / cold_s},
                          {"load_seconds", load_s}};
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
