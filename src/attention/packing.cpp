#include "attention/packing.h"

#include "util/device_copy.h"
#include "util/error.h"

namespace elastic::attention {

Packing Packing::from_cu(const std::vector<int64_t>& cu, torch::Device device) {
  ELASTIC_CHECK(cu.size() >= 2 && cu[0] == 0, "packing: cumulative lengths must start at 0 and hold "
                                               "at least one sample");
  Packing p;
  p.cu = cu;
  std::vector<int64_t> sid, pos;
  sid.reserve(cu.back());
  pos.reserve(cu.back());
  for (size_t b = 0; b + 1 < cu.size(); ++b) {
    const int64_t n = cu[b + 1] - cu[b];
    ELASTIC_CHECK(n > 0, "packing: sample " << b << " is empty");
    p.max_len = std::max(p.max_len, n);
    for (int64_t i = 0; i < n; ++i) {
      sid.push_back(static_cast<int64_t>(b));
      pos.push_back(i);
    }
  }
  p.cu_i32 = util::to_device(cu, device, torch::kInt32);
  p.sample_id = util::to_device(sid, device);
  p.positions = util::to_device(pos, device);
  return p;
}

Packing Packing::from_lengths(const std::vector<int64_t>& lengths, torch::Device device) {
  std::vector<int64_t> cu{0};
  for (auto n : lengths) cu.push_back(cu.back() + n);
  return from_cu(cu, device);
}

}  // namespace elastic::attention
