// Finite-difference gradient checks for every layer and the loss (see gradient_check.hpp for the
// method and the choice of step). Each check prints one line with the tolerance and the worst
// absolute and relative errors measured.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <eigennet/eigennet.hpp>

#include "gradient_check.hpp"

using namespace eigennet;
using eigennet::testing::check_gradients;
using eigennet::testing::GradientCheckOptions;
using eigennet::testing::GradientCheckReport;
using eigennet::testing::GradientErrors;

namespace {

// ---- Tolerances, one per kind of function ----------------------------------------------------
// Exact: y is a copy or a masked / scaled copy of x (ReLU, max pooling, flatten, dropout), so the
// numerical derivative is exact up to double rounding of the loss.
GradientCheckOptions exact_options(double step) {
  GradientCheckOptions o;
  o.step = step;
  o.atol = 1e-6;
  o.rtol = 1e-6;
  return o;
}
// Linear in every single element (convolutions, dense, average pooling, BN in inference): no
// truncation error, so h = 0.25 and the error is float32 rounding of the forward pass:
// eps_f32 * sum |r y| over the moved outputs (at most a few hundred of size ~1) / 2h.
GradientCheckOptions linear_options() {
  GradientCheckOptions o;
  o.step = 0.25;
  o.atol = 2e-5;
  o.rtol = 2e-4;
  return o;
}
// Smooth and non-linear (BN in training, softmax, residual blocks with BN): fourth-order stencil
// with h = 2^-5: truncation ~ h^4 |L^(5)| / 30 ~ 3e-8 |L^(5)|, rounding ~ noise / h.
GradientCheckOptions smooth_options() {
  GradientCheckOptions o;
  o.stencil = 4;
  o.step = 1.0 / 32;
  o.atol = 5e-5;
  o.rtol = 5e-4;
  return o;
}

// ---- Inputs ------------------------------------------------------------------------------------
Tensor random_tensor(const Shape& shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t(shape);
  Rng rng(seed);
  for (int64_t i = 0; i < t.size(); ++i) t[i] = rng.uniform(lo, hi);
  return t;
}

// Values spaced `gap` apart, shuffled: no two elements are closer than gap, so max pooling has
// no near-ties and a perturbation below gap / 2 never changes a winner.
Tensor distinct_tensor(const Shape& shape, uint64_t seed, float gap) {
  Tensor t(shape);
  std::vector<int64_t> order(static_cast<size_t>(t.size()));
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  const float offset = -0.5f * gap * static_cast<float>(t.size());
  for (int64_t i = 0; i < t.size(); ++i) t[i] = offset + gap * static_cast<float>(order[static_cast<size_t>(i)]);
  return t;
}

// Uniform in [lo, hi] but at least `margin` away from every kink.
Tensor away_from_kinks(const Shape& shape, uint64_t seed, float lo, float hi, const std::vector<float>& kinks,
                       float margin) {
  Tensor t(shape);
  Rng rng(seed);
  for (int64_t i = 0; i < t.size(); ++i) {
    float v;
    bool near;
    do {
      v = rng.uniform(lo, hi);
      near = false;
      for (float k : kinks) near |= std::abs(v - k) < margin;
    } while (near);
    t[i] = v;
  }
  return t;
}

// Uniform in [-1, 1], except that in every 2x2 window (per channel) one element leads the others
// by at least `margin`: 2x2 max pooling of it keeps its winners under perturbations below margin/2.
Tensor clear_pool_winners(const Shape& shape, uint64_t seed, float margin) {
  Tensor t = random_tensor(shape, seed);
  Rng rng(seed + 1);
  const int64_t n = shape[0], h = shape[1], w = shape[2], c = shape[3];
  for (int64_t b = 0; b < n; ++b)
    for (int64_t y = 0; y + 1 < h; y += 2)
      for (int64_t x = 0; x + 1 < w; x += 2)
        for (int64_t k = 0; k < c; ++k) {
          int64_t at[4];
          for (int64_t i = 0; i < 4; ++i) at[i] = ((b * h + y + i / 2) * w + x + i % 2) * c + k;
          float others = -2.0f;
          const int64_t winner = static_cast<int64_t>(rng.below(4));
          for (int64_t i = 0; i < 4; ++i)
            if (i != winner) others = std::max(others, t[at[i]]);
          t[at[winner]] = others + margin + rng.uniform(0.0f, 0.4f);
        }
  return t;
}

void randomize(Parameter& p, uint64_t seed, float lo, float hi) {
  Rng rng(seed);
  for (int64_t i = 0; i < p.value.size(); ++i) p.value[i] = rng.uniform(lo, hi);
}

template <typename L>
L& build(L& layer, const Shape& per_sample, uint64_t seed = 7) {
  Rng rng(seed);
  layer.build(per_sample, rng);
  return layer;
}

int64_t trainable_elements(Layer& layer) {
  int64_t n = 0;
  for (Parameter* p : layer.parameters())
    if (p->trainable()) n += p->value.size();
  return n;
}

// Asserts that the check passed and covered every input element (when asked) and every
// trainable parameter element; logs the summary line.
void expect_pass(const GradientCheckReport& report, Layer& layer, const Tensor& x) {
  std::printf("gradcheck %s\n", report.summary().c_str());
  INFO(report.summary());
  INFO("worst element: ", report.overall.worst);
  CHECK(report.deterministic);
  CHECK(report.overall.failures == 0);
  const int64_t expected = (report.options.check_input ? x.size() : 0) +
                           (report.options.check_parameters ? trainable_elements(layer) : 0);
  CHECK(report.overall.count == expected);
}

GradientCheckReport run(Layer& layer, const Tensor& x, const GradientCheckOptions& options, const std::string& label) {
  GradientCheckReport report = check_gradients(layer, x, options, label);
  expect_pass(report, layer, x);
  return report;
}

std::string conv_label(const char* type, const Shape& in, int64_t filters, KernelSize k, int64_t stride, Padding pad,
                       bool bias) {
  char text[160];
  std::snprintf(text, sizeof text, "%s %lldx%lldx%lld->%lld k%lldx%lld s%lld %s%s", type,
                static_cast<long long>(in[0]), static_cast<long long>(in[1]), static_cast<long long>(in[2]),
                static_cast<long long>(filters), static_cast<long long>(k.h), static_cast<long long>(k.w),
                static_cast<long long>(stride), to_string(pad), bias ? " bias" : "");
  return text;
}

}  // namespace

// ---- Convolutions ------------------------------------------------------------------------------

TEST_CASE("Conv2D gradients: kernels 1x1, 3x3, 2x3, 5x5, strides 1 and 2, same and valid") {
  struct Config {
    Shape in;
    int64_t filters;
    KernelSize kernel;
    int64_t stride;
    Padding padding;
    bool bias;
  };
  const std::vector<Config> configs = {
      {{5, 5, 3}, 4, 1, 1, Padding::same, true},           // pointwise GEMM path
      {{6, 6, 2}, 3, 1, 2, Padding::valid, false},         // 1x1 stride 2: im2col path
      {{6, 5, 3}, 2, 1, 2, Padding::same, true},           // 1x1 stride 2 on odd width
      {{5, 5, 1}, 2, 3, 1, Padding::same, true},           // one input channel
      {{6, 6, 3}, 4, 3, 2, Padding::same, true},           // even size, stride 2: pad bottom/right only
      {{7, 7, 3}, 2, 3, 2, Padding::valid, false},         // odd size, valid
      {{7, 7, 2}, 3, 3, 2, Padding::same, false},          // odd size, same, stride 2: pad both sides
      {{6, 5, 2}, 3, {2, 3}, 1, Padding::same, true},      // even kernel height: asymmetric padding
      {{7, 6, 1}, 2, {2, 3}, 2, Padding::valid, true},
      {{6, 7, 3}, 1, {2, 3}, 2, Padding::same, false},     // one filter
      {{7, 7, 3}, 4, 5, 1, Padding::same, false},
      {{6, 6, 2}, 3, 5, 2, Padding::same, true},
      {{5, 5, 1}, 1, 5, 1, Padding::valid, true},          // kernel = input: 1x1 output
      {{3, 3, 2}, 2, 5, 1, Padding::same, true},           // padding wider than the input
      {{8, 8, 3}, 5, 5, 2, Padding::valid, true},
  };
  uint64_t seed = 100;
  for (const Config& c : configs) {
    const std::string label = conv_label("Conv2D", c.in, c.filters, c.kernel, c.stride, c.padding, c.bias);
    CAPTURE(label);
    Conv2D conv("conv", c.filters, c.kernel, c.stride, c.padding, c.bias);
    build(conv, c.in, seed);
    if (c.bias) randomize(conv.bias(), seed + 1, -0.5f, 0.5f);
    run(conv, random_tensor(c.in.with_batch(2), seed + 2), linear_options(), label);
    seed += 10;
  }
}

