// Data-parallel communication. Ranks come from MPI (launched with mpirun); gradients and
// metrics are summed with NCCL for CUDA tensors (communicator bootstrapped through MPI) and
// with MPI for CPU tensors, so CI tests the multi-rank path on CPU with `mpirun -np 2`.
// A process not started by mpirun runs as a world of one without initialising MPI.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace elastic::dist {

class Comm {
 public:
  // `timeout_s`: a collective that has not finished after this long aborts the whole job
  // (a peer rank died or hangs), naming this rank and the collective.
  static std::shared_ptr<Comm> world(torch::Device device, double timeout_s = 600.0);
  virtual ~Comm() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  bool is_root() const { return rank_ == 0; }

  // In-place sum over ranks. Many tensors go through one flat buffer (one collective).
  virtual void allreduce_sum(std::vector<torch::Tensor>& tensors, const char* what) = 0;
  void allreduce_sum(torch::Tensor& t, const char* what) {
    std::vector<torch::Tensor> v{t};
    allreduce_sum(v, what);
  }
  virtual void barrier() = 0;
  // Terminates every rank (after logging `why`).
  [[noreturn]] virtual void abort(const std::string& why) = 0;

 protected:
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

// Local rank from the launcher's environment before MPI starts (to pick the GPU).
int local_rank_from_env();

}  // namespace elastic::dist
