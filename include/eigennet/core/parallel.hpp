// OpenMP helpers. The library compiles and runs serially without OpenMP.
#pragma once

#include <cstdint>

#include <Eigen/Core>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace eigennet {

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
inline int thread_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}
// Sets the number of threads used by eigennet's kernels and Eigen's matrix products.
inline void set_threads(int n) {
#ifdef _OPENMP
  if (n > 0) omp_set_num_threads(n);
#else
  (void)n;
#endif
}

// Below this many floats of work a kernel runs single-threaded: starting a team costs more.
constexpr int64_t parallel_grain = 1 << 14;

}  // namespace eigennet

#include <algorithm>
#include <exception>
#include <vector>

namespace eigennet {

// Splits [0, n) into one contiguous block per thread and calls body(begin, end, thread).
// The split depends only on n and the thread count, so per-thread partial sums reduced in
// thread order give bit-identical results run after run.
template <typename Body>
void parallel_blocks(int64_t n, int64_t work_per_item, Body&& body) {
  const int threads = (n * work_per_item < parallel_grain || n < 2) ? 1 : max_threads();
  if (threads <= 1) {
    body(int64_t{0}, n, 0);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int t = thread_index();
#ifdef _OPENMP
    const int team = omp_get_num_threads();
#else
    const int team = 1;
#endif
    const int64_t begin = n * t / team;
    const int64_t end = n * (t + 1) / team;
    body(begin, end, t);
  }
}

// Runs body(i) for i in [0, n): split statically over all threads when total_work is worth a
// team, inline otherwise. An OpenMP region is never entered just to run serially: libgomp
// allocates a new team whenever the team size changes, and a training step must not allocate.
template <typename Body>
void parallel_for(int64_t n, int64_t total_work, Body&& body) {
  if (total_work < parallel_grain || n < 2 || max_threads() <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Runs body(i) for i in [0, n), one item per thread at a time: for a few items of large, uneven
// cost (files to load, regions of a picture). An exception thrown by an item cannot leave the
// OpenMP region; it is kept, and after every item has run the first failing item's is rethrown.
template <typename Body>
void parallel_items(int64_t n, Body&& body) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(std::max<int64_t>(n, 0)));
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
  for (int64_t i = 0; i < n; ++i) {
    try {
      body(i);
    } catch (...) {
      errors[static_cast<size_t>(i)] = std::current_exception();
    }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

// Number of blocks parallel_blocks will use for this much work.
inline int blocks_for(int64_t n, int64_t work_per_item) {
  return (n * work_per_item < parallel_grain || n < 2) ? 1 : max_threads();
}

// Scratch memory owned by the calling thread, reused across calls (grows, never shrinks), so
// kernels that need per-thread partial sums do not allocate in steady state.
template <typename T, int Slot = 0>
T* scratch(size_t count) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < count) buffer.resize(count);
  return buffer.data();
}

// Like scratch, but aligned for Eigen's aligned packet loads (64 bytes with AVX-512).
template <int Slot>
float* aligned_scratch(size_t count) {
  thread_local std::vector<float, Eigen::aligned_allocator<float>> buffer;
  if (buffer.size() < count) buffer.resize(count);
  return buffer.data();
}

}  // namespace eigennet