TEST_CASE("DepthwiseConv2D gradients: kernels 3x3, 5x5, 2x2, strides 1 and 2, same and valid") {
  struct Config {
    Shape in;
    KernelSize kernel;
    int64_t stride;
    Padding padding;
    bool bias;
  };
  const std::vector<Config> configs = {
      {{5, 5, 3}, 3, 1, Padding::same, true},      {{6, 6, 4}, 3, 2, Padding::same, true},
      {{7, 7, 2}, 3, 2, Padding::same, false},     {{7, 7, 2}, 3, 2, Padding::valid, false},
      {{6, 6, 3}, 3, 1, Padding::valid, true},     {{6, 6, 3}, 5, 1, Padding::same, true},
      {{7, 7, 2}, 5, 2, Padding::same, false},     {{8, 8, 1}, 5, 2, Padding::valid, true},
      {{6, 6, 2}, 2, 1, Padding::valid, true},     {{5, 5, 3}, 2, 2, Padding::same, true},
      {{6, 6, 2}, 2, 2, Padding::same, false},     {{5, 6, 2}, {2, 3}, 1, Padding::same, true},
      {{3, 3, 2}, 5, 1, Padding::same, true},
  };
  uint64_t seed = 300;
  for (const Config& c : configs) {
    const std::string label = conv_label("DepthwiseConv2D", c.in, c.in[2], c.kernel, c.stride, c.padding, c.bias);
    CAPTURE(label);
    DepthwiseConv2D conv("dw", c.kernel, c.stride, c.padding, c.bias);
    build(conv, c.in, seed);
    if (c.bias) randomize(conv.bias(), seed + 1, -0.5f, 0.5f);
    run(conv, random_tensor(c.in.with_batch(2), seed + 2), linear_options(), label);
    seed += 10;
  }
}

// ---- Normalization -----------------------------------------------------------------------------

TEST_CASE("BatchNorm gradients in training mode (through the batch statistics) and inference mode") {
  struct Config {
    Shape batch_shape;
    const char* what;
  };
  const std::vector<Config> configs = {{{6, 4}, "2D [N, C]"}, {{2, 3, 3, 3}, "4D [N, H, W, C]"}, {{1, 2, 3, 5}, "4D N=1"}};
  uint64_t seed = 500;
  for (const Config& c : configs) {
    for (Mode mode : {Mode::train, Mode::inference}) {
      const std::string label =
          std::string("BatchNorm ") + c.what + (mode == Mode::train ? " train" : " inference");
      CAPTURE(label);
      BatchNorm bn("bn", 0.9f, 1e-3f);
      build(bn, c.batch_shape.without_batch());
      randomize(bn.gamma(), seed, 0.5f, 1.5f);
      randomize(bn.beta(), seed + 1, -0.5f, 0.5f);
      randomize(bn.moving_mean(), seed + 2, -0.3f, 0.3f);
      randomize(bn.moving_variance(), seed + 3, 0.5f, 2.0f);
      GradientCheckOptions options = mode == Mode::train ? smooth_options() : linear_options();
      options.mode = mode;
      // Inputs with a non-zero mean and unequal scales per channel.
      Tensor x = random_tensor(c.batch_shape, seed + 4, -1.0f, 1.5f);
      run(bn, x, options, label);
      seed += 10;
    }
  }
}

// ---- Activations -------------------------------------------------------------------------------

TEST_CASE("ReLU and ReLU6 gradients away from the kinks") {
  const Shape shape{3, 4, 4, 2};
  ReLU relu("relu");
  build(relu, shape.without_batch());
  run(relu, away_from_kinks(shape, 1, -3.0f, 9.0f, {0.0f}, 0.05f), exact_options(0.02), "ReLU");
  ReLU6 relu6("relu6");
  build(relu6, shape.without_batch());
  run(relu6, away_from_kinks(shape, 2, -3.0f, 9.0f, {0.0f, 6.0f}, 0.05f), exact_options(0.02), "ReLU6");
  ReLU capped("relu_cap2", 2.0f);
  build(capped, Shape{7});
  run(capped, away_from_kinks(Shape{5, 7}, 3, -1.0f, 3.0f, {0.0f, 2.0f}, 0.05f), exact_options(0.02),
      "ReLU max_value 2 on [N, F]");
}

TEST_CASE("Softmax gradients") {
  Softmax softmax("softmax");
  build(softmax, Shape{5});
  run(softmax, random_tensor(Shape{4, 5}, 11, -3.0f, 3.0f), smooth_options(), "Softmax 4x5");
  Softmax one("softmax1");
  build(one, Shape{1});
  run(one, random_tensor(Shape{3, 1}, 12), smooth_options(), "Softmax 3x1 (constant output)");
}

// ---- Pooling -----------------------------------------------------------------------------------

TEST_CASE("MaxPool2D and AvgPool2D gradients: windows, strides, same padding over the edge") {
  struct Config {
    Shape in;
    KernelSize pool;
    int64_t stride;  // 0: the pool size
    Padding padding;
  };
  const std::vector<Config> configs = {
      {{4, 4, 2}, 2, 0, Padding::valid},      {{5, 5, 2}, 2, 0, Padding::valid},  // odd: last row dropped
      {{5, 5, 2}, 2, 0, Padding::same},                                          // window hangs over
      {{5, 5, 3}, 3, 2, Padding::same},       {{6, 6, 2}, 3, 2, Padding::same},   // pad bottom/right only
      {{5, 5, 2}, 3, 1, Padding::same},       {{4, 5, 2}, 2, 1, Padding::valid},  // overlapping windows
      {{6, 5, 1}, {3, 2}, 2, Padding::same},  {{7, 7, 2}, 3, 2, Padding::valid},
      {{3, 3, 2}, 5, 1, Padding::same},                                          // window wider than input
  };
  uint64_t seed = 700;
  for (const Config& c : configs) {
    const Shape batch = c.in.with_batch(2);
    for (bool max : {true, false}) {
      char label[120];
      std::snprintf(label, sizeof label, "%s %lldx%lldx%lld pool %lldx%lld s%lld %s", max ? "MaxPool2D" : "AvgPool2D",
                    static_cast<long long>(c.in[0]), static_cast<long long>(c.in[1]), static_cast<long long>(c.in[2]),
                    static_cast<long long>(c.pool.h), static_cast<long long>(c.pool.w),
                    static_cast<long long>(c.stride ? c.stride : c.pool.h), to_string(c.padding));
      CAPTURE(label);
      if (max) {
        MaxPool2D pool("pool", c.pool, c.stride, c.padding);
        build(pool, c.in);
        run(pool, distinct_tensor(batch, seed, 0.05f), exact_options(0.01), label);
      } else {
        AvgPool2D pool("pool", c.pool, c.stride, c.padding);
        build(pool, c.in);
        run(pool, random_tensor(batch, seed), linear_options(), label);
      }
      ++seed;
    }
  }
}

