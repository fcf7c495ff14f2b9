// MPI behind the Communicator interface (communicator.hpp), and MpiEnvironment, which starts and
// ends MPI for a program; it includes the rest of distributed/ (data_parallel.hpp, evaluation.hpp).
// The only header of the library that includes <mpi.h>: link MPI (CMake: eigennet::mpi, or
// MPI::MPI_CXX; only MPI's C interface is used) where it is included.
//
//   int main(int argc, char** argv) {
//     eigennet::distributed::MpiEnvironment mpi(argc, argv);   // MPI only under mpirun
//     int status = cli::run(..., [&] { return run(argc, argv, mpi.world()); });
//     return mpi.finish(status);
//   }
//
// Started without mpirun (or srun, mpiexec ...) the program is a single process and MPI is not
// touched at all: it behaves exactly as a program built without MPI.
#pragma once

// MPI's C interface only: its C++ bindings are deprecated and a library of their own.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "communicator.hpp"
#include "data_parallel.hpp"
#include "evaluation.hpp"

namespace eigennet::distributed {

namespace detail {
inline void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  fail(call, " failed: ", std::string(text, static_cast<size_t>(length)));
}
// MPI counts are ints: larger transfers go in pieces.
constexpr int64_t max_piece = 1 << 30;
}  // namespace detail

class MpiCommunicator : public Communicator {
 public:
  // A communicator over the processes of `comm` (duplicated: the run's traffic stays apart from
  // the program's own). Errors become exceptions instead of aborting the job.
  explicit MpiCommunicator(MPI_Comm comm) {
    detail::check_mpi(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    // Started sums travel on their own communicator, so that they never wait behind (or in front
    // of) the blocking collectives issued while they are in flight.
    detail::check_mpi(MPI_Comm_dup(comm, &async_comm_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(async_comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm local;
    detail::check_mpi(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
                      "MPI_Comm_split_type");
    MPI_Comm_size(local, &local_size_);
    MPI_Comm_free(&local);
    char name[MPI_MAX_PROCESSOR_NAME] = {};
    int length = 0;
    MPI_Get_processor_name(name, &length);
    hosts_ = all_gather_strings(*this, std::string(name, static_cast<size_t>(length)));
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (!requests_.empty()) MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
    MPI_Comm_free(&comm_);
    MPI_Comm_free(&async_comm_);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_size() const override { return local_size_; }
  std::string host(int r) const override { return r >= 0 && r < size_ ? hosts_[static_cast<size_t>(r)] : ""; }

  void sum(float* data, int64_t count) override { sum_pieces(data, count, MPI_FLOAT); }
  void sum(double* data, int64_t count) override { sum_pieces(data, count, MPI_DOUBLE); }
  void sum(int64_t* data, int64_t count) override { sum_pieces(data, count, MPI_INT64_T); }

  void broadcast(void* data, int64_t bytes, int root) override {
    char* p = static_cast<char*>(data);
    for (int64_t done = 0; done < bytes; done += detail::max_piece)
      detail::check_mpi(MPI_Bcast(p + done, static_cast<int>(std::min(detail::max_piece, bytes - done)), MPI_BYTE, root,
                                  comm_),
                        "MPI_Bcast");
  }
  void all_gather(const void* mine, int64_t bytes, void* all) override {
    EIGENNET_CHECK(bytes <= INT_MAX, "all_gather: ", bytes, " bytes per process is more than MPI can send at once");
    detail::check_mpi(MPI_Allgather(mine, static_cast<int>(bytes), MPI_BYTE, all, static_cast<int>(bytes), MPI_BYTE,
                                    comm_),
                      "MPI_Allgather");
  }

  void barrier() override { detail::check_mpi(MPI_Barrier(comm_), "MPI_Barrier"); }

  void start_sum(float* data, int64_t count) override {
    for (int64_t done = 0; done < count; done += detail::max_piece) {
      requests_.emplace_back();
      detail::check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data + done, static_cast<int>(std::min(detail::max_piece, count - done)),
                                       MPI_FLOAT, MPI_SUM, async_comm_, &requests_.back()),
                        "MPI_Iallreduce");
    }
  }
  void progress() override {
    if (requests_.empty()) return;
    int done = 0;
    detail::check_mpi(MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &done, MPI_STATUSES_IGNORE),
                      "MPI_Testall");
  }
  void wait_all() override {
    if (requests_.empty()) return;
    const int code = MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
    requests_.clear();
    detail::check_mpi(code, "MPI_Waitall");
  }

  void abort(int status) override { MPI_Abort(MPI_COMM_WORLD, status); }

 private:
  template <typename T>
  void sum_pieces(T* data, int64_t count, MPI_Datatype type) {
    for (int64_t done = 0; done < count; done += detail::max_piece)
      detail::check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + done, static_cast<int>(std::min(detail::max_piece, count - done)),
                                      type, MPI_SUM, comm_),
                        "MPI_Allreduce");
  }

  MPI_Comm comm_ = MPI_COMM_NULL, async_comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_size_ = 1;
  std::vector<std::string> hosts_;
  std::vector<MPI_Request> requests_;
};

// Whether an MPI launcher started this process (Open MPI's mpirun, MPICH's and Intel MPI's
// Hydra, PMIx and PMI launchers such as Slurm's srun, MVAPICH).
inline bool launched_by_mpi() {
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"})
    if (std::getenv(variable)) return true;
  return false;
}

// MPI for the lifetime of a program: initialized when an MPI launcher started the process,
// otherwise a single process without any MPI call.
class MpiEnvironment {
 public:
  MpiEnvironment(int& argc, char**& argv) {
    if (!launched_by_mpi()) {
      world_ = std::make_unique<SingleProcess>();
      return;
    }
    // Only the main thread calls MPI (OpenMP threads compute, they do not communicate).
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      std::fprintf(stderr, "MPI_Init_thread failed\n");
      std::exit(1);
    }
    initialized_ = true;
    world_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
  }
  ~MpiEnvironment() { finish(0); }
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  Communicator& world() { return *world_; }
  bool uses_mpi() const { return initialized_; }

  // Ends MPI and returns the program's exit status. A process that fails alone (status != 0,
  // and not a failure every process shares, raise_together) stops the whole run with
  // MPI_Abort: the others may be waiting for it inside a collective and would never return.
  int finish(int status) {
    if (!initialized_ || finished_) return status;
    finished_ = true;
    if (status != 0 && !world_->failed_together()) {
      std::fprintf(stderr, "%s: stopping every process of the run\n", world_->describe(world_->rank()).c_str());
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, status);
    }
    world_.reset();
    MPI_Finalize();
    return status;
  }

 private:
  std::unique_ptr<Communicator> world_;
  bool initialized_ = false, finished_ = false;
};

}  // namespace eigennet::distributed
