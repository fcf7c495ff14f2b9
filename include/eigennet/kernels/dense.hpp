// Dense (fully connected): y[N, out] = x[N, in] * W[in, out] + b. Keras' kernel layout.
#pragma once

#include "pointwise_conv2d.hpp"

namespace eigennet::kernels {

// A dense layer is a pointwise convolution whose "pixels" are the batch rows.
inline void dense_forward(float* y, const float* x, const float* weight, const float* bias, int64_t batch,
                          int64_t in_features, int64_t out_features) {
  pointwise_conv2d_forward(y, x, weight, bias, batch, in_features, out_features);
}

inline void dense_backward(float* dx, float* dweight, float* dbias, const float* dy, const float* x,
                           const float* weight, int64_t batch, int64_t in_features, int64_t out_features) {
  pointwise_conv2d_backward(dx, dweight, dbias, dy, x, weight, batch, in_features, out_features);
}

}  // namespace eigennet::kernels
