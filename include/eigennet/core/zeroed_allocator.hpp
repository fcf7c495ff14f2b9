// ZeroedAllocator: the memory of tensors. 64-byte aligned (AVX-512 loads) and zero-filled by
// the allocation itself (calloc, which for large blocks hands out fresh pages that the kernel
// zeroes on first touch, without a pass over them). So a new tensor costs no pass over its
// memory, and pages a program never writes cost nothing at all: the gradients of a model that
// only predicts, the part of a buffer a smaller batch leaves unused. std::vector does not
// value-initialize the elements again (construct() without arguments does nothing): they
// already are zero.
// (Transparent huge pages were tried for large buffers, madvise(MADV_HUGEPAGE): fewer page
// faults, but with the kernel's default defragmentation the first touch sometimes stalled for
// 50-100 ms, so they are not asked for.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace eigennet {

namespace detail {

constexpr size_t tensor_alignment = 64;

// calloc, aligned by hand, with calloc's pointer stored just before the aligned block.
inline void* allocate_zeroed(size_t bytes) {
  void* raw = std::calloc(bytes + tensor_alignment + sizeof(void*), 1);
  if (raw == nullptr) throw std::bad_alloc();
  const uintptr_t aligned =
      (reinterpret_cast<uintptr_t>(raw) + sizeof(void*) + tensor_alignment - 1) / tensor_alignment * tensor_alignment;
  reinterpret_cast<void**>(aligned)[-1] = raw;
  return reinterpret_cast<void*>(aligned);
}

inline void free_zeroed(void* p) noexcept {
  if (p != nullptr) std::free(static_cast<void**>(p)[-1]);
}

}  // namespace detail

template <class T>
struct ZeroedAllocator {
  using value_type = T;
  ZeroedAllocator() = default;
  template <class U>
  ZeroedAllocator(const ZeroedAllocator<U>&) noexcept {}

  T* allocate(size_t n) {
    if (n > (static_cast<size_t>(-1) / 2 - 1024) / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(detail::allocate_zeroed(n * sizeof(T)));
  }
  void deallocate(T* p, size_t) noexcept { detail::free_zeroed(p); }

  // Default construction leaves the (already zero) memory alone.
  template <class U>
  void construct(U*) noexcept {}
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }

  template <class U>
  bool operator==(const ZeroedAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const ZeroedAllocator<U>&) const noexcept { return false; }
};

// Asks the kernel to map the pages of [p, p + bytes) that it has not mapped yet, in one call,
// before they are written: a buffer about to be filled whole (a weight file's tensors, packed
// weights) then costs no page fault per page (on the virtual machines measured here,
// filling fresh memory costs 0.40 ms per MiB through page faults, 0.25 when mapped in one call).
// Only for memory written whole right away: the point of ZeroedAllocator is that pages never
// written cost nothing. Not inside a parallel region: two threads mapping pages at once contend
// in the kernel (the members of an ensemble, loaded side by side, got slower with it).
// Linux 5.14 and later (MADV_POPULATE_WRITE); elsewhere, or when refused, it does nothing.
inline void prefault_for_writing(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));  // 4 KiB on x86, up to 64 on ARM
  if (bytes < 16 * page) return;  // a few pages: faulting them costs less than the call
#if defined(_OPENMP)
  if (omp_in_parallel()) return;
#endif
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(page - 1);
  if (end > begin) (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace eigennet