TEST_CASE("GlobalAvgPool and GlobalMaxPool gradients") {
  const Shape shape{3, 4, 5, 3};
  GlobalAvgPool avg("gap");
  build(avg, shape.without_batch());
  run(avg, random_tensor(shape, 21), linear_options(), "GlobalAvgPool 4x5x3");
  GlobalMaxPool max("gmp");
  build(max, shape.without_batch());
  run(max, distinct_tensor(shape, 22, 0.05f), exact_options(0.01), "GlobalMaxPool 4x5x3");
  GlobalMaxPool one("gmp1");
  build(one, Shape{1, 1, 4});
  run(one, random_tensor(Shape{2, 1, 1, 4}, 23), exact_options(0.01), "GlobalMaxPool 1x1x4");
}

// ---- Dense, Flatten, Dropout ---------------------------------------------------------------------

TEST_CASE("Dense and Flatten gradients") {
  Dense dense("dense", 4);
  build(dense, Shape{6});
  randomize(dense.bias(), 31, -0.5f, 0.5f);
  run(dense, random_tensor(Shape{3, 6}, 32), linear_options(), "Dense 6->4 bias");
  Dense no_bias("dense_nb", 1, false);
  build(no_bias, Shape{5});
  run(no_bias, random_tensor(Shape{1, 5}, 33), linear_options(), "Dense 5->1 no bias, batch 1");
  Flatten flatten("flatten");
  build(flatten, Shape{3, 2, 2});
  run(flatten, random_tensor(Shape{2, 3, 2, 2}, 34), exact_options(0.25), "Flatten 3x2x2");
}

TEST_CASE("Dropout gradients with a fixed mask (reseeded before every forward)") {
  Dropout dropout("dropout", 0.5f);
  build(dropout, Shape{4, 4, 3});
  const Tensor x = random_tensor(Shape{2, 4, 4, 3}, 41);
  GradientCheckOptions options = exact_options(0.25);
  options.reseed = true;
  options.seed = 99;
  // The check is only meaningful when the mask drops some elements and keeps others.
  Tensor y;
  dropout.reseed(options.seed);
  dropout.forward(x, y, Mode::train);
  int64_t dropped = 0;
  for (int64_t i = 0; i < y.size(); ++i) dropped += y[i] == 0.0f;
  CHECK(dropped > 0);
  CHECK(dropped < y.size());
  run(dropout, x, options, "Dropout 0.5 train");
  options.mode = Mode::inference;
  run(dropout, x, options, "Dropout 0.5 inference");
}

// ---- Containers ----------------------------------------------------------------------------------

TEST_CASE("Residual gradients with a depthwise -> BN -> pointwise body") {
  for (Mode mode : {Mode::train, Mode::inference}) {
    auto body = std::make_unique<Sequential>("body");
    body->add<DepthwiseConv2D>("dw", 3, 1, Padding::same, false);
    body->add<BatchNorm>("bn", 0.9f);
    body->add<Conv2D>("project", 3, 1);
    Residual residual("residual", std::move(body));
    build(residual, Shape{4, 4, 3}, 51);
    auto* bn = dynamic_cast<BatchNorm*>(residual.body().find("bn"));
    REQUIRE(bn != nullptr);
    randomize(bn->gamma(), 52, 0.5f, 1.5f);
    randomize(bn->moving_variance(), 53, 0.5f, 2.0f);
    GradientCheckOptions options = mode == Mode::train ? smooth_options() : linear_options();
    options.mode = mode;
    run(residual, random_tensor(Shape{2, 4, 4, 3}, 54), options,
        mode == Mode::train ? "Residual(dw3x3-BN-1x1) train" : "Residual(dw3x3-BN-1x1) inference");
  }
}

TEST_CASE("Residual gradients with a shortcut: max pooling and zero channel padding (BlazeFace's block)") {
  // Linear in every element once the max-pool winners are fixed: each 2x2 window's winner leads by
  // more than 2h, so linear_options' step never changes a winner.
  struct Config {
    Shape in;
    int64_t filters, stride;
  };
  const std::vector<Config> configs = {{{5, 5, 3}, 3, 1}, {{5, 4, 2}, 4, 1}, {{6, 6, 3}, 3, 2}, {{6, 4, 2}, 5, 2}};
  uint64_t seed = 60;
  for (const Config& c : configs) {
    char label[120];
    std::snprintf(label, sizeof label, "Residual(dw3x3 s%lld-1x1, shortcut %s%s) %lldx%lldx%lld->%lld",
                  static_cast<long long>(c.stride), c.stride == 2 ? "maxpool" : "identity",
                  c.filters != c.in[2] ? "+pad" : "", static_cast<long long>(c.in[0]), static_cast<long long>(c.in[1]),
                  static_cast<long long>(c.in[2]), static_cast<long long>(c.filters));
    CAPTURE(label);
    auto body = std::make_unique<Sequential>("body");
    body->add<DepthwiseConv2D>("dw", 3, c.stride, Padding::same, false);
    body->add<Conv2D>("project", c.filters, 1);
    auto shortcut = std::make_unique<Sequential>("shortcut");
    if (c.stride == 2) shortcut->add<MaxPool2D>("pool", 2);
    if (c.filters != c.in[2]) shortcut->add<ChannelPad>("pad", c.filters - c.in[2]);
    Residual residual("residual", std::move(body), shortcut->size() ? std::move(shortcut) : nullptr);
    build(residual, c.in, seed);
    run(residual, clear_pool_winners(c.in.with_batch(2), seed + 1, 0.6f), linear_options(), label);
    seed += 10;
  }
}

TEST_CASE("ChannelPad gradients") {
  ChannelPad after("pad", 3);
  build(after, Shape{3, 2, 2});
  run(after, random_tensor(Shape{2, 3, 2, 2}, 71), exact_options(0.25), "ChannelPad 2 -> 5");
  ChannelPad both("pad2", 1, 2);
  build(both, Shape{4});
  run(both, random_tensor(Shape{3, 4}, 72), exact_options(0.25), "ChannelPad [N, 4] -> [N, 7] (2 before, 1 after)");
}

// ---- Sequential ----------------------------------------------------------------------------------

