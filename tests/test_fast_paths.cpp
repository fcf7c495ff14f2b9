// The fast paths against their references: the pointwise engine (kernels/pointwise_engine.hpp)
// against Eigen's GEMM, forward with every epilogue and both backward products; the 3x3
// depthwise row kernel against a direct loop; the chunked im2col convolution against the
// whole-matrix GEMM; and InferenceNet (inference/inference_net.hpp) against the plain model it
// was compiled from (random weights and BatchNorm statistics; the ImageNet weights are compared
// with PyTorch's float64 results and with the plain model in test_mobilenet_parity.cpp). Odd
// shapes, channel counts that are not multiples of the vector width, single rows and images, one
// and two threads.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <eigennet/eigennet.hpp>

using namespace eigennet;

namespace {

std::vector<float> random_vector(int64_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  Rng rng(seed);
  for (float& x : v) x = rng.uniform(lo, hi);
  return v;
}

// max |a - b| / max(1, max |b|): the error relative to the size of the reference's values.
double relative_error(const float* a, const float* b, int64_t n) {
  double diff = 0, scale = 1;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return diff / scale;
}
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  return relative_error(a.data(), b.data(), static_cast<int64_t>(a.size()));
}

struct ProductShape {
  int64_t m, k, n;
};

// Shapes around every blocking edge: fewer rows than a tile, rows not a multiple of the tile,
// k below a tile (weight gradient), partial panels, many panels with few rows (split by panels).
const ProductShape product_shapes[] = {
    {1, 1, 1},    {3, 5, 7},     {11, 16, 24},  {12, 12, 32},  {13, 17, 33},   {25, 24, 16},
    {100, 24, 144}, {37, 160, 96}, {288, 96, 17}, {9, 320, 1280}, {700, 32, 192}, {64, 7, 5},
    // Weight gradients split by blocks of the result over several chunks of rows (last panel
    // partial; a block whose last tile overlaps the one before; a block that is only such a
    // tile), and split by rows (more than by_blocks_max_rows) with several panels.
    {1500, 300, 136}, {2500, 40, 200}, {500, 20, 30}, {9000, 20, 40},
    // Half panels (the one-packet micro-kernel): 16 output columns, 16 input columns (the input
    // gradient's), a last panel of exactly 16 columns split by rows and by blocks.
    {300, 16, 40}, {9000, 20, 48}, {2500, 48, 16},
    // Weight gradients whose last tile of input channels is a third of a tile (k = 16, 40) or two
    // thirds (k = 20) on AVX-512, split by rows and by blocks.
    {9000, 16, 24}, {4000, 16, 96},
};

class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(max_threads()) { set_threads(n); }
  ~ThreadCount() { set_threads(saved_); }

 private:
  int saved_;
};

}  // namespace

TEST_CASE("pointwise engine: forward with bias equals Eigen's GEMM") {
  for (int threads : {1, 2}) {
    ThreadCount scope(threads);
    for (const ProductShape& s : product_shapes) {
      CAPTURE(threads);
      CAPTURE(s.m);
      CAPTURE(s.k);
      CAPTURE(s.n);
      const auto x = random_vector(s.m * s.k, 1), w = random_vector(s.k * s.n, 2), b = random_vector(s.n, 3);
      for (const float* bias : {static_cast<const float*>(nullptr), b.data()}) {
        std::vector<float> out(static_cast<size_t>(s.m * s.n), NAN), ref(out.size(), NAN);
        kernels::pointwise_conv2d_forward(out.data(), x.data(), w.data(), bias, s.m, s.k, s.n);
        kernels::pointwise_conv2d_forward_reference(ref.data(), x.data(), w.data(), bias, s.m, s.k, s.n);
        CHECK(relative_error(out, ref) < 1e-5);
      }
    }
  }
}

TEST_CASE("pointwise engine: both backward products equal Eigen's GEMM") {
  for (int threads : {1, 2}) {
    ThreadCount scope(threads);
    for (const ProductShape& s : product_shapes) {
      CAPTURE(threads);
      CAPTURE(s.m);
      CAPTURE(s.k);
      CAPTURE(s.n);
      const auto x = random_vector(s.m * s.k, 4), w = random_vector(s.k * s.n, 5), dy = random_vector(s.m * s.n, 6);
      // Weight gradients accumulate: start both from the same non-zero values.
      std::vector<float> dw = random_vector(s.k * s.n, 7), dw_ref = dw;
      std::vector<float> db = random_vector(s.n, 8), db_ref = db;
      std::vector<float> dx(static_cast<size_t>(s.m * s.k), NAN), dx_ref(dx.size(), NAN);
      kernels::pointwise_conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), s.m, s.k, s.n);
      kernels::pointwise_conv2d_backward_reference(dx_ref.data(), dw_ref.data(), db_ref.data(), dy.data(), x.data(),
                                                    w.data(), s.m, s.k, s.n);
      CHECK(relative_error(dx, dx_ref) < 1e-5);
      CHECK(relative_error(dw, dw_ref) < 1e-5);
      CHECK(relative_error(db, db_ref) < 1e-6);
    }
  }
}

