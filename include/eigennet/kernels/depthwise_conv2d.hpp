// Depthwise convolution (depth multiplier 1) on NHWC tensors. Weight layout is Keras'
// [kh, kw, C, 1]: weight[(kh * kernel_w + kw) * C + c]. Every loop keeps channels innermost so
// the compiler vectorizes over C, and each thread owns whole output (or input) rows.
#pragma once

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
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
// GCC 12 warns about the undefined pass-through operand inside its own AVX-512 min/max
// intrinsics when they are inlined here (GCC bug 105593, fixed in GCC 13): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// Output pixels [begin, end) of one channel packet at c of R consecutive output rows of a
// stride-1 3x3 depthwise convolution (`lanes` valid channels: a partial packet at the end of a
// row), from the R + 2 input rows they read. A sliding window: the nine weights and the bias stay
// in registers, the input columns of the current pixel (left, middle, right, in every input row)
// too, so each pixel loads one new column of R + 2 rows and does 9 FMAs per output row in three
// chains; consecutive pixels' chains are independent, which out-of-order execution overlaps. Two
// output rows at once (where 32 registers hold their window) load 4 columns for 18 FMAs instead
// of 6. Columns outside [0, in_w) are zero (the padding).
template <int R, bool partial, bool clamped>
inline void depthwise3x3_s1_channels(float* const* orows, const float* const* irows, const float* __restrict weight,
                                     const float* __restrict bias, int64_t C, int64_t c, int lanes,
                                     const WindowGeometry& g, int64_t begin, int64_t end, const Clamp& clamp) {
  using simd::Packet;
  constexpr int I = R + 2;  // input rows
  auto load = [lanes](const float* p) { return partial ? simd::load_partial(p, lanes) : simd::load(p); };
  const Packet w0 = load(weight + c), w1 = load(weight + C + c), w2 = load(weight + 2 * C + c);
  const Packet w3 = load(weight + 3 * C + c), w4 = load(weight + 4 * C + c), w5 = load(weight + 5 * C + c);
  const Packet w6 = load(weight + 6 * C + c), w7 = load(weight + 7 * C + c), w8 = load(weight + 8 * C + c);
  const Packet b = load(bias + c);
  const float lo = clamp.lo, hi = clamp.hi;
  const float* a[I];
#pragma GCC unroll 4
  for (int i = 0; i < I; ++i) a[i] = irows[i] + c;
  float* o[R];
#pragma GCC unroll 2
  for (int r = 0; r < R; ++r) o[r] = orows[r] + c;
  const int64_t pad = g.pad_left, in_w = g.in_w;
  auto column = [&](int64_t iw, Packet(&x)[I]) {
    const bool outside = iw < 0 || iw >= in_w;
#pragma GCC unroll 4
    for (int i = 0; i < I; ++i) x[i] = outside ? simd::zero() : load(a[i] + iw * C);
  };
  Packet l[I], m[I];
  column(begin - pad, l);
  column(begin - pad + 1, m);
  auto step = [&](int64_t ow, bool checked) {
    Packet q[I];
    if (checked) {
      column(ow - pad + 2, q);
    } else {
      const int64_t at = (ow - pad + 2) * C;
#pragma GCC unroll 4
      for (int i = 0; i < I; ++i) q[i] = load(a[i] + at);
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; ++r) {
      // The same order of operations as the nine-tap loop: (b + row 0) + (row 1 + row 2).
      Packet s0 = simd::fmadd(l[r], w0, b), s1 = simd::mul(l[r + 1], w3), s2 = simd::mul(l[r + 2], w6);
      s0 = simd::fmadd(m[r], w1, s0);
      s1 = simd::fmadd(m[r + 1], w4, s1);
      s2 = simd::fmadd(m[r + 2], w7, s2);
      s0 = simd::fmadd(q[r], w2, s0);
      s1 = simd::fmadd(q[r + 1], w5, s1);
      s2 = simd::fmadd(q[r + 2], w8, s2);
      Packet v = simd::add(s0, simd::add(s1, s2));
      if (clamped) v = simd::min(simd::max(v, simd::set1(lo)), simd::set1(hi));
      if (partial)
        simd::store_partial(o[r] + ow * C, v, lanes);
      else
        simd::store(o[r] + ow * C, v);
    }
#pragma GCC unroll 4
    for (int i = 0; i < I; ++i) {
      l[i] = m[i];
      m[i] = q[i];
    }
  };
  // Only pixels whose right column ow - pad + 2 lies outside the row check it.
  const int64_t inside_begin = std::min(end, std::max(begin, pad - 2));
  const int64_t inside_end = std::max(inside_begin, std::min(end, in_w + pad - 2));
  int64_t ow = begin;
  for (; ow < inside_begin; ++ow) step(ow, true);
  for (; ow < inside_end; ++ow) step(ow, false);
  for (; ow < end; ++ow) step(ow, true);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// R consecutive output rows orows[0..R) of a stride-1 3x3 depthwise convolution from the R + 2
// input rows irows[0..R+2) they read, a channel packet at a time, over windows of output pixels
// whose input rows stay in L1 while every channel packet slides over them (a packet at a time
// reads the rows with a stride of C floats).
template <int R>
inline void depthwise3x3_s1_rows(float* const* orows, const float* const* irows, const float* weight,
                                 const float* bias, const WindowGeometry& g, const Clamp& clamp) {
  const int64_t C = g.in_c, out_w = g.out_w;
  const int64_t window = (32 * 1024) / ((R + 2) * 4 * std::max<int64_t>(C, 1));
  const int64_t pixels = std::max<int64_t>(12, window);
  const bool clamped = clamp.active();
  for (int64_t b0 = 0; b0 < out_w; b0 += pixels) {
    const int64_t b1 = std::min(out_w, b0 + pixels);
    int64_t c = 0;
    const int full = simd::width;
    for (; c + simd::width <= C; c += simd::width)
      clamped ? depthwise3x3_s1_channels<R, false, true>(orows, irows, weight, bias, C, c, full, g, b0, b1, clamp)
              : depthwise3x3_s1_channels<R, false, false>(orows, irows, weight, bias, C, c, full, g, b0, b1, clamp);
    const int rest = static_cast<int>(C - c);
    if (rest > 0)
      clamped ? depthwise3x3_s1_channels<R, true, true>(orows, irows, weight, bias, C, c, rest, g, b0, b1, clamp)
              : depthwise3x3_s1_channels<R, true, false>(orows, irows, weight, bias, C, c, rest, g, b0, b1, clamp);
  }
}

// One output row of a 3x3 depthwise convolution with all nine taps at once, optionally clamped:
// orow[ow, c] = clamp(bias[c] + sum over kh, kw of rows[kh][(ow * stride - pad_left + kw), c] * w[kh, kw, c]).
// Rows outside the image are passed as a row of zeros, so every output pixel reads three rows.
// Stride 1 goes through depthwise3x3_s1_channels, a channel packet at a time; other strides through
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
    const float* rows[3] = {r0, r1, r2};
    float* out[1] = {orow};
    depthwise3x3_s1_rows<1>(out, rows, weight, bias, g, clamp);
    return;
  }
  // Other strides (stride 2 reads twice as many columns, so pixel by pixel with every channel
  // streams better: a sliding window per channel packet measured 25-40% slower here): interior
  // pixels with all nine taps at once, border pixels column by column.
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

