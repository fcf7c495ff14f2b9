// fit(): the training loop, for any Model (a Sequential, a Classifier, a user's own network),
// with an optimizer, a loss, a training source and an optional validation source. Everything
// around the loop is a Callback (train/callbacks.hpp, train/checkpoint.hpp), as in Keras:
//
//   SoftmaxCrossEntropy loss;
//   Adam adam(net.parameters());
//   TensorSource train(x, y, {Order::shuffled, /*seed=*/1}), validation(vx, vy);
//   ProgressLogger progress;
//   EarlyStopping early(/*patience=*/5);
//   Checkpoint checkpoint("out/checkpoint.safetensors", {net.parameters()}, settings, /*resume=*/true);
//   FitOptions options;
//   options.epochs = 30;
//   FitResult result = fit(net, adam, loss, train, &validation, options, {&progress, &early, &checkpoint});
//
// One epoch: the model is re-seeded from (options.seed, epoch), the source draws its order and
// augmentation from (its seed, epoch), then for each batch: on_batch_begin (e.g. the learning
// rate), zero gradients, forward, loss, backward, on_gradients (non-finite check, clipping),
// optimizer step, on_batch_end; then validation, a history record and on_epoch_end. Every random
// choice is a function of seeds and the epoch, so a run resumed from a checkpoint ends
// bit-identical to an uninterrupted one with the same thread count.
#pragma once

#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../core/rng.hpp"
#include "../data/source.hpp"
#include "../layers/model.hpp"
#include "../loss/loss.hpp"
#include "../metrics/classification.hpp"
#include "../optim/optimizer.hpp"
#include "history.hpp"

