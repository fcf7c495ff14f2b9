// Bad input raises eigennet::Error with a message that names the object and the problem.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <eigennet/eigennet.hpp>

using namespace eigennet;
using doctest::Contains;

namespace {

const float nan_f = std::numeric_limits<float>::quiet_NaN();

template <typename L>
L& built(L& layer, const Shape& per_sample) {
  Rng rng(1);
  layer.build(per_sample, rng);
  return layer;
}

Tensor filled(const Shape& shape, float value = 0.5f) {
  Tensor t(shape);
  t.fill(value);
  return t;
}

}  // namespace

TEST_CASE("Layer constructors reject non-positive sizes and out-of-range rates") {
  CHECK_THROWS_WITH_AS(Conv2D("c1", 0, 3), Contains("Conv2D 'c1': filters must be positive, got 0"), Error);
  CHECK_THROWS_WITH_AS(Conv2D("c1", -2, 3), Contains("Conv2D 'c1': filters must be positive, got -2"), Error);
  CHECK_THROWS_WITH_AS(Conv2D("c1", 4, 0), Contains("Conv2D 'c1': kernel size must be positive, got 0x0"), Error);
  CHECK_THROWS_WITH_AS(Conv2D("c1", 4, KernelSize(3, -1)), Contains("kernel size must be positive, got 3x-1"), Error);
  CHECK_THROWS_WITH_AS(Conv2D("c1", 4, 3, 0), Contains("Conv2D 'c1': stride must be positive, got 0"), Error);
  CHECK_THROWS_WITH_AS(Conv2D("c1", 4, 3, -1), Contains("Conv2D 'c1': stride must be positive, got -1"), Error);

  CHECK_THROWS_WITH_AS(DepthwiseConv2D("d1", 0), Contains("DepthwiseConv2D 'd1': kernel size must be positive"), Error);
  CHECK_THROWS_WITH_AS(DepthwiseConv2D("d1", KernelSize(-3, 3)), Contains("kernel size must be positive, got -3x3"),
                       Error);
  CHECK_THROWS_WITH_AS(DepthwiseConv2D("d1", 3, 0), Contains("DepthwiseConv2D 'd1': stride must be positive, got 0"),
                       Error);

  CHECK_THROWS_WITH_AS(MaxPool2D("p1", 0), Contains("'p1': pool size must be positive, got 0x0"), Error);
  CHECK_THROWS_WITH_AS(AvgPool2D("p2", KernelSize(2, 0)), Contains("'p2': pool size must be positive, got 2x0"), Error);
  CHECK_THROWS_WITH_AS(MaxPool2D("p3", 2, -1), Contains("'p3': stride must be positive, got -1"), Error);
  CHECK_NOTHROW(MaxPool2D("p4", 2, 0));  // 0 means "the pool size", as Keras' strides=None

  CHECK_THROWS_WITH_AS(Dense("fc", 0), Contains("Dense 'fc': units must be positive, got 0"), Error);
  CHECK_THROWS_WITH_AS(Dense("fc", -3), Contains("Dense 'fc': units must be positive, got -3"), Error);

  CHECK_THROWS_WITH_AS(Dropout("drop", 1.0f), Contains("Dropout 'drop': rate must be in [0, 1), got 1"), Error);
  CHECK_THROWS_WITH_AS(Dropout("drop", -0.1f), Contains("Dropout 'drop': rate must be in [0, 1), got -0.1"), Error);
  CHECK_THROWS_WITH_AS(Dropout("drop", nan_f), Contains("Dropout 'drop': rate must be in [0, 1)"), Error);
  CHECK_NOTHROW(Dropout("drop", 0.0f));

  CHECK_THROWS_WITH_AS(BatchNorm("bn", 1.5f), Contains("BatchNorm 'bn': momentum must be in [0, 1], got 1.5"), Error);
  CHECK_THROWS_WITH_AS(BatchNorm("bn", -0.1f), Contains("BatchNorm 'bn': momentum must be in [0, 1], got -0.1"), Error);
  CHECK_THROWS_WITH_AS(BatchNorm("bn", nan_f), Contains("BatchNorm 'bn': momentum must be in [0, 1]"), Error);
  CHECK_THROWS_WITH_AS(BatchNorm("bn", 0.9f, 0.0f), Contains("BatchNorm 'bn': epsilon must be positive, got 0"), Error);
  CHECK_NOTHROW(BatchNorm("bn", 0.0f));
  CHECK_NOTHROW(BatchNorm("bn", 1.0f));

  CHECK_THROWS_WITH_AS(ReLU("relu", 0.0f), Contains("ReLU 'relu': max_value must be positive, got 0"), Error);
  CHECK_THROWS_WITH_AS(ReLU("relu", -6.0f), Contains("ReLU 'relu': max_value must be positive, got -6"), Error);
}

