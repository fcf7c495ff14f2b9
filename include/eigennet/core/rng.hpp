// Rng: a small, fast, portable generator (xoshiro256**, seeded with splitmix64). The same seed
// gives the same numbers on every platform and standard library, which std::distributions
// do not promise.
#pragma once

#include <cmath>
#include <cstdint>

namespace eigennet {

// splitmix64's finalizer: a bijective mix in which every input bit affects every output bit.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Seed derivation: one independent random stream per (seed, epoch, sample) or (seed, class), so
// that splits, epoch orders, augmentations and dropout masks depend only on those numbers and
// never on thread count, batch composition or the order in which samples are processed.
// derive_seed(seed, a) is the stream `a` within the family `seed`.
inline uint64_t derive_seed(uint64_t seed, uint64_t a) { return mix64(mix64(seed + 0x9E3779B97F4A7C15ull) ^ a); }
inline uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b) { return derive_seed(derive_seed(seed, a), b); }

class Rng {
 public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }

  // The state is splitmix64's output sequence from `seed`.
  void reseed(uint64_t seed) {
    for (auto& s : state_) s = mix64(seed += 0x9E3779B97F4A7C15ull);
  }

  uint64_t next_u64() {
    const uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }
  // Uniform in [0, 1) with 24 bits of precision (exactly representable floats).
  float uniform() { return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; bias < 2^-32 for n < 2^32).
  uint64_t below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next_u64()) * n) >> 64);
  }
  // Standard normal (Box-Muller).
  float normal() {
    const double u1 = (static_cast<double>(next_u64() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    const double u2 = static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0);
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  // Gamma(shape, 1), shape > 0: Marsaglia and Tsang's squeeze method (2000); below shape 1 by
  // Gamma(shape) = Gamma(shape + 1) U^(1 / shape).
  double gamma(double shape) {
    if (shape < 1) return gamma(shape + 1) * std::pow(1.0 - static_cast<double>(uniform()), 1.0 / shape);
    const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      const double x = normal(), v0 = 1 + c * x;
      if (v0 <= 0) continue;
      const double v = v0 * v0 * v0, u = uniform();
      if (u < 1 - 0.0331 * x * x * x * x) return d * v;
      if (std::log(u) < 0.5 * x * x + d * (1 - v + std::log(v))) return d * v;
    }
  }
  // Beta(a, b), a, b > 0, in [0, 1]: X / (X + Y) of X ~ Gamma(a), Y ~ Gamma(b).
  double beta(double a, double b) {
    const double x = gamma(a), y = gamma(b);
    return x + y > 0 ? x / (x + y) : (uniform() < a / (a + b) ? 1.0 : 0.0);
  }
  // A new independent generator derived from this one (for per-layer or per-thread streams).
  Rng split() { return Rng(next_u64()); }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t state_[4];
};

}  // namespace eigennet
