// Error checking for raw CUDA calls in kernels/: every launch and runtime call is checked
// and a failure names the file and line (llm.c style), thrown as std::runtime_error so the
// C++ side reports it like any other error.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace elastic::kernels {

inline void cuda_check(cudaError_t err, const char* file, int line) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) + ": " +
                             cudaGetErrorString(err));
  }
}

}  // namespace elastic::kernels

#define ELASTIC_CUDA_CHECK(call) ::elastic::kernels::cuda_check((call), __FILE__, __LINE__)
// After a kernel launch: catches bad launch configurations without synchronising.
#define ELASTIC_CUDA_LAUNCH_CHECK() ::elastic::kernels::cuda_check(cudaGetLastError(), __FILE__, __LINE__)