TEST_CASE("pointwise engine: a half panel sums each column exactly as a whole panel does") {
  // Output columns [0, half) of an [m, k] x [k, half] product run on the one-packet micro-kernel;
  // the same columns of [k, 2 * half] (the first half of the weights the same) on the two-packet
  // one. Both sum every column in the same order: equal bit for bit, in the forward product and
  // in the weight gradient (which reads the half panel in place, without a padded copy).
  namespace pw = kernels::pointwise;
  const int64_t half = simd::width;
  for (int threads : {1, 2}) {
    ThreadCount scope(threads);
    for (const int64_t m : {int64_t{37}, int64_t{9000}}) {
      CAPTURE(threads);
      CAPTURE(m);
      const int64_t k = 40;
      const auto x = random_vector(m * k, 11), w_wide = random_vector(k * 2 * half, 12);
      const auto dy_wide = random_vector(m * 2 * half, 13);
      std::vector<float> w_half(static_cast<size_t>(k * half)), dy_half(static_cast<size_t>(m * half));
      for (int64_t i = 0; i < k; ++i)
        std::copy_n(w_wide.begin() + i * 2 * half, half, w_half.begin() + i * half);
      for (int64_t r = 0; r < m; ++r)
        std::copy_n(dy_wide.begin() + r * 2 * half, half, dy_half.begin() + r * half);
      std::vector<float> out_half(static_cast<size_t>(m * half)), out_wide(static_cast<size_t>(m * 2 * half));
      kernels::pointwise_conv2d_forward(out_half.data(), x.data(), w_half.data(), nullptr, m, k, half);
      kernels::pointwise_conv2d_forward(out_wide.data(), x.data(), w_wide.data(), nullptr, m, k, 2 * half);
      std::vector<float> dw_half(static_cast<size_t>(k * half), 0.0f), dw_wide(static_cast<size_t>(k * 2 * half), 0.0f);
      pw::multiply_transposed(dw_half.data(), x.data(), k, dy_half.data(), half, m, k, half, false);
      pw::multiply_transposed(dw_wide.data(), x.data(), k, dy_wide.data(), 2 * half, m, k, 2 * half, false);
      int out_differences = 0, dw_differences = 0;
      for (int64_t r = 0; r < m; ++r)
        for (int64_t j = 0; j < half; ++j)
          out_differences += out_half[static_cast<size_t>(r * half + j)] != out_wide[static_cast<size_t>(r * 2 * half + j)];
      for (int64_t i = 0; i < k; ++i)
        for (int64_t j = 0; j < half; ++j)
          dw_differences += dw_half[static_cast<size_t>(i * half + j)] != dw_wide[static_cast<size_t>(i * 2 * half + j)];
      CHECK(out_differences == 0);
      CHECK(dw_differences == 0);
    }
  }
}

TEST_CASE("pointwise engine: a weight gradient's short last tile sums each value exactly as a whole tile does") {
  // dW [k, n] = x^T dy with k = 16 (AVX-512: a tile of 12 input channels and one of 4) and
  // k = 20 (12 and 8) against k = 24 (two whole tiles), the first k columns of x the same: the
  // first k rows of dW are equal bit for bit, split by blocks (2,000 rows) and by rows (9,000).
  namespace pw = kernels::pointwise;
  const int64_t n = 40, wide = 24;
  for (int threads : {1, 2}) {
    ThreadCount scope(threads);
    for (const int64_t m : {int64_t{2000}, int64_t{9000}}) {
      const auto x_wide = random_vector(m * wide, 21), dy = random_vector(m * n, 22);
      std::vector<float> dw_wide(static_cast<size_t>(wide * n));
      pw::multiply_transposed(dw_wide.data(), x_wide.data(), wide, dy.data(), n, m, wide, n, false);
      for (const int64_t k : {int64_t{16}, int64_t{20}}) {
        CAPTURE(threads);
        CAPTURE(m);
        CAPTURE(k);
        std::vector<float> x(static_cast<size_t>(m * k)), dw(static_cast<size_t>(k * n));
        for (int64_t r = 0; r < m; ++r) std::copy_n(x_wide.begin() + r * wide, k, x.begin() + r * k);
        pw::multiply_transposed(dw.data(), x.data(), k, dy.data(), n, m, k, n, false);
        int differences = 0;
        for (int64_t i = 0; i < k * n; ++i) differences += dw[static_cast<size_t>(i)] != dw_wide[static_cast<size_t>(i)];
        CHECK(differences == 0);
      }
    }
  }
}

TEST_CASE("pointwise engine: ReLU6, residual (also in place) and output statistics in the epilogue") {
  namespace pw = kernels::pointwise;
  for (int threads : {1, 2}) {
    ThreadCount scope(threads);
    for (const ProductShape& s : product_shapes) {
      CAPTURE(threads);
      CAPTURE(s.m);
      CAPTURE(s.k);
      CAPTURE(s.n);
      // Inputs scaled so that a good share of the outputs falls outside [0, 6].
      const auto x = random_vector(s.m * s.k, 9, -2, 2), w = random_vector(s.k * s.n, 10, -2, 2);
      const auto bias = random_vector(s.n, 11, 0, 4), residual = random_vector(s.m * s.n, 12, -3, 3);
      std::vector<float> packed(static_cast<size_t>(pw::packed_size(s.k, s.n)));
      pw::pack_panels(packed.data(), w.data(), s.k, s.n, false);
      const pw::Packed b{packed.data(), s.k, s.n};

      std::vector<float> plain(static_cast<size_t>(s.m * s.n));
      kernels::pointwise_conv2d_forward_reference(plain.data(), x.data(), w.data(), bias.data(), s.m, s.k, s.n);

      // bias + ReLU6
      std::vector<float> out(plain.size(), NAN), expected(plain.size());
      pw::multiply(out.data(), s.n, x.data(), s.k, s.m, b, pw::Epilogue::relu6(bias.data()));
      for (size_t i = 0; i < plain.size(); ++i) expected[i] = std::min(std::max(plain[i], 0.0f), 6.0f);
      CHECK(relative_error(out, expected) < 1e-5);

      // bias + residual, into another buffer and in place (residual aliasing the output).
      pw::Epilogue add;
      add.bias = bias.data();
      add.residual = residual.data();
      add.ld_residual = s.n;
      for (size_t i = 0; i < plain.size(); ++i) expected[i] = plain[i] + residual[i];
      pw::multiply(out.data(), s.n, x.data(), s.k, s.m, b, add);
      CHECK(relative_error(out, expected) < 1e-5);
      std::vector<float> in_place = residual;
      add.residual = in_place.data();
      pw::multiply(in_place.data(), s.n, x.data(), s.k, s.m, b, add);
      CHECK(relative_error(in_place, expected) < 1e-5);

      // Statistics of the stored output (here with the residual) against a separate pass.
      std::vector<float> mean(static_cast<size_t>(s.n)), variance(mean.size()), ref_mean(mean.size()),
          ref_variance(mean.size());
      add.residual = residual.data();
      pw::multiply(out.data(), s.n, x.data(), s.k, s.m, b, add, mean.data(), variance.data());
      kernels::channel_statistics(ref_mean.data(), ref_variance.data(), out.data(), s.m, s.n);
      CHECK(relative_error(mean, ref_mean) < 1e-5);
      CHECK(relative_error(variance, ref_variance) < 1e-5);
    }
  }
}

