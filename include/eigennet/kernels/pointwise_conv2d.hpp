// Pointwise (1x1, stride 1) convolution: on NHWC data it is the matrix product
// [pixels, in_c] x [in_c, out_c], with the activations read in place. The products run on the
// register-blocked engine of pointwise_engine.hpp (weights packed per call, into scratch);
// the *_reference versions compute the same through Eigen's GEMM (gemm.hpp) and are what the
// tests compare the engine against.
#pragma once

#include "gemm.hpp"
#include "pointwise_engine.hpp"

namespace eigennet::kernels {

inline void pointwise_conv2d_forward(float* out, const float* in, const float* weight, const float* bias,
                                     int64_t pixels, int64_t in_c, int64_t out_c) {
  const pointwise::Packed packed = pointwise::pack_to_scratch<26>(weight, in_c, out_c, false);
  pointwise::Epilogue epilogue;
  epilogue.bias = bias;
  pointwise::multiply(out, out_c, in, in_c, pixels, packed, epilogue);
}

// Accumulates dweight, dbias; overwrites din. Null pointers skip that gradient.
inline void pointwise_conv2d_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in,
                                      const float* weight, int64_t pixels, int64_t in_c, int64_t out_c) {
  if (dbias) accumulate_column_sums(dbias, dout, pixels, out_c);
  if (dweight) pointwise::multiply_transposed(dweight, in, in_c, dout, out_c, pixels, in_c, out_c, true);
  if (din) {
    // din = dout W^T: W [in_c, out_c] packed as its transpose.
    const pointwise::Packed packed = pointwise::pack_to_scratch<27>(weight, out_c, in_c, true);
    pointwise::multiply(din, in_c, dout, out_c, pixels, packed);
  }
}

// out = in W (no bias) and the per-channel mean and biased variance of out, accumulated while the
// products are in registers (a BatchNorm in training mode follows).
inline void pointwise_conv2d_forward_statistics(float* out, const float* in, const float* weight, int64_t pixels,
                                                int64_t in_c, int64_t out_c, float* mean, float* variance) {
  const pointwise::Packed packed = pointwise::pack_to_scratch<26>(weight, in_c, out_c, false);
  pointwise::multiply(out, out_c, in, in_c, pixels, packed, {}, mean, variance);
}

// din = epilogue(dout W^T): the input gradient with a residual (a skip connection's gradient)
// or a ReLU6 mask in the same pass.
inline void pointwise_conv2d_backward_input(float* din, const float* dout, const float* weight, int64_t pixels,
                                            int64_t in_c, int64_t out_c, const pointwise::Epilogue& epilogue) {
  const pointwise::Packed packed = pointwise::pack_to_scratch<27>(weight, out_c, in_c, true);
  pointwise::multiply(din, in_c, dout, out_c, pixels, packed, epilogue);
}

// The same two functions through Eigen's GEMM: the reference for the engine's tests.
inline void pointwise_conv2d_forward_reference(float* out, const float* in, const float* weight, const float* bias,
                                               int64_t pixels, int64_t in_c, int64_t out_c) {
  gemm(out, in, weight, pixels, out_c, in_c, false, false, false);
  if (bias) add_row_bias(out, bias, pixels, out_c);
}

inline void pointwise_conv2d_backward_reference(float* din, float* dweight, float* dbias, const float* dout,
                                                const float* in, const float* weight, int64_t pixels, int64_t in_c,
                                                int64_t out_c) {
  if (dbias) accumulate_column_sums(dbias, dout, pixels, out_c);
  if (dweight) gemm(dweight, in, dout, in_c, out_c, pixels, true, false, true);
  if (din) gemm(din, dout, weight, pixels, in_c, out_c, false, true, false);
}

}  // namespace eigennet::kernels
