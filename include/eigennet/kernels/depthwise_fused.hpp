// Depthwise convolution kernels fused with the batch-norm work around them in an inverted
// residual block (see layers/inverted_residual.hpp):
//   forward:  the convolution also accumulates its output's per-channel sum and sum of squares
//             while each output row is still in cache (no separate statistics pass);
//   backward: one sweep over input rows computes the input gradient and the weight gradient
//             (both read the same output-gradient rows), then masks the input gradient by the
//             ReLU6 below and accumulates that BatchNorm's backward sums, again per row in cache.
#pragma once

#include <algorithm>
#include <cstring>
#include <optional>

#include "batch_norm_act.hpp"
#include "depthwise_conv2d.hpp"
#include "pointwise_engine.hpp"

namespace eigennet::kernels {

// v -> relu6(v * scale + shift) per channel: a BatchNorm (with given coefficients) + ReLU6.
struct Relu6Affine {
  const float* scale = nullptr;
  const float* shift = nullptr;
};

namespace detail {
// s[c] += sum (x - shift[c]), ss[c] += sum (x - shift[c])^2 over one row of `pixels` pixels of
// C channels: a channel packet at a time, summed in float registers along the row (two
// accumulators: even and odd pixels) and added to the double totals once per row.
__attribute__((noinline)) inline void accumulate_row_statistics(double* __restrict s, double* __restrict ss,
                                                                const float* __restrict row,
                                                                const float* __restrict shift, int64_t pixels,
                                                                int64_t channels) {
  using simd::Packet;
  simd::for_each_packet(channels, [&](int64_t c, int lanes) {
    const Packet sh = simd::load_partial(shift + c, lanes);
    Packet a0 = simd::zero(), a1 = simd::zero(), b0 = simd::zero(), b1 = simd::zero();
    int64_t p = 0;
    for (; p + 2 <= pixels; p += 2) {
      const Packet d0 = simd::sub(simd::load_partial(row + p * channels + c, lanes), sh);
      const Packet d1 = simd::sub(simd::load_partial(row + (p + 1) * channels + c, lanes), sh);
      a0 = simd::add(a0, d0);
      b0 = simd::fmadd(d0, d0, b0);
      a1 = simd::add(a1, d1);
      b1 = simd::fmadd(d1, d1, b1);
    }
    if (p < pixels) {
      const Packet d0 = simd::sub(simd::load_partial(row + p * channels + c, lanes), sh);
      a0 = simd::add(a0, d0);
      b0 = simd::fmadd(d0, d0, b0);
    }
    add_packet_sums(s, ss, simd::add(a0, a1), simd::add(b0, b1), nullptr, c, lanes);
  });
}

// Asks the cache for `floats` floats from p (a row that a sweep reads next), line by line.
inline void prefetch_row(const float* p, int64_t floats) {
  for (int64_t i = 0; i < floats; i += 64 / static_cast<int64_t>(sizeof(float))) __builtin_prefetch(p + i, 0, 3);
}

// The last few transformed input rows of one chunk of rows: with stride 1 consecutive output
// rows share two of their three input rows, so each input row is transformed about once. Holds
// kernel_h + 1 rows: a pair of output rows (depthwise3x3_row_pair) reads four at once.
class TransformedRows {
 public:
  TransformedRows(const float* source, const Relu6Affine* transform, const WindowGeometry& g)
      : source_(source), transform_(transform), row_len_(g.in_w * g.in_c), in_h_(g.in_h), c_(g.in_c),
        pixels_(g.in_w), rows_(g.batch * g.in_h), slots_(static_cast<int>(std::min<int64_t>(g.kernel_h + 1, 8))) {
    if (transform_) buffer_ = scratch<float, 7>(static_cast<size_t>(slots_ * row_len_));
    for (int k = 0; k < 8; ++k) tag_[k] = -1;
  }
  // Input row (n, ih), transformed when a transform is set.
  const float* row(int64_t n, int64_t ih) {
    const int64_t index = n * in_h_ + ih;
    const float* src = source_ + index * row_len_;
    if (!transform_) return src;
    const int slot = static_cast<int>(index % slots_);
    float* dst = buffer_ + slot * row_len_;
    if (tag_[slot] != index) {
      affine_act_rows<Activation::relu6>(dst, src, transform_->scale, transform_->shift, pixels_, c_);
      tag_[slot] = index;
      // The next row is usually the next one needed: ask for it while this one is used.
      if (index + 1 < rows_) prefetch_row(src + row_len_, row_len_);
    }
    return dst;
  }