TEST_CASE("pointwise engine: a ReLU6 mask from the BatchNorm's input equals the mask from its output, bit for bit") {
  namespace pw = kernels::pointwise;
  for (const ProductShape& s : product_shapes) {
    CAPTURE(s.m);
    CAPTURE(s.k);
    CAPTURE(s.n);
    const auto a = random_vector(s.m * s.k, 31), w = random_vector(s.k * s.n, 32);
    // d: a BatchNorm's input; scale and shift put a good share of it outside (0, 6) and some
    // exactly on the edges after the multiply-add.
    auto d = random_vector(s.m * s.n, 33, -4, 10);
    for (size_t i = 0; i < d.size(); i += 7) d[i] = 0.0f;
    const auto scale = random_vector(s.n, 34, 0.5f, 1.5f), shift = random_vector(s.n, 35, -1, 1);
    std::vector<float> b(d.size());
    kernels::batch_norm_act_forward<kernels::Activation::relu6>(b.data(), d.data(), scale.data(), shift.data(), s.m, s.n);
    std::vector<float> packed(static_cast<size_t>(pw::packed_size(s.k, s.n)));
    pw::pack_panels(packed.data(), w.data(), s.k, s.n, false);
    const pw::Packed p{packed.data(), s.k, s.n};
    pw::Epilogue from_output, from_input;
    from_output.relu6_mask = b.data();
    from_output.ld_mask = s.n;
    from_input.relu6_mask = d.data();
    from_input.ld_mask = s.n;
    from_input.mask_scale = scale.data();
    from_input.mask_shift = shift.data();
    std::vector<float> expected(d.size()), out(d.size());
    pw::multiply(expected.data(), s.n, a.data(), s.k, s.m, p, from_output);
    pw::multiply(out.data(), s.n, a.data(), s.k, s.m, p, from_input);
    CHECK(std::memcmp(out.data(), expected.data(), out.size() * sizeof(float)) == 0);
    int64_t masked = 0;
    for (float v : b) masked += !(v > 0.0f && v < 6.0f);
    CHECK(masked > 0);  // the mask did something
  }
}

TEST_CASE("pointwise engine: statistics stay accurate when the mean is far larger than the spread") {
  namespace pw = kernels::pointwise;
  const int64_t m = 5000, k = 8, n = 19;
  auto x = random_vector(m * k, 13, -1e-3f, 1e-3f);
  std::vector<float> w(static_cast<size_t>(k * n), 0.5f), bias(static_cast<size_t>(n), 1000.0f);
  std::vector<float> packed(static_cast<size_t>(pw::packed_size(k, n)));
  pw::pack_panels(packed.data(), w.data(), k, n, false);
  std::vector<float> out(static_cast<size_t>(m * n)), mean(static_cast<size_t>(n)), variance(mean.size());
  pw::Epilogue e;
  e.bias = bias.data();
  pw::multiply(out.data(), n, x.data(), k, m, pw::Packed{packed.data(), k, n}, e, mean.data(), variance.data());
  for (int64_t j = 0; j < n; ++j) {
    double s = 0, ss = 0;
    for (int64_t r = 0; r < m; ++r) s += out[static_cast<size_t>(r * n + j)];
    const double mu = s / m;
    for (int64_t r = 0; r < m; ++r) ss += (out[static_cast<size_t>(r * n + j)] - mu) * (out[static_cast<size_t>(r * n + j)] - mu);
    CHECK(std::fabs(mean[static_cast<size_t>(j)] - mu) < 1e-3);
    CHECK(std::fabs(variance[static_cast<size_t>(j)] - ss / m) < 1e-3 * ss / m + 1e-12);
  }
}

// ---- Depthwise and chunked convolution ----------------------------------------------------------

namespace {
// Direct depthwise convolution in double: the reference for the row kernels.
std::vector<float> depthwise_direct(const std::vector<float>& in, const std::vector<float>& w,
                                    const std::vector<float>& bias, const WindowGeometry& g, float lo, float hi) {
  std::vector<float> out(static_cast<size_t>(g.out_pixels() * g.in_c));
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t oh = 0; oh < g.out_h; ++oh)
      for (int64_t ow = 0; ow < g.out_w; ++ow)
        for (int64_t c = 0; c < g.in_c; ++c) {
          double s = bias[static_cast<size_t>(c)];
          for (int64_t kh = 0; kh < g.kernel_h; ++kh)
            for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
              const int64_t ih = oh * g.stride_h - g.pad_top + kh, iw = ow * g.stride_w - g.pad_left + kw;
              if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) continue;
              s += static_cast<double>(in[static_cast<size_t>(((n * g.in_h + ih) * g.in_w + iw) * g.in_c + c)]) *
                   w[static_cast<size_t>((kh * g.kernel_w + kw) * g.in_c + c)];
            }
          out[static_cast<size_t>(((n * g.out_h + oh) * g.out_w + ow) * g.in_c + c)] =
              static_cast<float>(std::min<double>(std::max<double>(s, lo), hi));
        }
  return out;
}
}  // namespace