namespace {

// conv -> bn -> relu6 -> max pool -> flatten -> dense, as a model with input [4, 4, 2]. Kept
// small so that inputs exist at which no finite-difference step crosses a kink.
std::unique_ptr<Sequential> small_network(uint64_t seed) {
  auto net = std::make_unique<Sequential>("net", Shape{4, 4, 2}, seed);
  net->add<Conv2D>("conv", 3, 3, 1, Padding::same);
  auto& bn = net->add<BatchNorm>("bn", 0.9f);
  net->add<ReLU6>("relu6");
  net->add<MaxPool2D>("pool", 2);
  net->add<Flatten>("flatten");
  net->add<Dense>("dense", 3);
  // gamma ~2 and beta ~2 put pre-activations in about [-4, 8], so both kinks of ReLU6 are in play.
  randomize(bn.gamma(), seed + 1, 1.5f, 2.5f);
  randomize(bn.beta(), seed + 2, 1.5f, 2.5f);
  randomize(bn.moving_mean(), seed + 3, -0.2f, 0.2f);
  randomize(bn.moving_variance(), seed + 4, 0.2f, 0.5f);
  return net;
}

// Which side of every kink a function sits on at x (for each ReLU6 input: below 0, inside,
// above 6; for each max-pool window: the winner), computed layer by layer outside the layer
// under test.
using KinkPattern = std::function<std::vector<int>(const Tensor& x)>;

void relu6_sides(const Tensor& z, std::vector<int>& pattern) {
  for (int64_t i = 0; i < z.size(); ++i) pattern.push_back(z[i] <= 0.0f ? 0 : z[i] >= 6.0f ? 2 : 1);
}

// The small network's pattern (layers 0-3: conv, bn, relu6, 2x2 max pool).
KinkPattern network_kinks(Sequential& net, Mode mode) {
  return [&net, mode](const Tensor& x) {
    Tensor conv_out, z, a;
    net[0].forward(x, conv_out, mode);
    net[1].forward(conv_out, z, mode);
    net[2].forward(z, a, mode);
    std::vector<int> pattern;
    relu6_sides(z, pattern);
    const int64_t n = a.dim(0), h = a.dim(1), w = a.dim(2), c = a.dim(3);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t oh = 0; oh < h / 2; ++oh)
        for (int64_t ow = 0; ow < w / 2; ++ow)
          for (int64_t k = 0; k < c; ++k) {
            int winner = 0;
            float best = -1.0f;
            for (int j = 0; j < 4; ++j) {
              const float v = a[((b * h + 2 * oh + j / 2) * w + 2 * ow + j % 2) * c + k];
              if (v > best) best = v, winner = j;
            }
            // A window won by a clamped 0 or 6 passes no gradient: its ties are harmless.
            pattern.push_back(best <= 0.0f || best >= 6.0f ? -1 : winner);
          }
    return pattern;
  };
}

// True when no single-element perturbation the checker makes (offsets +-h, +-2h of every input
// element and of every trainable element of `upstream`, the parameters before the kinks) changes
// the pattern: then the loss is smooth along every line the finite differences sample.
bool kink_free(const KinkPattern& kinks, const Tensor& x, const std::vector<Layer*>& upstream, double h) {
  const std::vector<int> base = kinks(x);
  Tensor probe;
  probe.copy_from(x);
  auto stable = [&](float* v) {
    const float original = *v;
    bool same = true;
    for (double offset : {-2 * h, -h, h, 2 * h}) {
      *v = static_cast<float>(original + offset);
      same = same && kinks(probe) == base;
    }
    *v = original;
    return same;
  };
  for (int64_t i = 0; i < probe.size(); ++i)
    if (!stable(probe.data() + i)) return false;
  for (Layer* layer : upstream)
    for (Parameter* p : layer->parameters())
      if (p->trainable())
        for (int64_t i = 0; i < p->value.size(); ++i)
          if (!stable(p->value.data() + i)) return false;
  return true;
}

// The first of a fixed series of random inputs at which the check is kink free and both kinks
// of ReLU6 are in play (some inputs below 0, some above 6).
Tensor kink_free_input(const KinkPattern& kinks, const std::vector<Layer*>& upstream, const Shape& shape, double h,
                       uint64_t seed, float range = 1.0f) {
  for (int attempt = 0; attempt < 200; ++attempt) {
    Tensor x = random_tensor(shape, seed + static_cast<uint64_t>(attempt), -range, range);
    const std::vector<int> pattern = kinks(x);
    const bool both_kinks = std::count(pattern.begin(), pattern.end(), 0) > 0 &&
                            std::count(pattern.begin(), pattern.end(), 2) > 0;
    if (both_kinks && kink_free(kinks, x, upstream, h)) return x;
  }
  FAIL("no kink-free input found");
  return Tensor();
}

Tensor kink_free_input(Sequential& net, const Shape& shape, Mode mode, double h, uint64_t seed) {
  return kink_free_input(network_kinks(net, mode), {&net[0], &net[1]}, shape, h, seed);
}

}  // namespace

// The network's loss carries a float32 noise of about 1e-6 (in training mode BN couples every
// output of a channel, so every perturbation moves all of them), which a step h turns into
// ~1.2e-6 / h of error; the steps below are the largest that fit between the kinks.
GradientCheckOptions network_options(Mode mode) {
  GradientCheckOptions o;
  o.mode = mode;
  if (mode == Mode::train) {
    o.stencil = 4;  // BN's batch statistics make the loss curved between kinks
    o.step = 1.0 / 128;
    o.atol = 3e-4;
    o.rtol = 3e-3;
  } else {
    o.step = 1.0 / 64;  // piecewise linear: no truncation error
    o.atol = 1e-4;
    o.rtol = 1e-3;
  }
  return o;
}

TEST_CASE("Sequential gradients: conv -> bn -> relu6 -> maxpool -> dense, input and all parameters") {
  for (Mode mode : {Mode::train, Mode::inference}) {
    auto net = small_network(61);
    const GradientCheckOptions options = network_options(mode);
    const Tensor x = kink_free_input(*net, Shape{2, 4, 4, 2}, mode, options.step, 62);
    run(*net, x, options, mode == Mode::train ? "Sequential conv-bn-relu6-pool-dense train"
                                              : "Sequential conv-bn-relu6-pool-dense inference");
  }
}

// ---- Fused MobileNetV2 block ------------------------------------------------------------------------

namespace {

// The block's two ReLU6 inputs, recomputed with its sub-layers outside the fused path.
KinkPattern inverted_residual_kinks(InvertedResidual& block, Mode mode) {
  return [&block, mode](const Tensor& x) {
    std::vector<int> pattern;
    Tensor e, z, a, d, z2;
    const Tensor* depthwise_in = &x;
    if (block.has_expansion()) {
      block.expand().forward(x, e, mode);
      block.expand_bn().forward(e, z, mode);
      relu6_sides(z, pattern);
      a.resize(z.shape());
      for (int64_t i = 0; i < z.size(); ++i) a[i] = std::min(std::max(z[i], 0.0f), 6.0f);
      depthwise_in = &a;
    }
    block.depthwise().forward(*depthwise_in, d, mode);
    block.depthwise_bn().forward(d, z2, mode);
    relu6_sides(z2, pattern);
    return pattern;
  };
}

}  // namespace

