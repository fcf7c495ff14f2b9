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
#include <atomic>
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

// Chunks per parallel region: several per thread, so that a thread the machine's other load
// slows down leaves its last chunks to the others instead of making them wait at the region's
// end (see detail::run_chunks); and the same number on 1 to 4 threads, so that sums reduced
// chunk by chunk do not depend on the thread count there.
inline int64_t chunk_target() { return std::max<int64_t>(16, int64_t{4} * max_threads()); }

// Number of chunks parallel_chunks splits n items of this much work into.
inline int chunks_for(int64_t n, int64_t work_per_item) {
  if (n * work_per_item < parallel_grain || n < 2) return 1;
  return static_cast<int>(std::min(n, chunk_target()));
}

namespace detail {
// Runs run(c) for every chunk c in [0, chunks) on a team of all threads. Thread t first runs
// the chunks a static split gives it, in order, so it mostly touches the rows it touched in the
// previous region (still in its core's cache); when done, it takes the next unclaimed chunks of
// the other threads' shares, so one thread slowed down by the machine's other load does not
// keep the others waiting. Each chunk is claimed once, through its owner's counter. The first
// chunk of each share is never taken by another thread: so every thread runs a chunk of every
// region, and the thread-local scratch a chunk grows (aligned_scratch) has grown on every thread
// after the first steps, however the machine's load delays them; taken by others, a later step
// could still allocate on the thread that runs such a chunk for the first time.
template <typename Run>
void run_chunks(int chunks, Run&& run) {
  constexpr int max_team = 64;
  struct alignas(64) Counter {
    std::atomic<int> next;
  };
  const int team = std::min(max_threads(), max_team);
  const auto share_begin = [&](int t) { return t * chunks / team; };  // thread t's share: [begin(t), begin(t + 1))
  Counter counters[max_team];
  for (int t = 0; t < team; ++t) counters[t].next.store(share_begin(t) + 1, std::memory_order_relaxed);
#pragma omp parallel num_threads(team)
  {
    const int self = thread_index();
#ifdef _OPENMP
    const int present = omp_get_num_threads();  // fewer than team inside another parallel region
#else
    const int present = 1;
#endif
    // The first chunks of the shares: its own, and those of threads the team did not get.
    for (int owner = self; owner < team; owner += present)
      if (share_begin(owner) < share_begin(owner + 1)) run(share_begin(owner));
    for (int k = 0; k < team; ++k) {
      const int owner = (self + k) % team;
      const int end = share_begin(owner + 1);
      for (int c = counters[owner].next.fetch_add(1, std::memory_order_relaxed); c < end;
           c = counters[owner].next.fetch_add(1, std::memory_order_relaxed))
        run(c);
    }
  }
}
}  // namespace detail

// Splits [0, n) into chunks_for(n, work_per_item) contiguous chunks and calls
// body(begin, end, chunk) for each (see run_chunks for which thread runs which; one thread: in
// order). The split does not depend on which thread runs a chunk, so per-chunk partial sums
// reduced in chunk order give bit-identical results run after run, on 1 to 4 threads alike.
template <typename Body>
void parallel_chunks(int64_t n, int64_t work_per_item, Body&& body) {
  const int chunks = chunks_for(n, work_per_item);
  if (chunks <= 1 || max_threads() <= 1) {
    for (int c = 0; c < chunks; ++c) body(n * c / chunks, n * (c + 1) / chunks, c);
    return;
  }
  detail::run_chunks(chunks, [&](int c) { body(n * c / chunks, n * (c + 1) / chunks, c); });
}

// Runs body(i) for i in [0, n): in chunks as parallel_chunks when total_work is worth a team,
// inline otherwise. An OpenMP region is never entered just to run serially: libgomp allocates a
// new team whenever the team size changes, and a training step must not allocate.
template <typename Body>
void parallel_for(int64_t n, int64_t total_work, Body&& body) {
  if (total_work < parallel_grain || n < 2 || max_threads() <= 1) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  const int chunks = static_cast<int>(std::min(n, chunk_target()));
  detail::run_chunks(chunks, [&](int c) {
    for (int64_t i = n * c / chunks, end = n * (c + 1) / chunks; i < end; ++i) body(i);
  });
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