// ---- BatchNorm passes (a channel packet at a time over blocks of rows) -------------------------

TEST_CASE("BatchNorm + ReLU6 forward is std::min(std::max(x * scale + shift, 0), 6) bit for bit, NaN kept") {
  // Values at and around the clamps, signed zeros, infinities and NaN, through scale 1, shift 0
  // (so the multiply-add is exact), over channel counts with partial packets and row blocks.
  const float special[] = {-1.0f, -0.0f, 0.0f, 1e-30f, 3.0f, 6.0f, 6.0000005f, 7.0f, -INFINITY, INFINITY, NAN, 5.9999995f};
  for (int64_t c : {1, 5, 16, 19, 40, 300}) {
    CAPTURE(c);
    const int64_t m = 37;
    std::vector<float> x(static_cast<size_t>(m * c)), y(x.size()), expected(x.size());
    for (size_t i = 0; i < x.size(); ++i) x[i] = special[i % (sizeof(special) / sizeof(float))];
    const std::vector<float> scale(static_cast<size_t>(c), 1.0f), shift(static_cast<size_t>(c), 0.0f);
    kernels::batch_norm_act_forward<kernels::Activation::relu6>(y.data(), x.data(), scale.data(), shift.data(), m, c);
    for (size_t i = 0; i < x.size(); ++i) {
      const float v = x[i] * scale[0] + shift[0];  // exact here; -0 becomes +0
      expected[i] = std::min(std::max(v, 0.0f), 6.0f);
    }
    bool same = true;
    for (size_t i = 0; i < x.size(); ++i)
      same = same && (std::isnan(expected[i]) ? std::isnan(y[i]) : std::memcmp(&y[i], &expected[i], sizeof(float)) == 0);
    CHECK(same);
  }
}

TEST_CASE("BatchNorm passes (forward + residual, backward sums and apply) equal a double-precision loop") {
  for (kernels::Activation act : {kernels::Activation::none, kernels::Activation::relu6})
    for (int64_t c : {1, 5, 16, 19, 40, 300})
      for (int64_t m : {1, 7, 100}) {
        CAPTURE(c);
        CAPTURE(m);
        const size_t n = static_cast<size_t>(m * c);
        const auto x = random_vector(m * c, 21, -2, 2), dy = random_vector(m * c, 22), residual = random_vector(m * c, 23);
        const auto y_act = random_vector(m * c, 24, -2, 8);  // a ReLU6 output stand-in: some outside (0, 6)
        const auto mean = random_vector(c, 25), k = random_vector(c, 26, 0.5f, 2), a = random_vector(c, 27),
                   b = random_vector(c, 28), scale = random_vector(c, 29, 0.5f, 2), inv_std = random_vector(c, 30, 0.5f, 2);
        auto mask = [&](size_t i) {
          return act == kernels::Activation::relu6 && !(y_act[i] > 0.0f && y_act[i] < 6.0f) ? 0.0 : 1.0;
        };
        std::vector<double> s1(static_cast<size_t>(c)), s2(s1.size()), ref1(s1.size()), ref2(s1.size());
        std::vector<float> dx(n), ref_dx(n), y(n), ref_y(n);
        for (size_t i = 0; i < n; ++i) {
          const size_t j = i % static_cast<size_t>(c);
          const double dz = dy[i] * mask(i);
          ref1[j] += dz;
          ref2[j] += dz * (x[i] - mean[j]) * inv_std[j];
          ref_dx[i] = static_cast<float>(k[j] * (dz - a[j] - (static_cast<double>(x[i]) - mean[j]) * b[j]));
          ref_y[i] = static_cast<float>(static_cast<double>(x[i]) * scale[j] + mean[j] + residual[i]);
        }
        if (act == kernels::Activation::relu6) {
          kernels::batch_norm_act_backward_sums<kernels::Activation::relu6>(s1.data(), s2.data(), dy.data(), y_act.data(),
                                                                            x.data(), mean.data(), inv_std.data(), m, c);
          kernels::batch_norm_act_backward_apply<kernels::Activation::relu6>(
              dx.data(), dy.data(), y_act.data(), x.data(), mean.data(), k.data(), a.data(), b.data(), m, c);
        } else {
          kernels::batch_norm_act_backward_sums<kernels::Activation::none>(s1.data(), s2.data(), dy.data(), y_act.data(),
                                                                           x.data(), mean.data(), inv_std.data(), m, c);
          kernels::batch_norm_act_backward_apply<kernels::Activation::none>(
              dx.data(), dy.data(), y_act.data(), x.data(), mean.data(), k.data(), a.data(), b.data(), m, c);
        }
        double worst_sum = 0;
        for (size_t j = 0; j < s1.size(); ++j)
          worst_sum = std::max({worst_sum, std::fabs(s1[j] - ref1[j]), std::fabs(s2[j] - ref2[j])});
        CHECK(worst_sum < 1e-4);
        CHECK(relative_error(dx, ref_dx) < 1e-5);
        // In place (dx aliasing dy), as the layers call it.
        std::vector<float> in_place = dy;
        if (act == kernels::Activation::relu6)
          kernels::batch_norm_act_backward_apply<kernels::Activation::relu6>(in_place.data(), in_place.data(), y_act.data(),
                                                                             x.data(), mean.data(), k.data(), a.data(),
                                                                             b.data(), m, c);
        else
          kernels::batch_norm_act_backward_apply<kernels::Activation::none>(in_place.data(), in_place.data(), y_act.data(),
                                                                            x.data(), mean.data(), k.data(), a.data(),
                                                                            b.data(), m, c);
        CHECK(in_place == dx);
        kernels::batch_norm_add_forward(y.data(), x.data(), scale.data(), mean.data(), residual.data(), m, c);
        CHECK(relative_error(y, ref_y) < 1e-5);
      }
}

