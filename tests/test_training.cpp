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

// Adam updates in SIMD packets, split between threads: every element must get the formula of
// the header comment, the last partial packet of each thread's share and of the tensor included.
// The reference runs in double; float rounding (and a fused multiply-add) leave a few ulps.
TEST_CASE("Adam's packet update is the scalar formula for every element, at every length") {
  for (const int64_t n : {int64_t{1}, int64_t{15}, int64_t{16}, int64_t{37}, int64_t{40013}}) {
    for (const float weight_decay : {0.0f, 0.05f}) {
      CAPTURE(n);
      CAPTURE(weight_decay);
      Parameter w = Parameter::weight("w", Shape{n});
      Adam::Options o;
      o.learning_rate = 1e-2f;
      o.weight_decay = weight_decay;
      Adam adam(ParameterList{&w}, o);
      Rng rng(static_cast<uint64_t>(n) * 7 + 1);
      std::vector<double> wr(static_cast<size_t>(n)), mr(wr.size(), 0.0), vr(wr.size(), 0.0);
      for (int64_t i = 0; i < n; ++i) wr[i] = w.value[i] = rng.uniform(-2.0f, 2.0f);
      for (int step = 1; step <= 3; ++step) {
        for (int64_t i = 0; i < n; ++i) w.grad[i] = i % 5 == 0 ? 0.0f : rng.uniform(-1.0f, 1.0f);
        adam.step();
        const double alpha = 1e-2 * std::sqrt(1.0 - std::pow(0.999, step)) / (1.0 - std::pow(0.9, step));
        int64_t wrong = 0;
        for (int64_t i = 0; i < n; ++i) {
          const double g = w.grad[i];
          wr[i] -= 1e-2 * weight_decay * wr[i];
          mr[i] = 0.9 * mr[i] + 0.1 * g;
          vr[i] = 0.999 * vr[i] + 0.001 * g * g;
          wr[i] -= alpha * mr[i] / (std::sqrt(vr[i]) + 1e-7);
          wrong += std::fabs(w.value[i] - wr[i]) > 1e-6 * std::max(1.0, std::fabs(wr[i]));
        }
        REQUIRE(wrong == 0);
      }
    }
  }
}

