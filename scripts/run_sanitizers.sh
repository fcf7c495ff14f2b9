#!/bin/sh
# Builds the tests with AddressSanitizer + UndefinedBehaviorSanitizer and runs them once.
# Usage: scripts/run_sanitizers.sh [build-dir]
set -eu
cd "$(dirname "$0")/.."
build="${1:-build-sanitize}"
scripts/install_deps.sh
# -O1 -g1 (line tables): half the compile time of -O2 -g, with file:line in every report.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DEIGENNET_SANITIZE=ON -DEIGENNET_BUILD_TESTS=ON -DEIGENNET_BUILD_EXAMPLES=ON -DEIGENNET_BUILD_BENCHMARKS=OFF
cmake --build "$build" -j "$(nproc)"
# detect_leaks: OpenMP's thread pool is torn down after main; its allocations are not leaks.
# suppressions: only third-party code (stb_image_write's JPEG encoder, see the file); every
# other report stops the run (halt_on_error). Left out: the installed-package test (packaging)
# and the committed models on FER-2013 (slow), which run in the plain build only.
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$(pwd)/scripts/ubsan.supp" \
  ctest --test-dir "$build" --output-on-failure --label-exclude 'packaging|slow'
