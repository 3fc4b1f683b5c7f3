// Peak memory of the compute device (GPU allocator peak on CUDA, resident set on CPU).
#pragma once
#include <torch/torch.h>

#include <string>

namespace elastic {

double peak_memory_gb(torch::Device device);
void reset_peak_memory(torch::Device device);
// The GPU allocator's peak of reserved memory (allocated plus cached and fragmented blocks) since the
// last reset, in GB: what the device had to hold. 0 on the CPU.
double peak_reserved_gb(torch::Device device);
// Bytes the GPU allocator holds for tensors now (0 on the CPU, where nothing is measured).
int64_t allocated_bytes(torch::Device device);
// The GPU's memory in bytes (0 on the CPU).
int64_t device_memory_bytes(torch::Device device);
// The GPU's name ("NVIDIA H100 80GB HBM3"), or "cpu".
std::string device_name(torch::Device device);
// Returns cached, unused GPU blocks to the driver (after an out-of-memory error, say).
void release_cached_memory(torch::Device device);

}  // namespace elastic
