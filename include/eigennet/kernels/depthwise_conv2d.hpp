// Depthwise convolution (depth multiplier 1) on NHWC tensors. Weight layout is Keras'
// [kh, kw, C, 1]: weight[(kh * kernel_w + kw) * C + c]. Every loop keeps channels innermost so
// the compiler vectorizes over C, and each thread owns whole output (or input) rows.
#pragma once

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/geometry.hpp"
#include "simd.hpp"

namespace eigennet::kernels {

// An optional clamp of a kernel's output (ReLU: lo = 0; ReLU6: lo = 0, hi = 6).
struct Clamp {
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
  bool active() const {
    return lo > -std::numeric_limits<float>::infinity() || hi < std::numeric_limits<float>::infinity();
  }
};

namespace detail {
// Output columns [lo, hi) whose input column ow*stride - pad + kw lies inside [0, in_w).
inline void valid_output_range(int64_t kw, const WindowGeometry& g, int64_t& lo, int64_t& hi) {
  const int64_t first = g.pad_left - kw;  // need ow*stride >= first
  lo = first <= 0 ? 0 : (first + g.stride_w - 1) / g.stride_w;
  const int64_t last = g.in_w - 1 + g.pad_left - kw;  // need ow*stride <= last
  hi = last < 0 ? 0 : std::min(g.out_w, last / g.stride_w + 1);
  lo = std::min(lo, hi);
}
// The channel packet at c of one output row of a 3x3 depthwise convolution with stride S
// (`lanes` valid channels: a partial packet at the end of a row). The nine weights and the bias
// stay in registers for the whole row. Interior pixels [first, last) go `block` at a time:
// neighbours share input columns (stride 1: 4 outputs read 6 columns instead of 12) and their
// per-kernel-row partial sums are 3 x block independent FMA chains. Border pixels check which
// of their three columns are inside the image (rows outside are zero rows).
template <int S, bool partial>
inline void depthwise3x3_channels(float* __restrict orow, const float* __restrict r0, const float* __restrict r1,
                                  const float* __restrict r2, const float* __restrict weight,
                                  const float* __restrict bias, int64_t C, int64_t c, int lanes,
                                  const WindowGeometry& g, int64_t first, int64_t last, int64_t begin, int64_t end,
                                  const Clamp& clamp) {
  using simd::Packet;
  auto load = [lanes](const float* p) { return partial ? simd::load_partial(p, lanes) : simd::load(p); };
  auto finish = [&](Packet v, float* dst) {
    if (clamp.active()) v = simd::min(simd::max(v, simd::set1(clamp.lo)), simd::set1(clamp.hi));
    if (partial)
      simd::store_partial(dst, v, lanes);
    else
      simd::store(dst, v);
  };
  constexpr int block = simd::registers >= 32 ? 4 : 2;
  constexpr int columns = (block - 1) * S + 3;
  const int64_t pad = g.pad_left, in_w = g.in_w;
  Packet w[9];
#pragma GCC unroll 9
  for (int k = 0; k < 9; ++k) w[k] = load(weight + k * C + c);
  const Packet b = load(bias + c);
  const float* rows[3] = {r0 + c, r1 + c, r2 + c};
  auto pixel = [&](int64_t ow) {
    Packet a0 = b, a1 = simd::zero(), a2 = simd::zero();
#pragma GCC unroll 3
    for (int kw = 0; kw < 3; ++kw) {
      const int64_t iw = ow * S - pad + kw;
      if (iw < 0 || iw >= in_w) continue;
      a0 = simd::fmadd(load(rows[0] + iw * C), w[kw], a0);
      a1 = simd::fmadd(load(rows[1] + iw * C), w[3 + kw], a1);
      a2 = simd::fmadd(load(rows[2] + iw * C), w[6 + kw], a2);
    }
    finish(simd::add(a0, simd::add(a1, a2)), orow + ow * C + c);
  };
  const int64_t interior_begin = std::max(begin, first), interior_end = std::max(interior_begin, std::min(end, last));
  for (int64_t ow = begin; ow < std::min(end, first); ++ow) pixel(ow);
  int64_t ow = interior_begin;
  for (; ow + block <= interior_end; ow += block) {
    const int64_t in0 = (ow * S - pad) * C;
    Packet acc[block][3];
#pragma GCC unroll 4
    for (int o = 0; o < block; ++o) {
      acc[o][0] = b;
      acc[o][1] = simd::zero();
      acc[o][2] = simd::zero();
    }
#pragma GCC unroll 12
    for (int j = 0; j < columns; ++j) {
      const int64_t at = in0 + j * C;
      const Packet x0 = load(rows[0] + at), x1 = load(rows[1] + at), x2 = load(rows[2] + at);
#pragma GCC unroll 4
      for (int o = 0; o < block; ++o) {
        const int kw = j - o * S;
        if (kw < 0 || kw > 2) continue;
        acc[o][0] = simd::fmadd(x0, w[kw], acc[o][0]);
        acc[o][1] = simd::fmadd(x1, w[3 + kw], acc[o][1]);
        acc[o][2] = simd::fmadd(x2, w[6 + kw], acc[o][2]);
      }
    }
#pragma GCC unroll 4
    for (int o = 0; o < block; ++o)
      finish(simd::add(acc[o][0], simd::add(acc[o][1], acc[o][2])), orow + (ow + o) * C + c);
  }
  for (; ow < end; ++ow) pixel(ow);
}

// One output row of a 3x3 depthwise convolution with all nine taps at once, optionally clamped:
// orow[ow, c] = clamp(bias[c] + sum over kh, kw of rows[kh][(ow * stride - pad_left + kw), c] * w[kh, kw, c]).
// Rows outside the image are passed as a row of zeros, so every output pixel reads three rows.
// Stride 1 goes through depthwise3x3_channels, a channel packet at a time; other strides through
// the nine-tap loop over all channels of a pixel.
__attribute__((noinline)) inline void depthwise3x3_row(float* __restrict orow, const float* __restrict r0,
                                                       const float* __restrict r1, const float* __restrict r2,
                                                       const float* __restrict weight, const float* __restrict bias,
                                                       const WindowGeometry& g, const Clamp& clamp = {}) {
  const int64_t C = g.in_c, s = g.stride_w, pad = g.pad_left, in_w = g.in_w, out_w = g.out_w;
  // Interior: columns ow*s - pad .. ow*s - pad + 2 all inside [0, in_w).
  const int64_t first = std::min(out_w, (pad + s - 1) / s);
  const int64_t last = std::max(first, std::min(out_w, in_w - 3 + pad >= 0 ? (in_w - 3 + pad) / s + 1 : 0));
  if (s == 1) {
    // Output pixels in blocks whose three input-row windows stay in L1 while every channel packet
    // passes over them (a packet at a time reads the rows with a stride of C floats).
    const int64_t window = (24 * 1024) / (3 * 4 * std::max<int64_t>(C, 1));
    const int64_t pixels = std::max<int64_t>(8, window - 2);
    for (int64_t b0 = 0; b0 < out_w; b0 += pixels) {
      const int64_t b1 = std::min(out_w, b0 + pixels);
      int64_t c = 0;
      for (; c + simd::width <= C; c += simd::width)
        depthwise3x3_channels<1, false>(orow, r0, r1, r2, weight, bias, C, c, simd::width, g, first, last, b0, b1,
                                        clamp);
      if (c < C)
        depthwise3x3_channels<1, true>(orow, r0, r1, r2, weight, bias, C, c, static_cast<int>(C - c), g, first, last,
                                       b0, b1, clamp);
    }
    return;
  }
  // Other strides (stride 2 reads twice as many columns, so pixel by pixel with every channel
  // streams better): interior pixels with all nine taps at once, border pixels column by column.
  const float* rows[3] = {r0, r1, r2};
  const float lo = clamp.lo, hi = clamp.hi;
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
    for (int64_t c = 0; c < C; ++c) o[c] = std::min(std::max(o[c], lo), hi);
  };
  for (int64_t ow = 0; ow < first; ++ow) border(ow);
  const float *w0 = weight, *w1 = weight + C, *w2 = weight + 2 * C, *w3 = weight + 3 * C, *w4 = weight + 4 * C,
              *w5 = weight + 5 * C, *w6 = weight + 6 * C, *w7 = weight + 7 * C, *w8 = weight + 8 * C;
  for (int64_t ow = first; ow < last; ++ow) {
    const int64_t at = (ow * s - pad) * C;
    const float *a = r0 + at, *b = r1 + at, *d = r2 + at;
    float* o = orow + ow * C;
    for (int64_t c = 0; c < C; ++c)
      o[c] = std::min(std::max(bias[c] + a[c] * w0[c] + a[C + c] * w1[c] + a[2 * C + c] * w2[c] + b[c] * w3[c] +
                                   b[C + c] * w4[c] + b[2 * C + c] * w5[c] + d[c] * w6[c] + d[C + c] * w7[c] +
                                   d[2 * C + c] * w8[c],
                               lo),
                      hi);
  }
  for (int64_t ow = std::max(first, last); ow < out_w; ++ow) border(ow);
}

// Weight gradient of one (output row, input row) pair that a kernel row connects:
// acc[kw, c] += sum over ow of orow[ow, c] * irow[ow * stride - pad_left + kw, c], for every kw.
// Channels go in SIMD packets held in registers across the whole row (four independent sums
// hide the FMA latency), so each product costs two loads and no store.
inline void depthwise_weight_grad_row(float* __restrict acc, const float* __restrict orow,
                                      const float* __restrict irow, const WindowGeometry& g) {
  using namespace Eigen::internal;
  using Packet = packet_traits<float>::type;
  constexpr int64_t P = packet_traits<float>::size;
  const int64_t C = g.in_c, s = g.stride_w;
  for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
    int64_t lo, hi;
    valid_output_range(kw, g, lo, hi);
    if (lo >= hi) continue;
    const float* in = irow + (lo * s - g.pad_left + kw) * C;  // input pixel of output lo
    const float* out = orow + lo * C;
    const int64_t count = hi - lo, in_step = s * C;
    float* a = acc + kw * C;
    int64_t c = 0;
    for (; c + P <= C; c += P) {
      Packet s0 = pset1<Packet>(0.0f), s1 = s0, s2 = s0, s3 = s0;
      int64_t k = 0;
      for (; k + 4 <= count; k += 4) {
        s0 = pmadd(ploadu<Packet>(out + k * C + c), ploadu<Packet>(in + k * in_step + c), s0);
        s1 = pmadd(ploadu<Packet>(out + (k + 1) * C + c), ploadu<Packet>(in + (k + 1) * in_step + c), s1);
        s2 = pmadd(ploadu<Packet>(out + (k + 2) * C + c), ploadu<Packet>(in + (k + 2) * in_step + c), s2);
        s3 = pmadd(ploadu<Packet>(out + (k + 3) * C + c), ploadu<Packet>(in + (k + 3) * in_step + c), s3);
      }
      for (; k < count; ++k) s0 = pmadd(ploadu<Packet>(out + k * C + c), ploadu<Packet>(in + k * in_step + c), s0);
      pstoreu(a + c, padd(ploadu<Packet>(a + c), padd(padd(s0, s1), padd(s2, s3))));
    }
    for (; c < C; ++c) {
      float sum = 0.0f;
      for (int64_t k = 0; k < count; ++k) sum += out[k * C + c] * in[k * in_step + c];
      a[c] += sum;
    }
  }
}

