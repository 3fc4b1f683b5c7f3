#include "dist/comm.h"

#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <thread>

#include "util/error.h"
#include "util/log.h"

#ifdef ELASTIC_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <nccl.h>
#endif

namespace elastic::dist {

namespace {

#define MPI_CHECK(call)                                                                          \
  do {                                                                                           \
    int rc_ = (call);                                                                            \
    if (rc_ != MPI_SUCCESS) {                                                                    \
      char msg_[MPI_MAX_ERROR_STRING];                                                           \
      int len_ = 0;                                                                              \
      MPI_Error_string(rc_, msg_, &len_);                                                        \
      LOG_ERROR("MPI error at " << __FILE__ << ":" << __LINE__ << ": " << std::string(msg_, len_)); \
      MPI_Abort(MPI_COMM_WORLD, 3);                                                              \
    }                                                                                            \
  } while (0)

#ifdef ELASTIC_WITH_CUDA
#define NCCL_CHECK(call)                                                                          \
  do {                                                                                            \
    ncclResult_t r_ = (call);                                                                     \
    if (r_ != ncclSuccess) {                                                                      \
      LOG_ERROR("NCCL error at " << __FILE__ << ":" << __LINE__ << ": " << ncclGetErrorString(r_)); \
      MPI_Abort(MPI_COMM_WORLD, 3);                                                               \
    }                                                                                             \
  } while (0)
#endif

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

// Aborts the job when a collective outlives the timeout.
class Watchdog {
 public:
  Watchdog(double timeout_s, int rank) : timeout_(timeout_s), rank_(rank), thread_([this] { loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void begin(const char* what) {
    std::lock_guard<std::mutex> l(mu_);
    what_ = what;
    since_ = std::chrono::steady_clock::now();
    active_ = true;
  }
  void end() {
    std::lock_guard<std::mutex> l(mu_);
    active_ = false;
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> l(mu_);
    while (!stop_) {
      cv_.wait_for(l, std::chrono::milliseconds(200));
      if (active_ && std::chrono::duration<double>(std::chrono::steady_clock::now() - since_).count() > timeout_) {
        LOG_ERROR("rank " << rank_ << ": collective '" << what_ << "' did not finish within " << timeout_
                          << " s (dist.timeout_s): another rank stopped answering; aborting the job");
        MPI_Abort(MPI_COMM_WORLD, 4);
      }
    }
  }
  double timeout_;
  int rank_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, active_ = false;
  const char* what_ = "";
  std::chrono::steady_clock::time_point since_;
  std::thread thread_;
};

class SingleComm : public Comm {
 public:
  void allreduce_sum(std::vector<torch::Tensor>&, const char*) override {}
  void barrier() override {}
  [[noreturn]] void abort(const std::string& why) override {
    LOG_ERROR(why);
    std::exit(1);
  }
};

class MpiComm : public Comm {
 public:
  MpiComm(torch::Device device, double timeout_s) : device_(device) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
    }
    MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
    MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
    MPI_Comm local;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local));
    MPI_CHECK(MPI_Comm_rank(local, &local_rank_));
    MPI_Comm_free(&local);
    watchdog_ = std::make_unique<Watchdog>(timeout_s, rank_);
#ifdef ELASTIC_WITH_CUDA
    if (device_.is_cuda()) {
      ncclUniqueId id;
      if (rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id));
      MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD));
      NCCL_CHECK(ncclCommInitRank(&nccl_, size_, id, rank_));
    }
#endif
  }
  ~MpiComm() override {
#ifdef ELASTIC_WITH_CUDA
    if (nccl_) ncclCommDestroy(nccl_);
#endif
    watchdog_.reset();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

  void allreduce_sum(std::vector<torch::Tensor>& ts, const char* what) override {
    if (ts.empty()) return;
    const auto dtype = ts[0].scalar_type();
    std::vector<torch::Tensor> flat;
    for (auto& t : ts) {
      ELASTIC_CHECK(t.scalar_type() == dtype && t.device() == ts[0].device(),
                    "allreduce '" << what << "': tensors must share dtype and device");
      flat.push_back(t.reshape(-1));
    }
    auto buf = flat.size() == 1 ? flat[0].contiguous() : torch::cat(flat);
    watchdog_->begin(what);
    if (buf.is_cuda()) {
#ifdef ELASTIC_WITH_CUDA
      ELASTIC_CHECK(nccl_ != nullptr, "allreduce '" << what << "': CUDA tensor but no NCCL communicator");
      auto stream = at::cuda::getCurrentCUDAStream();
      NCCL_CHECK(ncclAllReduce(buf.data_ptr(), buf.data_ptr(), buf.numel(), nccl_type(dtype), ncclSum, nccl_, stream));
      C10_CUDA_CHECK(cudaStreamSynchronize(stream));
#else
      ELASTIC_FAIL("allreduce '" << what << "': CUDA tensor in a build without CUDA");
#endif
    } else {
      MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf.data_ptr(), static_cast<int>(buf.numel()), mpi_type(dtype), MPI_SUM,
                              MPI_COMM_WORLD));
    }
    watchdog_->end();
    if (flat.size() == 1 && buf.data_ptr() == ts[0].data_ptr()) return;
    int64_t off = 0;
    for (auto& t : ts) {
      t.copy_(buf.narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
  }

  void barrier() override {
    watchdog_->begin("barrier");
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    watchdog_->end();
  }

  [[noreturn]] void abort(const std::string& why) override {
    LOG_ERROR("rank " << rank_ << ": " << why);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::exit(1);
  }

 private:
  static MPI_Datatype mpi_type(torch::ScalarType t) {
    switch (t) {
      case torch::kFloat32: return MPI_FLOAT;
      case torch::kFloat64: return MPI_DOUBLE;
      case torch::kInt64: return MPI_INT64_T;
      case torch::kInt32: return MPI_INT32_T;
      default: ELASTIC_FAIL("allreduce: unsupported dtype " << t << " on CPU");
    }
  }
#ifdef ELASTIC_WITH_CUDA
  static ncclDataType_t nccl_type(torch::ScalarType t) {
    switch (t) {
      case torch::kFloat32: return ncclFloat32;
      case torch::kFloat64: return ncclFloat64;
      case torch::kBFloat16: return ncclBfloat16;
      case torch::kFloat16: return ncclFloat16;
      case torch::kInt64: return ncclInt64;
      case torch::kInt32: return ncclInt32;
      default: ELASTIC_FAIL("allreduce: unsupported dtype " << t << " on CUDA");
    }
  }
  ncclComm_t nccl_ = nullptr;
#endif
  torch::Device device_;
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

int local_rank_from_env() {
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return 0;
}

std::shared_ptr<Comm> Comm::world(torch::Device device, double timeout_s) {
  static std::weak_ptr<Comm> existing;
  if (auto c = existing.lock()) return c;
  std::shared_ptr<Comm> c;
  if (launched_by_mpi()) {
    c = std::make_shared<MpiComm>(device, timeout_s);
  } else {
    c = std::make_shared<SingleComm>();
  }
  existing = c;
  return c;
}

}  // namespace elastic::dist