 private:
  const float* source_;
  const Relu6Affine* transform_;
  int64_t row_len_, in_h_, c_, pixels_, rows_;
  int slots_;
  float* buffer_ = nullptr;
  int64_t tag_[8];
};
}  // namespace detail

// out = depthwise(input) (no bias), where input = in, or relu6(in * scale + shift) with an
// input_transform: the expand BatchNorm + ReLU6 applied on the fly, so that activation is never
// stored. With an output_transform, out receives relu6(depthwise * scale + shift) (inference:
// the depthwise BatchNorm + ReLU6 in the same sweep). When mean/variance are given (training, no
// output transform), also the output's per-channel mean and biased variance, accumulated around
// the first output pixel (see channel_statistics for why a shift): in float along each output
// row, in double across rows.
inline void depthwise_conv2d_forward_fused(float* out, const float* in, const float* weight, const WindowGeometry& g,
                                           const Relu6Affine* input_transform, const Relu6Affine* output_transform,
                                           float* mean, float* variance) {
  const int64_t C = g.in_c, rows = g.batch * g.out_h, row_len = g.out_w * C;
  const int64_t work = row_len * g.kernel_h * g.kernel_w;
  const bool stats = mean != nullptr;
  EIGENNET_CHECK(!(stats && output_transform), "depthwise_conv2d_forward_fused: statistics need the raw output");
  float* shift = stats ? scratch<float, 6>(static_cast<size_t>(C)) : nullptr;
  if (stats) {
    detail::TransformedRows first(in, input_transform, g);
    std::fill_n(shift, C, 0.0f);
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t ih = kh - g.pad_top;
      if (ih < 0 || ih >= g.in_h) continue;
      const float* irow = first.row(0, ih);
      for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
        const int64_t iw = kw - g.pad_left;
        if (iw < 0 || iw >= g.in_w) continue;
        const float* wk = weight + (kh * g.kernel_w + kw) * C;
        for (int64_t c = 0; c < C; ++c) shift[c] += irow[iw * C + c] * wk[c];
      }
    }
  }
  const bool three_by_three = g.kernel_h == 3 && g.kernel_w == 3;
  // Read-only zeros shared by the threads: padding rows and the (absent) bias.
  const float* zero = three_by_three ? detail::zeros(std::max(g.in_w, int64_t{1}) * C) : nullptr;
  const int chunks = chunks_for(rows, work);
  ChannelSums sums(chunks, 2, stats ? C : 0);
  parallel_chunks(rows, work, [&](int64_t begin, int64_t end, int t) {
    double* s = stats ? sums.block(t, 0) : nullptr;
    double* ss = stats ? sums.block(t, 1) : nullptr;
    detail::TransformedRows input(in, input_transform, g);
    // The row's output transform and statistics, once the row is written.
    auto finish = [&](int64_t r) {
      float* orow = out + r * row_len;
      if (output_transform)
        detail::affine_act_rows<Activation::relu6>(orow, orow, output_transform->scale, output_transform->shift, g.out_w,
                                                   C);
      if (stats) detail::accumulate_row_statistics(s, ss, orow, shift, g.out_w, C);
    };
    if (three_by_three) {
      detail::depthwise3x3_output_rows(
          begin, end, [&](int64_t r) { return out + r * row_len; },
          [&](int64_t n, int64_t ih) { return input.row(n, ih); }, zero, weight, zero, g, Clamp{}, finish);
      return;
    }
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / g.out_h, oh = r % g.out_h;
      float* orow = out + r * row_len;
      std::memset(orow, 0, static_cast<size_t>(row_len) * sizeof(float));
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        const int64_t ih = oh * g.stride_h - g.pad_top + kh;
        if (ih < 0 || ih >= g.in_h) continue;
        const float* irow = input.row(n, ih);
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
      finish(r);
    }
  });
  if (!stats) return;
  double* total = scratch<double, 3>(static_cast<size_t>(2 * C));
  sums.reduce(0, total);
  sums.reduce(1, total + C);
  const double count = static_cast<double>(rows * g.out_w);
  for (int64_t c = 0; c < C; ++c) {
    const double mu = total[c] / count;
    mean[c] = static_cast<float>(mu + shift[c]);
    variance[c] = static_cast<float>(std::max(0.0, total[C + c] / count - mu * mu));
  }
}