TEST_CASE("expand gradients taken inside the depthwise backward sweep equal the separate passes and a double loop") {
  // The same forward quantities and output gradient go through the depthwise backward sweep twice:
  // once storing dA, followed by the separate passes the block used before (dE = bn'(dA) in place,
  // dWe = X^T dE, dX = dE We^T + skip), and once with ExpandBelow + expand_backward_finish. Both
  // are measured against dE, dWe and dX computed in double from the first sweep's dA.
  struct Case {
    int64_t batch, h, w, in_c, e, stride;
    bool skip, frozen;  // frozen: the expand BatchNorm does not train (a = b = 0)
  };
  const Case cases[] = {
      {2, 24, 20, 16, 40, 1, true, false},  {2, 24, 20, 16, 40, 2, false, false}, {3, 13, 11, 8, 48, 2, false, false},
      {2, 17, 19, 20, 96, 1, true, false}, {1, 30, 26, 24, 144, 1, true, false}, {2, 24, 20, 16, 40, 1, true, true},
      {1, 9, 7, 1, 2, 1, true, false},
  };
  for (const Case& t : cases)
    for (int threads : {1, 2}) {
      CAPTURE(t.in_c);
      CAPTURE(t.e);
      CAPTURE(t.stride);
      CAPTURE(threads);
      ThreadCount thread_count(threads);
      const WindowGeometry g =
          make_window_geometry(t.batch, t.h, t.w, t.e, t.e, 3, 3, t.stride, t.stride, Padding::same);
      const int64_t m = g.in_pixels(), c = t.in_c, e = t.e;
      const auto x = random_vector(m * c, 31, -1, 2), we = random_vector(c * e, 32, -0.5f, 0.5f);
      const auto weight = random_vector(9 * e, 33), dout = random_vector(g.out_pixels() * e, 34);
      const auto gamma = random_vector(e, 35, 0.5f, 2), beta = random_vector(e, 36, 0, 3);
      const auto skip = random_vector(m * c, 37);
      std::vector<float> ex(static_cast<size_t>(m * e));
      kernels::pointwise_conv2d_forward(ex.data(), x.data(), we.data(), nullptr, m, c, e);
      // The expand BatchNorm as a training forward leaves it: batch mean, inv_std; its transform.
      std::vector<float> mean(static_cast<size_t>(e)), inv_std(mean.size()), k(mean.size()), scale(mean.size()),
          shift(mean.size());
      for (int64_t j = 0; j < e; ++j) {
        double s = 0, ss = 0;
        for (int64_t p = 0; p < m; ++p) s += ex[p * e + j];
        for (int64_t p = 0; p < m; ++p) ss += (ex[p * e + j] - s / m) * (ex[p * e + j] - s / m);
        mean[j] = static_cast<float>(s / m);
        inv_std[j] = static_cast<float>(1 / std::sqrt(ss / m + 1e-3));
        k[j] = gamma[j] * inv_std[j];
        scale[j] = k[j];
        shift[j] = beta[j] - mean[j] * scale[j];
      }
      const kernels::Relu6Affine transform{scale.data(), shift.data()};
      auto sweep = [&](float* din, float* dweight, double* s1, double* s2, const kernels::ExpandBelow* expand) {
        kernels::BelowBatchNormRelu6 below;
        below.x = ex.data();
        below.mean = mean.data();
        below.inv_std = inv_std.data();
        below.s1 = s1;
        below.s2 = s2;
        kernels::depthwise_conv2d_backward_fused(din, dweight, dout.data(), ex.data(), weight.data(), g, &transform,
                                                 &below, nullptr, expand);
      };
      // a and b as BatchNorm::prepare_backward computes them (zero when frozen).
      auto coefficients = [&](const std::vector<double>& s1, const std::vector<double>& s2, std::vector<float>& a,
                              std::vector<float>& b) {
        for (int64_t j = 0; j < e; ++j) {
          a[j] = t.frozen ? 0.0f : static_cast<float>(s1[j] / static_cast<double>(m));
          b[j] = t.frozen ? 0.0f : static_cast<float>(inv_std[j] * s2[j] / static_cast<double>(m));
        }
      };
      // Separate passes.
      std::vector<float> da(static_cast<size_t>(m * e)), dw_sep(static_cast<size_t>(9 * e), 0.0f);
      std::vector<double> s1(static_cast<size_t>(e)), s2(s1.size());
      sweep(da.data(), dw_sep.data(), s1.data(), s2.data(), nullptr);
      std::vector<float> a(static_cast<size_t>(e)), b(a.size());
      coefficients(s1, s2, a, b);
      std::vector<float> de(da.size()), dwe_sep(static_cast<size_t>(c * e), 0.0f), dx_sep(static_cast<size_t>(m * c));
      kernels::batch_norm_act_backward_apply<kernels::Activation::none>(de.data(), da.data(), da.data(), ex.data(),
                                                                        mean.data(), k.data(), a.data(), b.data(), m, e);
      kernels::pointwise_conv2d_backward(nullptr, dwe_sep.data(), nullptr, de.data(), x.data(), we.data(), m, c, e);
      kernels::pointwise::Epilogue add_skip;
      if (t.skip) {
        add_skip.residual = skip.data();
        add_skip.ld_residual = c;
      }
      kernels::pointwise_conv2d_backward_input(dx_sep.data(), de.data(), we.data(), m, c, e, add_skip);
      // Inside the sweep.
      std::vector<float> dw_fused(dw_sep.size(), 0.0f), dwe_fused(dwe_sep.size(), 0.0f), dx_fused(dx_sep.size());
      std::vector<float> xt_dz(static_cast<size_t>(c * e));
      std::vector<double> f1(s1.size()), f2(s1.size()), scatter(static_cast<size_t>(c * c)), shifted_sum(static_cast<size_t>(c));
      kernels::ExpandBelow expand;
      expand.x = x.data();
      expand.in_c = c;
      expand.weight = we.data();
      expand.k = k.data();
      expand.dx = dx_fused.data();
      expand.skip = t.skip ? skip.data() : nullptr;
      expand.xt_dz = xt_dz.data();
      expand.scatter = scatter.data();
      expand.shifted_sum = shifted_sum.data();
      sweep(nullptr, dw_fused.data(), f1.data(), f2.data(), &expand);
      std::vector<float> fa(a.size()), fb(a.size());
      coefficients(f1, f2, fa, fb);
      kernels::expand_backward_finish(dwe_fused.data(), expand, m, e, mean.data(), fa.data(), fb.data());
      // The sweep's own results do not depend on what consumes dA.
      CHECK(f1 == s1);
      CHECK(f2 == s2);
      CHECK(dw_fused == dw_sep);
      // Double-precision reference from the first sweep's dA.
      std::vector<double> de_ref(de.size());
      for (int64_t p = 0; p < m; ++p)
        for (int64_t j = 0; j < e; ++j)
          de_ref[p * e + j] = static_cast<double>(k[j]) *
                              (da[p * e + j] - static_cast<double>(a[j]) -
                               (static_cast<double>(ex[p * e + j]) - mean[j]) * static_cast<double>(b[j]));
      std::vector<float> dwe_ref(dwe_sep.size()), dx_ref(dx_sep.size());
      for (int64_t i = 0; i < c; ++i)
        for (int64_t j = 0; j < e; ++j) {
          double sum = 0;
          for (int64_t p = 0; p < m; ++p) sum += static_cast<double>(x[p * c + i]) * de_ref[p * e + j];
          dwe_ref[i * e + j] = static_cast<float>(sum);
        }
      for (int64_t p = 0; p < m; ++p)
        for (int64_t i = 0; i < c; ++i) {
          double sum = t.skip ? skip[p * c + i] : 0.0;
          for (int64_t j = 0; j < e; ++j) sum += de_ref[p * e + j] * static_cast<double>(we[i * e + j]);
          dx_ref[p * c + i] = static_cast<float>(sum);
        }
      const double dwe_error_sep = relative_error(dwe_sep, dwe_ref), dwe_error = relative_error(dwe_fused, dwe_ref);
      const double dx_error_sep = relative_error(dx_sep, dx_ref), dx_error = relative_error(dx_fused, dx_ref);
      if (threads == 1)
        MESSAGE("in_c " << c << " e " << e << " stride " << t.stride << std::string(t.frozen ? " frozen" : "")
                        << ": dWe error " << dwe_error << " (separate passes " << dwe_error_sep << "), dX " << dx_error
                        << " (" << dx_error_sep << ")");
      CHECK(dwe_error < 1e-5);
      CHECK(dx_error < 1e-5);
    }
}