TEST_CASE("build rejects input shapes of the wrong rank") {
  Conv2D conv("conv", 4, 3);
  CHECK_THROWS_WITH_AS(built(conv, Shape{8, 8}),
                       Contains("Conv2D 'conv': expects [height, width, channels] input, got [8, 8]"), Error);
  DepthwiseConv2D dw("dw", 3);
  CHECK_THROWS_WITH_AS(built(dw, Shape{2, 8, 8, 3}),
                       Contains("DepthwiseConv2D 'dw': expects [height, width, channels] input, got [2, 8, 8, 3]"),
                       Error);
  MaxPool2D max_pool("max_pool");
  CHECK_THROWS_WITH_AS(built(max_pool, Shape{16}),
                       Contains("MaxPool2D 'max_pool': expects [height, width, channels] input, got [16]"), Error);
  AvgPool2D avg_pool("avg_pool");
  CHECK_THROWS_WITH_AS(built(avg_pool, Shape{4, 4}), Contains("AvgPool2D 'avg_pool': expects [height, width, channels]"),
                       Error);
  GlobalAvgPool gap("gap");
  CHECK_THROWS_WITH_AS(built(gap, Shape{4, 4}), Contains("GlobalAvgPool 'gap': expects [height, width, channels]"),
                       Error);
  GlobalMaxPool gmp("gmp");
  CHECK_THROWS_WITH_AS(built(gmp, Shape{16}), Contains("GlobalMaxPool 'gmp': expects [height, width, channels]"), Error);
  Softmax softmax("softmax");
  CHECK_THROWS_WITH_AS(built(softmax, Shape{2, 5}), Contains("Softmax 'softmax': expects [classes] input, got [2, 5]"),
                       Error);
  BatchNorm bn("bn");
  CHECK_THROWS_WITH_AS(built(bn, Shape{}), Contains("BatchNorm 'bn': input needs a channel axis"), Error);
  Conv2D empty("empty", 4, 3);
  CHECK_THROWS_WITH_AS(built(empty, Shape{8, 8, 0}), Contains("Conv2D 'empty': input must be non-empty"), Error);
}

TEST_CASE("Dense on an image-shaped input says to flatten first") {
  Dense dense("fc", 10);
  CHECK_THROWS_WITH_AS(built(dense, Shape{4, 4, 3}), Contains("Dense 'fc': expects [features] input, got [4, 4, 3]"),
                       Error);
  CHECK_THROWS_WITH_AS(built(dense, Shape{4, 4, 3}), Contains("add Flatten or a global pooling layer"), Error);
  // Built for features, then given a 4D batch.
  Dense fc("fc2", 10);
  built(fc, Shape{48});
  Tensor y;
  CHECK_THROWS_WITH_AS(fc.forward(filled(Shape{2, 4, 4, 3}), y, Mode::train),
                       Contains("Dense 'fc2': expected input of shape [batch, 48], got [2, 4, 4, 3]"), Error);
}

