// The fast paths against their references: the pointwise engine (kernels/pointwise_engine.hpp)
// against Eigen's GEMM, forward with every epilogue and both backward products, on odd shapes,
// channel counts that are not multiples of the vector width, single rows, and one and two
// threads.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
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