TEST_CASE("depthwise 3x3 rows (sliding windows, register-blocked) equal a direct loop, with and without a clamp") {
  struct Case {
    int64_t batch, h, w, c, stride;
    Padding padding;
  };
  const Case cases[] = {{1, 1, 1, 1, 1, Padding::same},   {2, 5, 7, 3, 1, Padding::same},
                        {1, 9, 13, 17, 1, Padding::same}, {1, 9, 13, 17, 2, Padding::same},
                        {3, 8, 8, 32, 2, Padding::same},  {1, 6, 11, 40, 1, Padding::valid},
                        {1, 7, 10, 16, 2, Padding::valid}, {2, 12, 12, 144, 1, Padding::same},
                        {1, 4, 3, 24, 3, Padding::same},  {1, 3, 45, 150, 1, Padding::same},
                        {1, 4, 40, 150, 1, Padding::valid}};
  // The last two: rows wider than one L1 window of pixels (several windows per row) with a
  // partial channel packet.
  for (const Case& k : cases)
    for (bool clamp : {false, true}) {
      CAPTURE(k.h);
      CAPTURE(k.w);
      CAPTURE(k.c);
      CAPTURE(k.stride);
      CAPTURE(clamp);
      const WindowGeometry g =
          make_window_geometry(k.batch, k.h, k.w, k.c, k.c, 3, 3, k.stride, k.stride, k.padding, "test");
      const auto in = random_vector(g.in_pixels() * k.c, 21, -3, 3), w = random_vector(9 * k.c, 22, -2, 2);
      const auto bias = random_vector(k.c, 23);
      kernels::Clamp c;
      if (clamp) c = kernels::Clamp{0.0f, 6.0f};
      std::vector<float> out(static_cast<size_t>(g.out_pixels() * k.c), NAN);
      kernels::depthwise_conv2d_forward(out.data(), in.data(), w.data(), bias.data(), g, c);
      CHECK(relative_error(out, depthwise_direct(in, w, bias, g, c.lo, c.hi)) < 1e-5);
      // Rows computed in pairs (stride 1) give the same bits as rows one at a time.
      std::vector<float> single(out.size(), NAN), zero(static_cast<size_t>(k.w * k.c), 0.0f);
      for (int64_t r = 0; r < g.batch * g.out_h; ++r) {
        const int64_t n = r / g.out_h, oh = r % g.out_h;
        const float* rows[3];
        for (int64_t kh = 0; kh < 3; ++kh) {
          const int64_t ih = oh * g.stride_h - g.pad_top + kh;
          rows[kh] = ih < 0 || ih >= g.in_h ? zero.data() : in.data() + (n * g.in_h + ih) * g.in_w * k.c;
        }
        kernels::detail::depthwise3x3_row(single.data() + r * g.out_w * k.c, rows[0], rows[1], rows[2], w.data(),
                                          bias.data(), g, c);
      }
      CHECK(std::memcmp(out.data(), single.data(), out.size() * sizeof(float)) == 0);
    }
}

