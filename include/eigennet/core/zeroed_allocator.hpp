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

}  // namespace eigennet