TEST_CASE("InvertedResidual (fused MobileNetV2 block) gradients: expansion, skip, stride 2") {
  struct Config {
    const char* prefix;
    int64_t expansion, out_channels, stride;
    Shape in;
    float input_range;  // wide enough that the second ReLU6 also reaches its cap
    const char* what;
  };
  // Batch 1 keeps the number of kinks low enough for a step of 2^-6 to fit between them.
  const std::vector<Config> configs = {
      {"block_1_", 2, 2, 1, {3, 3, 2}, 1.0f, "expand 2, skip"},
      {"expanded_conv_", 1, 3, 1, {3, 3, 3}, 2.0f, "no expansion, skip"},
      {"block_2_", 3, 3, 2, {4, 4, 2}, 1.0f, "expand 3, stride 2"},
      // Enough pixels per squared input channel for the expand gradients to come out of the
      // depthwise sweep (ExpandBelow), with a skip and with stride 2.
      // (One input channel keeps the kinks few enough.)
      {"block_3_", 2, 1, 1, {4, 8, 1}, 1.0f, "expand 2, skip, expand gradients in the sweep"},
      {"block_4_", 3, 2, 2, {4, 6, 1}, 1.0f, "expand 3, stride 2, expand gradients in the sweep"},
  };
  uint64_t seed = 130;
  for (const Config& c : configs) {
    for (Mode mode : {Mode::train, Mode::inference}) {
      const std::string label = std::string("InvertedResidual ") + c.what + (mode == Mode::train ? " train" : " inference");
      CAPTURE(label);
      InvertedResidual block(c.prefix, c.expansion, c.out_channels, c.stride, 0.9f);
      build(block, c.in, seed);
      REQUIRE(block.has_skip() == (c.stride == 1 && c.in[2] == c.out_channels));
      std::vector<Layer*> upstream;  // layers before the second ReLU6
      if (block.has_expansion()) upstream = {&block.expand(), &block.expand_bn()};
      upstream.push_back(&block.depthwise());
      upstream.push_back(&block.depthwise_bn());
      // Like the network: BN gains and offsets that put ReLU6 inputs on both sides of both kinks.
      std::vector<BatchNorm*> activated = {&block.depthwise_bn()};
      if (block.has_expansion()) activated.push_back(&block.expand_bn());
      for (BatchNorm* bn : activated) {
        randomize(bn->gamma(), seed + 1, 1.5f, 2.5f);
        randomize(bn->beta(), seed + 2, 1.5f, 2.5f);
      }
      for (BatchNorm* bn : {&block.depthwise_bn(), &block.project_bn()}) {
        randomize(bn->moving_mean(), seed + 3, -0.2f, 0.2f);
        randomize(bn->moving_variance(), seed + 4, 0.3f, 1.0f);
      }
      if (block.has_expansion()) {
        randomize(block.expand_bn().moving_mean(), seed + 5, -0.2f, 0.2f);
        randomize(block.expand_bn().moving_variance(), seed + 6, 0.3f, 1.0f);
      }
      randomize(block.project_bn().gamma(), seed + 7, 0.5f, 1.5f);
      randomize(block.project_bn().beta(), seed + 8, -0.5f, 0.5f);
      // Three BatchNorms couple every output, so the loss noise is the network's (~1e-6, more in
      // training mode), hence the network's tolerance, with the step that fits between the kinks.
      GradientCheckOptions options = network_options(Mode::train);
      options.step = 1.0 / 64;
      options.stencil = mode == Mode::train ? 4 : 2;
      options.mode = mode;
      const Tensor x = kink_free_input(inverted_residual_kinks(block, mode), upstream, c.in.with_batch(1), options.step,
                                       seed + 9, c.input_range);
      run(block, x, options, label);
      seed += 20;
    }
  }
}

// ---- Loss ----------------------------------------------------------------------------------------

namespace {

// The loss by its textbook definition in long double (independent of the kernel):
//   sum_n [(1 - e) w[y_n] (lse_n - z[n, y_n]) + (e / K) sum_k w[k] (lse_n - z[n, k])] / sum_n w[y_n]
long double reference_cross_entropy(const Tensor& logits, const std::vector<int32_t>& labels,
                                    const SoftmaxCrossEntropy::Options& options) {
  const int64_t n = logits.dim(0), k = logits.dim(1);
  auto weight = [&](int64_t c) -> long double { return options.class_weights.empty() ? 1.0L : options.class_weights[c]; };
  const long double e = options.label_smoothing;
  long double total = 0, weight_total = 0;
  for (int64_t i = 0; i < n; ++i) {
    long double zmax = logits[i * k];
    for (int64_t c = 1; c < k; ++c) zmax = std::max<long double>(zmax, logits[i * k + c]);
    long double sum = 0;
    for (int64_t c = 0; c < k; ++c) sum += std::exp(static_cast<long double>(logits[i * k + c]) - zmax);
    const long double lse = zmax + std::log(sum);
    long double smooth = 0;
    for (int64_t c = 0; c < k; ++c) smooth += weight(c) * (lse - logits[i * k + c]);
    const int32_t y = labels[static_cast<size_t>(i)];
    total += (1 - e) * weight(y) * (lse - logits[i * k + y]) + e / static_cast<long double>(k) * smooth;
    weight_total += weight(y);
  }
  return total / weight_total;
}

// d loss / d logits (`gradient`) against fourth-order central differences of loss_at(z), a
// kernel's double-precision loss, around `logits`.
template <class LossAt>
void check_logit_gradient(const std::string& label, const Tensor& logits, const Tensor& gradient, LossAt loss_at) {
  REQUIRE(gradient.shape() == logits.shape());
  const double h = 1.0 / 64, atol = 1e-6, rtol = 1e-5;
  Tensor z;
  z.copy_from(logits);
  auto eval = [&](int64_t i, double v) {
    const float original = z[i];
    z[i] = static_cast<float>(v);
    const double l = loss_at(z.data());
    z[i] = original;
    return l;
  };
  GradientErrors errors;
  for (int64_t i = 0; i < z.size(); ++i) {
    const double v = z[i];
    const double numeric = (8 * (eval(i, v + h) - eval(i, v - h)) - (eval(i, v + 2 * h) - eval(i, v - 2 * h))) / (12 * h);
    errors.add("dlogits", i, gradient[i], numeric, atol, rtol);
  }
  std::printf("gradcheck %-44s h=%-7.2g atol=%-7.1e rtol=%-7.1e n=%-5lld max_abs=%.2e max_rel=%.2e ratio=%.3f\n",
              label.c_str(), h, atol, rtol, static_cast<long long>(errors.count), errors.max_abs, errors.max_rel,
              errors.max_ratio);
  INFO(errors.worst);
  CHECK(errors.failures == 0);
  CHECK(errors.count == logits.size());
}

// Checks SoftmaxCrossEntropy's loss against the reference and its gradient against fourth-order
// differences of the kernel's double-precision loss. Logits near 1e4 sit on a float32 grid of
// 2^-10, so a step of 2^-6 keeps every perturbed logit exact. The loss is computed in double, so
// the error is the float32 rounding of the stored gradient (~6e-8 relative) plus a truncation
// of ~h^4 / 30 * |L^(5)| < 1e-8.
void check_cross_entropy(const std::string& label, const Tensor& logits, const std::vector<int32_t>& labels,
                         const SoftmaxCrossEntropy::Options& options) {
  SoftmaxCrossEntropy loss(options);
  const float value = loss.forward(logits, labels);
  const long double reference = reference_cross_entropy(logits, labels, options);
  CAPTURE(label);
  CHECK(std::isfinite(value));
  CHECK(static_cast<double>(value) == doctest::Approx(static_cast<double>(reference)).epsilon(1e-6));
  const float* weights = options.class_weights.empty() ? nullptr : options.class_weights.data();
  check_logit_gradient(label, logits, loss.gradient(), [&](const float* z) {
    return kernels::softmax_cross_entropy(nullptr, z, labels.data(), logits.dim(0), logits.dim(1), weights,
                                          options.label_smoothing);
  });
}

}  // namespace

TEST_CASE("SoftmaxCrossEntropy gradients: plain, class weights, label smoothing, huge logits") {
  const Tensor logits = random_tensor(Shape{4, 5}, 81, -3.0f, 3.0f);
  const std::vector<int32_t> labels = {2, 0, 4, 2};
  SoftmaxCrossEntropy::Options weighted;
  weighted.class_weights = {0.5f, 2.0f, 1.0f, 0.0f, 3.0f};
  SoftmaxCrossEntropy::Options smoothed;
  smoothed.label_smoothing = 0.1f;
  SoftmaxCrossEntropy::Options both = weighted;
  both.label_smoothing = 0.2f;
  check_cross_entropy("SoftmaxCrossEntropy plain", logits, labels, {});
  check_cross_entropy("SoftmaxCrossEntropy class weights", logits, labels, weighted);
  check_cross_entropy("SoftmaxCrossEntropy label smoothing 0.1", logits, labels, smoothed);
  check_cross_entropy("SoftmaxCrossEntropy weights + smoothing 0.2", logits, labels, both);

  // Logits around +-1e4: exp overflows float and double without the max shift.
  const Tensor huge(Shape{4, 5}, {1e4f, -1e4f, 0.0f, 5e3f, -3e3f,                  // label far below the max
                                  1e4f, 1e4f + 1, 1e4f - 2, 1e4f + 0.5f, -1e4f,    // close competitors at 1e4
                                  -1e4f, -1e4f + 3, -1e4f + 1, -1e4f, -1e4f - 2,   // all hugely negative
                                  1e4f, 1e4f, 1e4f, 1e4f, 1e4f});                  // uniform
  const std::vector<int32_t> huge_labels = {1, 2, 0, 4};
  check_cross_entropy("SoftmaxCrossEntropy huge logits", huge, huge_labels, {});
  check_cross_entropy("SoftmaxCrossEntropy huge logits, weights+smoothing", huge, huge_labels, both);
  // The first sample's loss is the logit gap, 2e4, and must come out finite and exact.
  SoftmaxCrossEntropy plain;
  const Tensor first(Shape{1, 5}, {1e4f, -1e4f, 0.0f, 5e3f, -3e3f});
  CHECK(plain.forward(first, {1}) == 2e4f);
}

