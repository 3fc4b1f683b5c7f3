#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "util/error.h"

namespace elastic::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Largest header we accept: real checkpoints have headers of a few hundred KB.
static constexpr uint64_t kMaxHeader = 100ull << 20;

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    ELASTIC_CHECK(fd >= 0, path << ": cannot open (" << std::strerror(errno) << ")");
    struct stat st{};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      ELASTIC_FAIL(path << ": cannot stat (" << std::strerror(errno) << ")");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        ELASTIC_FAIL(path << ": mmap failed (" << std::strerror(errno) << ")");
      }
      data_ = static_cast<uint8_t*>(p);
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_) ::munmap(data_, size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  std::string path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

size_t dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "U8" || d == "I8" || d == "BOOL") return 1;
  return 0;
}

torch::ScalarType dtype_from_safetensors(const std::string& d, const std::string& context) {
  if (d == "F64") return torch::kFloat64;
  if (d == "F32") return torch::kFloat32;
  if (d == "F16") return torch::kFloat16;
  if (d == "BF16") return torch::kBFloat16;
  if (d == "I64") return torch::kInt64;
  if (d == "I32") return torch::kInt32;
  if (d == "I16") return torch::kInt16;
  if (d == "I8") return torch::kInt8;
  if (d == "U8") return torch::kUInt8;
  if (d == "BOOL") return torch::kBool;
  ELASTIC_FAIL(context << ": unsupported dtype '" << d
                       << "' (expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
}

std::string dtype_to_safetensors(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat64: return "F64";
    case torch::kFloat32: return "F32";
    case torch::kFloat16: return "F16";
    case torch::kBFloat16: return "BF16";
    case torch::kInt64: return "I64";
    case torch::kInt32: return "I32";
    case torch::kInt16: return "I16";
    case torch::kInt8: return "I8";
    case torch::kUInt8: return "U8";
    case torch::kBool: return "BOOL";
    default: ELASTIC_FAIL("safetensors: cannot store dtype " << t);
  }
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  f->path_ = path;
  ELASTIC_CHECK(fs::exists(path), path << ": file not found");
  f->map_ = std::make_shared<MappedFile>(path);
  const size_t size = f->map_->size();
  ELASTIC_CHECK(size >= 8, path << ": not a safetensors file (only " << size
                                << " bytes; expected an 8-byte header length)");
  uint64_t n = 0;
  std::memcpy(&n, f->map_->data(), 8);  // little-endian on every platform we run on
  ELASTIC_CHECK(n <= kMaxHeader, path << ": header length " << n << " exceeds the "
                                      << kMaxHeader << "-byte limit (corrupt file?)");
  ELASTIC_CHECK(8 + n <= size, path << ": header length " << n << " runs past the end of the "
                                    << size << "-byte file (truncated?)");
  const char* hdr = reinterpret_cast<const char*>(f->map_->data() + 8);
  json j;
  try {
    j = json::parse(hdr, hdr + n);
  } catch (const json::exception& e) {
    ELASTIC_FAIL(path << ": header is not valid JSON (" << e.what() << ")");
  }
  ELASTIC_CHECK(j.is_object(), path << ": header must be a JSON object");
  f->data_ = f->map_->data() + 8 + n;
  const uint64_t data_size = size - 8 - n;

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") {
      ELASTIC_CHECK(it->is_object(), path << ": __metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        ELASTIC_CHECK(m->is_string(), path << ": __metadata__." << m.key() << " must be a string");
        f->metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const std::string ctx = path + ": tensor '" + name + "'";
    const json& e = *it;
    ELASTIC_CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") &&
                      e.contains("data_offsets"),
                  ctx << ": entry must have dtype, shape and data_offsets");
    ELASTIC_CHECK(e["dtype"].is_string(), ctx << ": dtype must be a string");
    TensorInfo ti;
    ti.name = name;
    ti.dtype = e["dtype"].get<std::string>();
    dtype_from_safetensors(ti.dtype, ctx);
    ELASTIC_CHECK(e["shape"].is_array(), ctx << ": shape must be an array");
    uint64_t numel = 1;
    for (const auto& d : e["shape"]) {
      ELASTIC_CHECK(d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
                    ctx << ": shape entries must be non-negative integers");
      ti.shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
    }
    const auto& off = e["data_offsets"];
    ELASTIC_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() &&
                      off[1].is_number_unsigned(),
                  ctx << ": data_offsets must be [begin, end] non-negative integers");
    ti.begin = off[0].get<uint64_t>();
    ti.end = off[1].get<uint64_t>();
    ELASTIC_CHECK(ti.begin <= ti.end, ctx << ": data_offsets begin " << ti.begin << " > end "
                                          << ti.end);
    ELASTIC_CHECK(ti.end <= data_size, ctx << ": data_offsets end " << ti.end
                                           << " lies outside the " << data_size
                                           << "-byte data buffer (truncated file?)");
    const uint64_t expect = numel * dtype_size(ti.dtype);
    ELASTIC_CHECK(expect == ti.end - ti.begin,
                  ctx << ": shape x itemsize = " << expect << " bytes but data_offsets span "
                      << (ti.end - ti.begin) << " bytes");
    f->index_[name] = f->tensors_.size();
    f->tensors_.push_back(std::move(ti));
  }
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : f->tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const auto* prev = by_offset[i - 1];
    const auto* cur = by_offset[i];
    ELASTIC_CHECK(cur->begin >= prev->end || cur->begin == cur->end,
                  path << ": tensors '" << prev->name << "' and '" << cur->name
                       << "' overlap in the data buffer");
  }
  return f;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  ELASTIC_CHECK(it != index_.end(), path_ << ": no tensor named '" << name << "'");
  return tensors_[it->second];
}

