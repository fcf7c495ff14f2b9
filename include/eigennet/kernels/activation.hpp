// Elementwise activations and the residual add. Forward may run in place (y == x); backward
// uses the output y, which identifies the active region exactly: y in (0, cap) iff x in (0, cap).
#pragma once

#include <algorithm>

#include "../core/parallel.hpp"
#include "simd.hpp"

namespace eigennet::kernels {

// y = min(max(x, 0), cap); cap = +infinity for ReLU, 6 for ReLU6.
inline void relu_forward(float* y, const float* x, int64_t n, float cap) {
  parallel_for(n, n, [&](int64_t i) { y[i] = std::min(std::max(x[i], 0.0f), cap); });
}

// dx = dy where 0 < y < cap, else 0 (also where y is NaN). dx may alias dy. In SIMD packets:
// written as a plain loop, the compiler guards the possible aliasing with a scalar fallback.
inline void relu_backward(float* dx, const float* dy, const float* y, int64_t n, float cap) {
  parallel_chunks(n, 1, [&](int64_t begin, int64_t end, int) {
    const simd::Packet zero = simd::zero(), upper = simd::set1(cap);
    int64_t i = begin;
    for (; i + simd::width <= end; i += simd::width) {
      const simd::Packet v = simd::load(y + i);
      const simd::Packet keep = simd::both(simd::less(zero, v), simd::less(v, upper));
      simd::store(dx + i, simd::select(keep, simd::load(dy + i), zero));
    }
    for (; i < end; ++i) dx[i] = (y[i] > 0.0f && y[i] < cap) ? dy[i] : 0.0f;
  });
}

// y = a + b.
inline void add_forward(float* y, const float* a, const float* b, int64_t n) {
  parallel_for(n, n, [&](int64_t i) { y[i] = a[i] + b[i]; });
}

}  // namespace eigennet::kernels