// ---- Distillation loss ---------------------------------------------------------------------------

namespace {

// w T^2 mean_n sum_k p (log p - log softmax(z / T)) + (1 - w) CE_smoothed, by its definition in
// long double (independent of the kernel).
long double reference_distillation(const Tensor& logits, const Tensor& teacher, const std::vector<int32_t>& labels,
                                   const DistillationLoss::Options& o) {
  const int64_t n = logits.dim(0), k = logits.dim(1);
  const long double t = o.temperature, w = o.soft_weight;
  long double soft = 0;
  for (int64_t i = 0; i < n; ++i) {
    long double zmax = logits[i * k];
    for (int64_t c = 1; c < k; ++c) zmax = std::max<long double>(zmax, logits[i * k + c]);
    long double sum = 0;
    for (int64_t c = 0; c < k; ++c) sum += std::exp((static_cast<long double>(logits[i * k + c]) - zmax) / t);
    for (int64_t c = 0; c < k; ++c) {
      const long double p = teacher[i * k + c];
      const long double log_q = (logits[i * k + c] - zmax) / t - std::log(sum);
      if (p > 0) soft += p * (std::log(p) - log_q);
    }
  }
  SoftmaxCrossEntropy::Options ce;
  ce.label_smoothing = o.label_smoothing;
  return w * t * t * soft / static_cast<long double>(n) + (1 - w) * reference_cross_entropy(logits, labels, ce);
}

// Loss against the reference; gradient against fourth-order differences of the kernel's double
// loss (as for the cross-entropy above).
void check_distillation(const std::string& label, const Tensor& logits, const Tensor& teacher,
                        const std::vector<int32_t>& labels, const DistillationLoss::Options& options) {
  DistillationLoss loss(nullptr, options);
  const float value = loss.forward(logits, teacher, labels);
  const long double reference = reference_distillation(logits, teacher, labels, options);
  CAPTURE(label);
  CHECK(std::isfinite(value));
  CHECK(static_cast<double>(value) == doctest::Approx(static_cast<double>(reference)).epsilon(1e-6));
  check_logit_gradient(label, logits, loss.gradient(), [&](const float* z) {
    return kernels::distillation_loss(nullptr, z, teacher.data(), labels.data(), logits.dim(0), logits.dim(1),
                                      options.temperature, options.soft_weight, options.label_smoothing)
        .loss;
  });
}

// Probabilities [N, K] of random logits at temperature t (rows sum to 1 up to float rounding).
Tensor teacher_probabilities(const Shape& shape, uint64_t seed, float t) {
  const Tensor logits = random_tensor(shape, seed, -4.0f, 4.0f);
  Tensor p(shape);
  softmax_at_temperature(p.data(), logits.data(), shape[0], shape[1], t);
  return p;
}

}  // namespace

TEST_CASE("DistillationLoss gradients: temperatures, weights, smoothing, one-hot teachers, huge logits") {
  const Tensor logits = random_tensor(Shape{4, 5}, 83, -3.0f, 3.0f);
  const std::vector<int32_t> labels = {1, 4, 0, 1};
  check_distillation("Distillation T=1 w=0.5", logits, teacher_probabilities(Shape{4, 5}, 84, 1), labels, {1, 0.5f, 0});
  check_distillation("Distillation T=2 w=0.8 smoothing 0.1", logits, teacher_probabilities(Shape{4, 5}, 85, 2), labels,
                     {2, 0.8f, 0.1f});
  check_distillation("Distillation T=4 soft only", logits, teacher_probabilities(Shape{4, 5}, 86, 4), labels,
                     {4, 1.0f, 0});
  check_distillation("Distillation T=3 hard only", logits, teacher_probabilities(Shape{4, 5}, 87, 3), labels,
                     {3, 0.0f, 0.2f});
  // Teacher rows with exact zeros (0 log 0 = 0) and a one-hot row.
  const Tensor sparse(Shape{4, 5}, {0, 1, 0, 0, 0,  0.5f, 0, 0.5f, 0, 0,  0.2f, 0.2f, 0.2f, 0.2f, 0.2f,  0, 0, 0, 0.25f, 0.75f});
  check_distillation("Distillation T=2 w=0.7, zeros in the teacher", logits, sparse, labels, {2, 0.7f, 0.1f});
  // Logits around +-1e4 (see the cross-entropy's case): the shifts keep everything finite.
  const Tensor huge(Shape{2, 5}, {1e4f, -1e4f, 0.0f, 5e3f, -3e3f, -1e4f, -1e4f + 3, -1e4f + 1, -1e4f, -1e4f - 2});
  check_distillation("Distillation huge logits", huge, teacher_probabilities(Shape{2, 5}, 88, 2), {1, 2},
                     {2, 0.8f, 0.1f});

  // A student equal to its teacher at the temperature has soft loss 0 (KL, not cross-entropy).
  Tensor same(Shape{3, 4}, {1, 2, 3, 4, -1, 0, 1, 0.5f, 2, 2, -2, 0});
  Tensor p(Shape{3, 4});
  softmax_at_temperature(p.data(), same.data(), 3, 4, 2.0f);
  DistillationLoss matched(nullptr, {2, 1.0f, 0});
  CHECK(std::fabs(matched.forward(same, p, {0, 1, 2})) < 1e-6f);
  CHECK(std::fabs(matched.soft_loss()) < 1e-7);
  for (int64_t i = 0; i < same.size(); ++i) CHECK(std::fabs(matched.gradient()[i]) < 1e-7f);

  // Bad input: a clear error, not garbage.
  DistillationLoss loss(nullptr, {2, 0.5f, 0});
  CHECK_THROWS_WITH_AS(loss.forward(logits, teacher_probabilities(Shape{4, 6}, 1, 1), labels),
                       doctest::Contains("must predict the same classes"), Error);
  Tensor negative = teacher_probabilities(Shape{4, 5}, 2, 1);
  negative[3] = -0.1f;
  CHECK_THROWS_WITH_AS(loss.forward(logits, negative, labels), doctest::Contains("outside [0, 1]"), Error);
  CHECK_THROWS_WITH_AS(DistillationLoss(nullptr, {0, 0.5f, 0}), doctest::Contains("temperature must be positive"), Error);
  CHECK_THROWS_WITH_AS(DistillationLoss(nullptr, {2, 1.5f, 0}), doctest::Contains("soft_weight must be in [0, 1]"), Error);
  Batch batch;
  CHECK_THROWS_WITH_AS(loss.forward(logits, batch), doctest::Contains("no teacher"), Error);
}

// ---- Mixed targets (mixup, cutmix) ---------------------------------------------------------------