namespace eigennet {

struct FitOptions {
  int64_t epochs = 1;                  // the total, counting epochs a resumed run already did
  int64_t batch_size = 32;
  int64_t validation_batch_size = 64;  // inference only: larger batches are cheaper
  uint64_t seed = 0;                   // the model's own randomness (dropout) in epoch e: (seed, e)
  Loss* validation_loss = nullptr;     // null: the training loss (e.g. pass one without smoothing)
  double clip_grad_norm = 0;           // > 0: clip the global gradient norm (GradientClipping)
  bool stop_on_non_finite = true;      // stop with an error naming step and tensor (TerminateOnNonFinite)
};

// What a run has done; restored by a checkpoint.
struct TrainingState {
  int64_t epochs_done = 0;
  int64_t step = 0;  // optimizer steps before the current batch (its 0-based index during it)
  History history;
};

// What callbacks see and may change.
struct FitContext {
  FitContext(Model& m, Optimizer& o, const FitOptions& opt, TrainingState& s)
      : model(m), optimizer(o), options(opt), state(s) {}
  Model& model;
  Optimizer& optimizer;
  const FitOptions& options;
  TrainingState& state;
  DataSource* train = nullptr;       // the sources fit() was given (validation: null when none)
  DataSource* validation = nullptr;
  int64_t epoch = 0;              // 0-based, the epoch being run or just finished
  int64_t batches_per_epoch = 0;
  // During a batch:
  int64_t batch_index = 0;
  const Batch* batch = nullptr;
  const Tensor* outputs = nullptr;
  float loss = NAN;               // the batch's mean loss
  double epoch_loss = NAN;        // running means over the epoch's batches so far
  double epoch_accuracy = NAN;
  int64_t epoch_items = 0;
  // A callback sets `stop` to end training: before the epoch when set in on_epoch_begin, after
  // it when set in on_epoch_end or a batch hook.
  bool stop = false;
  std::string stop_reason;
};

// When a callback runs relative to the others. A checkpoint restores the run before the others
// start (they see the restored state) and saves it after they have written their files (the best
// model, the log), so a crash in between redoes the epoch; a reporter (the epoch line) comes
// last, so that what it reports is on disk. A distributed callback (distributed/: it keeps the
// processes of a data-parallel run in step) runs before everything else, so that the others see
// averaged gradients and metrics of the whole batch, except at the start, where it runs right
// after the checkpoint, so that it can hand the restored run to the other processes.
enum class CallbackRole { ordinary, checkpoint, reporter, distributed };

// A hook into fit(). Override what you need; every hook may throw to stop the run with an error.
class Callback {
 public:
  virtual ~Callback() = default;
  virtual void on_train_begin(FitContext&) {}
  virtual void on_epoch_begin(FitContext&) {}
  virtual void on_batch_begin(FitContext&) {}
  virtual void on_gradients(FitContext&) {}  // after backward, before the optimizer step
  virtual void on_batch_end(FitContext&) {}
  virtual void on_epoch_end(FitContext&) {}  // ctx.state.history.back() is the epoch's record
  virtual void on_train_end(FitContext&) {}
  virtual CallbackRole role() const { return CallbackRole::ordinary; }
};

struct FitResult {
  TrainingState state;
  bool stopped = false;     // a callback ended the run before options.epochs
  std::string stop_reason;
};

// Mean loss and accuracy of a model on a source (inference mode, sequential order).
struct LossAccuracy {
  double loss = NAN, accuracy = NAN;
};

namespace detail {
// Number of correct arg-max predictions of outputs [n, K] against label_of(i); 0 when the outputs
// are not class scores for n items.
template <typename LabelOf>
int64_t count_correct_of(const Tensor& outputs, int64_t n, LabelOf&& label_of) {
  if (outputs.rank() != 2 || outputs.dim(0) != n || outputs.dim(1) < 1) return 0;
  const std::vector<int32_t> predicted = argmax_predictions(outputs);
  int64_t correct = 0;
  for (int64_t i = 0; i < n; ++i) correct += predicted[static_cast<size_t>(i)] == label_of(i);
  return correct;
}
}  // namespace detail

// Number of correct arg-max predictions of outputs [N, K] against labels (argmax_predictions'
// rules); 0 when the outputs are not class scores for the batch.
inline int64_t count_correct(const Tensor& outputs, const std::vector<int32_t>& labels) {
  return detail::count_correct_of(outputs, static_cast<int64_t>(labels.size()),
                                  [&](int64_t i) { return labels[static_cast<size_t>(i)]; });
}
// The same against each item's label with the larger weight (its own one unless the batch is
// mixed, data/mixing.hpp, and the other image's label weighs more).
inline int64_t count_correct(const Tensor& outputs, const Batch& batch) {
  return detail::count_correct_of(outputs, batch.size(), [&](int64_t i) { return batch.main_label(i); });
}

inline LossAccuracy evaluate_loss_accuracy(Model& model, Loss& loss, DataSource& source, int64_t batch_size) {
  EIGENNET_CHECK(batch_size > 0, "evaluate: batch_size must be positive, got ", batch_size);
  const int64_t n = source.size();
  EIGENNET_CHECK(n > 0, "evaluate: the source is empty");
  source.start_epoch(0);
  Batch batch;
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t count = std::min(batch_size, n - begin);
    source.get(begin, count, batch);
    const Tensor& outputs = model.forward(batch.inputs, Mode::inference);
    loss_sum += static_cast<double>(loss.forward(outputs, batch)) * static_cast<double>(count);
    correct += count_correct(outputs, batch.labels);
  }
  return {loss_sum / static_cast<double>(n), static_cast<double>(correct) / static_cast<double>(n)};
}

namespace detail {

// True when every value is finite; integer ops on the exponent bits, so that it vectorizes.
inline bool all_finite(const Tensor& t) {
  const float* v = t.data();
  uint32_t non_finite = 0;
  for (int64_t i = 0; i < t.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, v + i, sizeof bits);
    non_finite |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return non_finite == 0;
}

}  // namespace detail

// Stops training with an Error when the loss, a gradient or a parameter (value or BatchNorm
// statistic) is not finite, naming the step, the epoch and the tensor. fit() adds it first when
// options.stop_on_non_finite.
class TerminateOnNonFinite : public Callback {
 public:
  explicit TerminateOnNonFinite(std::string advice = "the last good checkpoint is kept. Try a lower learning rate "
                                                     "or gradient clipping.")
      : advice_(std::move(advice)) {}

