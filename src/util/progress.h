// Progress of long work: a redrawn bar with ETA on a terminal, plain log lines otherwise.
#pragma once
#include <chrono>
#include <string>

namespace elastic {

class Progress {
 public:
  Progress(std::string what, int64_t total, int64_t start = 0);
  // Marks `done` items finished; `status` is appended (loss, Ω, ...).
  void update(int64_t done, const std::string& status);
  void finish(const std::string& status);

 private:
  std::string what_;
  int64_t total_, start_;
  bool tty_;
  std::chrono::steady_clock::time_point t0_;
  std::chrono::steady_clock::time_point last_draw_{};
};

std::string format_duration(double seconds);

}  // namespace elastic
