// Inverted dropout: keep each element with probability 1 - rate and scale it by 1 / (1 - rate),
// so inference is the identity. The mask holds the scale (0 or 1 / (1 - rate)) per element.
#pragma once

#include "../core/rng.hpp"

namespace eigennet::kernels {

inline void dropout_make_mask(float* mask, int64_t n, float rate, Rng& rng) {
  const float keep_scale = 1.0f / (1.0f - rate);
  for (int64_t i = 0; i < n; ++i) mask[i] = rng.uniform() < rate ? 0.0f : keep_scale;
}

// y = x * mask (forward) and dx = dy * mask (backward) are the same product.
inline void multiply(float* y, const float* x, const float* mask, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * mask[i];
}

}  // namespace eigennet::kernels
