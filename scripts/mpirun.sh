#!/bin/sh
# mpirun for this project's tests and scripts, on one machine or several:
#   scripts/mpirun.sh -np 4 build/examples/train_emotions --recipe best ...
#   scripts/mpirun.sh --hostfile hosts -np 16 build/examples/train_emotions ...
# Open MPI refuses to run as root (containers, CI) unless two variables allow it, and refuses
# more processes than cores unless told to oversubscribe (tests on a small machine; Open MPI then
# does not bind processes to cores). Every other argument goes to mpirun as it is. For several
# machines, OMPI_* variables set here reach the other machines' processes too.
set -eu
if ! command -v mpirun > /dev/null 2>&1; then
  echo "mpirun.sh: mpirun not found (Debian: apt-get install openmpi-bin libopenmpi-dev;" \
       "scripts/install_deps.sh installs it)" >&2
  exit 2
fi
if mpirun --version 2>&1 | grep -q "Open MPI"; then
  # A process waiting for the others gives up its core instead of polling: the machine may be
  # shared or oversubscribed (polling then steals the time the others need; on dedicated nodes,
  # OMPI_MCA_mpi_yield_when_idle=0 polls for the lowest latency).
  OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
  export OMPI_MCA_mpi_yield_when_idle
  if [ "$(id -u)" -eq 0 ]; then
    OMPI_ALLOW_RUN_AS_ROOT=1
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
  fi
  exec mpirun --oversubscribe "$@"
fi
exec mpirun "$@"
