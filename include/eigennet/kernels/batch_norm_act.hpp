// Batch normalization fused with an optional ReLU6, as passes over [M, C] buffers. These are
// the memory-bound steps of MobileNetV2; fusing them (and accumulating statistics inside other
// sweeps) removes whole passes over the activations.
//
// Forward:  y = act(x * scale + shift)                      (one read of x, one write of y)
// Backward: dz = dy * act'(y)          (ReLU6: 1 where 0 < y < 6; y is the activation output)
//           s1 = sum dz, s2 = sum dz * (x - mean) * inv_std (per channel, one read pass)
//           dx = k * (dz - a - (x - mean) * b)              (one read pass, one write)
// with k = gamma * inv_std and, in training mode, a = s1 / M, b = inv_std * s2 / M
// (the gradient through the batch statistics); in inference mode a = b = 0.
#pragma once

#include <algorithm>
#include <cmath>

#include "../core/parallel.hpp"
#include "simd.hpp"

namespace eigennet::kernels {

enum class Activation { none, relu6 };

// act'(.) expressed through the activation's output y.
template <Activation act>
inline float activation_mask(float y) {
  if constexpr (act == Activation::relu6)
    return (y > 0.0f && y < 6.0f) ? 1.0f : 0.0f;
  else
    return (void)y, 1.0f;
}

// Per-channel sums accumulated per block of rows (a chunk of parallel_chunks): float within a
// row (short, exact enough), double across rows. Reduced in block order, so results do not
// depend on which thread ran which block.
class ChannelSums {
 public:
  // Prepares `blocks` x `count` x C double accumulators, zeroed (thread-local scratch).
  ChannelSums(int blocks, int count, int64_t channels)
      : blocks_(blocks),
        count_(count),
        c_(channels),
        data_(scratch<double, 1>(static_cast<size_t>(blocks) * count * channels)) {
    std::fill_n(data_, static_cast<int64_t>(blocks) * count * channels, 0.0);
  }
  double* block(int b, int which) { return data_ + (static_cast<int64_t>(b) * count_ + which) * c_; }
  // total[j] = sum over blocks of accumulator `which`.
  void reduce(int which, double* total) {
    for (int64_t j = 0; j < c_; ++j) total[j] = 0;
    for (int b = 0; b < blocks_; ++b) {
      const double* p = block(b, which);
      for (int64_t j = 0; j < c_; ++j) total[j] += p[j];
    }
  }