TEST_CASE("chunked im2col convolution equals the whole-matrix GEMM reference, forward and backward") {
  struct Case {
    int64_t batch, h, w, in_c, out_c, k, stride;
  };
  for (const Case& k : {Case{2, 9, 11, 3, 32, 3, 2}, Case{1, 5, 5, 7, 5, 3, 1}, Case{3, 16, 12, 3, 16, 1, 2},
                        Case{1, 30, 30, 3, 24, 3, 2}, Case{2, 6, 20, 5, 40, 3, 1}, Case{1, 4, 31, 2, 8, 5, 1}}) {
    CAPTURE(k.h);
    CAPTURE(k.in_c);
    CAPTURE(k.out_c);
    const WindowGeometry g =
        make_window_geometry(k.batch, k.h, k.w, k.in_c, k.out_c, k.k, k.k, k.stride, k.stride, Padding::same, "test");
    const int64_t patch = kernels::conv2d_patch_size(g);
    const auto in = random_vector(g.in_pixels() * k.in_c, 31), w = random_vector(patch * k.out_c, 32);
    const auto bias = random_vector(k.out_c, 33), dout = random_vector(g.out_pixels() * k.out_c, 34);
    std::vector<float> workspace(static_cast<size_t>(kernels::conv2d_workspace_size(g)));
    std::vector<float> out(static_cast<size_t>(g.out_pixels() * k.out_c)), ref(out.size());
    kernels::conv2d_forward(out.data(), in.data(), w.data(), bias.data(), g, workspace.data());
    kernels::conv2d_forward_reference(ref.data(), in.data(), w.data(), bias.data(), g, workspace.data());
    CHECK(relative_error(out, ref) < 1e-5);
    // Backward against im2col + GEMM done here.
    std::vector<float> dw(w.size(), 0.0f), din(in.size(), NAN), col(workspace.size()), dcol(col.size());
    kernels::conv2d_backward(din.data(), dw.data(), nullptr, dout.data(), in.data(), w.data(), g, workspace.data());
    kernels::im2col(col.data(), in.data(), g);
    std::vector<float> dw_ref(w.size(), 0.0f), din_ref(in.size());
    kernels::gemm(dw_ref.data(), col.data(), dout.data(), patch, k.out_c, g.out_pixels(), true, false, true);
    kernels::gemm(dcol.data(), dout.data(), w.data(), g.out_pixels(), patch, k.out_c, false, true, false);
    kernels::col2im(din_ref.data(), dcol.data(), g);
    CHECK(relative_error(dw, dw_ref) < 1e-5);
    CHECK(relative_error(din, din_ref) < 1e-5);
  }
}

// ---- InferenceNet ---------------------------------------------------------------------------------

namespace {

// Gives every BatchNorm non-trivial statistics and affine parameters, so that folding matters.
void randomize_batch_norms(Layer& model, uint64_t seed) {
  Rng rng(seed);
  model.for_each_layer([&](Layer& l) {
    if (auto* bn = dynamic_cast<BatchNorm*>(&l)) {
      for (int64_t j = 0; j < bn->gamma().value.size(); ++j) {
        bn->gamma().value[j] = rng.uniform(0.5f, 1.5f);
        bn->beta().value[j] = rng.uniform(-0.5f, 0.5f);
        bn->moving_mean().value[j] = rng.uniform(-0.5f, 0.5f);
        bn->moving_variance().value[j] = rng.uniform(0.5f, 2.0f);
      }
    }
  });
}

Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t(shape);
  Rng rng(seed);
  for (int64_t i = 0; i < t.size(); ++i) t[i] = rng.uniform(lo, hi);
  return t;
}

double relative_error(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  return relative_error(a.data(), b.data(), a.size());
}

// A layer compile_for_inference does not know (it falls back to the layer's own forward).
class Doubling : public Layer {
 public:
  explicit Doubling(std::string name) : Layer(std::move(name)) {}
  const char* type() const override { return "Doubling"; }
  void forward(const Tensor& x, Tensor& y, Mode) override {
    y.resize(x.shape());
    for (int64_t i = 0; i < x.size(); ++i) y[i] = 2.0f * x[i];
  }
  void backward(const Tensor&, const Tensor&, const Tensor&, Tensor*) override {}

 protected:
  Shape do_build(const Shape& in, Rng&) override { return in; }
};

}  // namespace

TEST_CASE("InferenceNet equals MobileNetV2 in inference mode: fused and plain-layer blocks, batch 1 and 3") {
  for (bool fused : {true, false})
    for (int64_t size : {32, 45}) {
      CAPTURE(fused);
      CAPTURE(size);
      MobileNetV2Config c;
      c.alpha = 0.35f;
      c.height = c.width = size;
      c.fused_blocks = fused;
      c.pooling = GlobalPooling::max;
      Classifier model(make_mobilenet_v2(c, 5), HeadConfig{16, 0.3f, 7}, 6);
      randomize_batch_norms(model.base(), 7);
      InferenceNet net = compile_for_inference(model);
      // Every block became one fused step: Conv1, 17 blocks, Conv_1, pooling, dense + relu, dense.
      CHECK(net.steps() == 22);
      CHECK(net.summary().find("fallback") == std::string::npos);
      for (int64_t batch : {1, 3}) {
        CAPTURE(batch);
        const Tensor images = random_tensor(Shape{batch, size, size, 3}, 8 + static_cast<uint64_t>(batch));
        const Tensor expected = model.forward(images, Mode::inference);
        CHECK(relative_error(net.forward(images), expected) < 1e-5);
      }
    }
}

