// End to end: a small conv -> bn -> relu -> pool -> dense network learns a synthetic problem
// with Adam and with SGD + momentum, and overfits its training batch.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include <eigennet/eigennet.hpp>

using namespace eigennet;

namespace {

constexpr int64_t image_size = 8, classes = 4, samples = 32;

// 32 images 8x8x1: a 4x4 stroke (horizontal, vertical, diagonal or anti-diagonal; the class) at
// a random place, on uniform noise. A position-invariant pattern: convolution + pooling learn it.
struct Problem {
  Tensor images{Shape{samples, image_size, image_size, 1}};
  std::vector<int32_t> labels;
};

Problem make_problem(uint64_t seed) {
  Problem p;
  Rng rng(seed);
  for (int64_t n = 0; n < samples; ++n) {
    const int32_t label = static_cast<int32_t>(n % classes);
    p.labels.push_back(label);
    float* image = p.images.data() + n * image_size * image_size;
    for (int64_t i = 0; i < image_size * image_size; ++i) image[i] = rng.uniform(-0.3f, 0.3f);
    const int64_t top = static_cast<int64_t>(rng.below(5)), left = static_cast<int64_t>(rng.below(5));
    for (int64_t k = 0; k < 4; ++k) {
      int64_t r = 0, c = 0;
      switch (label) {
        case 0: r = 1, c = k; break;      // horizontal
        case 1: r = k, c = 1; break;      // vertical
        case 2: r = k, c = k; break;      // diagonal
        default: r = k, c = 3 - k; break;  // anti-diagonal
      }
      image[(top + r) * image_size + left + c] += 1.0f;
    }
  }
  return p;
}

std::unique_ptr<Sequential> make_network(uint64_t seed) {
  auto net = std::make_unique<Sequential>("net", Shape{image_size, image_size, 1}, seed);
  net->add<Conv2D>("conv", 8, 3, 1, Padding::same);
  net->add<BatchNorm>("bn", 0.9f);
  net->add<ReLU>("relu");
  net->add<MaxPool2D>("pool", 2);
  net->add<Flatten>("flatten");
  net->add<Dense>("dense", classes);
  return net;
}

double accuracy(const Tensor& logits, const std::vector<int32_t>& labels) {
  int64_t correct = 0;
  for (int64_t n = 0; n < logits.dim(0); ++n) {
    int64_t best = 0;
    for (int64_t k = 1; k < logits.dim(1); ++k)
      if (logits[n * logits.dim(1) + k] > logits[n * logits.dim(1) + best]) best = k;
    correct += best == labels[static_cast<size_t>(n)];
  }
  return static_cast<double>(correct) / static_cast<double>(logits.dim(0));
}

struct Run {
  std::vector<float> losses;
  int64_t first_perfect_step = -1;  // first step whose training-mode forward classifies all 32 right
};

// Full-batch training for `steps` steps.
Run train(const Problem& problem, Sequential& net, Optimizer& optimizer, int64_t steps) {
  SoftmaxCrossEntropy loss;
  Run run;
  for (int64_t step = 0; step < steps; ++step) {
    optimizer.zero_grad();
    const Tensor& logits = net.forward(problem.images, Mode::train);
    run.losses.push_back(loss.forward(logits, problem.labels));
    if (run.first_perfect_step < 0 && accuracy(logits, problem.labels) == 1.0) run.first_perfect_step = step;
    net.backward(loss.gradient());
    optimizer.step();
  }
  return run;
}

void report(const char* name, const Run& run) {
  std::printf("%s: loss %.4f -> %.4f after %zu steps, 100%% training accuracy from step %lld\n", name,
              run.losses.front(), run.losses.back(), run.losses.size(), static_cast<long long>(run.first_perfect_step));
}

}  // namespace

TEST_CASE("A small network overfits a synthetic batch with Adam") {
  const Problem problem = make_problem(1);
  auto net = make_network(2);
  Adam::Options options;
  options.learning_rate = 1e-2f;
  Adam adam(net->trainable_parameters(), options);
  const Run run = train(problem, *net, adam, 100);
  report("Adam", run);
  // At initialization the network guesses (chance is log 4 = 1.39); then the loss collapses.
  CHECK(run.losses.front() > 1.0f);
  CHECK(run.losses.back() < 0.05f * run.losses.front());
  CHECK(run.first_perfect_step >= 0);
  CHECK(run.first_perfect_step < 60);

  // The moving statistics track the batch, so inference mode classifies the batch too.
  CHECK(accuracy(net->forward(problem.images, Mode::inference), problem.labels) == 1.0);

  // Training is deterministic: the same seeds give the same losses, bit for bit.
  auto again = make_network(2);
  Adam adam_again(again->trainable_parameters(), options);
  const Run repeat = train(problem, *again, adam_again, 20);
  for (size_t i = 0; i < repeat.losses.size(); ++i) CHECK(repeat.losses[i] == run.losses[i]);
}

TEST_CASE("A small network overfits a synthetic batch with SGD + momentum") {
  const Problem problem = make_problem(1);
  auto net = make_network(2);
  SGD::Options options;
  options.learning_rate = 0.05f;
  options.momentum = 0.9f;
  SGD sgd(net->trainable_parameters(), options);
  const Run run = train(problem, *net, sgd, 100);
  report("SGD+momentum", run);
  CHECK(run.losses.front() > 1.0f);
  CHECK(run.losses.back() < 0.05f * run.losses.front());
  CHECK(run.first_perfect_step >= 0);
  CHECK(run.first_perfect_step < 60);
  CHECK(accuracy(net->forward(problem.images, Mode::inference), problem.labels) == 1.0);
}

// A moment whose gradient stays zero decays geometrically; left alone it becomes subnormal after
// ~830 Adam steps (0.9^830 < FLT_MIN), and subnormal arithmetic made the study's head train 6x
// slower. The optimizers flush such values to zero.
TEST_CASE("Optimizer state never holds subnormal numbers") {
  auto count_subnormal = [](Optimizer& optimizer) {
    int64_t n = 0;
    for (auto& [name, tensor] : optimizer.state())
      for (int64_t i = 0; i < tensor->size(); ++i) n += std::fpclassify((*tensor)[i]) == FP_SUBNORMAL;
    return n;
  };
  for (const char* kind : {"adam", "sgd"}) {
    CAPTURE(kind);
    Parameter w = Parameter::weight("w", Shape{64});
    std::unique_ptr<Optimizer> optimizer;
    if (std::string(kind) == "adam") {
      optimizer = std::make_unique<Adam>(ParameterList{&w});
    } else {
      SGD::Options o;
      o.momentum = 0.9f;
      optimizer = std::make_unique<SGD>(ParameterList{&w}, o);
    }
    for (int64_t i = 0; i < 64; ++i) w.grad[i] = 1e-3f * static_cast<float>(i + 1);
    optimizer->step();
    for (int step = 0; step < 2000; ++step) {
      optimizer->zero_grad();
      optimizer->step();
      REQUIRE(count_subnormal(*optimizer) == 0);
    }
    for (int64_t i = 0; i < w.value.size(); ++i) CHECK(std::isfinite(w.value[i]));
  }
}
