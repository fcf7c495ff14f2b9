// Elementwise activations and the residual add. Forward may run in place (y == x); backward
// uses the output y, which identifies the active region exactly: y in (0, cap) iff x in (0, cap).
#pragma once

#include <algorithm>

#include "../core/parallel.hpp"

namespace eigennet::kernels {

// y = min(max(x, 0), cap); cap = +infinity for ReLU, 6 for ReLU6.
inline void relu_forward(float* y, const float* x, int64_t n, float cap) {
  parallel_for(n, n, [&](int64_t i) { y[i] = std::min(std::max(x[i], 0.0f), cap); });
}

// dx = dy where 0 < y < cap, else 0. dx may alias dy.
inline void relu_backward(float* dx, const float* dy, const float* y, int64_t n, float cap) {
  parallel_for(n, n, [&](int64_t i) { dx[i] = (y[i] > 0.0f && y[i] < cap) ? dy[i] : 0.0f; });
}

// y = a + b.
inline void add_forward(float* y, const float* a, const float* b, int64_t n) {
  parallel_for(n, n, [&](int64_t i) { y[i] = a[i] + b[i]; });
}

}  // namespace eigennet::kernels
