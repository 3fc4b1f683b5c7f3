// A file written under a temporary name and renamed into place on commit(); destroyed
// without commit() it removes the temporary, so readers never see a half-written file.
#pragma once
#include <cstdio>
#include <string>

namespace elastic::io {

class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t bytes);
  void write(const std::string& s) { write(s.data(), s.size()); }
  // fsync, close, rename over `path`, fsync the directory.
  void commit();
  // Overwrites the first `bytes` of the file (a header reserved at the start), then commits.
  void commit_with_header(const void* header, size_t bytes);
  const std::string& tmp_path() const { return tmp_; }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

// Whole-file convenience.
void write_file_atomic(const std::string& path, const std::string& content);
std::string read_file(const std::string& path);

// Removes a file or directory tree; missing paths are fine. (Not std::filesystem::remove_all:
// the CUDA libtorch.so exports a broken copy of it that interposes on the program's.)
void remove_tree(const std::string& path);

}  // namespace elastic::io