TEST_CASE("mixed-target cross-entropy and distillation: loss by definition, gradients by finite differences") {
  const Tensor logits = random_tensor(Shape{5, 4}, 91, -3.0f, 3.0f);
  const std::vector<int32_t> labels = {0, 3, 1, 1, 2}, mixed = {1, 1, 2, 0, 2};
  const std::vector<float> class_weights = {0.5f, 2.0f, 1.0f, 1.5f};
  Tensor probabilities(Shape{5, 4});
  softmax_at_temperature(probabilities.data(), random_tensor(Shape{5, 4}, 92, -3.0f, 3.0f).data(), 5, 4, 2.0f);
  struct Case {
    const char* label;
    float weight, smoothing;
    bool class_weighted, distill;
  };
  for (const Case& c : {Case{"mixed CE lam 0.7", 0.7f, 0.0f, false, false},
                        Case{"mixed CE lam 0.3 smoothing 0.1", 0.3f, 0.1f, false, false},
                        Case{"mixed CE lam 0.55 class weights", 0.55f, 0.1f, true, false},
                        Case{"mixed CE lam 0 (all partner)", 0.0f, 0.0f, false, false},
                        Case{"mixed distillation T=2 w=0.8 lam 0.4", 0.4f, 0.1f, false, true}}) {
    CAPTURE(c.label);
    SoftmaxCrossEntropy::Options ce;
    ce.label_smoothing = c.smoothing;
    if (c.class_weighted) ce.class_weights = class_weights;
    // The definition, in long double: lam CE(labels) + (1 - lam) CE(mixed), distillation's soft
    // term on top.
    const long double hard = c.weight * reference_cross_entropy(logits, labels, ce) +
                             (1 - static_cast<long double>(c.weight)) * reference_cross_entropy(logits, mixed, ce);
    const DistillationLoss::Options kd{2.0f, 0.8f, c.smoothing};
    long double reference = hard;
    if (c.distill) {
      // reference_distillation's soft part: its value with hard labels minus its hard part.
      const long double with_labels = reference_distillation(logits, probabilities, labels, kd);
      reference = with_labels - (1 - 0.8L) * reference_cross_entropy(logits, labels, ce) + (1 - 0.8L) * hard;
    }
    float value = 0;
    Tensor gradient;
    if (c.distill) {
      DistillationLoss loss(nullptr, kd);
      value = loss.forward(logits, probabilities, labels, &mixed, c.weight);
      gradient.copy_from(loss.gradient());
    } else {
      SoftmaxCrossEntropy loss(ce);
      value = loss.forward(logits, labels, &mixed, c.weight);
      gradient.copy_from(loss.gradient());
    }
    CHECK(static_cast<double>(value) == doctest::Approx(static_cast<double>(reference)).epsilon(1e-6));
    check_logit_gradient(c.label, logits, gradient, [&](const float* z) {
      return c.distill ? kernels::distillation_loss(nullptr, z, probabilities.data(), labels.data(), 5, 4, 2.0, 0.8,
                                                    c.smoothing, mixed.data(), c.weight, nullptr)
                             .loss
                       : kernels::mixed_softmax_cross_entropy(nullptr, nullptr, z, labels.data(), mixed.data(), c.weight,
                                                              5, 4, c.class_weighted ? class_weights.data() : nullptr,
                                                              c.smoothing);
    });
  }
  // Mixed labels equal to the labels give the plain loss, whatever the weight.
  SoftmaxCrossEntropy plain, same;
  const float expected = plain.forward(logits, labels);
  CHECK(same.forward(logits, labels, &labels, 0.3f) == doctest::Approx(expected).epsilon(1e-6));
  // Bad input: a clear error.
  SoftmaxCrossEntropy loss;
  const std::vector<int32_t> short_mixed = {1, 2};
  CHECK_THROWS_WITH_AS(loss.forward(logits, labels, &short_mixed, 0.5f), doctest::Contains("2 mixed labels for a batch of 5"),
                       Error);
  CHECK_THROWS_WITH_AS(loss.forward(logits, labels, &mixed, 1.5f), doctest::Contains("must be in [0, 1]"), Error);
  const std::vector<int32_t> out_of_range = {1, 1, 9, 0, 2};
  CHECK_THROWS_WITH_AS(loss.forward(logits, labels, &out_of_range, 0.5f), doctest::Contains("label 9 of sample 2"), Error);
}

// ---- Frozen parameters and gradient accumulation -------------------------------------------------

namespace {
bool all_equal(const Tensor& t, float value) {
  for (int64_t i = 0; i < t.size(); ++i)
    if (!(t[i] == value)) return false;
  return true;
}
}  // namespace

TEST_CASE("Frozen parameters get no gradient while the input gradient stays correct") {
  const float sentinel = 0.5f;  // a frozen gradient must keep whatever it held
  SUBCASE("Conv2D with a frozen kernel") {
    Conv2D conv("conv", 3, 3, 2, Padding::same);
    build(conv, Shape{5, 5, 2});
    conv.kernel().frozen = true;
    const Tensor x = random_tensor(Shape{2, 5, 5, 2}, 91);
    run(conv, x, linear_options(), "Conv2D 3x3 s2, kernel frozen");
    CHECK(all_equal(conv.kernel().grad, 0.0f));
    conv.kernel().grad.fill(sentinel);
    Tensor y, dx;
    conv.forward(x, y, Mode::train);
    conv.backward(x, y, random_tensor(y.shape(), 92), &dx);
    CHECK(all_equal(conv.kernel().grad, sentinel));
    CHECK(!all_equal(conv.bias().grad, 0.0f));
  }
  SUBCASE("DepthwiseConv2D with a frozen bias") {
    DepthwiseConv2D dw("dw", 3, 1, Padding::same);
    build(dw, Shape{4, 4, 3});
    dw.bias().frozen = true;
    run(dw, random_tensor(Shape{2, 4, 4, 3}, 93), linear_options(), "DepthwiseConv2D 3x3, bias frozen");
    CHECK(all_equal(dw.bias().grad, 0.0f));
  }
  SUBCASE("Dense, fully frozen") {
    Dense dense("dense", 3);
    build(dense, Shape{4});
    set_frozen(dense.parameters(), true);
    CHECK(!dense.has_trainable_parameters());
    const Tensor x = random_tensor(Shape{2, 4}, 94);
    run(dense, x, linear_options(), "Dense 4->3, frozen");
    dense.kernel().grad.fill(sentinel);
    dense.bias().grad.fill(sentinel);
    Tensor y, dx;
    dense.forward(x, y, Mode::train);
    dense.backward(x, y, random_tensor(y.shape(), 95), &dx);
    CHECK(all_equal(dense.kernel().grad, sentinel));
    CHECK(all_equal(dense.bias().grad, sentinel));
  }
  SUBCASE("BatchNorm, frozen: inference behaviour in training mode, statistics kept") {
    BatchNorm bn("bn", 0.9f);
    build(bn, Shape{3, 3, 2});
    randomize(bn.moving_mean(), 96, -0.3f, 0.3f);
    randomize(bn.moving_variance(), 97, 0.5f, 2.0f);
    set_frozen(bn.parameters(), true);
    const Tensor x = random_tensor(Shape{2, 3, 3, 2}, 98);
    Tensor mean_before, y_train, y_inference;
    mean_before.copy_from(bn.moving_mean().value);
    bn.forward(x, y_inference, Mode::inference);
    bn.forward(x, y_train, Mode::train);
    for (int64_t i = 0; i < bn.moving_mean().value.size(); ++i) CHECK(bn.moving_mean().value[i] == mean_before[i]);
    for (int64_t i = 0; i < y_train.size(); ++i) CHECK(y_train[i] == y_inference[i]);
    run(bn, x, linear_options(), "BatchNorm frozen, train mode");
    CHECK(all_equal(bn.gamma().grad, 0.0f));
    CHECK(all_equal(bn.beta().grad, 0.0f));
  }
}

