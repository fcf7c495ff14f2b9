#!/bin/sh
# Installs the dependencies (Debian 12), builds the library's tests and example programs in
# Release mode, and runs the test suite. Usage: scripts/run_tests.sh [build-dir]
set -eu
cd "$(dirname "$0")/.."
build="${1:-build}"
scripts/install_deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DEIGENNET_BUILD_TESTS=ON -DEIGENNET_BUILD_EXAMPLES=ON \
  -DEIGENNET_BUILD_BENCHMARKS=OFF
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure
