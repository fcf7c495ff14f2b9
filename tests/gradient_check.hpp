// Finite-difference gradient checker for any eigennet::Layer.
//
// The probe loss is L = sum(r * y) for a fixed random r, so dL/dy = r. The analytic gradients
// come from one forward + backward(x, y, r, &dx) with parameter gradients zeroed first (they
// accumulate) and dx pre-filled with NaN (an element backward forgets to write fails); the
// numerical ones from finite differences of L, accumulated in double, over every input element
// and every trainable parameter element. Central differences use
//   n = (L(v + h) - L(v - h)) / ((v + h) - (v - h))
// where the denominator is the difference of the two float32 values actually used, so the
// rounding of v +- h to float costs nothing. Each element passes when
//   |a - n| <= atol + rtol * max(|a|, |n|).
// Every evaluation starts from the same layer state: statistics (moving mean and variance) are
// restored before each forward, and with `reseed` the layer's randomness (dropout) too.
//
// Choosing h: the forward pass is float32, so L carries a rounding noise of about
// eps_f32 * sum|r * y| over the outputs that the perturbed element moves, and that noise is
// divided by ~h. Layers that are linear in each element (convolutions, dense, average pooling,
// BN in inference) have no truncation error, so a large h (0.25) is best. Smooth non-linear
// layers (BN in training, softmax) have a truncation error, which the fourth-order stencil keeps
// small at a middle h (2^-5). Piecewise-linear layers (ReLU, ReLU6, max pooling) need inputs at
// which no perturbation of +-2h crosses a kink (the caller chooses such inputs); between kinks
// they are linear or smooth.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <eigennet/eigennet.hpp>

namespace eigennet::testing {

struct GradientCheckOptions {
  Mode mode = Mode::train;
  double step = 1e-2;  // h
  // 2: central difference (error h^2 |L'''| / 6). 4: the fourth-order stencil
  // (8 (L(v+h) - L(v-h)) - (L(v+2h) - L(v-2h))) / 12h (error h^4 |L^(5)| / 30), which allows a
  // larger h, hence less float32 noise, on smooth non-linear layers. Choose h a power of two so
  // that v + k h stays (nearly) exact in float32 for the |v| of the test.
  int stencil = 2;
  double atol = 1e-4;
  double rtol = 1e-3;
  bool check_input = true;       // also compare dL/dx (otherwise backward gets dx = nullptr)
  bool check_parameters = true;  // compare every trainable parameter element
  bool reseed = false;           // call layer.reseed(seed) before every forward (fixes dropout masks)
  uint64_t seed = 0;
  uint64_t probe_seed = 12345;  // seed of r
};

// Errors over one tensor (or over everything checked).
struct GradientErrors {
  int64_t count = 0;
  int64_t failures = 0;
  double max_abs = 0;    // worst |a - n|
  double max_rel = 0;    // worst |a - n| / max(|a|, |n|) over elements where max(|a|, |n|) > atol
  double max_ratio = 0;  // worst |a - n| / (atol + rtol * max(|a|, |n|)); passing means <= 1
  std::string worst;     // element with the worst ratio, with its values

  void add(const std::string& where, int64_t index, double analytic, double numeric, double atol, double rtol) {
    const double diff = std::abs(analytic - numeric);
    const double scale = std::max(std::abs(analytic), std::abs(numeric));
    const double ratio = diff / (atol + rtol * scale);
    ++count;
    // A NaN anywhere must fail, so compare with !(x <= y).
    if (!(ratio <= 1.0)) ++failures;
    max_abs = std::max(max_abs, diff);
    if (scale > atol) max_rel = std::max(max_rel, diff / scale);
    if (!(ratio <= max_ratio)) {
      max_ratio = std::isnan(ratio) ? std::numeric_limits<double>::infinity() : ratio;
      char text[200];
      std::snprintf(text, sizeof text, "%s[%lld]: analytic %.7g, numeric %.7g", where.c_str(),
                    static_cast<long long>(index), analytic, numeric);
      worst = text;
    }
  }
  void merge(const GradientErrors& other) {
    count += other.count;
    failures += other.failures;
    max_abs = std::max(max_abs, other.max_abs);
    max_rel = std::max(max_rel, other.max_rel);
    if (other.max_ratio > max_ratio || (other.count && worst.empty())) {
      max_ratio = std::max(max_ratio, other.max_ratio);
      worst = other.worst;
    }
  }
};

struct GradientCheckReport {
  std::string label;
  GradientCheckOptions options;
  GradientErrors input;                                        // dL/dx
  std::vector<std::pair<std::string, GradientErrors>> params;  // per trainable parameter
  GradientErrors overall;
  bool deterministic = true;  // two forwards of the same x gave the same loss