// The BatchNorm after the depthwise convolution, for the fused backward: the output gradient the
// sweep receives is that BatchNorm's dz, and the sweep applies its backward row by row,
// dD = k * (dz - a - (x - mean) * b) (see batch_norm_act.hpp), instead of a separate pass.
struct AboveBatchNorm {
  const float* x = nullptr;  // that BatchNorm's input (the depthwise output D)
  const float* mean = nullptr;
  const float* k = nullptr;
  const float* a = nullptr;
  const float* b = nullptr;
};

namespace detail {
// dst = k * (dz - a - (x - mean) * b) over one row of `pixels` pixels of C channels, a channel
// packet at a time with the coefficients in registers (the operations of
// batch_norm_act_backward_apply, in its order).
__attribute__((noinline)) inline void batch_norm_backward_row(float* __restrict dst, const float* __restrict dz,
                                                              const float* __restrict x, const AboveBatchNorm& bn,
                                                              int64_t pixels, int64_t channels) {
  using simd::Packet;
  simd::for_each_packet(channels, [&](int64_t c, int lanes) {
    const Packet mean = simd::load_partial(bn.mean + c, lanes), k = simd::load_partial(bn.k + c, lanes);
    const Packet a = simd::load_partial(bn.a + c, lanes), b = simd::load_partial(bn.b + c, lanes);
    for (int64_t p = 0; p < pixels; ++p) {
      const int64_t i = p * channels + c;
      const Packet centred = simd::sub(simd::load_partial(x + i, lanes), mean);
      const Packet inner = simd::sub(simd::sub(simd::load_partial(dz + i, lanes), a), simd::mul(centred, b));
      simd::store_partial(dst + i, simd::mul(k, inner), lanes);
    }
  });
}

// The output-gradient rows of one chunk of rows, transformed by an AboveBatchNorm when there is
// one; the last few are kept, so each row is transformed about once per chunk.
class DoutRows {
 public:
  DoutRows(const float* dout, const AboveBatchNorm* above, const WindowGeometry& g)
      : dout_(dout), above_(above), row_len_(g.out_w * g.in_c), out_h_(g.out_h), pixels_(g.out_w), c_(g.in_c),
        rows_(g.batch * g.out_h) {
    if (above_) buffer_ = scratch<float, 9>(static_cast<size_t>(slots * row_len_));
    for (int k = 0; k < slots; ++k) tag_[k] = -1;
  }
  const float* row(int64_t n, int64_t oh) {
    const int64_t index = n * out_h_ + oh;
    const float* src = dout_ + index * row_len_;
    if (!above_) return src;
    const int slot = static_cast<int>(index % slots);
    float* dst = buffer_ + slot * row_len_;
    if (tag_[slot] != index) {
      batch_norm_backward_row(dst, src, above_->x + index * row_len_, *above_, pixels_, c_);
      tag_[slot] = index;
      if (index + 1 < rows_) {  // as TransformedRows: the next row is usually the next one needed
        prefetch_row(src + row_len_, row_len_);
        prefetch_row(above_->x + (index + 1) * row_len_, row_len_);
      }
    }
    return dst;
  }

 private:
  static constexpr int slots = 4;
  const float* dout_;
  const AboveBatchNorm* above_;
  int64_t row_len_, out_h_, pixels_, c_, rows_;
  float* buffer_ = nullptr;
  int64_t tag_[slots];
};
}  // namespace detail

