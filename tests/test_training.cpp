// Training: a small conv -> bn -> relu -> pool -> dense network learns a synthetic problem with
// Adam and with SGD + momentum, and overfits its training batch; fit() with its callbacks,
// checkpoints and resume, the data sources, predict() and the history.
#include <doctest/doctest.h>

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

#include <unistd.h>

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

// ---- fit() and its callbacks -------------------------------------------------------------------

namespace {

// A network with every kind of state fit() must handle: BatchNorm statistics, dropout randomness.
std::unique_ptr<Sequential> make_fit_network(uint64_t seed) {
  auto net = std::make_unique<Sequential>("net", Shape{image_size, image_size, 1}, seed);
  net->add<Conv2D>("conv", 8, 3, 1, Padding::same);
  net->add<BatchNorm>("bn", 0.9f);
  net->add<ReLU6>("relu");
  net->add<GlobalAvgPool>("pool");
  net->add<Dropout>("dropout", 0.3f);
  net->add<Dense>("dense", classes);
  return net;
}

std::filesystem::path fresh_fit_directory(const std::string& name) { return testing::fresh_directory("fit_" + name); }

bool same_bits(const ParameterList& a, const ParameterList& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i]->value.shape() != b[i]->value.shape() ||
        std::memcmp(a[i]->value.data(), b[i]->value.data(), static_cast<size_t>(a[i]->value.size()) * 4) != 0)
      return false;
  return true;
}

// Records the order in which hooks run.
struct Spy : Callback {
  Spy(std::string name, std::vector<std::string>& log, CallbackRole role = CallbackRole::ordinary)
      : name_(std::move(name)), log_(log), role_(role) {}
  void on_train_begin(FitContext&) override { log_.push_back(name_ + ":train_begin"); }
  void on_epoch_end(FitContext&) override { log_.push_back(name_ + ":epoch_end"); }
  CallbackRole role() const override { return role_; }
  std::string name_;
  std::vector<std::string>& log_;
  CallbackRole role_;
};

// A run of `epochs` over the shuffled problem with a cosine schedule and a checkpoint in `dir`.
FitResult fit_problem(Sequential& net, Adam& adam, const Problem& p, int64_t epochs, const std::string& dir,
                      bool resume, const RunSettings& settings, std::vector<Callback*> extra = {}) {
  SoftmaxCrossEntropy loss;
  TensorSource train(p.images, p.labels, {Order::shuffled, 5}), validation(p.images, p.labels);
  LearningRateSchedule schedule;
  schedule.kind = LearningRateSchedule::Kind::cosine;
  schedule.base = 1e-2f;
  schedule.total_steps = 8 * 4;
  LearningRateScheduler learning_rate(schedule);
  Checkpoint checkpoint(dir + "/checkpoint.safetensors", {net.parameters()}, settings, {resume, nullptr});
  BestModel best(dir + "/model.safetensors", {net.parameters()});
  CsvLogger csv(dir + "/log.csv");
  std::vector<Callback*> callbacks = {&learning_rate, &best, &csv, &checkpoint};
  callbacks.insert(callbacks.end(), extra.begin(), extra.end());
  FitOptions options;
  options.epochs = epochs;
  options.batch_size = 8;
  options.seed = 3;
  return fit(net, adam, loss, train, &validation, options, callbacks);
}

}  // namespace

