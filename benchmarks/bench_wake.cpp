// bench_wake: how long an almost empty OpenMP parallel region takes right after the process has
// been idle for a while, next to one that follows another region at once. On a quiet
// machine both take microseconds. On a shared VM a worker thread that went to sleep may wait for
// its virtual CPU, and while it waits, a thread that spins at the region's barrier
// (libgomp spins before it sleeps, GOMP_SPINCOUNT) can keep the other thread from running. A
// step of a few milliseconds (one 96x96 image) then pays that wait in full: this is what the
// "first step of each batch" lines of compare_mobilenet.py show.
//
//   bench_wake [--threads 2] [--rounds 21]      (run it with GOMP_SPINCOUNT / OMP_WAIT_POLICY set
//                                                to see the spinning's part)
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "bench_util.hpp"

namespace {

const char* usage =
    "usage: bench_wake [--threads N] [--rounds N]\n"
    "  Times an almost empty OpenMP parallel region after pauses of 1, 10, 30 and 100 ms, and the\n"
    "  region right after it; prints medians and maxima over the rounds.\n";

double region_ms() {
  static volatile double sink = 0;
  const auto start = bench::Clock::now();
#pragma omp parallel
  {
    double x = 0;
    for (int i = 0; i < 20000; ++i) x += i * 1e-9;  // about 10 microseconds of work per thread
#pragma omp atomic
    sink += x;
  }
  return 1e3 * bench::seconds_since(start);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv, usage);
  const int threads = static_cast<int>(args.number("threads", 2));
  const int rounds = static_cast<int>(args.number("rounds", 21));
  args.done();
  if (threads < 1 || rounds < 1) args.fail("--threads and --rounds must be positive");
  omp_set_num_threads(threads);
  const char* spin = std::getenv("GOMP_SPINCOUNT");
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  std::printf("an almost empty parallel region on %d threads after a pause (GOMP_SPINCOUNT %s, OMP_WAIT_POLICY %s), "
              "%d rounds\n",
              threads, spin ? spin : "unset", policy ? policy : "unset", rounds);
  std::printf("%10s %16s %12s %20s\n", "pause ms", "first region ms", "max ms", "next region ms");
  region_ms();  // the team exists from here on
  for (int pause : {1, 10, 30, 100}) {
    std::vector<double> first, next;
    for (int r = 0; r < rounds; ++r) {
      std::this_thread::sleep_for(std::chrono::milliseconds(pause));
      first.push_back(region_ms());
      next.push_back(region_ms());
    }
    std::printf("%10d %16.3f %12.3f %20.3f\n", pause, bench::median(first), *std::max_element(first.begin(), first.end()),
                bench::median(next));
  }
  return 0;
}
