// Tensor, Shape, Rng and the Sequential container: the basics everything else stands on.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <thread>
#include <utility>
#include <vector>

#include <eigennet/eigennet.hpp>

using namespace eigennet;

TEST_CASE("Shape counts elements and rejects bad ranks") {
  Shape s{2, 3, 4};
  CHECK(s.rank() == 3);
  CHECK(s.elements() == 24);
  CHECK(s.with_batch(5) == Shape{5, 2, 3, 4});
  CHECK(Shape{5, 2, 3}.without_batch() == Shape{2, 3});
  CHECK_THROWS_WITH_AS(Shape({1, 2, 3, 4, 5, 6, 7}), doctest::Contains("rank"), Error);
  CHECK_THROWS_AS(Shape({2, -1}), Error);
}

TEST_CASE("Tensor keeps its capacity when resized smaller") {
  Tensor t(Shape{4, 8});
  const float* before = t.data();
  t.resize(Shape{2, 8});
  CHECK(t.data() == before);
  CHECK(t.size() == 16);
  t.resize(Shape{4, 8});
  CHECK(t.data() == before);
  CHECK(t.matrix().rows() == 4);
  CHECK(t.matrix().cols() == 8);
  CHECK_THROWS_AS(t.view<3>(), Error);
}

TEST_CASE("A new Tensor is zero even where freed memory held other values, at every size") {
  // The allocator (calloc) hands out zero memory without a pass of its own; recycled memory must
  // come back zero too, and growing a tensor must not expose old contents.
  for (int64_t n : {int64_t{1}, int64_t{100}, int64_t{40000}, int64_t{3} << 20}) {
    CAPTURE(n);
    for (int round = 0; round < 3; ++round) {
      {
        Tensor dirty(Shape{n});
        dirty.fill(7.0f);
      }
      const Tensor t(Shape{n});
      CHECK(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
      bool all_zero = true;
      for (int64_t i = 0; i < n; ++i) all_zero &= t[i] == 0.0f;
      CHECK(all_zero);
    }
    Tensor grown;
    grown.resize(Shape{n});
    grown.fill(3.0f);
    grown.resize(Shape{2 * n + 5});  // reallocates: the old values move, the new ones are zero
    bool kept = true, zero_after = true;
    for (int64_t i = 0; i < n; ++i) kept &= grown[i] == 3.0f;
    for (int64_t i = n; i < 2 * n + 5; ++i) zero_after &= grown[i] == 0.0f;
    CHECK(kept);
    CHECK(zero_after);
  }
}

TEST_CASE("prefault_for_writing maps pages without changing what they hold") {
  // It only asks the kernel to map pages ahead of the writes: fresh memory stays zero, written
  // memory keeps its values, inside and at the unaligned edges of the range, at every size
  // (below the 64 KiB it skips, and above), and a range outside any page it may map is harmless.
  for (int64_t n : {int64_t{100}, int64_t{40000}, int64_t{3} << 20}) {
    CAPTURE(n);
    Tensor fresh(Shape{n});
    prefault_for_writing(fresh.data() + 1, static_cast<size_t>(n - 2) * sizeof(float));
    bool zero = true;
    for (int64_t i = 0; i < n; ++i) zero &= fresh[i] == 0.0f;
    CHECK(zero);
    Tensor written(Shape{n});
    for (int64_t i = 0; i < n; ++i) written[i] = static_cast<float>(i % 1000) + 0.5f;
    prefault_for_writing(written.data() + 3, static_cast<size_t>(n - 5) * sizeof(float));
    bool kept = true;
    for (int64_t i = 0; i < n; ++i) kept &= written[i] == static_cast<float>(i % 1000) + 0.5f;
    CHECK(kept);
  }
  prefault_for_writing(nullptr, 0);
}

TEST_CASE("SkipWeightInitialization leaves new weights zero on its thread, and only while it lives") {
  const auto kernel_sum = [](Sequential& net) {
    double sum = 0;
    for (Parameter* p : net.parameters())
      for (int64_t i = 0; i < p->value.size(); ++i) sum += std::abs(p->value[i]);
    return sum;
  };
  {
    SkipWeightInitialization loading;
    Sequential skipped("skipped", Shape{8, 8, 3}, 1);
    skipped.add<Conv2D>("conv", 4, 3);
    skipped.add<DepthwiseConv2D>("dw", 3);
    skipped.add<GlobalAvgPool>("pool");
    skipped.add<Dense>("dense", 2);
    CHECK(kernel_sum(skipped) == 0.0);
  }
  Sequential drawn("drawn", Shape{8, 8, 3}, 1);
  drawn.add<Conv2D>("conv", 4, 3);
  CHECK(kernel_sum(drawn) > 0.0);
}

TEST_CASE("Rng is deterministic and uniform in [0, 1)") {
  Rng a(42), b(42), c(43);
  bool differs = false;
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const float x = a.uniform();
    CHECK(x == b.uniform());
    differs |= x != c.uniform();
    CHECK(x >= 0.0f);
    CHECK(x < 1.0f);
    sum += x;
  }
  CHECK(differs);
  CHECK(sum / 10000 == doctest::Approx(0.5).epsilon(0.02));
}