TEST_CASE("fit() trains, records a history, and a resumed run ends bit-identical to an uninterrupted one") {
  const Problem p = make_problem(1);
  RunSettings settings;
  settings.add("lr", 1e-2).add("epochs", 8);
  const auto whole_dir = fresh_fit_directory("whole"), parts_dir = fresh_fit_directory("parts");

  auto whole = make_fit_network(2);
  Adam whole_adam(whole->parameters(), {1e-2f});
  const FitResult result = fit_problem(*whole, whole_adam, p, 8, whole_dir.string(), false, settings);
  REQUIRE(result.state.history.size() == 8);
  CHECK(result.state.epochs_done == 8);
  CHECK(result.state.step == 8 * 4);  // 32 images in batches of 8
  CHECK(whole_adam.steps() == 32);
  CHECK_FALSE(result.stopped);
  CHECK(result.state.history.back().train_loss < result.state.history.front().train_loss);
  CHECK(result.state.history.back().val_accuracy > 0.5);
  // The schedule's last rate is what the record says, and it decayed.
  CHECK(result.state.history.back().learning_rate == doctest::Approx(whole_adam.learning_rate()));
  CHECK(result.state.history.back().learning_rate < result.state.history.front().learning_rate);

  // 3 epochs, then a new process's worth of objects resumes to 8.
  {
    auto first = make_fit_network(2);
    Adam adam(first->parameters(), {1e-2f});
    fit_problem(*first, adam, p, 3, parts_dir.string(), false, settings);
  }
  auto resumed = make_fit_network(2);
  Adam resumed_adam(resumed->parameters(), {1e-2f});
  const FitResult rest = fit_problem(*resumed, resumed_adam, p, 8, parts_dir.string(), true, settings);
  CHECK(rest.state.epochs_done == 8);
  CHECK(rest.state.step == 32);
  CHECK(same_bits(whole->parameters(), resumed->parameters()));
  for (auto& [name, tensor] : whole_adam.state()) {
    bool found = false;
    for (auto& [other_name, other] : resumed_adam.state())
      if (other_name == name) {
        found = true;
        CHECK(std::memcmp(tensor->data(), other->data(), static_cast<size_t>(tensor->size()) * 4) == 0);
      }
    CHECK(found);
  }
  for (size_t e = 0; e < 8; ++e) {
    CAPTURE(e);
    CHECK(rest.state.history[e].train_loss == result.state.history[e].train_loss);
    CHECK(rest.state.history[e].val_accuracy == result.state.history[e].val_accuracy);
  }
  // Same best model file content, and the log holds every epoch.
  const SafetensorsFile a = read_safetensors((whole_dir / "model.safetensors").string());
  const SafetensorsFile b = read_safetensors((parts_dir / "model.safetensors").string());
  CHECK(a.metadata == b.metadata);
  std::ifstream log(parts_dir / "log.csv");
  CHECK(std::count(std::istreambuf_iterator<char>(log), std::istreambuf_iterator<char>(), '\n') == 9);
  std::filesystem::remove_all(whole_dir);
  std::filesystem::remove_all(parts_dir);
}

