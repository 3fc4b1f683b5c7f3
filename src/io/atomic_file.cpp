#include "io/atomic_file.h"

#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace elastic::io {

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  tmp_ = path + ".tmp." + std::to_string(::getpid());
  f_ = std::fopen(tmp_.c_str(), "wb");
  ELASTIC_CHECK(f_ != nullptr, path << ": cannot create " << tmp_ << " (" << std::strerror(errno) << ")");
}

AtomicFile::~AtomicFile() {
  if (f_) {
    std::fclose(f_);
    std::remove(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, size_t bytes) {
  ELASTIC_CHECK(f_ != nullptr, path_ << ": write after commit");
  if (bytes == 0) return;
  ELASTIC_CHECK(std::fwrite(data, 1, bytes, f_) == bytes,
                path_ << ": write failed (" << std::strerror(errno) << "; disk full?)");
}

void AtomicFile::commit() {
  ELASTIC_CHECK(f_ != nullptr, path_ << ": committed twice");
  bool ok = std::fflush(f_) == 0 && ::fsync(::fileno(f_)) == 0;
  ok = (std::fclose(f_) == 0) && ok;
  f_ = nullptr;
  if (!ok) {
    std::remove(tmp_.c_str());
    ELASTIC_FAIL(path_ << ": flushing " << tmp_ << " failed (" << std::strerror(errno) << ")");
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    std::remove(tmp_.c_str());
    ELASTIC_FAIL(path_ << ": rename from " << tmp_ << " failed (" << std::strerror(errno) << ")");
  }
  auto dir = std::filesystem::path(path_).parent_path();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void AtomicFile::commit_with_header(const void* header, size_t bytes) {
  ELASTIC_CHECK(f_ != nullptr, path_ << ": committed twice");
  ELASTIC_CHECK(std::fflush(f_) == 0 && std::fseek(f_, 0, SEEK_SET) == 0 && std::fwrite(header, 1, bytes, f_) == bytes,
                path_ << ": writing the header failed (" << std::strerror(errno) << ")");
  commit();
}

void write_file_atomic(const std::string& path, const std::string& content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

void remove_tree(const std::string& path) {
  auto rm = [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); };
  if (::nftw(path.c_str(), rm, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT) {
    ELASTIC_FAIL(path << ": cannot remove (" << std::strerror(errno) << ")");
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ELASTIC_CHECK(in.good(), path << ": cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace elastic::io
