// Zero padding along the channel axis of NHWC tensors (TensorFlow's tf.pad on the last axis):
// each pixel's C channels are copied between `before` and `after` zero channels. BlazeFace's
// residual blocks use it to widen their shortcut to the block's output channels.
#pragma once

#include <cstring>

#include "../core/parallel.hpp"

namespace eigennet::kernels {

// out[p, before + c] = in[p, c]; out[p, j] = 0 for the other before + after channels.
inline void channel_pad_forward(float* out, const float* in, int64_t pixels, int64_t channels, int64_t before,
                                int64_t after) {
  const int64_t out_c = before + channels + after;
  parallel_for(pixels, pixels * out_c, [&](int64_t p) {
    float* o = out + p * out_c;
    if (before) std::memset(o, 0, static_cast<size_t>(before) * sizeof(float));
    std::memcpy(o + before, in + p * channels, static_cast<size_t>(channels) * sizeof(float));
    if (after) std::memset(o + before + channels, 0, static_cast<size_t>(after) * sizeof(float));
  });
}

// din[p, c] = dout[p, before + c]: the padded channels are constants and pass no gradient.
inline void channel_pad_backward(float* din, const float* dout, int64_t pixels, int64_t channels, int64_t before,
                                 int64_t after) {
  const int64_t out_c = before + channels + after;
  parallel_for(pixels, pixels * channels, [&](int64_t p) {
    std::memcpy(din + p * channels, dout + p * out_c + before, static_cast<size_t>(channels) * sizeof(float));
  });
}

}  // namespace eigennet::kernels
