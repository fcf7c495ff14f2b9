// The processes a training program runs as: several under mpirun when it was built with MPI
// (EIGENNET_WITH_MPI, CMake target eigennet::mpi), otherwise, and always without mpirun, one.
//
//   int main(int argc, char** argv) {
//     examples::Processes processes(argc, argv);
//     return processes.finish(cli::run("program", [&] { return run(argc, argv, processes.world()); }));
//   }
#pragma once

#include <cstdio>
#include <cstdlib>

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
  // Started by mpirun with several processes, a program built without MPI would run as so many
  // independent copies writing the same files: it refuses.
  Processes(int&, char**& argv) {
    for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"})
      if (const char* size = std::getenv(variable); size && std::atoi(size) > 1) {
        std::fprintf(stderr, "%s: started as %s processes, but built without MPI (Debian: apt-get install "
                     "libopenmpi-dev openmpi-bin, then build again)\n", argv[0], size);
        std::exit(2);
      }
  }
  eigennet::distributed::Communicator& world() { return world_; }
  int finish(int status) { return status; }

 private:
  eigennet::distributed::SingleProcess world_;
};
#endif

}  // namespace examples
