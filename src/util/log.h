// Logging facade. spdlog lives behind this header only: torch bundles an fmt that
// clashes with the system spdlog's fmt, so no file may include both.
#pragma once
#include <sstream>
#include <string>
#include <string_view>

namespace elastic::log {

enum class Level { debug, info, warn, error };

void write(Level level, std::string_view message);
void set_level(Level level);
bool parse_level(std::string_view name, Level* out);
// Also write every line to this file (appends). Empty path turns it off.
void add_file(const std::string& path);
// Only rank 0 logs info/debug in multi-rank runs; others log warn and above.
void set_rank(int rank);
// True when stderr is a terminal (progress bars redraw in place then).
bool stderr_is_tty();
// Write raw text to stderr (progress bar), synchronised with log lines.
void raw(std::string_view text);

}  // namespace elastic::log

#define ELASTIC_LOG_(lvl, expr)                         \
  do {                                                  \
    std::ostringstream elastic_log_os_;                 \
    elastic_log_os_ << expr;                            \
    ::elastic::log::write(lvl, elastic_log_os_.str());  \
  } while (0)
#define LOG_DEBUG(expr) ELASTIC_LOG_(::elastic::log::Level::debug, expr)
#define LOG_INFO(expr) ELASTIC_LOG_(::elastic::log::Level::info, expr)
#define LOG_WARN(expr) ELASTIC_LOG_(::elastic::log::Level::warn, expr)
#define LOG_ERROR(expr) ELASTIC_LOG_(::elastic::log::Level::error, expr)