TEST_CASE("'valid' padding with a kernel larger than the input") {
  Conv2D conv("conv", 2, 5, 1, Padding::valid);
  CHECK_THROWS_WITH_AS(built(conv, Shape{3, 3, 1}),
                       Contains("Conv2D 'conv': input height 3 is smaller than the kernel 5 with padding 'valid'"), Error);
  Conv2D wide("wide", 2, KernelSize(1, 5), 1, Padding::valid);
  CHECK_THROWS_WITH_AS(built(wide, Shape{8, 4, 1}),
                       Contains("Conv2D 'wide': input width 4 is smaller than the kernel 5 with padding 'valid'"), Error);
  DepthwiseConv2D dw("dw", 3, 2, Padding::valid);
  CHECK_THROWS_WITH_AS(built(dw, Shape{2, 2, 4}),
                       Contains("DepthwiseConv2D 'dw': input height 2 is smaller than the kernel 3"), Error);
  MaxPool2D pool("pool", 4, 0, Padding::valid);
  CHECK_THROWS_WITH_AS(built(pool, Shape{3, 3, 2}), Contains("MaxPool2D 'pool': input height 3 is smaller than the kernel 4"),
                       Error);
  // The same kernels are fine with 'same' padding.
  Conv2D same("same", 2, 5, 1, Padding::same);
  CHECK(built(same, Shape{3, 3, 1}).output_shape() == Shape{3, 3, 2});
}

TEST_CASE("forward rejects inputs of the wrong shape, and layers used before build") {
  struct Case {
    std::unique_ptr<Layer> layer;
    Shape per_sample;
    Shape wrong;
    const char* expected;
  };
  std::vector<Case> cases;
  cases.push_back({std::make_unique<Conv2D>("conv", 4, 3), {8, 8, 3}, {2, 8, 8, 4},
                   "Conv2D 'conv': expected input of shape [batch, 8, 8, 3], got [2, 8, 8, 4]"});
  cases.push_back({std::make_unique<Conv2D>("conv1x1", 4, 1), {8, 8, 3}, {8, 8, 3},  // batch axis missing
                   "Conv2D 'conv1x1': expected input of shape [batch, 8, 8, 3], got [8, 8, 3]"});
  cases.push_back({std::make_unique<DepthwiseConv2D>("dw", 3), {8, 8, 3}, {2, 7, 8, 3},
                   "DepthwiseConv2D 'dw': expected input of shape [batch, 8, 8, 3], got [2, 7, 8, 3]"});
  cases.push_back({std::make_unique<BatchNorm>("bn"), {4, 4, 3}, {2, 4, 4, 2},
                   "BatchNorm 'bn': expected input of shape [batch, 4, 4, 3], got [2, 4, 4, 2]"});
  cases.push_back({std::make_unique<ReLU6>("relu6"), {5}, {2, 6}, "ReLU6 'relu6': expected input of shape [batch, 5]"});
  cases.push_back({std::make_unique<MaxPool2D>("pool"), {4, 4, 2}, {2, 4, 4}, "MaxPool2D 'pool': expected input"});
  cases.push_back({std::make_unique<AvgPool2D>("avg"), {4, 4, 2}, {2, 4, 2, 2}, "AvgPool2D 'avg': expected input"});
  cases.push_back({std::make_unique<GlobalAvgPool>("gap"), {4, 4, 2}, {2, 2, 4, 4}, "GlobalAvgPool 'gap': expected input"});
  cases.push_back({std::make_unique<GlobalMaxPool>("gmp"), {4, 4, 2}, {2, 32}, "GlobalMaxPool 'gmp': expected input"});
  cases.push_back({std::make_unique<Dense>("fc", 3), {6}, {2, 5}, "Dense 'fc': expected input of shape [batch, 6], got [2, 5]"});
  cases.push_back({std::make_unique<Flatten>("flat"), {2, 2, 3}, {2, 3, 2, 2}, "Flatten 'flat': expected input"});
  cases.push_back({std::make_unique<Dropout>("drop", 0.5f), {4}, {2, 4, 1}, "Dropout 'drop': expected input"});
  cases.push_back({std::make_unique<Softmax>("softmax"), {5}, {2, 4}, "Softmax 'softmax': expected input"});
  cases.push_back({std::make_unique<Conv2D>("empty_batch", 4, 3), {4, 4, 3}, {0, 4, 4, 3},
                   "Conv2D 'empty_batch': empty batch"});
  for (Case& c : cases) {
    CAPTURE(c.expected);
    Tensor y;
    // Before build: the layer says so instead of reading an empty shape.
    CHECK_THROWS_WITH_AS(c.layer->forward(filled(c.per_sample.with_batch(2)), y, Mode::train),
                         Contains("is used before build()"), Error);
    built(*c.layer, c.per_sample);
    CHECK_THROWS_WITH_AS(c.layer->forward(filled(c.wrong), y, Mode::train), Contains(c.expected), Error);
    CHECK_NOTHROW(c.layer->forward(filled(c.per_sample.with_batch(2)), y, Mode::train));
    // A second build is an error too.
    CHECK_THROWS_WITH_AS(built(*c.layer, c.per_sample), Contains("build called twice"), Error);
  }
}

