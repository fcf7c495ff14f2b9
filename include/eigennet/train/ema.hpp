// ExponentialMovingAverage: an average of the model's weights over the training steps (Polyak
// averaging; TensorFlow's ExponentialMovingAverage, timm's ModelEma), which often generalizes
// better than the last weights. After every optimizer step:
//
//   average = d average + (1 - d) value,   d = min(decay, (1 + t) / (10 + t)) with warmup
//
// for every parameter, weights and BatchNorm statistics, with t the number of steps before this
// one (the warmup keeps the first steps' random start from dominating; d depends on the step
// alone, so a resumed run averages exactly as an uninterrupted one).
//
//   ExponentialMovingAverage ema(model.parameters(), {0.999});
//   Checkpoint checkpoint(path, saved, settings, resume);
//   checkpoint.add_state(ema.state());             // the average is part of the run
//   fit(model, adam, loss, train, &validation, options, {&ema, &best, &checkpoint});
//
// With Options::evaluate_average (the default) the model holds the averaged weights from the end
// of each epoch's last step until the next epoch starts, and this object the trained ones: so
// fit()'s validation measures the average, BestModel saves it and a checkpoint's model tensors are
// it (the trained weights are its "callback/ema/..." tensors). Training continues from the
// trained weights; when fit() returns, the model holds the average.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint.hpp"
#include "fit.hpp"

namespace eigennet {

class ExponentialMovingAverage : public Callback {
 public:
  struct Options {
    double decay = 0.999;         // per step; the average spans about 1 / (1 - decay) steps
    bool warmup = true;           // d = min(decay, (1 + t) / (10 + t))
    bool evaluate_average = true;  // validate and save the average (see the top of this file)
  };
  // `params`: the model's parameters (what BestModel and Checkpoint save). The average starts as
  // their values when training starts (unless a checkpoint restores it).
  ExponentialMovingAverage(ParameterList params, Options options) : params_(std::move(params)), options_(options) {
    EIGENNET_CHECK(options_.decay >= 0 && options_.decay < 1, "ExponentialMovingAverage: decay must be in [0, 1), got ",
                   options_.decay);
    EIGENNET_CHECK(!params_.empty(), "ExponentialMovingAverage: no parameters");
    average_.reserve(params_.size());
    for (const Parameter* p : params_) {
      EIGENNET_CHECK(p != nullptr, "ExponentialMovingAverage: a parameter is null");
      average_.push_back(p->value);
    }
  }
  explicit ExponentialMovingAverage(ParameterList params) : ExponentialMovingAverage(std::move(params), Options{}) {}

  // The decay applied after step t (0-based).
  double decay_at(int64_t t) const {
    if (!options_.warmup) return options_.decay;
    return std::min(options_.decay, (1.0 + static_cast<double>(t)) / (10.0 + static_cast<double>(t)));
  }

  void on_train_begin(FitContext& ctx) override {
    if (ctx.state.step == 0) {
      // A new run: start from the weights as they are now (after any loading since construction).
      for (size_t i = 0; i < params_.size(); ++i) average_[i].copy_from(params_[i]->value);
      swapped_ = false;
    } else {
      // Resumed from a checkpoint (which restored the average through state()): it was written
      // at an epoch's end, with the model holding the average when evaluate_average.
      swapped_ = options_.evaluate_average;
    }
  }
  void on_epoch_begin(FitContext&) override {
    if (swapped_) swap();
  }
  void on_batch_end(FitContext& ctx) override {
    const float keep = static_cast<float>(decay_at(ctx.state.step)), take = 1.0f - keep;
    for (size_t i = 0; i < params_.size(); ++i) {
      const float* v = params_[i]->value.data();
      float* a = average_[i].data();
      const int64_t n = average_[i].size();
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) a[j] += take * (v[j] - a[j]);
    }
    if (options_.evaluate_average && ctx.batch_index == ctx.batches_per_epoch - 1) swap();
  }
  void on_train_end(FitContext&) override {
    if (options_.evaluate_average && !swapped_) swap();
  }

  // The tensors a checkpoint keeps for this callback (Checkpoint::add_state), "callback/ema/<name>".
  CheckpointState state() {
    CheckpointState out;
    for (size_t i = 0; i < params_.size(); ++i) out.emplace_back("callback/ema/" + params_[i]->name, &average_[i]);
    return out;
  }
  // Exchanges the model's weights with the ones kept here (exactly: values are swapped, not
  // recomputed). Outside fit(), e.g. to look at the trained weights after it returned.
  void swap() {
    for (size_t i = 0; i < params_.size(); ++i) {
      float* v = params_[i]->value.data();
      std::swap_ranges(v, v + params_[i]->value.size(), average_[i].data());
    }
    swapped_ = !swapped_;
  }
  // True while the model holds the average (and this object the trained weights).
  bool model_holds_average() const { return swapped_; }
  // The tensors kept here: the average, or the trained weights while model_holds_average().
  const std::vector<Tensor>& kept() const { return average_; }

 private:
  ParameterList params_;
  Options options_;
  std::vector<Tensor> average_;
  bool swapped_ = false;
};

}  // namespace eigennet