TEST_CASE("Rng::gamma and Rng::beta have their distributions' moments") {
  // Gamma(k): mean k, variance k; Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)). 40,000 draws
  // each: the standard error of the mean is below 0.011 k^0.5 for gamma and 0.0025 for beta.
  Rng rng(7);
  const int n = 40000;
  for (const double k : {0.2, 0.5, 1.0, 2.5, 9.0}) {
    CAPTURE(k);
    double sum = 0, squares = 0;
    for (int i = 0; i < n; ++i) {
      const double x = rng.gamma(k);
      REQUIRE(x >= 0);
      sum += x;
      squares += x * x;
    }
    const double mean = sum / n, variance = squares / n - mean * mean;
    CHECK(std::fabs(mean - k) < 0.05 * std::sqrt(k));
    CHECK(variance == doctest::Approx(k).epsilon(0.1));
  }
  for (const double a : {0.2, 0.4, 1.0, 4.0}) {
    CAPTURE(a);
    double sum = 0, squares = 0;
    int below_quarter = 0;
    for (int i = 0; i < n; ++i) {
      const double x = rng.beta(a, a);
      REQUIRE(x >= 0);
      REQUIRE(x <= 1);
      sum += x;
      squares += x * x;
      below_quarter += x < 0.25;
    }
    const double mean = sum / n, variance = squares / n - mean * mean;
    CHECK(std::fabs(mean - 0.5) < 0.01);
    CHECK(variance == doctest::Approx(1 / (4 * (2 * a + 1))).epsilon(0.05));
    if (a == 1.0) CHECK(below_quarter / static_cast<double>(n) == doctest::Approx(0.25).epsilon(0.04));  // uniform
  }
  // Beta(a, b) with a != b: mean a / (a + b).
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += rng.beta(2.0, 6.0);
  CHECK(std::fabs(sum / n - 0.25) < 0.005);
}

TEST_CASE("parallel_chunks covers every item once, in chunks that do not depend on the thread count") {
  const int saved = max_threads();
  for (const int64_t n : {int64_t{1}, int64_t{5}, int64_t{16}, int64_t{17}, int64_t{1000}}) {
    for (const int threads : {1, 2, 3}) {
      CAPTURE(n);
      CAPTURE(threads);
      set_threads(threads);
      const int64_t work = parallel_grain;  // every item worth a team
      const int chunks = chunks_for(n, work);
      CHECK(chunks == (n < 2 ? 1 : std::min<int64_t>(n, 16)));
      std::vector<int> seen(static_cast<size_t>(n), 0);
      std::vector<std::pair<int64_t, int64_t>> ranges(static_cast<size_t>(chunks), {-1, -1});
      parallel_chunks(n, work, [&](int64_t begin, int64_t end, int chunk) {
        ranges[static_cast<size_t>(chunk)] = {begin, end};
        for (int64_t i = begin; i < end; ++i) seen[static_cast<size_t>(i)]++;  // distinct items per chunk
      });
      for (int64_t i = 0; i < n; ++i) CHECK(seen[static_cast<size_t>(i)] == 1);
      for (int c = 0; c < chunks; ++c) {
        CHECK(ranges[static_cast<size_t>(c)].first == n * c / chunks);
        CHECK(ranges[static_cast<size_t>(c)].second == n * (c + 1) / chunks);
      }
    }
  }
  // Little work runs as one chunk, without a team.
  CHECK(chunks_for(1000, 1) == 1);
  set_threads(saved);
}

