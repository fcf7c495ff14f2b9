// Pointwise (1x1, stride 1) convolution: on NHWC data it is the GEMM
// [pixels, in_c] x [in_c, out_c], with no copies.
#pragma once

#include "gemm.hpp"

namespace eigennet::kernels {

inline void pointwise_conv2d_forward(float* out, const float* in, const float* weight, const float* bias,
                                     int64_t pixels, int64_t in_c, int64_t out_c) {
  gemm(out, in, weight, pixels, out_c, in_c, false, false, false);
  if (bias) add_row_bias(out, bias, pixels, out_c);
}

// Accumulates dweight, dbias; overwrites din. Null pointers skip that gradient.
inline void pointwise_conv2d_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in,
                                      const float* weight, int64_t pixels, int64_t in_c, int64_t out_c) {
  if (dbias) accumulate_column_sums(dbias, dout, pixels, out_c);
  if (dweight) gemm(dweight, in, dout, in_c, out_c, pixels, true, false, true);
  if (din) gemm(din, dout, weight, pixels, in_c, out_c, false, true, false);
}

}  // namespace eigennet::kernels