torch::Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo& ti = info(name);
  auto dtype = dtype_from_safetensors(ti.dtype, path_ + ": tensor '" + name + "'");
  auto keep = map_;
  void* ptr = const_cast<uint8_t*>(data_ + ti.begin);
  return torch::from_blob(ptr, ti.shape, [keep](void*) {}, torch::TensorOptions().dtype(dtype));
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json hdr = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    hdr["__metadata__"] = m;
  }
  std::vector<torch::Tensor> cpu;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    ELASTIC_CHECK(!hdr.contains(name), path << ": duplicate tensor name '" << name << "'");
    auto c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    hdr[name] = {{"dtype", dtype_to_safetensors(c.scalar_type())},
                 {"shape", c.sizes().vec()},
                 {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    cpu.push_back(c);
  }
  std::string h = hdr.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');  // keeps the data buffer 8-byte aligned
  AtomicFile out(path);
  uint64_t n = h.size();
  out.write(&n, 8);
  out.write(h.data(), h.size());
  for (const auto& c : cpu) out.write(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
  out.commit();
}

Checkpoint Checkpoint::open(const std::string& dir) {
  Checkpoint ck;
  ck.dir_ = dir;
  const fs::path d(dir);
  ELASTIC_CHECK(fs::is_directory(d), dir << ": model directory not found");
  const fs::path index = d / "model.safetensors.index.json";
  const fs::path single = d / "model.safetensors";
  std::vector<std::string> shard_names;
  if (fs::exists(index)) {
    ck.source_ = index.string();
    std::ifstream in(index);
    json j;
    try {
      j = json::parse(in);
    } catch (const json::exception& e) {
      ELASTIC_FAIL(index.string() << ": not valid JSON (" << e.what() << ")");
    }
    ELASTIC_CHECK(j.contains("weight_map") && j["weight_map"].is_object(),
                  index.string() << ": missing object 'weight_map'");
    std::map<std::string, size_t> shard_id;
    std::map<std::string, std::string> want;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      ELASTIC_CHECK(it->is_string(), index.string() << ": weight_map." << it.key()
                                                    << " must be a file name");
      want[it.key()] = it->get<std::string>();
      if (!shard_id.count(it->get<std::string>())) {
        shard_id[it->get<std::string>()] = shard_names.size();
        shard_names.push_back(it->get<std::string>());
      }
    }
    for (const auto& s : shard_names) {
      ELASTIC_CHECK(fs::exists(d / s), index.string() << ": lists shard '" << s
                                                      << "' which does not exist");
      ck.files_.push_back(SafetensorsFile::open((d / s).string()));
    }
    for (const auto& [name, shard] : want) {
      size_t id = shard_id[shard];
      ELASTIC_CHECK(ck.files_[id]->contains(name),
                    index.string() << ": maps tensor '" << name << "' to " << shard
                                   << " but that shard does not contain it");
      ck.where_[name] = id;
    }
  } else {
    ELASTIC_CHECK(fs::exists(single), dir << ": neither model.safetensors nor "
                                             "model.safetensors.index.json found");
    ck.source_ = single.string();
    ck.files_.push_back(SafetensorsFile::open(single.string()));
    for (const auto& t : ck.files_[0]->tensors()) ck.where_[t.name] = 0;
  }
  return ck;
}

torch::Tensor Checkpoint::get(const std::string& name) const {
  auto it = where_.find(name);
  ELASTIC_CHECK(it != where_.end(), dir_ << ": checkpoint has no tensor '" << name << "'");
  return files_[it->second]->get(name);
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  ELASTIC_CHECK(it != where_.end(), dir_ << ": checkpoint has no tensor '" << name << "'");
  return files_[it->second]->info(name);
}

const std::string& Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  ELASTIC_CHECK(it != where_.end(), dir_ << ": checkpoint has no tensor '" << name << "'");
  return files_[it->second]->path();
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : where_) out.push_back(n);
  return out;
}

}  // namespace elastic::io