TEST_CASE("Checkpoint refuses other settings, other files and damage, and changes nothing then") {
  const Problem p = make_problem(1);
  const auto dir = fresh_fit_directory("refuse");
  RunSettings settings;
  settings.add("--lr", 1e-2).add("--data", "digits.csv").add("--seed", 3);
  auto net = make_fit_network(2);
  Adam adam(net->parameters(), {1e-2f});
  fit_problem(*net, adam, p, 2, dir.string(), false, settings);

  auto other = make_fit_network(9);
  Adam other_adam(other->parameters(), {1e-2f});
  const auto before = read_safetensors((dir / "checkpoint.safetensors").string());
  RunSettings changed;
  changed.add("--lr", 1e-3).add("--data", "").add("--batch", 4);
  CHECK_THROWS_WITH_AS(fit_problem(*other, other_adam, p, 4, dir.string(), true, changed),
                       doctest::Contains("it was written by a run with different settings (--lr: 0.01 in the "
                                         "checkpoint, 0.001 now; --data: digits.csv in the checkpoint, '' now; "
                                         "--batch: absent in the checkpoint, 4 now; --seed: 3 in the checkpoint, "
                                         "absent now)"),
                       Error);
  auto untouched = make_fit_network(9);
  CHECK(same_bits(other->parameters(), untouched->parameters()));
  CHECK(other_adam.steps() == 0);
  CHECK(read_safetensors((dir / "checkpoint.safetensors").string()).metadata == before.metadata);

  // A model file is not a checkpoint; a truncated checkpoint names the file.
  std::filesystem::copy_file(dir / "model.safetensors", dir / "not.safetensors");
  Checkpoint not_checkpoint((dir / "not.safetensors").string(), {other->parameters()}, settings, {true, nullptr});
  TrainingState state;
  FitOptions options;
  FitContext ctx(*other, other_adam, options, state);
  CHECK_THROWS_WITH_AS(not_checkpoint.on_train_begin(ctx), doctest::Contains("it is not a training checkpoint"), Error);
  std::filesystem::resize_file(dir / "not.safetensors", 100);
  CHECK_THROWS_WITH_AS(not_checkpoint.on_train_begin(ctx), doctest::Contains("not.safetensors"), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("EarlyStopping and Monitor decide from the history alone") {
  History h(5);
  const double acc[] = {0.5, 0.7, 0.7, 0.6, NAN};
  for (size_t i = 0; i < 5; ++i) h[i].val_accuracy = acc[i];
  CHECK(Monitor::max("val_accuracy").best_epoch(h) == 1);  // the first of equal values
  for (size_t i = 0; i < 5; ++i) h[i].val_loss = 1.0 - acc[i];
  h[4].val_loss = NAN;
  CHECK(Monitor::min("val_loss").best_epoch(h) == 1);
  CHECK(Monitor::max("val_accuracy").best_epoch(History(3)) == -1);  // no values: no best
  CHECK_THROWS_WITH_AS(Monitor::max("val_acc").best_epoch(h), doctest::Contains("unknown training metric 'val_acc'"),
                       Error);

  auto net = make_fit_network(2);
  Adam adam(net->parameters());
  FitOptions options;
  TrainingState state;
  state.history = h;
  FitContext ctx(*net, adam, options, state);
  EarlyStopping three(3), four(4);
  three.on_epoch_begin(ctx);
  CHECK(ctx.stop);
  CHECK(ctx.stop_reason == "early stopping: no improvement of val_accuracy for 3 epochs");
  ctx.stop = false;
  four.on_epoch_begin(ctx);
  CHECK_FALSE(ctx.stop);
}

TEST_CASE("fit() stops on a non-finite loss, gradient or parameter, naming the step and the tensor") {
  const Problem p = make_problem(1);
  TensorSource train(p.images, p.labels);
  FitOptions options;
  options.batch_size = 8;
  options.epochs = 2;
  // A loss that turns NaN at its third batch.
  struct PoisonedLoss : Loss {
    SoftmaxCrossEntropy inner;
    int calls = 0;
    Tensor gradient_;
    float forward(const Tensor& outputs, const Batch& batch) override {
      const float l = inner.forward(outputs, batch);
      gradient_.copy_from(inner.gradient());
      if (++calls == 3) return NAN;
      return l;
    }
    const Tensor& gradient() const override { return gradient_; }
  } poisoned;
  auto net = make_fit_network(2);
  Adam adam(net->parameters());
  CHECK_THROWS_WITH_AS(fit(*net, adam, poisoned, train, nullptr, options),
                       doctest::Contains("training diverged: the loss is nan at step 2 (epoch 1) although every "
                                         "parameter is finite"),
                       Error);
  // A NaN input makes the gradients (and batch statistics) non-finite.
  Problem bad = make_problem(1);
  bad.images[5] = NAN;
  TensorSource bad_train(bad.images, bad.labels);
  auto net2 = make_fit_network(2);
  Adam adam2(net2->parameters());
  SoftmaxCrossEntropy loss;
  CHECK_THROWS_WITH_AS(fit(*net2, adam2, loss, bad_train, nullptr, options),
                       doctest::Contains("at step 0 (epoch 1)"), Error);
  // Without the check the run goes on (the user asked for it).
  options.stop_on_non_finite = false;
  auto net3 = make_fit_network(2);
  Adam adam3(net3->parameters());
  CHECK_NOTHROW(fit(*net3, adam3, loss, bad_train, nullptr, options));
}

TEST_CASE("fit() clips gradients before the step, and runs callbacks by role") {
  const Problem p = make_problem(1);
  TensorSource train(p.images, p.labels);
  struct NormProbe : Callback {
    double largest = 0;
    void on_gradients(FitContext& ctx) override {
      largest = std::max(largest, global_grad_norm(ctx.optimizer.parameters()));
    }
  } probe;
  std::vector<std::string> log;
  Spy reporter("reporter", log, CallbackRole::reporter), checkpoint("checkpoint", log, CallbackRole::checkpoint),
      ordinary("ordinary", log);
  auto net = make_fit_network(2);
  Adam adam(net->parameters());
  SoftmaxCrossEntropy loss;
  FitOptions options;
  options.batch_size = 8;
  options.clip_grad_norm = 1e-3;
  fit(*net, adam, loss, train, nullptr, options, {&reporter, &checkpoint, &probe, &ordinary});
  CHECK(probe.largest > 0);
  CHECK(probe.largest <= 1e-3 * (1 + 1e-5));
  const std::vector<std::string> expected = {"checkpoint:train_begin", "ordinary:train_begin", "reporter:train_begin",
                                             "ordinary:epoch_end", "checkpoint:epoch_end", "reporter:epoch_end"};
  CHECK(log == expected);
}

TEST_CASE("Sources: orders depend on (seed, epoch) only; features flip; images mirror; predict averages flips") {
  const Problem p = make_problem(1);
  TensorSource a(p.images, p.labels, {Order::shuffled, 7}), b(p.images, p.labels, {Order::shuffled, 7});
  Batch x, y;
  a.start_epoch(3);
  b.start_epoch(2);
  b.start_epoch(3);
  a.get(0, 32, x);
  b.get(0, 32, y);
  CHECK(x.items == y.items);
  std::vector<int64_t> sorted = x.items;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 32; ++i) CHECK(sorted[static_cast<size_t>(i)] == i);  // a permutation
  a.start_epoch(4);
  a.get(0, 32, y);
  CHECK(x.items != y.items);
  for (int64_t i = 0; i < 32; ++i)
    CHECK(x.labels[static_cast<size_t>(i)] == p.labels[static_cast<size_t>(x.items[static_cast<size_t>(i)])]);
  CHECK_THROWS_WITH_AS(a.get(30, 4, x), doctest::Contains("outside the epoch of 32 items"), Error);

  // Balanced: equal class counts even from an unbalanced set.
  std::vector<int32_t> skewed(32, 0);
  for (int i = 0; i < 4; ++i) skewed[static_cast<size_t>(i)] = 1;
  TensorSource balanced(p.images, skewed, {Order::balanced, 1, 2});
  balanced.get(0, 32, x);
  CHECK(std::count(x.labels.begin(), x.labels.end(), 1) == 16);

  // Features: with flip probability 1 every item comes from the mirrored copy.
  FeatureCache cache;
  cache.features = Tensor(Shape{4, 2}, {0, 0, 1, 1, 2, 2, 3, 3});
  cache.mirrored = Tensor(Shape{4, 2}, {10, 10, 11, 11, 12, 12, 13, 13});
  cache.labels = {0, 1, 0, 1};
  FeatureSource all_flipped(cache, {Order::sequential, 0, 2, 1.0f}), none(cache);
  all_flipped.get(0, 4, x);
  none.get(0, 4, y);
  for (int64_t i = 0; i < 4; ++i) {
    CHECK(x.inputs[i * 2] == 10 + i);
    CHECK(y.inputs[i * 2] == i);
  }

  // Images: the mirrored source renders each image flipped left-right.
  ImageSet set(2, 3, 1, {"a"});
  const uint8_t pixels[6] = {0, 50, 100, 150, 200, 250};
  set.add(pixels, 0);
  BatchOptions options;
  options.height = 2;
  options.width = 3;
  options.normalization = Normalization::none();
  ImageSource images(set, options);
  images.get(0, 1, x);
  images.mirrored()->get(0, 1, y);
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c)
      for (int ch = 0; ch < 3; ++ch) CHECK(y.inputs[(r * 3 + c) * 3 + ch] == x.inputs[(r * 3 + (2 - c)) * 3 + ch]);
}