 private:
  int blocks_, count_;
  int64_t c_;
  double* data_;
};

namespace detail {
// total[j] += x[j] - shift[j], squares[j] += (x[j] - shift[j])^2 over one row, in double.
__attribute__((noinline)) inline void accumulate_shifted_row(double* __restrict total, double* __restrict squares,
                                                             const float* __restrict x, const float* __restrict shift,
                                                             int64_t c) {
  for (int64_t j = 0; j < c; ++j) {
    const double d = static_cast<double>(x[j]) - shift[j];
    total[j] += d;
    squares[j] += d * d;
  }
}
}  // namespace detail

// Mean and biased variance per channel of x [M, C]. Sums are taken around `shift`, a sample of
// each channel (any value near the mean keeps E[d^2] - E[d]^2 free of cancellation when
// |mean| >> std); null means the first row of x. Every value is added in double, so the result
// is the same, up to double rounding, however the rows are split (the fused kernels that
// accumulate these statistics inside other sweeps do the same and agree with this pass).
inline void channel_statistics(float* mean, float* variance, const float* x, int64_t m, int64_t c,
                               const float* shift = nullptr) {
  if (!shift) shift = x;
  ChannelSums sums(chunks_for(m, c), 2, c);
  parallel_chunks(m, c, [&](int64_t begin, int64_t end, int t) {
    double* s = sums.block(t, 0);
    double* ss = sums.block(t, 1);
    for (int64_t r = begin; r < end; ++r) detail::accumulate_shifted_row(s, ss, x + r * c, shift, c);
  });
  double* total = scratch<double, 3>(static_cast<size_t>(2 * c));
  sums.reduce(0, total);
  sums.reduce(1, total + c);
  for (int64_t j = 0; j < c; ++j) {
    const double mu = total[j] / static_cast<double>(m);
    mean[j] = static_cast<float>(mu + shift[j]);
    variance[j] = static_cast<float>(std::max(0.0, total[c + j] / static_cast<double>(m) - mu * mu));
  }
}

namespace detail {
// Rows (pixels) per block of the per-channel passes below: each channel packet goes over a
// block's rows with its coefficients in registers. Blocks of about 256 floats: with few channels
// many rows share the coefficients (1.7-1.9x faster than row by row at 16-24 channels); with
// many, a block is a row or two, read and written nearly in order (blocks of 64 rows, strided
// through memory, measured twice as slow at 96 channels and more).
inline int64_t row_block(int64_t channels) { return std::clamp<int64_t>(256 / std::max<int64_t>(channels, 1), 1, 64); }

// f(j, lanes, r0, r1) for each block [r0, r1) of row_block(c) rows of [begin, end) and, within
// it, each channel packet j (lanes valid) of the c channels.
template <typename F>
inline void for_each_block_packet(int64_t begin, int64_t end, int64_t c, F&& f) {
  const int64_t block = row_block(c);
  for (int64_t r0 = begin; r0 < end; r0 += block) {
    const int64_t r1 = std::min(end, r0 + block);
    simd::for_each_packet(c, [&](int64_t j, int lanes) { f(j, lanes, r0, r1); });
  }
}

// s[j + l] += a[l] and ss[j + l] += b[l] (times b_scale[j + l] when given) for the packet's
// lanes: float sums of a packet added to double totals.
inline void add_packet_sums(double* s, double* ss, const simd::Packet& a, const simd::Packet& b,
                            const float* b_scale, int64_t j, int lanes) {
  alignas(64) float sums[2 * simd::width];
  simd::store(sums, a);
  simd::store(sums + simd::width, b);
  for (int l = 0; l < lanes; ++l) {
    s[j + l] += sums[l];
    ss[j + l] += b_scale ? static_cast<double>(sums[simd::width + l]) * b_scale[j + l] : sums[simd::width + l];
  }
}

// y = act(x * scale + shift) per channel over `pixels` pixels of C channels (y may be x): a
// channel packet at a time, the packet's coefficients in registers, over blocks of pixels that
// stay in L1. One fused multiply-add, then ReLU6 as max then min, whose argument order gives
// std::min(std::max(v, 0), 6) bit for bit (NaN kept). Every BatchNorm + activation of the
// training and inference paths goes through here, so a frozen BatchNorm rounds the same in both.
template <Activation act>
__attribute__((noinline)) void affine_act_rows(float* y, const float* x, const float* scale, const float* shift,
                                               int64_t pixels, int64_t channels) {
  using simd::Packet;
  const Packet zero = simd::zero(), six = simd::set1(6.0f);
  for_each_block_packet(0, pixels, channels, [&](int64_t c, int lanes, int64_t p0, int64_t p1) {
    const Packet sc = simd::load_partial(scale + c, lanes), sh = simd::load_partial(shift + c, lanes);
    for (int64_t p = p0; p < p1; ++p) {
      Packet v = simd::fmadd(simd::load_partial(x + p * channels + c, lanes), sc, sh);
      if constexpr (act == Activation::relu6) v = simd::min(simd::max(v, zero), six);
      simd::store_partial(y + p * channels + c, v, lanes);
    }
  });
}
}  // namespace detail

template <Activation act>
inline void batch_norm_act_forward(float* y, const float* x, const float* scale, const float* shift, int64_t m,
                                   int64_t c) {
  parallel_chunks(m, c, [&](int64_t begin, int64_t end, int) {
    detail::affine_act_rows<act>(y + begin * c, x + begin * c, scale, shift, end - begin, c);
  });
}

// y = x * scale + shift + residual (the projection's BatchNorm fused with the skip connection).
inline void batch_norm_add_forward(float* y, const float* x, const float* scale, const float* shift,
                                   const float* residual, int64_t m, int64_t c) {
  using simd::Packet;
  parallel_chunks(m, c, [&](int64_t begin, int64_t end, int) {
    detail::for_each_block_packet(begin, end, c, [&](int64_t j, int lanes, int64_t r0, int64_t r1) {
      const Packet sc = simd::load_partial(scale + j, lanes), sh = simd::load_partial(shift + j, lanes);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = r * c + j;
        const Packet v = simd::fmadd(simd::load_partial(x + i, lanes), sc, sh);
        simd::store_partial(y + i, simd::add(v, simd::load_partial(residual + i, lanes)), lanes);
      }
    });
  });
}