TEST_CASE("parallel_chunks hands the chunks of a delayed thread to the others") {
#ifdef _OPENMP
  const int saved = max_threads();
  set_threads(2);
  std::vector<int> runner(16, -1);
  std::atomic<int> stalled_thread{-1};
  parallel_chunks(16, parallel_grain, [&](int64_t, int64_t, int chunk) {
    runner[static_cast<size_t>(chunk)] = thread_index();
    // The thread that takes the first chunk stalls, as a thread preempted by another process.
    int none = -1;
    if (stalled_thread.compare_exchange_strong(none, thread_index()))
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
  });
  set_threads(saved);
  int by_stalled = 0;
  for (int r : runner) by_stalled += r == stalled_thread.load();
  CHECK(by_stalled >= 1);
  CHECK(by_stalled < 8);  // a static split would give it 8 of the 16 chunks
#endif
}

TEST_CASE("parallel_chunks runs the first chunk of every share on its own thread") {
#ifdef _OPENMP
  // So that every thread has grown the thread-local scratch its chunks use after the first
  // steps (a training step must not allocate later). Trivial chunks right after a pause: the
  // waking worker arrives late, and the first thread could take its whole share.
  if (omp_get_thread_limit() < 2) return;  // a team of one runs every chunk itself
  const int saved = max_threads();
  set_threads(2);
  for (int round = 0; round < 20; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::vector<int> runner(16, -1);
    parallel_chunks(16, parallel_grain,
                    [&](int64_t, int64_t, int chunk) { runner[static_cast<size_t>(chunk)] = thread_index(); });
    CHECK(runner[0] == 0);
    CHECK(runner[8] == 1);
    CHECK(std::count(runner.begin(), runner.end(), -1) == 0);
  }
  set_threads(saved);
#endif
}

TEST_CASE("parallel_chunks inside another parallel region (a team of one) runs every chunk") {
#ifdef _OPENMP
  const int saved = max_threads();
  set_threads(2);
  std::vector<int> seen_a(100, 0), seen_b(100, 0);
#pragma omp parallel num_threads(2)
  {
    std::vector<int>& seen = thread_index() == 0 ? seen_a : seen_b;
    // Nested regions get one thread while max_threads() still says 2.
    parallel_chunks(100, parallel_grain, [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) seen[static_cast<size_t>(i)]++;
    });
  }
  set_threads(saved);
  for (int i = 0; i < 100; ++i) {
    CHECK(seen_a[static_cast<size_t>(i)] == 1);
    CHECK(seen_b[static_cast<size_t>(i)] == 1);
  }
#endif
}

TEST_CASE("Sequential builds shapes as layers are added") {
  Sequential net("net", Shape{9, 9, 3}, 1);
  net.add<Conv2D>("conv", 8, 3, 2, Padding::same);
  CHECK(net.model_output_shape() == Shape{5, 5, 8});
  net.add<BatchNorm>("bn");
  net.add<ReLU6>("relu");
  net.add<GlobalAvgPool>("pool");
  net.add<Dense>("dense", 4);
  CHECK(net.model_output_shape() == Shape{4});
  CHECK(net.parameters().size() == 2 + 4 + 2);
  Tensor x(Shape{2, 9, 9, 3});
  const Tensor& y = net.forward(x, Mode::train);
  CHECK(y.shape() == Shape{2, 4});
  CHECK_THROWS_WITH_AS(net.forward(Tensor(Shape{2, 8, 9, 3}), Mode::train), doctest::Contains("expected input"), Error);
  CHECK_THROWS_WITH_AS(net.add<Dense>("dense", 3), doctest::Contains("duplicate layer name"), Error);
}