// The BatchNorm + ReLU6 that produced the depthwise input, for the fused backward.
struct BelowBatchNormRelu6 {
  const float* x = nullptr;  // that BatchNorm's input (pre-normalization)
  const float* mean = nullptr;
  const float* inv_std = nullptr;
  double* s1 = nullptr;  // out: sum dz           (dz = din * relu6'(in))
  double* s2 = nullptr;  // out: sum dz * x_hat
};

namespace detail {
// dz = d * relu6'(y) in place over one row of `pixels` pixels of C channels, and the sums of the
// BatchNorm below: s1[c] += sum dz, s2[c] += inv_std[c] * sum dz * (x - mean[c]). A channel packet
// at a time, summed in float registers along the row and added to the double totals once per row.
__attribute__((noinline)) inline void mask_relu6_and_accumulate_row(float* __restrict d, const float* __restrict y,
                                                                    const float* __restrict x,
                                                                    const BelowBatchNormRelu6& below, double* s1,
                                                                    double* s2, int64_t pixels, int64_t channels) {
  using simd::Packet;
  const Packet zero = simd::zero(), six = simd::set1(6.0f);
  simd::for_each_packet(channels, [&](int64_t c, int lanes) {
    const Packet mean = simd::load_partial(below.mean + c, lanes);
    Packet a = simd::zero(), b = simd::zero();
    for (int64_t p = 0; p < pixels; ++p) {
      const int64_t i = p * channels + c;
      const Packet yv = simd::load_partial(y + i, lanes);
      const Packet dz =
          simd::select(simd::both(simd::less(zero, yv), simd::less(yv, six)), simd::load_partial(d + i, lanes), zero);
      simd::store_partial(d + i, dz, lanes);
      a = simd::add(a, dz);
      b = simd::fmadd(dz, simd::sub(simd::load_partial(x + i, lanes), mean), b);
    }
    add_packet_sums(s1, s2, a, b, below.inv_std, c, lanes);
  });
}
}  // namespace detail

// The expand 1x1 convolution E = X We under that BatchNorm + ReLU6, for a backward that never
// reads dE = bn'(dz) back from memory. dE = k dz - k a - k b (E - mean) (batch_norm_act.hpp),
// where only k = gamma * inv_std is known during the sweep (a and b need the sums the sweep is
// accumulating), so each masked row of dz, while in cache, feeds the terms that need only k:
//   dX rows = dz (diag(k) We^T) (+ the skip gradient), and X^T dz;
// and the sweep also sums the scatter of X around its first row x0. expand_backward_finish then
// adds the terms in a and b: to dX, X M + u (M [in_c, in_c], u [in_c]); to dWe, from X^T dz and
// the scatter (X^T E = X^T X We: no pass over E or dE).
struct ExpandBelow {
  const float* x = nullptr;  // X [pixels, in_c]
  int64_t in_c = 0;
  const float* weight = nullptr;  // We [in_c, e]
  const float* k = nullptr;       // [e]: gamma * inv_std of the BatchNorm between E and A
  float* dx = nullptr;            // [pixels, in_c], or null (no input gradient)
  const float* skip = nullptr;    // [pixels, in_c] added to dx (a skip connection), or null
  // Out, when not null (the weight gradient is wanted): X^T dz [in_c, e], and around x0 = X's
  // first row, sum (x - x0) (x - x0)^T [in_c, in_c] and sum (x - x0) [in_c].
  float* xt_dz = nullptr;
  double* scatter = nullptr;
  double* shifted_sum = nullptr;
};

namespace detail {
// ExpandBelow's work in one chunk of a sweep, by runs of consecutive input rows [first, last)
// whose dz is final: one product per run over its pixels (rows of dz [., e] and of X [., in_c]).
class ExpandBelowRows {
 public:
  ExpandBelowRows(const ExpandBelow& expand, const pointwise::Packed& wk, int64_t e, int64_t in_w, float* xt_dz,
                  double* scatter)
      : expand_(expand), wk_(wk), e_(e), in_w_(in_w), xt_dz_(xt_dz), scatter_(scatter), run_rows_(run_rows(in_w)) {}

