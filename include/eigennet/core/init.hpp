// Deterministic weight initialization as Keras does it, from an Rng.
//   glorot_uniform: U(-l, l), l = sqrt(6 / (fan_in + fan_out))  (Keras' default for kernels)
//   he_uniform:     U(-l, l), l = sqrt(6 / fan_in)
// Keras computes fans from the kernel shape [kh, kw, in, out]: fan_in = kh*kw*in,
// fan_out = kh*kw*out (a depthwise kernel [kh, kw, C, 1] has fan_out = kh*kw).
#pragma once

#include <cmath>

#include "rng.hpp"
#include "tensor.hpp"

namespace eigennet {

enum class Init { glorot_uniform, he_uniform };

inline void init_uniform(Tensor& t, float limit, Rng& rng) {
  for (int64_t i = 0; i < t.size(); ++i) t[i] = rng.uniform(-limit, limit);
}

inline void init_kernel(Tensor& kernel, Init init, int64_t fan_in, int64_t fan_out, Rng& rng) {
  const double limit = init == Init::glorot_uniform ? std::sqrt(6.0 / static_cast<double>(fan_in + fan_out))
                                                    : std::sqrt(6.0 / static_cast<double>(fan_in));
  init_uniform(kernel, static_cast<float>(limit), rng);
}

}  // namespace eigennet
