// The processes a training program runs as: several under mpirun when it was built with MPI
// (EIGENNET_WITH_MPI, CMake target eigennet::mpi), otherwise, and always without mpirun, one.
//
//   int main(int argc, char** argv) {
//     examples::Processes processes(argc, argv);
//     return processes.finish(cli::run("program", [&] { return run(argc, argv, processes.world()); }));
//   }
#pragma once

#include <eigennet/distributed/data_parallel.hpp>
#include <eigennet/distributed/evaluation.hpp>
#if EIGENNET_WITH_MPI
#include <eigennet/distributed/mpi.hpp>
#endif

namespace examples {

#if EIGENNET_WITH_MPI
using Processes = eigennet::distributed::MpiEnvironment;
#else
class Processes {
 public:
  Processes(int&, char**&) {}
  eigennet::distributed::Communicator& world() { return world_; }
  int finish(int status) { return status; }

 private:
  eigennet::distributed::SingleProcess world_;
};
#endif

}  // namespace examples
