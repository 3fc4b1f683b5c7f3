// Peak memory of the compute device (GPU allocator peak on CUDA, resident set on CPU).
#pragma once
#include <torch/torch.h>

namespace elastic {

double peak_memory_gb(torch::Device device);
void reset_peak_memory(torch::Device device);
// Returns cached, unused GPU blocks to the driver (after an out-of-memory error, say).
void release_cached_memory(torch::Device device);

}  // namespace elastic