namespace detail {
// dz = dy * act'(y_act) for one packet at index i.
template <Activation act>
inline simd::Packet masked_gradient(const float* dy, const float* y_act, int64_t i, int lanes) {
  const simd::Packet d = simd::load_partial(dy + i, lanes);
  if constexpr (act == Activation::relu6) {
    const simd::Packet y = simd::load_partial(y_act + i, lanes), zero = simd::zero();
    return simd::select(simd::both(simd::less(zero, y), simd::less(y, simd::set1(6.0f))), d, zero);
  } else {
    return (void)y_act, d;
  }
}
}  // namespace detail

// s1 = sum dz, s2 = sum dz * x_hat with dz = dy * act'(y_act). Float sums over blocks of 32 rows
// (a channel packet at a time, in registers), double across blocks. Results in double.
template <Activation act>
inline void batch_norm_act_backward_sums(double* s1, double* s2, const float* dy, const float* y_act, const float* x,
                                         const float* mean, const float* inv_std, int64_t m, int64_t c) {
  using simd::Packet;
  ChannelSums sums(chunks_for(m, c), 2, c);
  parallel_chunks(m, c, [&](int64_t begin, int64_t end, int t) {
    double* a = sums.block(t, 0);
    double* b = sums.block(t, 1);
    constexpr int64_t block = 32;
    for (int64_t r0 = begin; r0 < end; r0 += block) {
      const int64_t r1 = std::min(end, r0 + block);
      simd::for_each_packet(c, [&](int64_t j, int lanes) {
        const Packet mu = simd::load_partial(mean + j, lanes);
        Packet fa = simd::zero(), fb = simd::zero();
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t i = r * c + j;
          const Packet dz = detail::masked_gradient<act>(dy, y_act, i, lanes);
          fa = simd::add(fa, dz);
          fb = simd::fmadd(dz, simd::sub(simd::load_partial(x + i, lanes), mu), fb);
        }
        detail::add_packet_sums(a, b, fa, fb, inv_std, j, lanes);
      });
    }
  });
  sums.reduce(0, s1);
  sums.reduce(1, s2);
}

// dx = k * (dy * act'(y_act) - a - (x - mean) * b). dx may alias dy (each packet is read before
// it is written).
template <Activation act>
inline void batch_norm_act_backward_apply(float* dx, const float* dy, const float* y_act, const float* x,
                                          const float* mean, const float* k, const float* a, const float* b, int64_t m,
                                          int64_t c) {
  using simd::Packet;
  parallel_chunks(m, c, [&](int64_t begin, int64_t end, int) {
    detail::for_each_block_packet(begin, end, c, [&](int64_t j, int lanes, int64_t r0, int64_t r1) {
      const Packet mu = simd::load_partial(mean + j, lanes), kk = simd::load_partial(k + j, lanes);
      const Packet aa = simd::load_partial(a + j, lanes), bb = simd::load_partial(b + j, lanes);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = r * c + j;
        const Packet dz = detail::masked_gradient<act>(dy, y_act, i, lanes);
        const Packet centred = simd::sub(simd::load_partial(x + i, lanes), mu);
        const Packet inner = simd::sub(simd::sub(dz, aa), simd::mul(centred, bb));
        simd::store_partial(dx + i, simd::mul(kk, inner), lanes);
      }
    });
  });
}

}  // namespace eigennet::kernels
