#include "util/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <mutex>

namespace elastic::log {
namespace {

struct State {
  std::mutex mu;
  std::shared_ptr<spdlog::logger> logger;
  Level level = Level::info;
  int rank = 0;
};

State& state() {
  static State s;
  return s;
}

std::shared_ptr<spdlog::logger>& logger_locked(State& s) {
  if (!s.logger) {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    s.logger = std::make_shared<spdlog::logger>("elastic", sink);
    s.logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
    s.logger->set_level(spdlog::level::trace);
    s.logger->flush_on(spdlog::level::info);
  }
  return s.logger;
}

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warn: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

void write(Level level, std::string_view message) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (level < s.level) return;
  if (s.rank != 0 && level < Level::warn) return;
  auto& lg = logger_locked(s);
  if (s.rank != 0) {
    lg->log(to_spd(level), "[rank {}] {}", s.rank, message);
  } else {
    lg->log(to_spd(level), "{}", message);
  }
}

void set_level(Level level) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().level = level;
}

bool parse_level(std::string_view name, Level* out) {
  if (name == "debug") *out = Level::debug;
  else if (name == "info") *out = Level::info;
  else if (name == "warn") *out = Level::warn;
  else if (name == "error") *out = Level::error;
  else return false;
  return true;
}

void add_file(const std::string& path) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  auto& lg = logger_locked(s);
  auto& sinks = lg->sinks();
  if (sinks.size() > 1) sinks.resize(1);
  if (!path.empty()) {
    auto file_sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, false);
    file_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
    sinks.push_back(file_sink);
  }
}

void set_rank(int rank) {
  std::lock_guard<std::mutex> lock(state().mu);
  state().rank = rank;
}

bool stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }

void raw(std::string_view text) {
  std::lock_guard<std::mutex> lock(state().mu);
  ::fwrite(text.data(), 1, text.size(), stderr);
  ::fflush(stderr);
}

}  // namespace elastic::log