  void on_gradients(FitContext& ctx) override {
    const ParameterList watched = ctx.model.parameters();
    if (!std::isfinite(ctx.loss)) {
      for (const Parameter* p : watched)  // BatchNorm statistics change in the forward pass
        if (!detail::all_finite(p->value))
          fail("training diverged: the loss is ", ctx.loss, " at step ", ctx.state.step, " (epoch ", ctx.epoch + 1,
               ") and parameter '", p->name, "' is not finite; ", advice_);
      const Parameter* largest = nullptr;
      float largest_abs = -1;
      for (const Parameter* p : watched)
        for (int64_t i = 0; i < p->value.size(); ++i)
          if (std::fabs(p->value[i]) > largest_abs) {
            largest_abs = std::fabs(p->value[i]);
            largest = p;
          }
      fail("training diverged: the loss is ", ctx.loss, " at step ", ctx.state.step, " (epoch ", ctx.epoch + 1,
           ") although every parameter is finite (largest: '", largest ? largest->name : "-", "', |value| ",
           largest_abs, "); ", advice_);
    }
    for (const Parameter* p : ctx.optimizer.parameters())
      if (p->trainable() && !detail::all_finite(p->grad))
        fail("training diverged: the gradient of '", p->name, "' is not finite at step ", ctx.state.step, " (epoch ",
             ctx.epoch + 1, "); ", advice_);
  }
  // After the optimizer step: a parameter, or optimizer state, that became non-finite would poison
  // the checkpoint. (Adam's second moment overflows to infinity while the parameters it scales
  // still move by finite steps, so the parameters alone do not tell.)
  void on_batch_end(FitContext& ctx) override {
    for (const Parameter* p : ctx.model.parameters())
      if (!detail::all_finite(p->value))
        fail("training diverged: parameter '", p->name, "' is not finite after step ", ctx.state.step, " (epoch ",
             ctx.epoch + 1, "); ", advice_);
    for (const auto& [name, tensor] : ctx.optimizer.state())
      if (tensor != nullptr && !detail::all_finite(*tensor))
        fail("training diverged: optimizer state '", name, "' is not finite after step ", ctx.state.step, " (epoch ",
             ctx.epoch + 1, "); ", advice_);
  }

 private:
  std::string advice_;
};

// Scales the gradients so that their global L2 norm is at most max_norm (before the step).
class GradientClipping : public Callback {
 public:
  explicit GradientClipping(double max_norm) : max_norm_(max_norm) {
    EIGENNET_CHECK(max_norm > 0, "GradientClipping: max_norm must be positive, got ", max_norm);
  }
  void on_gradients(FitContext& ctx) override { last_norm_ = clip_grad_norm(ctx.optimizer.parameters(), max_norm_); }
  double last_norm() const { return last_norm_; }  // before clipping

 private:
  double max_norm_;
  double last_norm_ = NAN;
};