TEST_CASE("SGD's packet update is the scalar formula for every element, at every length") {
  for (const int64_t n : {int64_t{1}, int64_t{15}, int64_t{16}, int64_t{37}, int64_t{40013}}) {
    for (const bool nesterov : {false, true}) {
      CAPTURE(n);
      CAPTURE(nesterov);
      Parameter w = Parameter::weight("w", Shape{n});
      SGD::Options o;
      o.learning_rate = 1e-2f;
      o.momentum = 0.9f;
      o.nesterov = nesterov;
      o.weight_decay = nesterov ? 0.05f : 0.0f;
      SGD sgd(ParameterList{&w}, o);
      Rng rng(static_cast<uint64_t>(n) * 11 + 3);
      std::vector<double> wr(static_cast<size_t>(n)), vr(wr.size(), 0.0);
      for (int64_t i = 0; i < n; ++i) wr[i] = w.value[i] = rng.uniform(-2.0f, 2.0f);
      for (int step = 1; step <= 3; ++step) {
        for (int64_t i = 0; i < n; ++i) w.grad[i] = i % 5 == 0 ? 0.0f : rng.uniform(-1.0f, 1.0f);
        sgd.step();
        int64_t wrong = 0;
        for (int64_t i = 0; i < n; ++i) {
          const double g = w.grad[i];
          wr[i] -= 1e-2 * o.weight_decay * wr[i];
          vr[i] = 0.9 * vr[i] - 1e-2 * g;
          wr[i] += nesterov ? 0.9 * vr[i] - 1e-2 * g : vr[i];
          wrong += std::fabs(w.value[i] - wr[i]) > 1e-6 * std::max(1.0, std::fabs(wr[i]));
        }
        REQUIRE(wrong == 0);
      }
    }
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
                      bool resume, const RunSettings& settings, std::vector<Callback*> extra = {},
                      const CheckpointState& checkpoint_state = {}, const MixingSource::Options* mixing = nullptr) {
  SoftmaxCrossEntropy loss;
  TensorSource plain_train(p.images, p.labels, {Order::shuffled, 5}), validation(p.images, p.labels);
  std::unique_ptr<MixingSource> mixed_train;
  if (mixing) mixed_train = std::make_unique<MixingSource>(plain_train, *mixing);
  DataSource& train = mixing ? static_cast<DataSource&>(*mixed_train) : plain_train;
  LearningRateSchedule schedule;
  schedule.kind = LearningRateSchedule::Kind::cosine;
  schedule.base = 1e-2f;
  schedule.total_steps = 8 * 4;
  LearningRateScheduler learning_rate(schedule);
  Checkpoint checkpoint(dir + "/checkpoint.safetensors", {net.parameters()}, settings, {resume, nullptr});
  checkpoint.add_state(checkpoint_state);
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

TEST_CASE("fit() with mixup and cutmix: it learns, and a resumed run ends bit-identical to an uninterrupted one") {
  const Problem p = make_problem(1);
  RunSettings settings;
  settings.add("mixing", "mixup 0.4, cutmix 1.0");
  const MixingSource::Options mixing{0.4f, 1.0f, 1.0f, 17};
  const auto whole_dir = fresh_fit_directory("mixed_whole"), parts_dir = fresh_fit_directory("mixed_parts");
  auto whole = make_fit_network(2);
  Adam whole_adam(whole->parameters(), {1e-2f});
  const FitResult result = fit_problem(*whole, whole_adam, p, 8, whole_dir.string(), false, settings, {}, {}, &mixing);
  REQUIRE(result.state.history.size() == 8);
  CHECK(result.state.history.back().train_loss < result.state.history.front().train_loss);
  CHECK(result.state.history.back().val_accuracy > 0.5);  // validated on the clean images
  // Mixing changes what is trained on: the same run without it ends elsewhere.
  auto unmixed = make_fit_network(2);
  Adam unmixed_adam(unmixed->parameters(), {1e-2f});
  const auto unmixed_dir = fresh_fit_directory("unmixed");
  fit_problem(*unmixed, unmixed_adam, p, 8, unmixed_dir.string(), false, settings);
  CHECK_FALSE(same_bits(whole->parameters(), unmixed->parameters()));
  {
    auto first = make_fit_network(2);
    Adam adam(first->parameters(), {1e-2f});
    fit_problem(*first, adam, p, 3, parts_dir.string(), false, settings, {}, {}, &mixing);
  }
  auto resumed = make_fit_network(2);
  Adam resumed_adam(resumed->parameters(), {1e-2f});
  const FitResult rest = fit_problem(*resumed, resumed_adam, p, 8, parts_dir.string(), true, settings, {}, {}, &mixing);
  CHECK(rest.state.epochs_done == 8);
  CHECK(same_bits(whole->parameters(), resumed->parameters()));
  for (size_t e = 0; e < 8; ++e) {
    CAPTURE(e);
    CHECK(rest.state.history[e].train_loss == result.state.history[e].train_loss);
  }
  std::filesystem::remove_all(whole_dir);
  std::filesystem::remove_all(parts_dir);
  std::filesystem::remove_all(unmixed_dir);
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

TEST_CASE("Monitor::last_epoch keeps the last epoch whatever the metric says, and BestModel saves it") {
  History h(3);
  const double acc[] = {0.7, 0.5, NAN};
  for (size_t i = 0; i < 3; ++i) h[i].val_accuracy = acc[i];
  CHECK(Monitor::max("val_accuracy").best_epoch(h) == 0);
  CHECK(Monitor::last_epoch().best_epoch(h) == 2);
  CHECK(Monitor::last_epoch().last_is_best(h));
  CHECK(Monitor::last_epoch().best_epoch(History()) == -1);
  CHECK_FALSE(Monitor::last_epoch().last_is_best(History()));
  CHECK_THROWS_WITH_AS(EarlyStopping(3, Monitor::last_epoch()), doctest::Contains("would never stop"), Error);

  // Epoch by epoch, a BestModel by the last epoch rewrites its file each time, one by accuracy only
  // when it improves (here the first epoch only).
  const auto dir = fresh_fit_directory("keep_last");
  auto net = make_fit_network(2);
  Adam adam(net->parameters());
  FitOptions options;
  TrainingState state;
  FitContext ctx(*net, adam, options, state);
  BestModel last((dir / "last.safetensors").string(), {net->parameters()}, Monitor::last_epoch());
  BestModel best((dir / "best.safetensors").string(), {net->parameters()});
  for (size_t i = 0; i < 3; ++i) {
    state.history.push_back(h[i]);
    state.epochs_done = static_cast<int64_t>(i) + 1;
    last.on_epoch_end(ctx);
    best.on_epoch_end(ctx);
    CHECK(read_safetensors((dir / "last.safetensors").string()).metadata.at("best_epoch") == std::to_string(i + 1));
    CHECK(read_safetensors((dir / "best.safetensors").string()).metadata.at("best_epoch") == "1");
  }
  std::filesystem::remove_all(dir);
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

  // A huge but finite gradient overflows Adam's second moment to infinity while the step it
  // scales stays finite: the parameters are fine, the optimizer state (and so a checkpoint) is not.
  struct HugeGradient : Callback {
    void on_gradients(FitContext& ctx) override {
      if (ctx.state.step == 1) ctx.optimizer.parameters().front()->grad[0] = 1e30f;
    }
  } huge;
  options.stop_on_non_finite = true;
  auto net4 = make_fit_network(2);
  Adam adam4(net4->parameters());
  CHECK_THROWS_WITH_AS(fit(*net4, adam4, loss, train, nullptr, options, {&huge}),
                       doctest::Contains("training diverged: optimizer state 'optimizer/"), Error);
  for (const Parameter* param : net4->parameters()) CHECK(detail::all_finite(param->value));
}

TEST_CASE("fit() clips gradients before the step, and runs callbacks by role") {
  const Problem p = make_problem(1);
  TensorSource train(p.images, p.labels);
  std::vector<std::string> log;
  Spy reporter("reporter", log, CallbackRole::reporter), checkpoint("checkpoint", log, CallbackRole::checkpoint),
      ordinary("ordinary", log);
  // A distributed callback (e.g. distributed::DataParallel averaging gradients across processes)
  // runs first, before the built-in finite check and clipping: here it scales the gradients up,
  // and clipping still sees (and bounds) the scaled ones. It sees fit()'s sources.
  struct Distributed : Spy {
    using Spy::Spy;
    DataSource* train = nullptr;
    void on_train_begin(FitContext& ctx) override {
      Spy::on_train_begin(ctx);
      train = ctx.train;
      CHECK(ctx.validation == nullptr);
    }
    void on_batch_begin(FitContext&) override { scaled = false; }
    void on_gradients(FitContext& ctx) override {
      for (Parameter* q : ctx.optimizer.parameters())
        if (q->trainable()) q->grad.flat() *= 1000.0f;
      scaled = true;
    }
    bool scaled = false;
  } distributed("distributed", log, CallbackRole::distributed);
  struct NormProbe : Callback {
    explicit NormProbe(const Distributed& d) : distributed(d) {}
    const Distributed& distributed;
    double largest = 0;
    bool after_distributed = true;
    void on_gradients(FitContext& ctx) override {
      largest = std::max(largest, global_grad_norm(ctx.optimizer.parameters()));
      after_distributed = after_distributed && distributed.scaled;
    }
  } probe(distributed);
  auto net = make_fit_network(2);
  Adam adam(net->parameters());
  SoftmaxCrossEntropy loss;
  FitOptions options;
  options.batch_size = 8;
  options.clip_grad_norm = 1e-3;
  fit(*net, adam, loss, train, nullptr, options, {&reporter, &checkpoint, &probe, &ordinary, &distributed});
  CHECK(probe.largest > 0);
  CHECK(probe.largest <= 1e-3 * (1 + 1e-5));
  CHECK(probe.after_distributed);
  CHECK(distributed.train == &train);
  // At the start the checkpoint restores first and the distributed callback hands the restored
  // run to the other processes before anyone else starts; afterwards it comes first.
  const std::vector<std::string> expected = {"checkpoint:train_begin", "distributed:train_begin", "ordinary:train_begin",
                                             "reporter:train_begin",   "distributed:epoch_end",   "ordinary:epoch_end",
                                             "checkpoint:epoch_end",   "reporter:epoch_end"};
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

// ---- Weight averaging and distillation ----------------------------------------------------------

namespace {

std::vector<Tensor> snapshot(const ParameterList& params) {
  std::vector<Tensor> out;
  for (const Parameter* p : params) out.push_back(p->value);
  return out;
}

bool same_tensors(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].shape() != b[i].shape() || std::memcmp(a[i].data(), b[i].data(), static_cast<size_t>(a[i].size()) * 4) != 0)
      return false;
  return true;
}

// Keeps its own average of the parameters in double, by the definition, from the weights the
// optimizer produced (it must come before the ExponentialMovingAverage in the callback list, so
// that it sees them before the average is swapped in), and the trained weights at each epoch's end.
struct AverageByHand : Callback {
  AverageByHand(ParameterList p, double decay) : params(std::move(p)), decay(decay) {}
  void on_train_begin(FitContext&) override {
    average.clear();
    for (const Parameter* p : params) average.emplace_back(p->value.data(), p->value.data() + p->value.size());
  }
  void on_batch_end(FitContext& ctx) override {
    const double t = static_cast<double>(ctx.state.step);
    const double d = std::min(decay, (1 + t) / (10 + t));
    for (size_t i = 0; i < params.size(); ++i)
      for (int64_t j = 0; j < params[i]->value.size(); ++j)
        average[i][static_cast<size_t>(j)] = d * average[i][static_cast<size_t>(j)] + (1 - d) * params[i]->value[j];
    if (ctx.batch_index == ctx.batches_per_epoch - 1) trained.push_back(snapshot(params));
  }
  double largest_difference(const ParameterList& other) const {
    double largest = 0;
    for (size_t i = 0; i < params.size(); ++i)
      for (int64_t j = 0; j < other[i]->value.size(); ++j)
        largest = std::max(largest, std::fabs(average[i][static_cast<size_t>(j)] - other[i]->value[j]));
    return largest;
  }
  ParameterList params;
  double decay;
  std::vector<std::vector<double>> average;
  std::vector<std::vector<Tensor>> trained;  // per epoch
};

// What the model holds when epochs begin and end (after the ExponentialMovingAverage's hooks).
struct ModelProbe : Callback {
  explicit ModelProbe(ParameterList p) : params(std::move(p)) {}
  void on_epoch_begin(FitContext&) override { at_begin.push_back(snapshot(params)); }
  void on_epoch_end(FitContext& ctx) override {
    at_end.push_back(snapshot(params));
    SoftmaxCrossEntropy loss;
    validation_again.push_back(evaluate_loss_accuracy(ctx.model, loss, *validation, 64).accuracy);
  }
  ParameterList params;
  DataSource* validation = nullptr;
  std::vector<std::vector<Tensor>> at_begin, at_end;
  std::vector<double> validation_again;
};

}  // namespace

TEST_CASE("ExponentialMovingAverage: the average of every step, validated and saved, training continues unaveraged") {
  const Problem p = make_problem(1);
  const auto dir = fresh_fit_directory("ema");
  auto net = make_fit_network(2);
  Adam adam(net->parameters(), {1e-2f});
  const double decay = 0.9;
  AverageByHand by_hand(net->parameters(), decay);
  ExponentialMovingAverage ema(net->parameters(), {decay, true, true});
  ModelProbe probe(net->parameters());
  TensorSource validation(p.images, p.labels);
  probe.validation = &validation;
  RunSettings settings;
  settings.add("ema", decay);
  const FitResult result = fit_problem(*net, adam, p, 4, dir.string(), false, settings, {&by_hand, &ema, &probe});
  REQUIRE(result.state.history.size() == 4);

  // fit() returns with the model holding the average, equal to the one by hand (float rounding).
  CHECK(ema.model_holds_average());
  CHECK(by_hand.largest_difference(net->parameters()) < 1e-5);
  // The average is not the trained weights (the test would prove nothing otherwise) ...
  REQUIRE(by_hand.trained.size() == 4);
  CHECK_FALSE(same_tensors(by_hand.trained.back(), snapshot(net->parameters())));
  // ... which the average's object keeps meanwhile, exactly.
  CHECK(same_tensors(ema.kept(), by_hand.trained.back()));

  for (size_t e = 0; e < 4; ++e) {
    CAPTURE(e);
    // At an epoch's end the model holds the average, not the trained weights: validation measured it.
    CHECK(result.state.history[e].val_accuracy == probe.validation_again[e]);
    CHECK_FALSE(same_tensors(probe.at_end[e], by_hand.trained[e]));
  }
  for (size_t e = 1; e < 4; ++e) {
    CAPTURE(e);
    // The next epoch trains from the trained weights, exactly, not from the average.
    CHECK(same_tensors(probe.at_begin[e], by_hand.trained[e - 1]));
  }
  // BestModel saved the average of its epoch.
  const int64_t best = Monitor::max("val_accuracy").best_epoch(result.state.history);
  REQUIRE(best >= 0);
  const SafetensorsFile saved = read_safetensors((dir / "model.safetensors").string());
  const ParameterList params = net->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor* t = saved.find(params[i]->name);
    REQUIRE(t != nullptr);
    CHECK(std::memcmp(t->data(), probe.at_end[static_cast<size_t>(best)][i].data(), t->size() * 4) == 0);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("ExponentialMovingAverage in the checkpoint: a resumed run ends bit-identical; a missing average is refused") {
  const Problem p = make_problem(1);
  RunSettings settings;
  settings.add("ema", 0.9);
  const auto whole_dir = fresh_fit_directory("ema_whole"), parts_dir = fresh_fit_directory("ema_parts");
  auto whole = make_fit_network(2);
  Adam whole_adam(whole->parameters(), {1e-2f});
  ExponentialMovingAverage whole_ema(whole->parameters(), {0.9});
  const FitResult a = fit_problem(*whole, whole_adam, p, 6, whole_dir.string(), false, settings, {&whole_ema},
                                  whole_ema.state());
  {
    auto first = make_fit_network(2);
    Adam adam(first->parameters(), {1e-2f});
    ExponentialMovingAverage ema(first->parameters(), {0.9});
    fit_problem(*first, adam, p, 2, parts_dir.string(), false, settings, {&ema}, ema.state());
  }
  auto resumed = make_fit_network(2);
  Adam resumed_adam(resumed->parameters(), {1e-2f});
  ExponentialMovingAverage resumed_ema(resumed->parameters(), {0.9});
  const FitResult b = fit_problem(*resumed, resumed_adam, p, 6, parts_dir.string(), true, settings, {&resumed_ema},
                                  resumed_ema.state());
  CHECK(b.state.epochs_done == 6);
  CHECK(same_bits(whole->parameters(), resumed->parameters()));  // the averages
  CHECK(same_tensors(whole_ema.kept(), resumed_ema.kept()));     // the trained weights
  for (size_t e = 0; e < 6; ++e) CHECK(a.state.history[e].val_accuracy == b.state.history[e].val_accuracy);

  // A checkpoint without the average cannot resume a run that keeps one; nothing changes.
  const auto plain_dir = fresh_fit_directory("ema_plain");
  {
    auto net = make_fit_network(2);
    Adam adam(net->parameters(), {1e-2f});
    fit_problem(*net, adam, p, 1, plain_dir.string(), false, settings);
  }
  auto other = make_fit_network(5);
  Adam other_adam(other->parameters(), {1e-2f});
  ExponentialMovingAverage other_ema(other->parameters(), {0.9});
  CHECK_THROWS_WITH_AS(fit_problem(*other, other_adam, p, 2, plain_dir.string(), true, settings, {&other_ema},
                                   other_ema.state()),
                       doctest::Contains("tensor 'callback/ema/conv/kernel' is missing"), Error);
  auto untouched = make_fit_network(5);
  CHECK(same_bits(other->parameters(), untouched->parameters()));
  // Checkpoint state must be named as such; a checkpoint with an average still loads as a model.
  Checkpoint checkpoint((plain_dir / "c.safetensors").string(), {other->parameters()}, settings, false);
  Tensor stray(Shape{1});
  CHECK_THROWS_WITH_AS(checkpoint.add_state({{"ema/x", &stray}}), doctest::Contains("must start with 'callback/'"), Error);
  // The checkpoint's model tensors are the average (what the model held when it was written),
  // the trained weights are the callback's.
  const SafetensorsFile file = read_safetensors((whole_dir / "checkpoint.safetensors").string());
  const Tensor* kernel = file.find("conv/kernel");
  const Tensor* trained_kernel = file.find("callback/ema/conv/kernel");
  REQUIRE(kernel != nullptr);
  REQUIRE(trained_kernel != nullptr);
  CHECK(std::memcmp(kernel->data(), whole->parameters()[0]->value.data(), kernel->size() * 4) == 0);
  CHECK(std::memcmp(trained_kernel->data(), whole_ema.kept()[0].data(), kernel->size() * 4) == 0);
  CHECK_THROWS_WITH_AS(ExponentialMovingAverage(other->parameters(), {1.0}), doctest::Contains("decay must be in [0, 1)"),
                       Error);
  std::filesystem::remove_all(whole_dir);
  std::filesystem::remove_all(parts_dir);
  std::filesystem::remove_all(plain_dir);
}

TEST_CASE("Distillation: teachers read the same augmented images at their own sizes") {
  // Six 10x10 gray images of two classes, augmented and rendered at 8x8 for the student and at
  // 12x12 for a teacher.
  ImageSet set(10, 10, 1, {"a", "b"});
  Rng rng(11);
  std::vector<uint8_t> pixels(100);
  for (int i = 0; i < 6; ++i) {
    for (uint8_t& v : pixels) v = static_cast<uint8_t>(rng.below(256));
    set.add(pixels.data(), i % 2);
  }
  BatchOptions options;
  options.height = options.width = 8;
  options.augment = true;
  options.seed = 7;  // AugmentConfig's defaults: flip, shift, rotation, scale, brightness, contrast
  const std::vector<int64_t> all = {0, 1, 2, 3, 4, 5};
  ImageSource source(set, all, options, Order::shuffled, 3);
  source.also_render(12, 12);
  source.also_render(12, 12);  // once
  source.also_render(8, 8);    // the source's own size: nothing
  source.start_epoch(2);
  Batch batch;
  source.get(1, 4, batch);
  REQUIRE(batch.other_sizes.size() == 1);
  CHECK(batch.inputs_at(8, 8) == &batch.inputs);
  CHECK(batch.inputs_at(12, 12) == &batch.other_sizes[0]);
  CHECK(batch.inputs_at(16, 16) == nullptr);

  // Exactly what a source rendering at 12x12 gives for the same epoch: the same items and draws.
  BatchOptions large = options;
  large.height = large.width = 12;
  ImageSource reference(set, all, large, Order::shuffled, 3);
  reference.start_epoch(2);
  Batch expected;
  reference.get(1, 4, expected);
  CHECK(expected.items == batch.items);
  REQUIRE(expected.inputs.shape() == batch.other_sizes[0].shape());
  CHECK(std::memcmp(expected.inputs.data(), batch.other_sizes[0].data(), expected.inputs.size() * 4) == 0);
  // ... and augmented: another epoch draws other augmentations.
  reference.start_epoch(3);
  Batch other_epoch;
  reference.get(0, 6, other_epoch);
  source.start_epoch(3);
  source.get(0, 6, batch);
  CHECK(std::memcmp(other_epoch.inputs.data(), batch.other_sizes[0].data(), other_epoch.inputs.size() * 4) == 0);
  reference.start_epoch(2);
  reference.get(0, 6, expected);
  CHECK(std::memcmp(expected.inputs.data(), other_epoch.inputs.data(), expected.inputs.size() * 4) != 0);
  // A mirrored source (test-time flip) renders the other sizes too.
  std::unique_ptr<DataSource> mirror = source.mirrored();
  mirror->start_epoch(0);
  mirror->get(0, 2, batch);
  CHECK(batch.inputs_at(12, 12) != nullptr);

  // A teacher of two models at 12x12 and 8x8: the mean of their softened probabilities.
  const auto make = [](const char* name, int64_t size, uint64_t seed) {
    auto net = std::make_unique<Sequential>(name, Shape{size, size, 3}, seed);
    net->add<Conv2D>("conv", 4, 3, 2, Padding::same);
    net->add<ReLU>("relu");
    net->add<GlobalAvgPool>("pool");
    net->add<Dense>("dense", 2);
    return net;
  };
  auto large_model = make("large", 12, 1), small_model = make("small", 8, 2);
  source.start_epoch(2);
  source.get(0, 4, batch);
  ModelTeacher teacher({{large_model.get(), 12, 12}, {small_model.get(), 8, 8}});
  const Tensor probabilities = teacher.probabilities(batch, 2.0f);
  REQUIRE(probabilities.shape() == Shape{4, 2});
  Tensor a(Shape{4, 2}), b(Shape{4, 2});
  softmax_at_temperature(a.data(), large_model->forward(batch.other_sizes[0], Mode::inference).data(), 4, 2, 2.0f);
  softmax_at_temperature(b.data(), small_model->forward(batch.inputs, Mode::inference).data(), 4, 2, 2.0f);
  for (int64_t i = 0; i < 8; ++i) CHECK(probabilities[i] == doctest::Approx(0.5f * (a[i] + b[i])).epsilon(1e-6));
  CHECK(teacher.calls() == 1);
  CHECK(teacher.seconds() >= 0);
  // The same models compiled for inference give the same probabilities (float rounding apart).
  std::unique_ptr<InferenceNet> large_compiled = compile_for_inference_if_supported(*large_model);
  std::unique_ptr<InferenceNet> small_compiled = compile_for_inference_if_supported(*small_model);
  REQUIRE(large_compiled != nullptr);
  REQUIRE(small_compiled != nullptr);
  ModelTeacher compiled_teacher(
      {{large_model.get(), 12, 12, large_compiled.get()}, {small_model.get(), 8, 8, small_compiled.get()}});
  const Tensor compiled_probabilities = compiled_teacher.probabilities(batch, 2.0f);
  REQUIRE(compiled_probabilities.shape() == Shape{4, 2});
  for (int64_t i = 0; i < 8; ++i) CHECK(compiled_probabilities[i] == doctest::Approx(probabilities[i]).epsilon(1e-5));
  // ... and it is the compiled snapshot that runs: changing the model's weights afterwards changes
  // the plain teacher's probabilities, not the compiled one's.
  for (Parameter* parameter : large_model->trainable_parameters())
    for (int64_t i = 0; i < parameter->value.size(); ++i) parameter->value[i] *= 3.0f;
  const Tensor after = compiled_teacher.probabilities(batch, 2.0f);
  for (int64_t i = 0; i < 8; ++i) CHECK(after[i] == compiled_probabilities[i]);
  const Tensor plain_after = teacher.probabilities(batch, 2.0f);
  double change = 0;
  for (int64_t i = 0; i < 8; ++i) change += std::abs(plain_after[i] - probabilities[i]);
  CHECK(change > 1e-3);
  // A teacher whose size the batch lacks says how to provide it.
  auto odd = make("odd", 16, 3);
  ModelTeacher missing({{odd.get(), 16, 16}});
  CHECK_THROWS_WITH_AS(missing.probabilities(batch, 1.0f), doctest::Contains("ImageSource::also_render(16, 16)"), Error);
}

TEST_CASE("Distillation through fit(): a student learns the teacher's classes from soft targets alone") {
  const Problem p = make_problem(1);
  // The teacher: trained on the true labels until it classifies the batch.
  auto teacher_net = make_network(2);
  Adam::Options adam_options;
  adam_options.learning_rate = 1e-2f;
  Adam teacher_adam(teacher_net->trainable_parameters(), adam_options);
  train(p, *teacher_net, teacher_adam, 100);
  REQUIRE(accuracy(teacher_net->forward(p.images, Mode::inference), p.labels) == 1.0);

  // The student sees only wrong labels; with soft weight 1 they do not matter.
  std::vector<int32_t> wrong = p.labels;
  for (int32_t& label : wrong) label = (label + 1) % static_cast<int32_t>(classes);
  TensorSource source(p.images, wrong, {Order::shuffled, 4});
  ModelTeacher teacher({{teacher_net.get(), 0, 0}});
  DistillationLoss loss(teacher, {2.0f, 1.0f, 0.1f});
  auto student = make_network(7);
  Adam adam(student->trainable_parameters(), adam_options);
  FitOptions options;
  options.epochs = 120;
  options.batch_size = 32;
  const FitResult result = fit(*student, adam, loss, source, nullptr, options);
  CHECK(teacher.calls() == 120);
  CHECK(loss.soft_loss() < 0.1);
  const double learned = accuracy(student->forward(p.images, Mode::inference), p.labels);
  std::printf("distilled student: accuracy %.3f on the true labels, soft loss %.4f\n", learned, loss.soft_loss());
  CHECK(learned >= 0.9);
  CHECK(result.state.history.back().train_accuracy <= 0.1);  // against the wrong labels it saw
}

TEST_CASE("Weight averaging: the mean of every parameter; BatchNorm statistics re-estimated as a cumulative mean") {
  const auto network = [](uint64_t seed) {
    auto net = std::make_unique<Sequential>("net", Shape{image_size, image_size, 1}, seed);
    net->add<BatchNorm>("bn_input", 0.9f);  // sees the images themselves: its statistics are known
    net->add<Conv2D>("conv", 8, 3, 1, Padding::same);
    net->add<BatchNorm>("bn", 0.9f);
    net->add<ReLU>("relu");
    net->add<GlobalAvgPool>("pool");
    net->add<Dense>("dense", classes);
    return net;
  };
  auto a = network(1), b = network(2), soup = network(3);
  const Problem p = make_problem(4);
  a->forward(p.images, Mode::train);  // moving statistics that differ between a and b
  const ParameterList pa = a->parameters(), pb = b->parameters();
  average_parameters(*soup, {a.get(), b.get()});
  const ParameterList ps = soup->parameters();
  bool statistics_seen = false;
  for (size_t i = 0; i < ps.size(); ++i) {
    statistics_seen |= ps[i]->kind == ParameterKind::statistic;
    for (int64_t k = 0; k < ps[i]->value.size(); ++k)
      REQUIRE(ps[i]->value[k] == doctest::Approx((pa[i]->value[k] + pb[i]->value[k]) / 2).epsilon(1e-6));
  }
  CHECK(statistics_seen);
  // The target may be one of the averaged models.
  average_parameters(*a, {a.get(), b.get()});
  for (size_t i = 0; i < ps.size(); ++i)
    for (int64_t k = 0; k < ps[i]->value.size(); ++k) REQUIRE(pa[i]->value[k] == ps[i]->value[k]);
  // Networks of another shape are refused by name.
  auto other = std::make_unique<Sequential>("net", Shape{image_size, image_size, 1}, 5);
  other->add<BatchNorm>("bn_input", 0.9f);
  other->add<Conv2D>("conv", 4, 3, 1, Padding::same);
  other->add<BatchNorm>("bn", 0.9f);
  other->add<ReLU>("relu");
  other->add<GlobalAvgPool>("pool");
  other->add<Dense>("dense", classes);
  CHECK_THROWS_WITH_AS(average_parameters(*soup, {a.get(), other.get()}), doctest::Contains("conv/kernel"), Error);

  // Re-estimation over 32 images in batches of 10: batches of 10, 10, 10 and 2, each weighing
  // the same; with batches of 31 the single last image joins the first batch (one batch of 32).
  const std::vector<int64_t> batch_sizes{10, 31};
  for (int64_t batch_size : batch_sizes) {
    CAPTURE(batch_size);
    std::vector<std::pair<int64_t, int64_t>> batches;
    if (batch_size == 10) batches = {{0, 10}, {10, 20}, {20, 30}, {30, 32}};
    else batches = {{0, 32}};
    double mean = 0, variance = 0;
    for (auto [begin, end] : batches) {
      const int64_t m = (end - begin) * image_size * image_size;
      double s = 0, s2 = 0;
      for (int64_t i = begin * image_size * image_size; i < end * image_size * image_size; ++i) s += p.images[i];
      const double batch_mean = s / static_cast<double>(m);
      for (int64_t i = begin * image_size * image_size; i < end * image_size * image_size; ++i)
        s2 += (p.images[i] - batch_mean) * (p.images[i] - batch_mean);
      mean += batch_mean / static_cast<double>(batches.size());
      variance += s2 / static_cast<double>(m - 1) / static_cast<double>(batches.size());  // unbiased, as training keeps it
    }
    TensorSource source(p.images, p.labels);
    reestimate_batch_norm(*soup, source, batch_size);
    BatchNorm* bn = nullptr;
    soup->for_each_layer([&](Layer& l) {
      if (l.name() == "bn_input") bn = dynamic_cast<BatchNorm*>(&l);
    });
    REQUIRE(bn != nullptr);
    CHECK(bn->moving_mean().value[0] == doctest::Approx(mean).epsilon(1e-5));
    CHECK(bn->moving_variance().value[0] == doctest::Approx(variance).epsilon(1e-5));
    // Weights are unchanged, and afterwards training uses the momentum again.
    for (size_t i = 0; i < ps.size(); ++i)
      if (ps[i]->kind == ParameterKind::weight)
        for (int64_t k = 0; k < ps[i]->value.size(); ++k) REQUIRE(ps[i]->value[k] == pa[i]->value[k]);
    const float before = bn->moving_mean().value[0];
    soup->forward(p.images, Mode::train);
    double all = 0;
    for (int64_t i = 0; i < p.images.size(); ++i) all += p.images[i];
    CHECK(bn->moving_mean().value[0] ==
          doctest::Approx(0.9 * before + 0.1 * all / static_cast<double>(p.images.size())).epsilon(1e-5));
  }
}
