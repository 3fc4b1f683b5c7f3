// Safetensors reading, writing and validation: every bad input names the file and tensor.
#include <gtest/gtest.h>

#include <fstream>

#include "io/safetensors.h"
#include "test_util.h"
#include "util/error.h"

using namespace elastic;
using elastic::testing::TempDir;

namespace {

void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = header.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header << data;
}


}  // namespace

TEST(Safetensors, RoundTripAllDtypes) {
  TempDir dir;
  std::vector<std::pair<std::string, torch::Tensor>> ts = {
      {"a.f32", torch::randn({3, 4})},
      {"b.bf16", torch::randn({5}).to(torch::kBFloat16)},
      {"c.f16", torch::randn({2, 2}).to(torch::kHalf)},
      {"d.i64", torch::arange(7)},
      {"e.i32", torch::arange(3).to(torch::kInt32)},
      {"f.u8", torch::arange(9).to(torch::kUInt8)},
      {"g.bool", torch::tensor({true, false, true})},
      {"h.empty", torch::empty({0, 3})},
      {"i.scalar", torch::tensor(3.5)},
  };
  io::save_safetensors(dir.str("x.safetensors"), ts, {{"format", "pt"}});
  auto f = io::SafetensorsFile::open(dir.str("x.safetensors"));
  EXPECT_EQ(f->metadata().at("format"), "pt");
  for (const auto& [name, t] : ts) {
    auto r = f->get(name);
    EXPECT_EQ(r.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(r, t)) << name;
  }
  // No temporary file is left behind.
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path)) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(Safetensors, ViewsAreZeroCopyAndOutliveTheHandle) {
  TempDir dir;
  io::save_safetensors(dir.str("x.safetensors"), {{"w", torch::arange(1000).to(torch::kFloat32)}});
  torch::Tensor view;
  {
    auto f = io::SafetensorsFile::open(dir.str("x.safetensors"));
    view = f->get("w");
    auto again = f->get("w");
    EXPECT_EQ(view.data_ptr(), again.data_ptr());
  }
  EXPECT_EQ(view[999].item<float>(), 999.0f);  // mapping still alive
}

TEST(Safetensors, RejectsBadFilesWithTheCulpritNamed) {
  TempDir dir;
  const auto p = dir.str("bad.safetensors");
  elastic::testing::expect_error([&] { io::SafetensorsFile::open(dir.str("missing.safetensors")); }, {"missing.safetensors", "not found"});
  { std::ofstream(p) << "abc"; }
  elastic::testing::expect_error([&] { io::SafetensorsFile::open(p); }, {p, "8-byte"});
  {
    std::ofstream f(p, std::ios::binary);
    uint64_t n = 1ull << 40;
    f.write(reinterpret_cast<const char*>(&n), 8);
  }
  elastic::testing::expect_error([&] { io::SafetensorsFile::open(p); }, {p, "header length"});
  write_raw(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]", "12345678");
  elastic::testing::expect_error([&] { io::SafetensorsFile::open(p); }, {p, "not valid JSON"});
  write_raw(p, R"({"w": {"dtype": "F8_E9", "shape": [2], "data_offsets": [0, 2]}})", "12");
  elastic::testing::expect_error([&] { io::SafetensorsFile::open(p); }, {p, "'w'", "F8_E9"});
  write_raw(p, R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", "12345678");
  elastic::testing::expect_error([&] { io::SafetensorsFile::open(p); }, {p, "'w'", "12 bytes", "span 8"});
  write_raw(p, R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", "12345678");
  elastic::testing::expect_error([&] { io::SafetensorsFile::open(p); }, {p, "'w'", "outside"});
  write_raw(p, R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
            "123456789012");
  elastic::testing::expect_error([&] { io::SafetensorsFile::open(p); }, {p, "'a'", "'b'", "overlap"});
  write_raw(p, R"({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", "12345678");
  elastic::testing::expect_error([&] { io::SafetensorsFile::open(p); }, {p, "'w'", "non-negative"});
  write_raw(p, R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}})", "12345678");
  elastic::testing::expect_error([&] { io::SafetensorsFile::open(p); }, {p, "'w'", "begin"});
}

TEST(Safetensors, ShardedCheckpointThroughIndex) {
  TempDir dir;
  io::save_safetensors(dir.str("model-00001-of-00002.safetensors"), {{"a", torch::ones({2})}});
  io::save_safetensors(dir.str("model-00002-of-00002.safetensors"), {{"b", torch::zeros({3})}});
  {
    std::ofstream(dir.str("model.safetensors.index.json"))
        << R"({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})";
  }
  auto ck = io::Checkpoint::open(dir.str());
  EXPECT_TRUE(torch::equal(ck.get("a"), torch::ones({2})));
  EXPECT_TRUE(torch::equal(ck.get("b"), torch::zeros({3})));
  elastic::testing::expect_error([&] { ck.get("c"); }, {"'c'"});
  {
    std::ofstream(dir.str("model.safetensors.index.json"))
        << R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "z": "model-00002-of-00002.safetensors"}})";
  }
  elastic::testing::expect_error([&] { io::Checkpoint::open(dir.str()); }, {"index.json", "'z'", "does not contain"});
  {
    std::ofstream(dir.str("model.safetensors.index.json")) << R"({"weight_map": {"a": "nope.safetensors"}})";
  }
  elastic::testing::expect_error([&] { io::Checkpoint::open(dir.str()); }, {"nope.safetensors", "does not exist"});
}
