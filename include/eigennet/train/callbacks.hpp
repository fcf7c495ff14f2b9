// The standard callbacks of fit(), each a small object (Keras' names in brackets):
//
//   ProgressLogger         a live progress line per batch and one line per epoch  (ProgbarLogger)
//   CsvLogger              log.csv: one line per epoch                             (CSVLogger)
//   BestModel              the model file of the best epoch by a metric           (ModelCheckpoint)
//   EarlyStopping          stop when a metric has not improved for some epochs    (EarlyStopping)
//   LearningRateScheduler  the learning rate of every step from a schedule        (LearningRateScheduler)
// and, in train/fit.hpp, TerminateOnNonFinite and GradientClipping (which fit() adds from its
// options); Checkpoint (resume) is in train/checkpoint.hpp, TrainingCurvesPng in
// train/curves_png.hpp. Every file is written atomically. The history is the record they all
// read, so after a resume they decide as an uninterrupted run would.
#pragma once

#include <cstdio>
#include <functional>
#include <sstream>
#include <string>

#include "../io/atomic_file.hpp"
#include "../io/model_io.hpp"
#include "fit.hpp"
#include "progress.hpp"
#include "schedule.hpp"

namespace eigennet {

// Prints a progress line while an epoch runs (stderr: redrawn on a terminal, every few seconds
// in a log) and one line per epoch (stdout):
//   epoch 3/20  loss 0.8123  acc 0.7012  val_loss 0.9001  val_acc 0.6733  lr 0.0005  41.2s  (best)
// "(best)" marks the best epoch so far by `best` (validation accuracy by default).
class ProgressLogger : public Callback {
 public:
  struct Options {
    bool batches = true;              // the live per-batch line
    std::FILE* epochs = stdout;       // where epoch lines go (null: nowhere)
    Monitor best = Monitor::max("val_accuracy");
  };
  ProgressLogger() : ProgressLogger(Options{}) {}
  explicit ProgressLogger(Options options) : options_(options) {}
  CallbackRole role() const override { return CallbackRole::reporter; }  // an epoch line means it is saved

  void on_epoch_begin(FitContext& ctx) override {
    if (options_.batches) line_.start_epoch(ctx.epoch, ctx.options.epochs, ctx.batches_per_epoch);
  }
  void on_batch_end(FitContext& ctx) override {
    if (options_.batches) line_.update(ctx.batch_index, ctx.batch->size(), ctx.epoch_loss, ctx.epoch_accuracy);
  }
  void on_epoch_end(FitContext& ctx) override {
    if (!options_.epochs) return;
    const EpochRecord& r = ctx.state.history.back();
    std::string line = format("epoch %lld/%lld  loss %.4f  acc %.4f", static_cast<long long>(ctx.epoch + 1),
                              static_cast<long long>(ctx.options.epochs), r.train_loss, r.train_accuracy);
    if (!std::isnan(r.val_loss)) line += format("  val_loss %.4f  val_acc %.4f", r.val_loss, r.val_accuracy);
    line += format("  lr %.3g  %.1fs", r.learning_rate, r.seconds);
    if (options_.best.last_is_best(ctx.state.history)) line += "  (best)";
    std::fprintf(options_.epochs, "%s\n", line.c_str());
    std::fflush(options_.epochs);
  }

 private:
  template <typename... Args>
  static std::string format(const char* f, Args... args) {
    char buffer[256];
    std::snprintf(buffer, sizeof buffer, f, args...);
    return buffer;
  }

  Options options_;
  ProgressLine line_;
};

// Writes the whole history as CSV (train/history.hpp: history_csv) after every epoch, and when a
// resumed run starts (a crash between the checkpoint and the log left the log behind).
class CsvLogger : public Callback {
 public:
  explicit CsvLogger(std::string path) : path_(std::move(path)) {}
  void on_train_begin(FitContext& ctx) override {
    if (!ctx.state.history.empty()) write_file_atomically(path_, history_csv(ctx.state.history));
  }
  void on_epoch_end(FitContext& ctx) override { write_file_atomically(path_, history_csv(ctx.state.history)); }

 private:
  std::string path_;
};

// Saves the model whenever an epoch is the best so far by `monitor`, with metadata best_epoch
// (from 1) and the metric's value added to the model's own.
class BestModel : public Callback {
 public:
  BestModel(std::string path, SavedModel model, Monitor monitor = Monitor::max("val_accuracy"))
      : path_(std::move(path)), model_(std::move(model)), monitor_(std::move(monitor)) {}

  void on_epoch_end(FitContext& ctx) override {
    if (!monitor_.last_is_best(ctx.state.history)) return;
    std::ostringstream value;
    value << ctx.state.history.back().metric(monitor_.metric);
    save_model(path_, model_, {{"best_epoch", std::to_string(ctx.state.epochs_done)}, {monitor_.metric, value.str()}});
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  SavedModel model_;
  Monitor monitor_;
};

// Stops training once `patience` epochs in a row have not improved on the best epoch (checked
// before each epoch, so that a resumed run that had already run out of patience does nothing).
class EarlyStopping : public Callback {
 public:
  explicit EarlyStopping(int64_t patience, Monitor monitor = Monitor::max("val_accuracy"))
      : patience_(patience), monitor_(std::move(monitor)) {
    EIGENNET_CHECK(patience > 0, "EarlyStopping: patience must be positive, got ", patience);
    EIGENNET_CHECK(!monitor_.latest,
                   "EarlyStopping: Monitor::last_epoch() always names the last epoch, so it would "
                   "never stop; give a metric (e.g. Monitor::max(\"val_accuracy\"))");
  }
  void on_epoch_begin(FitContext& ctx) override {
    const History& h = ctx.state.history;
    if (h.empty()) return;
    const int64_t since_best = static_cast<int64_t>(h.size()) - 1 - monitor_.best_epoch(h);
    if (since_best < patience_) return;
    ctx.stop = true;
    ctx.stop_reason = "early stopping: no improvement of " + monitor_.metric + " for " + std::to_string(since_best) +
                      " epochs";
  }

 private:
  int64_t patience_;
  Monitor monitor_;
};

// Sets the learning rate before every step: schedule(step), step counted over the whole run.
class LearningRateScheduler : public Callback {
 public:
  explicit LearningRateScheduler(std::function<float(int64_t)> schedule) : schedule_(std::move(schedule)) {}
  explicit LearningRateScheduler(const LearningRateSchedule& schedule)
      : schedule_([schedule](int64_t step) { return schedule.at(step); }) {}
  void on_batch_begin(FitContext& ctx) override { ctx.optimizer.set_learning_rate(schedule_(ctx.state.step)); }

 private:
  std::function<float(int64_t)> schedule_;
};

}  // namespace eigennet