TEST_CASE("InferenceNet compiles any Sequential: folds, fuses, and falls back to unknown layers") {
  for (int threads : {1, 2}) {
    ThreadCount scope(threads);
    Sequential model("mixed", Shape{13, 11, 5}, 3);
    model.add<Conv2D>("conv", 24, 3, 2);  // with bias, then BN + ReLU6 folded
    model.add<BatchNorm>("bn");
    model.add<ReLU6>("relu6");
    model.add<DepthwiseConv2D>("dw5", 5, 1);  // 5x5: not a fused block
    model.add<BatchNorm>("dw5_bn");
    model.add<ReLU>("dw5_relu");
    auto body = std::make_unique<Sequential>("body");
    body->add<Conv2D>("body_conv", 24, 3);
    body->add<BatchNorm>("body_bn");
    model.add<Residual>("res", std::move(body));  // not a block: body steps + add
    auto block = std::make_unique<Sequential>("block");
    block->add<Conv2D>("expand", 48, 1, 1, Padding::same, false);
    block->add<BatchNorm>("expand_bn");
    block->add<ReLU6>("expand_relu");
    block->add<DepthwiseConv2D>("dw", 3, 1, Padding::same, false);
    block->add<BatchNorm>("dw_bn");
    block->add<ReLU6>("dw_relu");
    block->add<Conv2D>("project", 24, 1, 1, Padding::same, false);
    block->add<BatchNorm>("project_bn");
    model.add<Residual>("block_res", std::move(block));  // a block with a skip connection
    model.add<Doubling>("doubling");
    model.add<MaxPool2D>("maxpool", 2);
    model.add<BatchNorm>("lone_bn");
    model.add<ReLU>("lone_relu");
    model.add<AvgPool2D>("avgpool", 2, 1, Padding::same);
    model.add<Flatten>("flatten");
    model.add<Dense>("dense", 10);
    model.add<BatchNorm>("dense_bn");
    model.add<ReLU>("dense_relu");
    model.add<Dropout>("dropout", 0.5f);
    model.add<Dense>("logits", 4);
    model.add<Softmax>("softmax");
    randomize_batch_norms(model, 9);
    InferenceNet net = compile_for_inference(model);
    const std::string summary = net.summary();
    CAPTURE(summary);
    CHECK(summary.find("fallback: Doubling 'doubling'") != std::string::npos);
    CHECK(summary.find("inverted residual block [expand + expand_bn + expand_relu") != std::string::npos);
    CHECK(summary.find("residual res {") != std::string::npos);
    CHECK(summary.find("dropout") == std::string::npos);
    CHECK(net.output_shape() == Shape{4});
    for (int64_t batch : {1, 4}) {
      const Tensor x = random_tensor(Shape{batch, 13, 11, 5}, 10);
      const Tensor expected = model.forward(x, Mode::inference);
      CHECK(relative_error(net.forward(x), expected) < 1e-5);
    }
    CHECK_THROWS_WITH_AS(net.forward(Tensor(Shape{1, 11, 13, 5})),
                         "InferenceNet 'mixed': expected input of shape [batch, 13, 11, 5], got [1, 11, 13, 5]", Error);
  }
}

TEST_CASE("predict(), evaluate() and cache_features() run through the compiled net and equal the plain model") {
  MobileNetV2Config c;
  c.alpha = 0.35f;
  c.height = c.width = 32;
  c.pooling = GlobalPooling::avg;
  Classifier model(make_mobilenet_v2(c, 21), HeadConfig{16, 0.3f, 7}, 22);
  randomize_batch_norms(model.base(), 23);
  const Tensor images = random_tensor(Shape{7, 32, 32, 3}, 24);
  const std::vector<int32_t> labels{0, 1, 2, 3, 4, 5, 6};
  TensorSource source(images, labels);
  PredictOptions plain;
  plain.batch_size = 3;  // a partial last batch
  plain.compiled = false;
  PredictOptions compiled = plain;
  compiled.compiled = true;
  REQUIRE(compile_for_inference_if_supported(model) != nullptr);
  const Predictions expected = predict(model, source, plain);
  const Predictions got = predict(model, source, compiled);
  CHECK(got.labels == expected.labels);
  CHECK(relative_error(got.probabilities, expected.probabilities) < 1e-5);
  const ClassificationMetrics m = evaluate(model, source, {}, compiled);
  CHECK(m.accuracy == evaluate(model, source, {}, plain).accuracy);

  FeatureCacheOptions cache_plain;
  cache_plain.batch_size = 4;
  cache_plain.compiled = false;
  FeatureCacheOptions cache_compiled = cache_plain;
  cache_compiled.compiled = true;
  REQUIRE(compile_for_inference_if_supported(model.base()) != nullptr);
  const FeatureCache f_plain = cache_features(model.base(), source, cache_plain);
  const FeatureCache f_compiled = cache_features(model.base(), source, cache_compiled);
  CHECK(f_compiled.labels == f_plain.labels);
  CHECK(relative_error(f_compiled.features, f_plain.features) < 1e-5);
}

TEST_CASE("InferenceNet is a snapshot: later weight changes need a recompile") {
  Sequential model("snap", Shape{4, 4, 3}, 1);
  model.add<Conv2D>("conv", 8, 1);
  model.add<GlobalAvgPool>("pool");
  InferenceNet net = compile_for_inference(model);
  const Tensor x = random_tensor(Shape{2, 4, 4, 3}, 11);
  const Tensor before = net.forward(x);
  model.parameters()[0]->value.fill(0.5f);
  CHECK(relative_error(net.forward(x), before) == 0.0);
  InferenceNet again = compile_for_inference(model);
  CHECK(relative_error(again.forward(x), model.forward(x, Mode::inference)) < 1e-6);
  CHECK(relative_error(again.forward(x), before) > 1e-3);
}