TEST_CASE("backward rejects a gradient whose shape differs from the output") {
  std::vector<std::pair<std::unique_ptr<Layer>, Shape>> layers;
  layers.emplace_back(std::make_unique<Conv2D>("conv", 4, 3, 2), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<Conv2D>("pointwise", 4, 1), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<DepthwiseConv2D>("dw", 3), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<BatchNorm>("bn"), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<ReLU>("relu"), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<MaxPool2D>("max_pool"), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<AvgPool2D>("avg_pool"), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<GlobalAvgPool>("gap"), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<GlobalMaxPool>("gmp"), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<Flatten>("flatten"), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<Dropout>("dropout", 0.5f), Shape{6, 6, 3});
  layers.emplace_back(std::make_unique<Dense>("dense", 4), Shape{12});
  layers.emplace_back(std::make_unique<Softmax>("softmax"), Shape{12});
  for (auto& [layer, shape] : layers) {
    CAPTURE(layer->name());
    built(*layer, shape);
    const Tensor x = filled(shape.with_batch(2));
    Tensor y, dx;
    layer->forward(x, y, Mode::train);
    Shape wrong = y.shape();
    wrong[wrong.rank() - 1] += 1;
    const std::string expected = std::string(layer->type()) + " '" + layer->name() + "': gradient of shape " +
                                 wrong.to_string() + " does not match the output shape " + y.shape().to_string();
    CHECK_THROWS_WITH_AS(layer->backward(x, y, filled(wrong), &dx), Contains(expected.c_str()), Error);
    CHECK_NOTHROW(layer->backward(x, y, filled(y.shape()), &dx));
  }
}

TEST_CASE("Residual rejects a body that changes the shape") {
  auto strided = std::make_unique<Sequential>("body");
  strided->add<Conv2D>("down", 3, 3, 2);
  Residual down("res_down", std::move(strided));
  CHECK_THROWS_WITH_AS(built(down, Shape{4, 4, 3}),
                       Contains("Residual 'res_down': body maps [4, 4, 3] to [2, 2, 3]; a residual connection needs "
                                "equal shapes"),
                       Error);
  auto widening = std::make_unique<Sequential>("body");
  widening->add<Conv2D>("expand", 6, 1);
  Residual wide("res_wide", std::move(widening));
  CHECK_THROWS_WITH_AS(built(wide, Shape{4, 4, 3}), Contains("Residual 'res_wide': body maps [4, 4, 3] to [4, 4, 6]"),
                       Error);
  CHECK_THROWS_WITH_AS(Residual("res_null", nullptr), Contains("Residual 'res_null': body is null"), Error);
  // A shortcut that does not widen as the body does.
  auto body = std::make_unique<Sequential>("body");
  body->add<Conv2D>("down", 6, 3, 2);
  auto shortcut = std::make_unique<Sequential>("shortcut");
  shortcut->add<MaxPool2D>("pool", 2);
  Residual unpadded("res_unpadded", std::move(body), std::move(shortcut));
  CHECK_THROWS_WITH_AS(built(unpadded, Shape{4, 4, 3}),
                       Contains("Residual 'res_unpadded': body maps [4, 4, 3] to [2, 2, 6] but the shortcut to "
                                "[2, 2, 3]; a residual connection needs equal shapes"),
                       Error);
  CHECK_THROWS_WITH_AS(ChannelPad("pad", -1), Contains("ChannelPad 'pad': channel counts must not be negative"),
                       Error);
}

