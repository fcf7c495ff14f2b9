// Seed derivation: one independent random stream per (seed, epoch, sample) or (seed, class), so
// that splits, epoch orders and augmentations depend only on those numbers and never on thread
// count, batch composition or the order in which samples happen to be processed.
#pragma once

#include <cstdint>

namespace eigennet {

// splitmix64's finalizer: a bijective mix in which every input bit affects every output bit.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// A seed for the stream identified by `a` within the stream family `seed`.
inline uint64_t derive_seed(uint64_t seed, uint64_t a) { return mix64(mix64(seed + 0x9E3779B97F4A7C15ull) ^ a); }
inline uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b) { return derive_seed(derive_seed(seed, a), b); }

}  // namespace eigennet