TEST_CASE("predict() gives softmax probabilities, averaged with the mirrored inputs under tta_flip") {
  ImageSet set(4, 4, 1, {"a", "b"});
  Rng rng(3);
  for (int n = 0; n < 5; ++n) {
    uint8_t pixels[16];
    for (auto& v : pixels) v = static_cast<uint8_t>(rng.below(256));
    set.add(pixels, n % 2);
  }
  BatchOptions options;
  options.height = options.width = 4;
  Sequential net("net", Shape{4, 4, 3}, 1);
  net.add<Conv2D>("conv", 2, 3);
  net.add<GlobalAvgPool>("pool");
  ImageSource source(set, options);
  const Predictions plain = predict(net, source, {2, false});
  auto mirrored = source.mirrored();
  const Predictions mirror_only = predict(net, *mirrored, {3, false});
  const Predictions both = predict(net, source, {2, true});
  REQUIRE(plain.probabilities.shape() == Shape{5, 2});
  for (int64_t i = 0; i < 5; ++i) {
    CHECK(plain.probabilities[i * 2] + plain.probabilities[i * 2 + 1] == doctest::Approx(1.0));
    for (int k = 0; k < 2; ++k)
      CHECK(both.probabilities[i * 2 + k] ==
            doctest::Approx(0.5f * (plain.probabilities[i * 2 + k] + mirror_only.probabilities[i * 2 + k])));
  }
  CHECK(plain.labels == std::vector<int32_t>{0, 1, 0, 1, 0});
  const ClassificationMetrics m = evaluate(net, source, {"a", "b"});
  CHECK(m.confusion.total() == 5);
  // A source that cannot mirror is refused for tta_flip.
  Tensor t(Shape{2, 4, 4, 3});
  std::vector<int32_t> labels{0, 1};
  TensorSource tensors(t, labels);
  CHECK_THROWS_WITH_AS(predict(net, tensors, {2, true}), doctest::Contains("test-time flip needs a source that can mirror"),
                       Error);
}

TEST_CASE("History survives JSON exactly (NaN included) and writes log.csv") {
  History h(2);
  h[0] = {1.0 / 3.0, 0.25, 0.7, 2.0 / 3.0, 1e-3, 12.5};
  h[1] = {0.1, 0.2, NAN, NAN, 5e-4, 3.25};
  const History back = history_from_json(Json::parse(history_to_json(h).dump(-1)), "test");
  REQUIRE(back.size() == 2);
  CHECK(back[0].train_loss == 1.0 / 3.0);
  CHECK(back[0].val_accuracy == 2.0 / 3.0);
  CHECK(std::isnan(back[1].val_loss));
  CHECK(history_csv(h) ==
        "epoch,train_loss,train_accuracy,val_loss,val_accuracy,learning_rate,seconds\n"
        "1,0.333333,0.250000,0.700000,0.666667,0.001,12.50\n"
        "2,0.100000,0.200000,nan,nan,0.0005,3.25\n");
  CHECK_THROWS_WITH_AS(history_from_json(Json::parse("[{\"train_loss\": 1}]"), "ckpt"),
                       doctest::Contains("ckpt: training history entry 1 has no 'train_accuracy'"), Error);
}