TEST_CASE("Sequential misuse") {
  Sequential empty("empty", Shape{4});
  Tensor y;
  CHECK_THROWS_WITH_AS(empty.forward(filled(Shape{2, 4}), y, Mode::train), Contains("Sequential 'empty' has no layers"),
                       Error);
  Sequential net("net", Shape{4});
  net.add<Dense>("fc", 2);
  CHECK_THROWS_WITH_AS(net.backward(filled(Shape{2, 2})), Contains("Sequential 'net': backward before forward"), Error);
  CHECK_THROWS_WITH_AS(net.add(std::unique_ptr<Layer>()), Contains("Sequential 'net': cannot add a null layer"), Error);
  // A model's backward checks the gradient against its output (through the last layer).
  net.forward(filled(Shape{2, 4}), Mode::train);
  CHECK_THROWS_WITH_AS(net.backward(filled(Shape{2, 3})),
                       Contains("Dense 'fc': gradient of shape [2, 3] does not match the output shape [2, 2]"), Error);
  // A nested container cannot grow after it was built.
  Sequential inner("inner");
  inner.add<ReLU>("relu");
  built(inner, Shape{4});
  CHECK_THROWS_WITH_AS(inner.add<ReLU>("relu2"), Contains("Sequential 'inner': cannot add layers after it was built"),
                       Error);
}

TEST_CASE("SoftmaxCrossEntropy rejects bad labels, weights and options") {
  const Tensor logits = filled(Shape{4, 5});
  SoftmaxCrossEntropy loss;
  CHECK_THROWS_WITH_AS(loss.forward(logits, {0, 5, 1, 2}),
                       Contains("softmax_cross_entropy: label 5 of sample 1 is outside [0, 5)"), Error);
  CHECK_THROWS_WITH_AS(loss.forward(logits, {0, 1, 2, -1}),
                       Contains("softmax_cross_entropy: label -1 of sample 3 is outside [0, 5)"), Error);
  CHECK_THROWS_WITH_AS(loss.forward(logits, {0, 1, 2}), Contains("SoftmaxCrossEntropy: 3 labels for a batch of 4"),
                       Error);
  CHECK_THROWS_WITH_AS(loss.forward(logits, {0, 1, 2, 3, 4}),
                       Contains("SoftmaxCrossEntropy: 5 labels for a batch of 4"), Error);
  CHECK_THROWS_WITH_AS(loss.forward(filled(Shape{4, 5, 1}), {0, 1, 2, 3}),
                       Contains("SoftmaxCrossEntropy: logits must be [batch, classes], got [4, 5, 1]"), Error);

  SoftmaxCrossEntropy::Options four_weights;
  four_weights.class_weights = {1, 1, 1, 1};
  SoftmaxCrossEntropy weighted(four_weights);
  CHECK_THROWS_WITH_AS(weighted.forward(logits, {0, 1, 2, 3}),
                       Contains("SoftmaxCrossEntropy: 4 class weights for 5 classes"), Error);

  SoftmaxCrossEntropy::Options negative;
  negative.class_weights = {1, -1, 1, 1, 1};
  CHECK_THROWS_WITH_AS(SoftmaxCrossEntropy{negative},
                       Contains("SoftmaxCrossEntropy: class weights must be non-negative, got -1"), Error);
  SoftmaxCrossEntropy::Options zero_batch;
  zero_batch.class_weights = {0, 0, 1, 1, 1};
  SoftmaxCrossEntropy zero(zero_batch);
  CHECK_THROWS_WITH_AS(zero.forward(logits, {0, 1, 0, 1}),
                       Contains("softmax_cross_entropy: the class weights of this batch sum to zero"), Error);
  for (float smoothing : {-0.1f, 1.5f, nan_f}) {
    SoftmaxCrossEntropy::Options options;
    options.label_smoothing = smoothing;
    CAPTURE(smoothing);
    CHECK_THROWS_WITH_AS(SoftmaxCrossEntropy{options}, Contains("SoftmaxCrossEntropy: label_smoothing must be in [0, 1]"),
                         Error);
  }
}

