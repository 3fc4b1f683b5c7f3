#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "io/atomic_file.h"
#include "util/error.h"
#include "util/log.h"

namespace elastic::train {

namespace fs = std::filesystem;

std::string checkpoint_root(const std::string& output_dir) { return (fs::path(output_dir) / "checkpoints").string(); }

std::string trained_model_dir(const std::string& output_dir) { return (fs::path(output_dir) / "model").string(); }

std::optional<std::string> trained_model(const std::string& output_dir) {
  const auto dir = trained_model_dir(output_dir);
  if (!fs::exists(fs::path(dir) / "config.json")) return std::nullopt;
  return dir;
}

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

namespace {

void fsync_path(const fs::path& p, bool dir) {
  int fd = ::open(p.c_str(), dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

std::vector<fs::path> complete_checkpoints(const fs::path& root) {
  std::vector<fs::path> out;
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::directory_iterator(root)) {
    const auto name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("step_", 0) != 0 || name.find(".tmp") != std::string::npos) continue;
    if (!fs::exists(e.path() / "meta.json")) continue;
    auto j = nlohmann::json::parse(io::read_file((e.path() / "meta.json").string()), nullptr, false);
    if (j.is_discarded() || !j.value("complete", false)) continue;
    out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void write_checkpoint_atomically(const std::string& root, const std::string& name, int64_t keep,
                                 const std::function<void(const std::string&)>& write) {
  fs::create_directories(root);
  const fs::path final_dir = fs::path(root) / name;
  const fs::path tmp = fs::path(root) / (name + ".tmp." + std::to_string(::getpid()));
  io::remove_tree(fs::path(tmp).string());
  fs::create_directories(tmp);
  write(tmp.string());
  for (const auto& e : fs::directory_iterator(tmp)) fsync_path(e.path(), false);
  fsync_path(tmp, true);
  if (fs::exists(final_dir)) io::remove_tree(fs::path(final_dir).string());
  fs::rename(tmp, final_dir);
  fsync_path(root, true);
  auto all = complete_checkpoints(root);
  for (size_t i = 0; i + keep < all.size(); ++i) io::remove_tree(fs::path(all[i]).string());
  // Leftovers of writers that were killed.
  for (const auto& e : fs::directory_iterator(root)) {
    const auto n = e.path().filename().string();
    if (n.find(".tmp.") != std::string::npos && e.path() != tmp) io::remove_tree(fs::path(e.path()).string());
  }
}

std::optional<std::string> latest_checkpoint(const std::string& root) {
  auto all = complete_checkpoints(root);
  if (all.empty()) return std::nullopt;
  return all.back().string();
}

nlohmann::json read_checkpoint_meta(const std::string& dir) {
  const auto path = (fs::path(dir) / "meta.json").string();
  ELASTIC_CHECK(fs::exists(path), dir << ": not a checkpoint (no meta.json)");
  auto j = nlohmann::json::parse(io::read_file(path), nullptr, false);
  ELASTIC_CHECK(!j.is_discarded() && j.value("complete", false), path << ": incomplete or corrupt checkpoint");
  return j;
}

}  // namespace elastic::train