// The 3x3 depthwise kernels take a row-at-once path (all nine taps per output pixel, borders
// column by column); compare it with the direct sum on every size and padding a border can hit.
TEST_CASE("depthwise 3x3 forward equals the direct sum at every border case") {
  Rng rng(7);
  for (int64_t h : {1, 2, 3, 4, 5, 8})
    for (int64_t w : {1, 2, 3, 4, 5, 7, 8})
      for (int64_t stride : {1, 2})
        for (Padding padding : {Padding::same, Padding::valid}) {
          if (padding == Padding::valid && (h < 3 || w < 3)) continue;
          const int64_t batch = 2, C = 19;  // C not a multiple of the vector width
          const auto g = make_window_geometry(batch, h, w, C, C, 3, 3, stride, stride, padding);
          std::vector<float> in(static_cast<size_t>(batch * h * w * C)), weight(static_cast<size_t>(9 * C)),
              bias(static_cast<size_t>(C)), out(static_cast<size_t>(batch * g.out_h * g.out_w * C));
          for (float& v : in) v = rng.uniform() * 2 - 1;
          for (float& v : weight) v = rng.uniform() * 2 - 1;
          for (float& v : bias) v = rng.uniform() * 2 - 1;
          for (bool with_bias : {false, true}) {
            CAPTURE(h);
            CAPTURE(w);
            CAPTURE(stride);
            CAPTURE(with_bias);
            kernels::depthwise_conv2d_forward(out.data(), in.data(), weight.data(), with_bias ? bias.data() : nullptr, g);
            double worst = 0;
            for (int64_t n = 0; n < batch; ++n)
              for (int64_t oh = 0; oh < g.out_h; ++oh)
                for (int64_t ow = 0; ow < g.out_w; ++ow)
                  for (int64_t c = 0; c < C; ++c) {
                    double sum = with_bias ? bias[static_cast<size_t>(c)] : 0.0;
                    for (int64_t kh = 0; kh < 3; ++kh)
                      for (int64_t kw = 0; kw < 3; ++kw) {
                        const int64_t ih = oh * stride - g.pad_top + kh, iw = ow * stride - g.pad_left + kw;
                        if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                        sum += static_cast<double>(in[static_cast<size_t>(((n * h + ih) * w + iw) * C + c)]) *
                               weight[static_cast<size_t>((kh * 3 + kw) * C + c)];
                      }
                    const float got = out[static_cast<size_t>(((n * g.out_h + oh) * g.out_w + ow) * C + c)];
                    worst = std::max(worst, std::abs(got - sum));
                  }
            CHECK(worst < 1e-5);
          }
        }
}

// Stride-1 3x3 backward to the input runs as a forward convolution with the rotated kernel;
// compare it (and the stride-2 gather) with the direct scatter of every output gradient.
TEST_CASE("depthwise 3x3 backward to the input equals the direct scatter at every border case") {
  Rng rng(11);
  for (int64_t h : {1, 2, 3, 4, 5, 8})
    for (int64_t w : {1, 2, 3, 4, 5, 7, 8})
      for (int64_t stride : {1, 2})
        for (Padding padding : {Padding::same, Padding::valid}) {
          if (padding == Padding::valid && (h < 3 || w < 3)) continue;
          const int64_t batch = 2, C = 21;
          const auto g = make_window_geometry(batch, h, w, C, C, 3, 3, stride, stride, padding);
          std::vector<float> dout(static_cast<size_t>(batch * g.out_h * g.out_w * C)), weight(static_cast<size_t>(9 * C)),
              din(static_cast<size_t>(batch * h * w * C));
          std::vector<double> expected(din.size(), 0.0);
          for (float& v : dout) v = rng.uniform() * 2 - 1;
          for (float& v : weight) v = rng.uniform() * 2 - 1;
          for (int64_t n = 0; n < batch; ++n)
            for (int64_t oh = 0; oh < g.out_h; ++oh)
              for (int64_t ow = 0; ow < g.out_w; ++ow)
                for (int64_t kh = 0; kh < 3; ++kh)
                  for (int64_t kw = 0; kw < 3; ++kw) {
                    const int64_t ih = oh * stride - g.pad_top + kh, iw = ow * stride - g.pad_left + kw;
                    if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                    for (int64_t c = 0; c < C; ++c)
                      expected[static_cast<size_t>(((n * h + ih) * w + iw) * C + c)] +=
                          static_cast<double>(dout[static_cast<size_t>(((n * g.out_h + oh) * g.out_w + ow) * C + c)]) *
                          weight[static_cast<size_t>((kh * 3 + kw) * C + c)];
                  }
          std::fill(din.begin(), din.end(), 123.0f);  // every element must be written
          kernels::depthwise_conv2d_backward_input(din.data(), dout.data(), weight.data(), g);
          double worst = 0;
          for (size_t i = 0; i < din.size(); ++i) worst = std::max(worst, std::abs(din[i] - expected[i]));
          CAPTURE(h);
          CAPTURE(w);
          CAPTURE(stride);
          CHECK(worst < 1e-5);
        }
}

