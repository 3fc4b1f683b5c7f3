// Safetensors reader (memory-mapped, validated, zero-copy views) and atomic writer.
// Format: u64 little-endian header length N, N bytes of JSON, then the data buffer.
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace elastic::io {

struct TensorInfo {
  std::string name;
  std::string dtype;  // safetensors spelling: F32, F16, BF16, I32, I64, U8, BOOL, ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data buffer
  uint64_t end = 0;
};

class MappedFile;

class SafetensorsFile {
 public:
  // Maps and validates the whole header; throws elastic::Error naming the file and tensor.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  // Zero-copy CPU view into the mapping (copy-on-write: writes never reach the file).
  // The view keeps the mapping alive.
  torch::Tensor get(const std::string& name) const;

 private:
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  const uint8_t* data_ = nullptr;  // start of the data buffer
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (any device; made contiguous on CPU) to `path` via a temporary file
// and rename, so a crash never leaves a half-written file under the final name.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// A Hugging Face checkpoint directory: model.safetensors, or shards listed in
// model.safetensors.index.json.
class Checkpoint {
 public:
  static Checkpoint open(const std::string& dir);
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  torch::Tensor get(const std::string& name) const;  // zero-copy view
  const TensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  // Path of the file that holds `name` (for error messages).
  const std::string& file_of(const std::string& name) const;
  const std::string& dir() const { return dir_; }
  // The file that names the tensors: model.safetensors or model.safetensors.index.json.
  const std::string& source() const { return source_; }

 private:
  std::string dir_, source_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;
};

torch::ScalarType dtype_from_safetensors(const std::string& dtype, const std::string& context);
std::string dtype_to_safetensors(torch::ScalarType t);
size_t dtype_size(const std::string& dtype);

}  // namespace elastic::io