  // Input rows per run: about 192 pixels, whose dz stays in L2.
  static int64_t run_rows(int64_t in_w) { return std::max<int64_t>(1, 192 / std::max<int64_t>(in_w, 1)); }

  // Input row r's dz is final, at dz_row(r): rows go in order within a chunk, and the rows of
  // one run (run_rows() rows from the chunk's first) must be consecutive in memory.
  template <typename DzRow>
  void row_done(int64_t r, DzRow&& dz_row) {
    if (r != last_) flush(dz_row);
    if (first_ == last_) first_ = last_ = r;
    ++last_;
    if (last_ - first_ >= run_rows_) flush(dz_row);
  }

  template <typename DzRow>
  void flush(DzRow&& dz_row) {
    if (first_ == last_) return;
    const int64_t c = expand_.in_c, p0 = first_ * in_w_, pixels = (last_ - first_) * in_w_;
    const float* dz = dz_row(first_);
    const float* x = expand_.x + p0 * c;
    if (expand_.dx) {
      pointwise::Epilogue skip;
      if (expand_.skip) {
        skip.residual = expand_.skip + p0 * c;
        skip.ld_residual = c;
      }
      pointwise::multiply_rows(expand_.dx + p0 * c, c, dz, e_, pixels, 0, pixels, wk_, 0, pointwise::panel_count(c),
                               skip);
    }
    if (xt_dz_) {
      pointwise::accumulate_transposed(xt_dz_, pointwise::panel_count(e_) * pointwise::panel_width, x, c, dz, e_,
                                       pixels, c, e_);
      // The scatter in float over this run, added in double: d = x - x0, sum d d^T and sum d.
      const int64_t width = pointwise::panel_count(c) * pointwise::panel_width, kp = pointwise::transposed_rows(c);
      float* d = aligned_scratch<39>(static_cast<size_t>(pixels * c));
      float* run = aligned_scratch<40>(static_cast<size_t>(kp * width));
      const float* x0 = expand_.x;
      double* sum = scatter_ + c * c;
      for (int64_t p = 0; p < pixels; ++p)
        for (int64_t j = 0; j < c; ++j) {
          d[p * c + j] = x[p * c + j] - x0[j];
          sum[j] += d[p * c + j];
        }
      std::fill_n(run, kp * width, 0.0f);
      pointwise::accumulate_transposed(run, width, d, c, d, c, pixels, c, c);
      for (int64_t i = 0; i < c; ++i)
        for (int64_t j = 0; j < c; ++j) scatter_[i * c + j] += run[i * width + j];
    }
    first_ = last_;
  }

 private:
  const ExpandBelow& expand_;
  const pointwise::Packed& wk_;
  int64_t e_, in_w_;
  float* xt_dz_;     // this chunk's X^T dz [transposed_rows(in_c), whole panels of e]
  double* scatter_;  // this chunk's scatter [in_c, in_c], then its sum [in_c]
  int64_t run_rows_;
  int64_t first_ = -1, last_ = -1;
};
}  // namespace detail

namespace detail {
// Input rows whose weight-gradient terms are summed in float before they are added in double:
// converting and adding taps x C doubles after every row is about a fifth of the operations of
// the row's convolution.
constexpr int weight_rows_in_float = 4;
}  // namespace detail