TEST_CASE("Optimizers reject bad hyperparameters") {
  Dense dense("fc", 2);
  built(dense, Shape{3});
  const ParameterList params = dense.parameters();

  auto adam = [&](Adam::Options o) { Adam optimizer(params, o); };
  Adam::Options o;
  o.learning_rate = -1e-3f;
  CHECK_THROWS_WITH_AS(adam(o), Contains("optimizer: learning rate must be non-negative, got -0.001"), Error);
  o = {};
  o.learning_rate = nan_f;
  CHECK_THROWS_WITH_AS(adam(o), Contains("optimizer: learning rate must be non-negative"), Error);
  o = {};
  o.beta1 = 1.0f;
  CHECK_THROWS_WITH_AS(adam(o), Contains("Adam: betas must be in [0, 1), got 1, 0.999"), Error);
  o = {};
  o.beta2 = -0.5f;
  CHECK_THROWS_WITH_AS(adam(o), Contains("Adam: betas must be in [0, 1), got 0.9, -0.5"), Error);
  o = {};
  o.epsilon = 0.0f;
  CHECK_THROWS_WITH_AS(adam(o), Contains("Adam: epsilon must be positive, got 0"), Error);
  o = {};
  o.weight_decay = -0.01f;
  CHECK_THROWS_WITH_AS(adam(o), Contains("Adam: weight_decay must be non-negative, got -0.01"), Error);
  CHECK_NOTHROW(adam(Adam::Options{}));

  auto sgd = [&](SGD::Options s) { SGD optimizer(params, s); };
  SGD::Options s;
  s.momentum = 1.0f;
  CHECK_THROWS_WITH_AS(sgd(s), Contains("SGD: momentum must be in [0, 1), got 1"), Error);
  s = {};
  s.momentum = -0.5f;
  CHECK_THROWS_WITH_AS(sgd(s), Contains("SGD: momentum must be in [0, 1), got -0.5"), Error);
  s = {};
  s.weight_decay = -1.0f;
  CHECK_THROWS_WITH_AS(sgd(s), Contains("SGD: weight_decay must be non-negative, got -1"), Error);
  s = {};
  s.learning_rate = -0.1f;
  CHECK_THROWS_WITH_AS(sgd(s), Contains("optimizer: learning rate must be non-negative, got -0.1"), Error);

  CHECK_THROWS_WITH_AS(SGD(ParameterList{nullptr}, SGD::Options{}), Contains("optimizer: null parameter"), Error);

  // Changing the learning rate later (schedules) is held to the same rule.
  SGD optimizer(params, SGD::Options{});
  CHECK_THROWS_WITH_AS(optimizer.set_learning_rate(-1.0f), Contains("learning rate must be non-negative, got -1"),
                       Error);
  CHECK_THROWS_WITH_AS(optimizer.set_learning_rate(nan_f), Contains("learning rate must be non-negative"), Error);
  CHECK(optimizer.learning_rate() == 0.01f);
}

TEST_CASE("clip_grad_norm rejects a non-positive max norm") {
  Dense dense("fc", 2);
  built(dense, Shape{3});
  const ParameterList params = dense.parameters();
  CHECK_THROWS_WITH_AS(clip_grad_norm(params, 0.0), Contains("clip_grad_norm: max_norm must be positive, got 0"), Error);
  CHECK_THROWS_WITH_AS(clip_grad_norm(params, -1.0), Contains("clip_grad_norm: max_norm must be positive, got -1"),
                       Error);
  CHECK_THROWS_WITH_AS(clip_grad_norm(params, std::nan("")), Contains("clip_grad_norm: max_norm must be positive"),
                       Error);
  CHECK_NOTHROW(clip_grad_norm(params, 1.0));
}
