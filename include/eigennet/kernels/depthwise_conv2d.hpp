// Depthwise convolution (depth multiplier 1) on NHWC tensors. Weight layout is Keras'
// [kh, kw, C, 1]: weight[(kh * kernel_w + kw) * C + c]. Every loop keeps channels innermost so
// the compiler vectorizes over C, and each thread owns whole output (or input) rows.
#pragma once

#include <algorithm>
#include <cstring>

#include "../core/parallel.hpp"
#include "geometry.hpp"

namespace eigennet::kernels {

namespace detail {
// Output columns [lo, hi) whose input column ow*stride - pad + kw lies inside [0, in_w).
inline void valid_output_range(int64_t kw, const WindowGeometry& g, int64_t& lo, int64_t& hi) {
  const int64_t first = g.pad_left - kw;  // need ow*stride >= first
  lo = first <= 0 ? 0 : (first + g.stride_w - 1) / g.stride_w;
  const int64_t last = g.in_w - 1 + g.pad_left - kw;  // need ow*stride <= last
  hi = last < 0 ? 0 : std::min(g.out_w, last / g.stride_w + 1);
  lo = std::min(lo, hi);
}
}  // namespace detail

// out = depthwise(in, weight) + bias (bias may be null).
inline void depthwise_conv2d_forward(float* out, const float* in, const float* weight, const float* bias,
                                     const WindowGeometry& g) {
  const int64_t C = g.in_c, rows = g.batch * g.out_h;
  const int64_t work = g.out_w * C * g.kernel_h * g.kernel_w;
  parallel_for(rows, rows * work, [&](int64_t r) {
    const int64_t n = r / g.out_h, oh = r % g.out_h;
    float* orow = out + r * g.out_w * C;
    for (int64_t ow = 0; ow < g.out_w; ++ow) {
      float* o = orow + ow * C;
      if (bias)
        std::memcpy(o, bias, static_cast<size_t>(C) * sizeof(float));
      else
        std::memset(o, 0, static_cast<size_t>(C) * sizeof(float));
    }
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t ih = oh * g.stride_h - g.pad_top + kh;
      if (ih < 0 || ih >= g.in_h) continue;
      const float* irow = in + (n * g.in_h + ih) * g.in_w * C;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const float* wk = weight + (kh * g.kernel_w + kw) * C;
        int64_t lo, hi;
        detail::valid_output_range(kw, g, lo, hi);
        for (int64_t ow = lo; ow < hi; ++ow) {
          const float* i = irow + (ow * g.stride_w - g.pad_left + kw) * C;
          float* o = orow + ow * C;
          for (int64_t c = 0; c < C; ++c) o[c] += i[c] * wk[c];
        }
      }
    }
  });
}

// din[n, ih, iw, c] = sum of dout[n, oh, ow, c] * weight[kh, kw, c] over the windows that read
// (ih, iw). Gathered per input row: no two threads write the same row.
inline void depthwise_conv2d_backward_input(float* din, const float* dout, const float* weight,
                                            const WindowGeometry& g) {
  const int64_t C = g.in_c, rows = g.batch * g.in_h;
  const int64_t work = g.in_w * C * g.kernel_h * g.kernel_w;
  parallel_for(rows, rows * work, [&](int64_t r) {
    const int64_t n = r / g.in_h, ih = r % g.in_h;
    float* drow = din + r * g.in_w * C;
    std::memset(drow, 0, static_cast<size_t>(g.in_w * C) * sizeof(float));
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t oh_s = ih + g.pad_top - kh;
      if (oh_s < 0 || oh_s % g.stride_h) continue;
      const int64_t oh = oh_s / g.stride_h;
      if (oh >= g.out_h) continue;
      const float* orow = dout + (n * g.out_h + oh) * g.out_w * C;
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const float* wk = weight + (kh * g.kernel_w + kw) * C;
        int64_t lo, hi;
        detail::valid_output_range(kw, g, lo, hi);
        for (int64_t ow = lo; ow < hi; ++ow) {
          float* d = drow + (ow * g.stride_w - g.pad_left + kw) * C;
          const float* o = orow + ow * C;
          for (int64_t c = 0; c < C; ++c) d[c] += o[c] * wk[c];
        }
      }
    }
  });
}

// dweight += sum over n, oh, ow of dout * in at the window position; dbias += sum of dout.
// Per-thread partial sums over blocks of output rows, reduced in thread order (deterministic).
inline void depthwise_conv2d_backward_weight(float* dweight, float* dbias, const float* dout, const float* in,
                                             const WindowGeometry& g) {
  const int64_t C = g.in_c, taps = g.kernel_h * g.kernel_w, rows = g.batch * g.out_h;
  const int64_t stride = (taps + 1) * C;  // per block: taps weight rows then the bias row
  const int blocks = blocks_for(rows, g.out_w * C * taps);
  float* partial = scratch<float>(static_cast<size_t>(blocks * stride));
  std::fill_n(partial, blocks * stride, 0.0f);
  parallel_blocks(rows, g.out_w * C * taps, [&](int64_t begin, int64_t end, int t) {
    float* pw = partial + t * stride;
    float* pb = pw + taps * C;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / g.out_h, oh = r % g.out_h;
      const float* orow = dout + r * g.out_w * C;
      if (dbias)
        for (int64_t ow = 0; ow < g.out_w; ++ow)
          for (int64_t c = 0; c < C; ++c) pb[c] += orow[ow * C + c];
      if (!dweight) continue;
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        const int64_t ih = oh * g.stride_h - g.pad_top + kh;
        if (ih < 0 || ih >= g.in_h) continue;
        const float* irow = in + (n * g.in_h + ih) * g.in_w * C;
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          float* acc = pw + (kh * g.kernel_w + kw) * C;
          int64_t lo, hi;
          detail::valid_output_range(kw, g, lo, hi);
          for (int64_t ow = lo; ow < hi; ++ow) {
            const float* i = irow + (ow * g.stride_w - g.pad_left + kw) * C;
            const float* o = orow + ow * C;
            for (int64_t c = 0; c < C; ++c) acc[c] += o[c] * i[c];
          }
        }
      }
    }
  });
  for (int b = 0; b < blocks; ++b) {
    const float* p = partial + b * stride;
    if (dweight)
      for (int64_t j = 0; j < taps * C; ++j) dweight[j] += p[j];
    if (dbias)
      for (int64_t c = 0; c < C; ++c) dbias[c] += p[taps * C + c];
  }
}

}  // namespace eigennet::kernels