// One sweep over input rows: din = depthwise input gradient (gather, no write conflicts),
// dweight += weight gradient (per-chunk partials reduced in order; null to skip). The
// depthwise input is `in`, or relu6(in * scale + shift) recomputed row by row with an
// input_transform (as in the forward). With `below`, din is replaced by
// dz = din * relu6'(input) and below's sums are accumulated; with `expand` too (in = E), each row
// of dz feeds the expand convolution's gradients instead (see ExpandBelow; din is not written
// and may be null), and the caller finishes them with expand_backward_finish.
inline void depthwise_conv2d_backward_fused(float* din, float* dweight, const float* dout, const float* in,
                                            const float* weight, const WindowGeometry& g,
                                            const Relu6Affine* input_transform, const BelowBatchNormRelu6* below,
                                            const AboveBatchNorm* above = nullptr,
                                            const ExpandBelow* expand = nullptr) {
  EIGENNET_CHECK(!expand || below, "depthwise_conv2d_backward_fused: the expand convolution's gradients need `below`");
  const int64_t C = g.in_c, taps = g.kernel_h * g.kernel_w, rows = g.batch * g.in_h, row_len = g.in_w * C;
  const int64_t work = row_len * taps;
  const int chunks = chunks_for(rows, work);
  // Weight gradient: float sums over runs of weight_rows_in_float input rows of a chunk, double
  // across runs and chunks.
  double* partial = dweight ? scratch<double, 4>(static_cast<size_t>(chunks * taps * C)) : nullptr;
  if (partial) std::fill_n(partial, chunks * taps * C, 0.0);
  ChannelSums sums(chunks, 2, below ? C : 0);
  // Stride-1 3x3: the input gradient as a forward convolution (see Stride1InputGradient).
  std::optional<detail::Stride1InputGradient> stride1;
  if (detail::Stride1InputGradient::applies(g)) stride1.emplace(weight, g);
  // Read-only zeros shared by the threads: output rows outside the image (stride-1 weight gradient).
  const float* zero_row = stride1 ? detail::zeros(std::max<int64_t>(g.out_w, 1) * C) : nullptr;
  // Stride-2 3x3: the input gradient gathered from the (at most two) output rows of each input row.
  const bool gather2 = !stride1 && detail::stride2_gather_applies(g);
  // ExpandBelow: diag(k) We^T packed for dX, and per-chunk partials of X^T dz and the scatter.
  const int64_t in_c = expand ? expand->in_c : 0;
  const int64_t xt_rows = pointwise::transposed_rows(in_c),
                xt_width = pointwise::panel_count(C) * pointwise::panel_width;
  const bool expand_weight = expand && expand->xt_dz;
  pointwise::Packed wk;
  if (expand && expand->dx) {
    float* scaled = scratch<float, 13>(static_cast<size_t>(in_c * C));
    for (int64_t i = 0; i < in_c; ++i)
      for (int64_t j = 0; j < C; ++j) scaled[i * C + j] = expand->weight[i * C + j] * expand->k[j];
    wk = pointwise::pack_to_scratch<41>(scaled, C, in_c, true);
  }
  float* xt_partial = expand_weight ? aligned_scratch<38>(static_cast<size_t>(chunks * xt_rows * xt_width)) : nullptr;
  double* scatter_partial =
      expand_weight ? scratch<double, 11>(static_cast<size_t>(chunks * (in_c + 1) * in_c)) : nullptr;
  if (expand_weight) {
    std::fill_n(xt_partial, chunks * xt_rows * xt_width, 0.0f);
    std::fill_n(scatter_partial, chunks * (in_c + 1) * in_c, 0.0);
  }
  parallel_chunks(rows, work, [&](int64_t begin, int64_t end, int chunk) {
    std::optional<detail::ExpandBelowRows> expand_rows;
    if (expand)
      expand_rows.emplace(*expand, wk, C, g.in_w, expand_weight ? xt_partial + chunk * xt_rows * xt_width : nullptr,
                          expand_weight ? scatter_partial + chunk * (in_c + 1) * in_c : nullptr);
    double* pw_total = partial ? partial + chunk * taps * C : nullptr;
    float* pw = partial ? scratch<float, 5>(static_cast<size_t>(taps * C)) : nullptr;
    if (pw) std::fill_n(pw, taps * C, 0.0f);
    int rows_in_pw = 0;  // input rows summed in pw since it was last added to pw_total
    auto flush_pw = [&] {
      for (int64_t j = 0; j < taps * C; ++j) pw_total[j] += pw[j];
      std::fill_n(pw, taps * C, 0.0f);
      rows_in_pw = 0;
    };
    double* sa = below ? sums.block(chunk, 0) : nullptr;
    double* sb = below ? sums.block(chunk, 1) : nullptr;
    detail::TransformedRows input(in, input_transform, g);
    detail::DoutRows output_gradient(dout, above, g);
    // With ExpandBelow the rows of dz are used up by it: they go round a ring of two runs of rows
    // (the next run's rows are written while the last of a run is still read: stride-1 pairs)
    // that stays in L2, instead of into din.
    const int64_t ring_rows = expand ? 2 * detail::ExpandBelowRows::run_rows(g.in_w) : 0;
    float* ring = expand ? aligned_scratch<43>(static_cast<size_t>(ring_rows * row_len)) : nullptr;
    auto din_row = [&](int64_t r) { return ring ? ring + (r - begin) % ring_rows * row_len : din + r * row_len; };
    // Input row r's work; with stride 1 its input gradient is already written (rows go in pairs).
    auto input_row = [&](int64_t r) {
      const int64_t n = r / g.in_h, ih = r % g.in_h;
      float* drow = din_row(r);
      const float* irow = input.row(n, ih);
      if (!stride1 && !gather2) std::memset(drow, 0, static_cast<size_t>(row_len) * sizeof(float));
      const float* gather_rows[2];
      int gather_kh[2], gathered = 0;
      if (stride1 && pw) {
        // The three output rows this input row feeds, in one register-blocked sweep.
        detail::depthwise3x3_s1_weight_grad_rows(pw, irow, ih, g, zero_row,
                                                 [&](int64_t oh) { return output_gradient.row(n, oh); });
      }
      for (int64_t kh = 0; kh < (stride1 ? 0 : g.kernel_h); ++kh) {
        const int64_t oh_s = ih + g.pad_top - kh;
        if (oh_s < 0 || oh_s % g.stride_h) continue;
        const int64_t oh = oh_s / g.stride_h;
        if (oh >= g.out_h) continue;
        const float* orow = output_gradient.row(n, oh);
        if (pw) detail::depthwise_weight_grad_row(pw + kh * g.kernel_w * C, orow, irow, g);
        if (gather2) {
          gather_rows[gathered] = orow;
          gather_kh[gathered++] = static_cast<int>(kh);
          continue;
        }
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
      if (gather2) detail::depthwise3x3_s2_input_gradient_row(drow, gather_rows, gather_kh, gathered, weight, g);
      if (pw && ++rows_in_pw == detail::weight_rows_in_float) flush_pw();
      // Mask by the ReLU6 that produced `in` and accumulate the BatchNorm sums below.
      if (below) detail::mask_relu6_and_accumulate_row(drow, irow, below->x + r * row_len, *below, sa, sb, g.in_w, C);
      if (expand_rows) expand_rows->row_done(r, din_row);
    };
    if (stride1) {
      // DoutRows holds the four output-gradient rows a pair of input rows reads.
      stride1->rows(
          din_row, begin, end, [&](int64_t n, int64_t oh) { return output_gradient.row(n, oh); }, input_row);
    } else {
      for (int64_t r = begin; r < end; ++r) input_row(r);
    }
    if (pw && rows_in_pw) flush_pw();
    if (expand_rows) expand_rows->flush(din_row);
  });
  if (expand_weight) {
    // Partials added in chunk order (deterministic for any thread count).
    for (int64_t i = 0; i < in_c; ++i)
      for (int64_t j = 0; j < C; ++j) {
        float total = 0.0f;
        for (int b = 0; b < chunks; ++b) total += xt_partial[(b * xt_rows + i) * xt_width + j];
        expand->xt_dz[i * C + j] = total;
      }
    for (int64_t j = 0; j < (in_c + 1) * in_c; ++j) {
      double total = 0;
      for (int b = 0; b < chunks; ++b) total += scatter_partial[b * (in_c + 1) * in_c + j];
      (j < in_c * in_c ? expand->scatter[j] : expand->shifted_sum[j - in_c * in_c]) = total;
    }
  }
  if (partial)
    for (int64_t j = 0; j < taps * C; ++j) {
      double total = 0;
      for (int b = 0; b < chunks; ++b) total += partial[b * taps * C + j];
      dweight[j] += static_cast<float>(total);
    }
  if (below) {
    sums.reduce(0, below->s1);
    sums.reduce(1, below->s2);
  }
}

// Adds ExpandBelow's terms in the BatchNorm's a and b (known once its sums are, after the
// sweep), for m pixels: dweight [in_c, e] += X^T dE (null to skip) and dx += X M + u.
//   dE = k dz - k a - k b (E - mean), E = X We:
//   X^T dE = (X^T dz) diag(k) - sx (k a)^T - (m Cov(X) We + sx (mu We - mean)^T) diag(k b)
//   dE We^T = dz diag(k) We^T + X M + u,  M = -We diag(k b) We^T,  u = We (k (b mean - a))
// with sx = m mu = X^T 1 and m Cov(X) from the scatter around x0, in double.
inline void expand_backward_finish(float* dweight, const ExpandBelow& expand, int64_t m, int64_t e, const float* mean,
                                   const float* a, const float* b) {
  const int64_t c = expand.in_c;
  const float* w = expand.weight;
  const float* k = expand.k;
  if (dweight) {
    const double* s = expand.shifted_sum;
    double* mu = scratch<double, 12>(static_cast<size_t>(c + c * c + c * e));
    double* cov = mu + c;         // m Cov(X) [c, c]
    double* cov_w = cov + c * c;  // m Cov(X) We [c, e]
    for (int64_t i = 0; i < c; ++i) mu[i] = expand.x[i] + s[i] / static_cast<double>(m);
    for (int64_t i = 0; i < c; ++i)
      for (int64_t l = 0; l < c; ++l) cov[i * c + l] = expand.scatter[i * c + l] - s[i] * s[l] / static_cast<double>(m);
    std::fill_n(cov_w, c * e, 0.0);
    for (int64_t i = 0; i < c; ++i)
      for (int64_t l = 0; l < c; ++l)
        for (int64_t j = 0; j < e; ++j) cov_w[i * e + j] += cov[i * c + l] * w[l * e + j];
    for (int64_t j = 0; j < e; ++j) {
      double mu_w = 0;  // mu We, the mean of E as X's mean gives it
      for (int64_t l = 0; l < c; ++l) mu_w += mu[l] * w[l * e + j];
      const double kj = k[j], kb = static_cast<double>(k[j]) * b[j];
      for (int64_t i = 0; i < c; ++i) {
        const double sx = static_cast<double>(m) * mu[i];
        dweight[i * e + j] += static_cast<float>(kj * expand.xt_dz[i * e + j] - sx * kj * a[j] -
                                                 kb * (cov_w[i * e + j] + sx * (mu_w - mean[j])));
      }
    }
  }
  // A BatchNorm that does not train on its batch statistics (frozen) has a = b = 0: nothing to add.
  const bool batch_terms = std::any_of(a, a + e, [](float v) { return v != 0.0f; }) ||
                           std::any_of(b, b + e, [](float v) { return v != 0.0f; });
  if (expand.dx && batch_terms) {
    float* m_matrix = scratch<float, 14>(static_cast<size_t>(c * c + c));
    float* u = m_matrix + c * c;
    for (int64_t i = 0; i < c; ++i) {
      double ui = 0;
      for (int64_t j = 0; j < e; ++j)
        ui += static_cast<double>(w[i * e + j]) * k[j] * (static_cast<double>(b[j]) * mean[j] - a[j]);
      u[i] = static_cast<float>(ui);
      for (int64_t l = 0; l < c; ++l) {
        double mli = 0;
        for (int64_t j = 0; j < e; ++j) mli -= static_cast<double>(w[l * e + j]) * k[j] * b[j] * w[i * e + j];
        m_matrix[l * c + i] = static_cast<float>(mli);
      }
    }
    const pointwise::Packed packed = pointwise::pack_to_scratch<42>(m_matrix, c, c, false);
    pointwise::Epilogue add;
    add.bias = u;
    add.residual = expand.dx;
    add.ld_residual = c;
    pointwise::multiply(expand.dx, c, expand.x, c, m, packed, add);
  }
}

}  // namespace eigennet::kernels
