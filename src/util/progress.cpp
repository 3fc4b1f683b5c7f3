#include "util/progress.h"

#include <cstdio>
#include <sstream>

#include "util/log.h"

namespace elastic {

std::string format_duration(double s) {
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  else std::snprintf(buf, sizeof buf, "%lds", t);
  return buf;
}

Progress::Progress(std::string what, int64_t total, int64_t start)
    : what_(std::move(what)), total_(total), start_(start), tty_(log::stderr_is_tty()), t0_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t done, const std::string& status) {
  auto now = std::chrono::steady_clock::now();
  const double el = std::chrono::duration<double>(now - t0_).count();
  const double rate = done > start_ ? (done - start_) / std::max(el, 1e-9) : 0.0;
  const double eta = rate > 0 ? (total_ - done) / rate : 0.0;
  if (tty_) {
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    constexpr int width = 30;
    const int fill = total_ > 0 ? static_cast<int>(width * done / total_) : width;
    std::ostringstream os;
    os << "\r" << what_ << " " << done << "/" << total_ << " [" << std::string(fill, '=')
       << std::string(width - fill, ' ') << "] " << (total_ > 0 ? 100 * done / total_ : 100) << "% ETA "
       << format_duration(eta) << "  " << status << "\033[K";
    log::raw(os.str());
  } else {
    LOG_INFO(what_ << " " << done << "/" << total_ << " elapsed " << format_duration(el) << " ETA "
                   << format_duration(eta) << " " << status);
  }
}

void Progress::finish(const std::string& status) {
  if (tty_) log::raw("\n");
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  LOG_INFO(what_ << " done in " << format_duration(el) << " " << status);
}

}  // namespace elastic