// Stride-1 3x3 weight gradients sweep input rows (each feeds three output rows) with the bias
// gradient on the middle one; stride 2 sweeps output rows. Both against the direct sums, with
// full and partial channel packets (C = 37) and rows wider than the unrolled loops.
TEST_CASE("depthwise 3x3 weight and bias gradients equal the direct sums at every border case") {
  Rng rng(13);
  for (int64_t h : {1, 2, 3, 4, 5, 8})
    for (int64_t w : {1, 2, 3, 4, 5, 7, 8, 21})
      for (int64_t stride : {1, 2})
        for (Padding padding : {Padding::same, Padding::valid}) {
          if (padding == Padding::valid && (h < 3 || w < 3)) continue;
          const int64_t batch = 2, C = 37;
          const auto g = make_window_geometry(batch, h, w, C, C, 3, 3, stride, stride, padding);
          std::vector<float> dout(static_cast<size_t>(batch * g.out_h * g.out_w * C)),
              in(static_cast<size_t>(batch * h * w * C));
          for (float& v : dout) v = rng.uniform() * 2 - 1;
          for (float& v : in) v = rng.uniform() * 2 - 1;
          std::vector<double> expected_w(static_cast<size_t>(9 * C), 0.0), expected_b(static_cast<size_t>(C), 0.0);
          for (int64_t n = 0; n < batch; ++n)
            for (int64_t oh = 0; oh < g.out_h; ++oh)
              for (int64_t ow = 0; ow < g.out_w; ++ow)
                for (int64_t c = 0; c < C; ++c) {
                  const double d = dout[static_cast<size_t>(((n * g.out_h + oh) * g.out_w + ow) * C + c)];
                  expected_b[static_cast<size_t>(c)] += d;
                  for (int64_t kh = 0; kh < 3; ++kh)
                    for (int64_t kw = 0; kw < 3; ++kw) {
                      const int64_t ih = oh * stride - g.pad_top + kh, iw = ow * stride - g.pad_left + kw;
                      if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                      expected_w[static_cast<size_t>((kh * 3 + kw) * C + c)] +=
                          d * in[static_cast<size_t>(((n * h + ih) * w + iw) * C + c)];
                    }
                }
          for (bool with_bias : {false, true}) {
            CAPTURE(h);
            CAPTURE(w);
            CAPTURE(stride);
            CAPTURE(with_bias);
            // The kernel accumulates into what is there: start from 0.5 everywhere.
            std::vector<float> dweight(static_cast<size_t>(9 * C), 0.5f), dbias(static_cast<size_t>(C), 0.5f);
            kernels::depthwise_conv2d_backward_weight(dweight.data(), with_bias ? dbias.data() : nullptr, dout.data(),
                                                      in.data(), g);
            double worst = 0;
            for (size_t j = 0; j < dweight.size(); ++j) worst = std::max(worst, std::abs(dweight[j] - 0.5 - expected_w[j]));
            if (with_bias)
              for (size_t j = 0; j < dbias.size(); ++j) worst = std::max(worst, std::abs(dbias[j] - 0.5 - expected_b[j]));
            CHECK(worst < 1e-4);
          }
        }
}