// Zeros for rows outside the image and for a missing bias: at least `count` floats.
inline const float* zeros(int64_t count) {
  thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < count) buffer.assign(static_cast<size_t>(count), 0.0f);
  return buffer.data();
}

// The input gradient of a stride-1 3x3 depthwise convolution is itself a 3x3 depthwise
// convolution of dout, with the kernel rotated by 180 degrees and padding 2 - pad:
// din[ih, iw] = sum dout[ih - (2 - pad) + kh', iw - (2 - pad) + kw'] * w[2 - kh', 2 - kw'].
// Built on the calling thread; row() is then safe to call from every thread.
class Stride1InputGradient {
 public:
  static bool applies(const WindowGeometry& g) {
    return g.kernel_h == 3 && g.kernel_w == 3 && g.stride_h == 1 && g.stride_w == 1;
  }
  Stride1InputGradient(const float* dout, const float* weight, const WindowGeometry& g) : dout_(dout), g_(g), t_(g) {
    const int64_t C = g.in_c;
    t_.in_h = g.out_h;
    t_.in_w = g.out_w;
    t_.out_h = g.in_h;
    t_.out_w = g.in_w;
    t_.pad_top = 2 - g.pad_top;
    t_.pad_left = 2 - g.pad_left;
    float* rotated = scratch<float, 8>(static_cast<size_t>(9 * C));
    for (int64_t k = 0; k < 9; ++k)
      std::memcpy(rotated + k * C, weight + (8 - k) * C, static_cast<size_t>(C) * sizeof(float));
    rotated_ = rotated;
    zero_ = zeros(std::max({g.in_w, g.out_w, int64_t{1}}) * C);
  }
  // Writes the input-gradient row (n, ih).
  void row(float* drow, int64_t n, int64_t ih) const {
    row(drow, n, ih, [&](int64_t oh) { return dout_ + (n * g_.out_h + oh) * g_.out_w * g_.in_c; });
  }
  // The same, with the output-gradient rows of image n from dout_row(oh).
  template <typename DoutRow>
  void row(float* drow, int64_t n, int64_t ih, DoutRow&& dout_row) const {
    (void)n;
    const float* rows[3];
    for (int64_t kh = 0; kh < 3; ++kh) {
      const int64_t oh = ih - t_.pad_top + kh;
      rows[kh] = oh < 0 || oh >= g_.out_h ? zero_ : dout_row(oh);
    }
    depthwise3x3_row(drow, rows[0], rows[1], rows[2], rotated_, zero_, t_);
  }

