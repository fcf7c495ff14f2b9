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

namespace detail {
inline int& weight_initialization_skipped() {
  thread_local int depth = 0;
  return depth;
}
}  // namespace detail

// While one lives on the calling thread, layers built there leave their weights zero instead of
// drawing them: for a model whose every weight is loaded from a file right after it is built
// (load_classifier), so that building it costs no pass over its weights. Random streams used
// after building (dropout) are seeded separately and do not change.
class SkipWeightInitialization {
 public:
  SkipWeightInitialization() { ++detail::weight_initialization_skipped(); }
  ~SkipWeightInitialization() { --detail::weight_initialization_skipped(); }
  SkipWeightInitialization(const SkipWeightInitialization&) = delete;
  SkipWeightInitialization& operator=(const SkipWeightInitialization&) = delete;
};

inline void init_uniform(Tensor& t, float limit, Rng& rng) {
  for (int64_t i = 0; i < t.size(); ++i) t[i] = rng.uniform(-limit, limit);
}

inline void init_kernel(Tensor& kernel, Init init, int64_t fan_in, int64_t fan_out, Rng& rng) {
  if (detail::weight_initialization_skipped() > 0) return;
  const double limit = init == Init::glorot_uniform ? std::sqrt(6.0 / static_cast<double>(fan_in + fan_out))
                                                    : std::sqrt(6.0 / static_cast<double>(fan_in));
  init_uniform(kernel, static_cast<float>(limit), rng);
}

}  // namespace eigennet