  bool passed() const { return deterministic && overall.failures == 0 && overall.count > 0; }
  // One line for the log: what was checked, the tolerance, the worst errors.
  std::string summary() const {
    char text[512];
    std::snprintf(text, sizeof text,
                  "%-44s h=%-7.2g atol=%-7.1e rtol=%-7.1e n=%-5lld max_abs=%.2e max_rel=%.2e ratio=%.3f%s%s",
                  label.c_str(), options.step, options.atol, options.rtol, static_cast<long long>(overall.count),
                  overall.max_abs, overall.max_rel, overall.max_ratio, passed() ? "" : "  FAILED worst ",
                  passed() ? "" : overall.worst.c_str());
    return text;
  }
};

namespace detail {

inline double probe_loss(const Tensor& y, const Tensor& r) {
  double loss = 0;
  for (int64_t i = 0; i < y.size(); ++i) loss += static_cast<double>(r[i]) * static_cast<double>(y[i]);
  return loss;
}

// Evaluates the probe loss as a pure function of the input and the weights: statistics
// (BatchNorm's moving mean and variance) are restored before every forward, because a
// training-mode forward moves them and BatchNorm accumulates its batch statistics around the
// moving mean, so its output would otherwise drift in the last bits from call to call.
class Evaluator {
 public:
  Evaluator(Layer& layer, const Tensor& x, const Tensor& r, const GradientCheckOptions& options)
      : layer_(layer), r_(r), options_(options) {
    x_.copy_from(x);
    for (Parameter* p : layer.parameters()) {
      if (p->kind != ParameterKind::statistic) continue;
      statistics_.push_back(p);
      saved_.emplace_back().copy_from(p->value);
    }
  }
  Tensor& input() { return x_; }
  // Forward of `input` (default: the evaluator's own, perturbed copy) into y from the saved state.
  void forward(const Tensor* input, Tensor& y) {
    restore_statistics();
    if (options_.reseed) layer_.reseed(options_.seed);
    layer_.forward(input ? *input : x_, y, options_.mode);
  }
  double loss() {
    forward(nullptr, y_);
    return probe_loss(y_, r_);
  }
  void restore_statistics() {
    for (size_t i = 0; i < statistics_.size(); ++i) statistics_[i]->value.copy_from(saved_[i]);
  }
  // Finite-difference derivative of the loss with respect to *value.
  double derivative(float* value) {
    const float original = *value;
    if (options_.stencil == 4) {
      const double h = options_.step;
      const double d1 = at(value, original + h) - at(value, original - h);
      const double d2 = at(value, original + 2 * h) - at(value, original - 2 * h);
      *value = original;
      return (8 * d1 - d2) / (12 * h);
    }
    const float plus = static_cast<float>(static_cast<double>(original) + options_.step);
    const float minus = static_cast<float>(static_cast<double>(original) - options_.step);
    *value = plus;
    const double loss_plus = loss();
    *value = minus;
    const double loss_minus = loss();
    *value = original;
    return (loss_plus - loss_minus) / (static_cast<double>(plus) - static_cast<double>(minus));
  }
  double at(float* value, double v) {
    *value = static_cast<float>(v);
    return loss();
  }

 private:
  Layer& layer_;
  const Tensor& r_;
  const GradientCheckOptions& options_;
  Tensor x_, y_;
  std::vector<Parameter*> statistics_;
  std::vector<Tensor> saved_;
};

}  // namespace detail

// Checks layer (built, with per-sample input shape x.shape().without_batch()) at input x.
// Statistics are restored afterwards (training-mode forwards move them).
inline GradientCheckReport check_gradients(Layer& layer, const Tensor& x, const GradientCheckOptions& options,
                                           std::string label) {
  GradientCheckReport report;
  report.label = std::move(label);
  report.options = options;

  ParameterList params = layer.parameters();
  Tensor y, r, dx;
  detail::Evaluator eval(layer, x, r, options);

  // Analytic pass. dx starts as NaN so that a backward that leaves an element unwritten fails.
  eval.forward(&x, y);
  r.resize(y.shape());
  Rng rng(options.probe_seed);
  for (int64_t i = 0; i < r.size(); ++i) r[i] = rng.uniform(-1.0f, 1.0f);
  const double loss_analytic_pass = detail::probe_loss(y, r);
  zero_grad(params);
  if (options.check_input) {
    dx.resize(x.shape());
    dx.fill(std::numeric_limits<float>::quiet_NaN());
  }
  layer.backward(x, y, r, options.check_input ? &dx : nullptr);
  std::vector<Tensor> analytic(params.size());
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i]->trainable()) analytic[i].copy_from(params[i]->grad);

  // Numerical pass.
  report.deterministic = eval.loss() == loss_analytic_pass;
  if (options.check_input) {
    float* input = eval.input().data();
    if (dx.shape() != x.shape()) {
      report.input.count = report.input.failures = 1;
      report.input.max_ratio = std::numeric_limits<double>::infinity();
      report.input.worst = "dx has shape " + dx.shape().to_string() + ", x has " + x.shape().to_string();
    } else {
      for (int64_t i = 0; i < x.size(); ++i)
        report.input.add("input", i, dx[i], eval.derivative(input + i), options.atol, options.rtol);
    }
    report.overall.merge(report.input);
  }
  if (options.check_parameters) {
    for (size_t p = 0; p < params.size(); ++p) {
      if (!params[p]->trainable()) continue;
      GradientErrors errors;
      Tensor& value = params[p]->value;
      for (int64_t i = 0; i < value.size(); ++i)
        errors.add(params[p]->name, i, analytic[p][i], eval.derivative(value.data() + i), options.atol, options.rtol);
      report.overall.merge(errors);
      report.params.emplace_back(params[p]->name, errors);
    }
  }

  eval.restore_statistics();
  return report;
}

}  // namespace eigennet::testing