inline FitResult fit(Model& model, Optimizer& optimizer, Loss& loss, DataSource& train, DataSource* validation,
                     const FitOptions& options, const std::vector<Callback*>& callbacks = {}) {
  EIGENNET_CHECK(options.epochs >= 0, "fit: epochs must be non-negative, got ", options.epochs);
  EIGENNET_CHECK(options.batch_size > 0, "fit: batch_size must be positive, got ", options.batch_size);
  EIGENNET_CHECK(options.validation_batch_size > 0, "fit: validation_batch_size must be positive, got ",
                 options.validation_batch_size);
  const int64_t n = train.size();
  EIGENNET_CHECK(n > 0, "fit: the training source is empty");
  for (const Callback* c : callbacks) EIGENNET_CHECK(c != nullptr, "fit: a callback is null");

  // Built-ins first (the finite check must see the gradients before clipping changes them), then
  // by role: checkpoints first at the start, ordinary callbacks, checkpoints, reporters after.
  TerminateOnNonFinite non_finite;
  std::unique_ptr<GradientClipping> clipping;
  if (options.clip_grad_norm > 0) clipping = std::make_unique<GradientClipping>(options.clip_grad_norm);
  std::vector<Callback*> distributed, ordinary, checkpoints, reporters;
  if (options.stop_on_non_finite) ordinary.push_back(&non_finite);
  if (clipping) ordinary.push_back(clipping.get());
  for (Callback* c : callbacks) {
    const CallbackRole role = c->role();
    (role == CallbackRole::checkpoint    ? checkpoints
     : role == CallbackRole::reporter    ? reporters
     : role == CallbackRole::distributed ? distributed
                                         : ordinary)
        .push_back(c);
  }
  const auto joined = [](const std::vector<std::vector<Callback*>*>& groups) {
    std::vector<Callback*> all;
    for (const auto* g : groups) all.insert(all.end(), g->begin(), g->end());
    return all;
  };
  const std::vector<Callback*> at_start = joined({&checkpoints, &distributed, &ordinary, &reporters});
  const std::vector<Callback*> all = joined({&distributed, &ordinary, &checkpoints, &reporters});
  const std::vector<Callback*>& at_end = all;

  FitResult result;
  FitContext ctx(model, optimizer, options, result.state);
  ctx.train = &train;
  ctx.validation = validation;
  ctx.batches_per_epoch = (n + options.batch_size - 1) / options.batch_size;
  Loss& validation_loss = options.validation_loss ? *options.validation_loss : loss;
  Batch batch;

  for (Callback* c : at_start) c->on_train_begin(ctx);
  for (int64_t epoch = result.state.epochs_done; epoch < options.epochs && !ctx.stop; ++epoch) {
    ctx.epoch = epoch;
    for (Callback* c : at_start) c->on_epoch_begin(ctx);
    if (ctx.stop) break;
    const auto epoch_start = std::chrono::steady_clock::now();
    model.reseed(derive_seed(options.seed, 0xE90C, static_cast<uint64_t>(epoch)));
    train.start_epoch(epoch);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    for (int64_t b = 0; b < ctx.batches_per_epoch; ++b) {
      const int64_t begin = b * options.batch_size, count = std::min(options.batch_size, n - begin);
      ctx.batch_index = b;
      train.get(begin, count, batch);
      ctx.batch = &batch;
      for (Callback* c : all) c->on_batch_begin(ctx);
      optimizer.zero_grad();
      const Tensor& outputs = model.forward(batch.inputs, Mode::train);
      ctx.outputs = &outputs;
      ctx.loss = loss.forward(outputs, batch);
      model.backward(loss.gradient());
      loss_sum += static_cast<double>(ctx.loss) * static_cast<double>(count);
      for (Callback* c : all) c->on_gradients(ctx);
      optimizer.step();
      correct += count_correct(outputs, batch);
      seen += count;
      ctx.epoch_items = seen;
      ctx.epoch_loss = loss_sum / static_cast<double>(seen);
      ctx.epoch_accuracy = static_cast<double>(correct) / static_cast<double>(seen);
      for (Callback* c : all) c->on_batch_end(ctx);
      ++result.state.step;
    }
    ctx.batch = nullptr;
    ctx.outputs = nullptr;
    EpochRecord record;
    record.train_loss = ctx.epoch_loss;
    record.train_accuracy = ctx.epoch_accuracy;
    if (validation) {
      const LossAccuracy v = evaluate_loss_accuracy(model, validation_loss, *validation, options.validation_batch_size);
      record.val_loss = v.loss;
      record.val_accuracy = v.accuracy;
    }
    record.learning_rate = optimizer.learning_rate();
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    result.state.history.push_back(record);
    result.state.epochs_done = epoch + 1;
    for (Callback* c : at_end) c->on_epoch_end(ctx);
  }
  for (Callback* c : at_end) c->on_train_end(ctx);
  result.stopped = ctx.stop;
  result.stop_reason = ctx.stop_reason;
  return result;
}

}  // namespace eigennet