// Two consecutive output rows (oh, oh + 1) of a 3x3 depthwise convolution with vertical stride 1,
// from the four input rows r0..r3 they read (rows outside the image as a row of zeros): at
// horizontal stride 1, with 32 vector registers, in one sweep that loads every input column once
// for both rows; otherwise as two calls of depthwise3x3_row. The same results either way.
__attribute__((noinline)) inline void depthwise3x3_row_pair(float* orow0, float* orow1, const float* r0,
                                                            const float* r1, const float* r2, const float* r3,
                                                            const float* weight, const float* bias,
                                                            const WindowGeometry& g, const Clamp& clamp = {}) {
  if (g.stride_w == 1 && simd::registers >= 32) {
    const float* rows[4] = {r0, r1, r2, r3};
    float* out[2] = {orow0, orow1};
    depthwise3x3_s1_rows<2>(out, rows, weight, bias, g, clamp);
    return;
  }
  depthwise3x3_row(orow0, r0, r1, r2, weight, bias, g, clamp);
  depthwise3x3_row(orow1, r1, r2, r3, weight, bias, g, clamp);
}

// Output rows [begin, end) of a 3x3 depthwise convolution (row r: image r / out_h, row r % out_h)
// into out_row(r), from the input rows input_row(n, ih) (`zero`, a row of zeros, outside the
// image); then done(r) for each, in order. With vertical stride 1, pairs of rows of one image go
// through depthwise3x3_row_pair; input_row must then keep the four rows of a pair valid at once.
template <typename OutRow, typename InputRow, typename Done = void (*)(int64_t)>
inline void depthwise3x3_output_rows(int64_t begin, int64_t end, OutRow&& out_row, InputRow&& input_row,
                                     const float* zero, const float* weight, const float* bias,
                                     const WindowGeometry& g, const Clamp& clamp = {},
                                     Done&& done = [](int64_t) {}) {
  auto in_row = [&](int64_t n, int64_t ih) { return ih < 0 || ih >= g.in_h ? zero : input_row(n, ih); };
  for (int64_t r = begin; r < end;) {
    const int64_t n = r / g.out_h, oh = r % g.out_h, top = oh * g.stride_h - g.pad_top;
    const float* r0 = in_row(n, top);
    const float* r1 = in_row(n, top + 1);
    const float* r2 = in_row(n, top + 2);
    if (g.stride_h == 1 && r + 1 < end && oh + 1 < g.out_h) {
      const float* r3 = in_row(n, top + 3);
      depthwise3x3_row_pair(out_row(r), out_row(r + 1), r0, r1, r2, r3, weight, bias, g, clamp);
      done(r);
      done(r + 1);
      r += 2;
    } else {
      depthwise3x3_row(out_row(r), r0, r1, r2, weight, bias, g, clamp);
      done(r);
      r += 1;
    }
  }
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

// The weight gradient of a stride-1 3x3 depthwise convolution from one input row and the three
// output rows it feeds (orows[kh]: output row ih + pad_top - kh, or a row of zeros where that
// lies outside the image), for one channel packet at c:
//   acc[(kh * 3 + kw) * C + c] += sum over ow of orows[kh][ow, c] * irow[ow - pad_left + kw, c].
// A sliding window over the row: per pixel one new input column and three output loads feed nine
// independent FMA chains (the nine taps) held in registers for the whole row.
template <bool partial>
inline void depthwise3x3_s1_weight_grad_channels(float* __restrict acc, const float* const* orows,
                                                 const float* __restrict irow, int64_t C, int64_t c, int lanes,
                                                 const WindowGeometry& g) {
  using simd::Packet;
  auto load = [lanes](const float* p) { return partial ? simd::load_partial(p, lanes) : simd::load(p); };
  const float *o0 = orows[0] + c, *o1 = orows[1] + c, *o2 = orows[2] + c, *in = irow + c;
  const int64_t pad = g.pad_left, in_w = g.in_w, out_w = g.out_w;
  auto column = [&](int64_t iw) { return iw < 0 || iw >= in_w ? simd::zero() : load(in + iw * C); };
  // Two sets of nine sums (even and odd pixels) where 32 registers hold them: each chain then
  // waits for its previous FMA every other pixel, not every pixel.
  constexpr int sets = simd::registers >= 32 ? 2 : 1;
  Packet a[sets][9];
  for (int s = 0; s < sets; ++s)
#pragma GCC unroll 9
    for (int k = 0; k < 9; ++k) a[s][k] = simd::zero();
  Packet l = column(-pad), m = column(1 - pad);
  auto step = [&](Packet (&sum)[9], int64_t ow, const Packet& r) {
    const Packet d0 = load(o0 + ow * C), d1 = load(o1 + ow * C), d2 = load(o2 + ow * C);
    sum[0] = simd::fmadd(d0, l, sum[0]);
    sum[1] = simd::fmadd(d0, m, sum[1]);
    sum[2] = simd::fmadd(d0, r, sum[2]);
    sum[3] = simd::fmadd(d1, l, sum[3]);
    sum[4] = simd::fmadd(d1, m, sum[4]);
    sum[5] = simd::fmadd(d1, r, sum[5]);
    sum[6] = simd::fmadd(d2, l, sum[6]);
    sum[7] = simd::fmadd(d2, m, sum[7]);
    sum[8] = simd::fmadd(d2, r, sum[8]);
    l = m;
    m = r;
  };
  // Pixels whose right column ow - pad + 2 lies inside the row load it without a check.
  const int64_t inside_begin = std::min(out_w, std::max<int64_t>(0, pad - 2));
  const int64_t inside_end = std::max(inside_begin, std::min(out_w, in_w + pad - 2));
  int64_t ow = 0;
  for (; ow < inside_begin; ++ow) step(a[0], ow, column(ow - pad + 2));
  if constexpr (sets == 2) {
    for (; ow + 2 <= inside_end; ow += 2) {
      step(a[0], ow, load(in + (ow - pad + 2) * C));
      step(a[1], ow + 1, load(in + (ow - pad + 3) * C));
    }
  }
  for (; ow < inside_end; ++ow) step(a[0], ow, load(in + (ow - pad + 2) * C));
  for (; ow < out_w; ++ow) step(a[0], ow, column(ow - pad + 2));
#pragma GCC unroll 9
  for (int k = 0; k < 9; ++k) {
    Packet total = a[0][k];
    if constexpr (sets == 2) total = simd::add(total, a[1][k]);
    float* dst = acc + k * C + c;
    if (partial)
      simd::store_partial(dst, simd::add(load(dst), total), lanes);
    else
      simd::store(dst, simd::add(load(dst), total));
  }
}

// All channels of the above: acc (9 x C floats) += the weight gradient of input row irow (row ih
// of its image), whose output-gradient rows come from dout_row(oh); rows outside the image read
// `zero` (at least out_w * C zeros, shared read-only by the threads).
template <typename DoutRow>
inline void depthwise3x3_s1_weight_grad_rows(float* acc, const float* irow, int64_t ih, const WindowGeometry& g,
                                             const float* zero, DoutRow&& dout_row) {
  const float* orows[3];
  for (int64_t kh = 0; kh < 3; ++kh) {
    const int64_t oh = ih + g.pad_top - kh;
    orows[kh] = oh < 0 || oh >= g.out_h ? zero : dout_row(oh);
  }
  const int64_t C = g.in_c;
  int64_t c = 0;
  for (; c + simd::width <= C; c += simd::width)
    depthwise3x3_s1_weight_grad_channels<false>(acc, orows, irow, C, c, simd::width, g);
  if (c < C) depthwise3x3_s1_weight_grad_channels<true>(acc, orows, irow, C, c, static_cast<int>(C - c), g);
}

// The input gradient of a stride-2 3x3 depthwise convolution (pad_left 0 or 1) for one input row
// and one channel packet at c, gathered: the row is fed by `rows` (0-2) output rows, orows[r]
// through kernel row kh[r]. Input column iw = 2q - pad_left + kw' pairs up as: even offset
// (2q - pad_left) reads output columns q (kw 0) and q - 1 (kw 2), odd offset (2q + 1 - pad_left)
// reads q (kw 1). Sliding over q keeps output column q - 1 in registers: one load per output row
// and pair of input columns, each written once (no zeroing, no read-modify-write).
template <int rows, bool partial>
inline void depthwise3x3_s2_input_gradient_channels(float* __restrict drow, const float* const* orows, const int* kh,
                                                    const float* __restrict weight, int64_t C, int64_t c, int lanes,
                                                    const WindowGeometry& g) {
  using simd::Packet;
  auto load = [lanes](const float* p) { return partial ? simd::load_partial(p, lanes) : simd::load(p); };
  auto store = [lanes](float* p, const Packet& v) {
    if (partial)
      simd::store_partial(p, v, lanes);
    else
      simd::store(p, v);
  };
  Packet w[rows > 0 ? rows : 1][3], previous[rows > 0 ? rows : 1];
  for (int r = 0; r < rows; ++r) {
    for (int kw = 0; kw < 3; ++kw) w[r][kw] = load(weight + (kh[r] * 3 + kw) * C + c);
    previous[r] = simd::zero();
  }
  const int64_t pad = g.pad_left, in_w = g.in_w, out_w = g.out_w;
  const int64_t pairs = (in_w - 1 + pad) / 2 + 1;
  float* d = drow + c;
  for (int64_t q = 0; q < pairs; ++q) {
    Packet even = simd::zero(), odd = simd::zero();
    for (int r = 0; r < rows; ++r) {
      const Packet current = q < out_w ? load(orows[r] + q * C + c) : simd::zero();
      even = simd::fmadd(current, w[r][0], even);
      even = simd::fmadd(previous[r], w[r][2], even);
      odd = simd::fmadd(current, w[r][1], odd);
      previous[r] = current;
    }
    const int64_t iw_even = 2 * q - pad, iw_odd = iw_even + 1;
    if (iw_even >= 0) store(d + iw_even * C, even);
    if (iw_odd < in_w) store(d + iw_odd * C, odd);
  }
}

// All channels of the above: writes input-gradient row drow.
inline void depthwise3x3_s2_input_gradient_row(float* drow, const float* const* orows, const int* kh, int rows,
                                               const float* weight, const WindowGeometry& g) {
  const int64_t C = g.in_c;
  auto run = [&](auto rows_constant) {
    constexpr int n = decltype(rows_constant)::value;
    int64_t c = 0;
    for (; c + simd::width <= C; c += simd::width)
      depthwise3x3_s2_input_gradient_channels<n, false>(drow, orows, kh, weight, C, c, simd::width, g);
    if (c < C) depthwise3x3_s2_input_gradient_channels<n, true>(drow, orows, kh, weight, C, c, static_cast<int>(C - c), g);
  };
  if (rows == 0)
    run(std::integral_constant<int, 0>{});
  else if (rows == 1)
    run(std::integral_constant<int, 1>{});
  else
    run(std::integral_constant<int, 2>{});
}

// The stride-2 3x3 gather above applies (at most two kernel rows reach an input row).
inline bool stride2_gather_applies(const WindowGeometry& g) {
  return g.kernel_h == 3 && g.kernel_w == 3 && g.stride_h == 2 && g.stride_w == 2 && g.pad_left <= 1;
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
// Built on the calling thread; rows() is then safe to call from every thread.
class Stride1InputGradient {
 public:
  static bool applies(const WindowGeometry& g) {
    return g.kernel_h == 3 && g.kernel_w == 3 && g.stride_h == 1 && g.stride_w == 1;
  }
  Stride1InputGradient(const float* weight, const WindowGeometry& g) : t_(g) {
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
  // Writes the input-gradient rows [begin, end) (row r: image r / in_h, row r % in_h) to
  // din_row(r), with the output-gradient rows from dout_row(n, oh), which must keep four rows
  // valid at once (rows go in pairs, see depthwise3x3_output_rows); then done(r) for each row, in
  // order.
  template <typename DinRow, typename DoutRow, typename Done = void (*)(int64_t)>
  void rows(
      DinRow&& din_row, int64_t begin, int64_t end, DoutRow&& dout_row, Done&& done = [](int64_t) {}) const {
    depthwise3x3_output_rows(begin, end, din_row, dout_row, zero_, rotated_, zero_, t_, Clamp{}, done);
  }

 private:
  WindowGeometry t_;  // the geometry of dout -> din
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
    parallel_chunks(rows, work, [&](int64_t begin, int64_t end, int) {
      detail::depthwise3x3_output_rows(
          begin, end, [&](int64_t r) { return out + r * g.out_w * C; },
          [&](int64_t n, int64_t ih) { return in + (n * g.in_h + ih) * g.in_w * C; }, zero, weight, b, g, clamp);
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
    const detail::Stride1InputGradient gradient(weight, g);
    parallel_chunks(rows, work, [&](int64_t begin, int64_t end, int) {
      gradient.rows([&](int64_t r) { return din + r * g.in_w * C; }, begin, end,
                    [&](int64_t n, int64_t oh) { return dout + (n * g.out_h + oh) * g.out_w * C; });
    });
    return;
  }
  if (detail::stride2_gather_applies(g)) {
    parallel_for(rows, rows * work, [&](int64_t r) {
      const int64_t n = r / g.in_h, ih = r % g.in_h;
      const float* orows[2];
      int kh[2], count = 0;
      for (int k = 0; k < 3; ++k) {
        const int64_t oh_s = ih + g.pad_top - k;
        if (oh_s < 0 || oh_s % 2 || oh_s / 2 >= g.out_h) continue;
        orows[count] = dout + (n * g.out_h + oh_s / 2) * g.out_w * C;
        kh[count++] = k;
      }
      detail::depthwise3x3_s2_input_gradient_row(din + r * g.in_w * C, orows, kh, count, weight, g);
    });
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
// Partial sums per chunk of output rows, reduced in chunk order (deterministic).
inline void depthwise_conv2d_backward_weight(float* dweight, float* dbias, const float* dout, const float* in,
                                             const WindowGeometry& g) {
  const int64_t C = g.in_c, taps = g.kernel_h * g.kernel_w, rows = g.batch * g.out_h;
  const int64_t stride = (taps + 1) * C;  // per chunk: taps weight rows then the bias row
  // Stride-1 3x3 weight gradients go over input rows (each feeds three output rows, one
  // register-blocked sweep); other geometries over output rows. With at most one padding row
  // above and below, each output row is the middle row (kh = 1) of exactly one input row, which
  // then also adds it to the bias gradient.
  const int64_t pad_bottom = g.out_h - g.in_h - g.pad_top + 2;
  const bool by_input_rows =
      detail::Stride1InputGradient::applies(g) && dweight && g.pad_top <= 1 && pad_bottom <= 1;
  const int64_t items = by_input_rows ? g.batch * g.in_h : rows;
  const int64_t work = (by_input_rows ? g.in_w : g.out_w) * C * taps;
  const int chunks = chunks_for(items, work);
  float* partial = scratch<float>(static_cast<size_t>(chunks * stride));
  std::fill_n(partial, chunks * stride, 0.0f);
  const float* zero = by_input_rows ? detail::zeros(std::max<int64_t>(g.out_w, 1) * C) : nullptr;
  parallel_chunks(items, work, [&](int64_t begin, int64_t end, int t) {
    float* pw = partial + t * stride;
    float* pb = pw + taps * C;
    for (int64_t r = begin; r < end; ++r) {
      if (by_input_rows) {
        const int64_t n = r / g.in_h, ih = r % g.in_h;
        auto dout_row = [&](int64_t oh) { return dout + (n * g.out_h + oh) * g.out_w * C; };
        detail::depthwise3x3_s1_weight_grad_rows(pw, in + r * g.in_w * C, ih, g, zero, dout_row);
        const int64_t middle = ih + g.pad_top - 1;  // the output row this input row centres
        if (dbias && middle >= 0 && middle < g.out_h) {
          const float* centre = dout_row(middle);
          for (int64_t ow = 0; ow < g.out_w; ++ow)
            for (int64_t c = 0; c < C; ++c) pb[c] += centre[ow * C + c];
        }
        continue;
      }
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
  for (int b = 0; b < chunks; ++b) {
    const float* p = partial + b * stride;
    if (dweight)
      for (int64_t j = 0; j < taps * C; ++j) dweight[j] += p[j];
    if (dbias)
      for (int64_t c = 0; c < C; ++c) dbias[c] += p[taps * C + c];
  }
}

}  // namespace eigennet::kernels
