// Depthwise convolution (depth multiplier 1) on NHWC tensors. Weight layout is Keras'
// [kh, kw, C, 1]: weight[(kh * kernel_w + kw) * C + c]. Every loop keeps channels innermost so
// the compiler vectorizes over C, and each thread owns whole output (or input) rows.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

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
// One output row of a 3x3 depthwise convolution with all nine taps at once:
// orow[ow, c] = bias[c] + sum over kh, kw of rows[kh][(ow * stride - pad_left + kw), c] * w[kh, kw, c].
// Rows outside the image are passed as a row of zeros, so every output pixel reads three rows.
// Interior pixels load and store their output once, instead of once per tap; the border
// columns whose window leaves the image check each column. Out of line so that the restrict
// qualifiers hold and the channel loops vectorize.
__attribute__((noinline)) inline void depthwise3x3_row(float* __restrict orow, const float* __restrict r0,
                                                       const float* __restrict r1, const float* __restrict r2,
                                                       const float* __restrict weight, const float* __restrict bias,
                                                       const WindowGeometry& g) {
  const int64_t C = g.in_c, s = g.stride_w, pad = g.pad_left, in_w = g.in_w, out_w = g.out_w;
  const float* rows[3] = {r0, r1, r2};
  // Interior: columns ow*s - pad .. ow*s - pad + 2 all inside [0, in_w).
  const int64_t first = std::min(out_w, (pad + s - 1) / s);
  const int64_t last = std::max(first, std::min(out_w, in_w - 3 + pad >= 0 ? (in_w - 3 + pad) / s + 1 : 0));
  auto border = [&](int64_t ow) {
    float* o = orow + ow * C;
    for (int64_t c = 0; c < C; ++c) o[c] = bias[c];
    for (int64_t kh = 0; kh < 3; ++kh)
      for (int64_t kw = 0; kw < 3; ++kw) {
        const int64_t iw = ow * s - pad + kw;
        if (iw < 0 || iw >= in_w) continue;
        const float* i = rows[kh] + iw * C;
        const float* w = weight + (kh * 3 + kw) * C;
        for (int64_t c = 0; c < C; ++c) o[c] += i[c] * w[c];
      }
  };
  for (int64_t ow = 0; ow < first; ++ow) border(ow);
  const float *w0 = weight, *w1 = weight + C, *w2 = weight + 2 * C, *w3 = weight + 3 * C, *w4 = weight + 4 * C,
              *w5 = weight + 5 * C, *w6 = weight + 6 * C, *w7 = weight + 7 * C, *w8 = weight + 8 * C;
  for (int64_t ow = first; ow < last; ++ow) {
    const int64_t at = (ow * s - pad) * C;
    const float *a = r0 + at, *b = r1 + at, *d = r2 + at;
    float* o = orow + ow * C;
    for (int64_t c = 0; c < C; ++c)
      o[c] = bias[c] + a[c] * w0[c] + a[C + c] * w1[c] + a[2 * C + c] * w2[c] + b[c] * w3[c] + b[C + c] * w4[c] +
             b[2 * C + c] * w5[c] + d[c] * w6[c] + d[C + c] * w7[c] + d[2 * C + c] * w8[c];
  }
  for (int64_t ow = std::max(first, last); ow < out_w; ++ow) border(ow);
}

// Zeros for rows outside the image and for a missing bias: at least `count` floats.
inline const float* zeros(int64_t count) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < count) buffer.assign(static_cast<size_t>(count), 0.0f);
  return buffer.data();
}
}  // namespace detail

// out = depthwise(in, weight) + bias (bias may be null).
inline void depthwise_conv2d_forward(float* out, const float* in, const float* weight, const float* bias,
                                     const WindowGeometry& g) {
  const int64_t C = g.in_c, rows = g.batch * g.out_h;
  const int64_t work = g.out_w * C * g.kernel_h * g.kernel_w;
  if (g.kernel_h == 3 && g.kernel_w == 3) {
    // Read-only zeros shared by the threads: a row for the padding above and below, and the bias.
    const float* zero = detail::zeros(std::max(g.in_w, int64_t{1}) * C);
    const float* b = bias ? bias : zero;
    parallel_for(rows, rows * work, [&](int64_t r) {
      const int64_t n = r / g.out_h, oh = r % g.out_h;
      const float* row[3];
      for (int64_t kh = 0; kh < 3; ++kh) {
        const int64_t ih = oh * g.stride_h - g.pad_top + kh;
        row[kh] = ih < 0 || ih >= g.in_h ? zero : in + (n * g.in_h + ih) * g.in_w * C;
      }
      detail::depthwise3x3_row(out + r * g.out_w * C, row[0], row[1], row[2], weight, b, g);
    });
    return;
  }
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