 private:
  const float* dout_;
  WindowGeometry g_, t_;  // the convolution's geometry, and that of dout -> din
  const float* rotated_ = nullptr;
  const float* zero_ = nullptr;
};
}  // namespace detail

// out = clamp(depthwise(in, weight) + bias) (bias may be null; no clamp by default).
inline void depthwise_conv2d_forward(float* out, const float* in, const float* weight, const float* bias,
                                     const WindowGeometry& g, const Clamp& clamp = {}) {
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
      detail::depthwise3x3_row(out + r * g.out_w * C, row[0], row[1], row[2], weight, b, g, clamp);
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
    if (clamp.active())
      for (int64_t i = 0; i < g.out_w * C; ++i) orow[i] = std::min(std::max(orow[i], clamp.lo), clamp.hi);
  });
}

// din[n, ih, iw, c] = sum of dout[n, oh, ow, c] * weight[kh, kw, c] over the windows that read
// (ih, iw). Gathered per input row: no two threads write the same row.
inline void depthwise_conv2d_backward_input(float* din, const float* dout, const float* weight,
                                            const WindowGeometry& g) {
  const int64_t C = g.in_c, rows = g.batch * g.in_h;
  const int64_t work = g.in_w * C * g.kernel_h * g.kernel_w;
  if (detail::Stride1InputGradient::applies(g)) {
    const detail::Stride1InputGradient gradient(dout, weight, g);
    parallel_for(rows, rows * work, [&](int64_t r) { gradient.row(din + r * g.in_w * C, r / g.in_h, r % g.in_h); });
    return;
  }
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
        detail::depthwise_weight_grad_row(pw + kh * g.kernel_w * C, orow, in + (n * g.in_h + ih) * g.in_w * C, g);
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