TEST_CASE("Sequential backward with a frozen lower part leaves the frozen gradients alone") {
  auto net = small_network(71);
  set_frozen((*net)[0].parameters(), true);  // conv
  set_frozen((*net)[1].parameters(), true);  // bn: now runs in inference mode
  auto& dense = dynamic_cast<Dense&>((*net)[5]);
  GradientCheckOptions options = network_options(Mode::inference);  // frozen BN: piecewise linear
  options.mode = Mode::train;
  const Tensor x = kink_free_input(*net, Shape{2, 4, 4, 2}, Mode::train, options.step, 72);

  const float sentinel = 0.5f;
  auto fill_frozen = [&] {
    for (size_t layer = 0; layer < 2; ++layer)
      for (Parameter* p : (*net)[layer].parameters())
        if (p->kind == ParameterKind::weight) p->grad.fill(sentinel);
  };
  auto frozen_untouched = [&] {
    bool untouched = true;
    for (size_t layer = 0; layer < 2; ++layer)
      for (Parameter* p : (*net)[layer].parameters())
        if (p->kind == ParameterKind::weight) untouched = untouched && all_equal(p->grad, sentinel);
    return untouched;
  };

  // Model API: no input gradient, so backward stops at the dense layer.
  fill_frozen();
  zero_grad(dense.parameters());
  const Tensor& y = net->forward(x, Mode::train);
  const Tensor dy = random_tensor(y.shape(), 73);
  net->backward(dy);
  CHECK(frozen_untouched());
  CHECK(!all_equal(dense.kernel().grad, 0.0f));
  Tensor model_api_grad;
  model_api_grad.copy_from(dense.kernel().grad);

  // Layer API with an input gradient: backward runs through the frozen layers but must not
  // write their gradients, and the dense gradient must not depend on the route.
  fill_frozen();
  zero_grad(dense.parameters());
  Tensor y2, dx;
  net->forward(x, y2, Mode::train);
  net->backward(x, y2, dy, &dx);
  CHECK(frozen_untouched());
  for (int64_t i = 0; i < model_api_grad.size(); ++i) CHECK(dense.kernel().grad[i] == model_api_grad[i]);

  // Both routes against finite differences.
  GradientCheckOptions params_only = options;
  params_only.check_input = false;
  run(*net, x, params_only, "Sequential, conv+bn frozen, params only");
  run(*net, x, options, "Sequential, conv+bn frozen, input + params");
}

namespace {
// Two backward calls from zeroed gradients must give exactly twice one call (g + g is exact).
// Returns the names of parameters that did not accumulate.
std::string non_accumulating(Layer& layer, const Tensor& x) {
  Tensor y;
  layer.forward(x, y, Mode::train);
  const Tensor dy = random_tensor(y.shape(), 112);
  zero_grad(layer.parameters());
  layer.backward(x, y, dy, nullptr);
  std::vector<Tensor> once;
  for (Parameter* p : layer.parameters())
    if (p->kind == ParameterKind::weight) once.emplace_back().copy_from(p->grad);
  layer.backward(x, y, dy, nullptr);
  std::string failed;
  size_t k = 0;
  for (Parameter* p : layer.parameters()) {
    if (p->kind != ParameterKind::weight) continue;
    bool doubled = !all_equal(once[k], 0.0f);
    for (int64_t i = 0; i < p->grad.size(); ++i) doubled = doubled && p->grad[i] == 2 * once[k][i];
    if (!doubled) failed += p->name + " ";
    ++k;
  }
  return failed;
}
}  // namespace

TEST_CASE("Parameter gradients accumulate over backward calls") {
  Conv2D pointwise("pw", 3, 1);
  Conv2D conv("conv", 2, 3, 2, Padding::same);
  DepthwiseConv2D dw("dw", 3);
  BatchNorm bn("bn");
  Dense dense("dense", 2);
  build(pointwise, Shape{3, 3, 2});
  build(conv, Shape{5, 5, 2});
  build(dw, Shape{4, 4, 3});
  build(bn, Shape{3, 3, 2});
  randomize(bn.beta(), 113, -0.5f, 0.5f);
  build(dense, Shape{5});
  CHECK(non_accumulating(pointwise, random_tensor(Shape{2, 3, 3, 2}, 111)) == "");
  CHECK(non_accumulating(conv, random_tensor(Shape{2, 5, 5, 2}, 111)) == "");
  CHECK(non_accumulating(dw, random_tensor(Shape{2, 4, 4, 3}, 111)) == "");
  CHECK(non_accumulating(bn, random_tensor(Shape{2, 3, 3, 2}, 111)) == "");
  CHECK(non_accumulating(dense, random_tensor(Shape{3, 5}, 111)) == "");
}

// ---- The checker itself ----------------------------------------------------------------------------

namespace {
// y = x * w per channel, with a backward that can be made wrong on purpose.
class FaultyScale : public Layer {
 public:
  enum class Fault { none, input_element_off, weight_scaled, input_element_unwritten, weight_overwritten };
  FaultyScale(Fault fault) : Layer("faulty"), fault_(fault) {}
  const char* type() const override { return "FaultyScale"; }
  Parameter& weight() { return w_; }
  void forward(const Tensor& x, Tensor& y, Mode) override {
    check_input(x);
    y.resize(x.shape());
    const int64_t c = w_.value.size();
    for (int64_t i = 0; i < x.size(); ++i) y[i] = x[i] * w_.value[i % c];
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    check_output_grad(y, dy);
    const int64_t c = w_.value.size();
    if (w_.trainable()) {
      if (fault_ == Fault::weight_overwritten) w_.grad.zero();
      for (int64_t i = 0; i < x.size(); ++i) w_.grad[i % c] += dy[i] * x[i] * (fault_ == Fault::weight_scaled ? 1.01f : 1.0f);
    }
    if (!dx) return;
    dx->resize(x.shape());
    for (int64_t i = 0; i < x.size(); ++i) {
      if (fault_ == Fault::input_element_unwritten && i == 5) continue;
      (*dx)[i] = dy[i] * w_.value[i % c] + (fault_ == Fault::input_element_off && i == 7 ? 0.01f : 0.0f);
    }
  }

 protected:
  Shape do_build(const Shape& in, Rng& rng) override {
    w_ = Parameter::weight("faulty/w", Shape{in.back()});
    init_uniform(w_.value, 1.0f, rng);
    register_parameter(w_);
    return in;
  }

 private:
  Fault fault_;
  Parameter w_;
};
}  // namespace

TEST_CASE("The gradient checker catches wrong gradients") {
  using Fault = FaultyScale::Fault;
  const Tensor x = random_tensor(Shape{2, 3, 3, 2}, 121);
  for (Fault fault : {Fault::none, Fault::input_element_off, Fault::weight_scaled, Fault::input_element_unwritten}) {
    FaultyScale layer(fault);
    build(layer, Shape{3, 3, 2});
    const GradientCheckReport report = check_gradients(layer, x, linear_options(), "faulty");
    CAPTURE(static_cast<int>(fault));
    CHECK(report.passed() == (fault == Fault::none));
    CHECK(report.overall.failures == (fault == Fault::none ? 0 : fault == Fault::weight_scaled ? 2 : 1));
  }
  // A backward that overwrites instead of accumulating passes one check from zeroed gradients;
  // the accumulation test catches it.
  FaultyScale overwrite(Fault::weight_overwritten);
  build(overwrite, Shape{3, 3, 2});
  CHECK(check_gradients(overwrite, x, linear_options(), "faulty").passed());
  CHECK(non_accumulating(overwrite, x) == "faulty/w ");
}
