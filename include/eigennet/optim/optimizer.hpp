// Optimizer: updates the trainable parameters from their gradients. One loop over flat
// arrays; frozen parameters and statistics are skipped. Also gradient utilities.
#pragma once

#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "../core/parameter.hpp"
#include "../kernels/simd.hpp"

namespace eigennet {

// A moment that only decays (the parameter's gradient stays zero, e.g. behind a dead ReLU)
// turns subnormal after a few hundred steps, and subnormal arithmetic is ~100x slower on x86:
// the study's head trained 6x slower per epoch from its second epoch on. Flushing values below
// FLT_MIN to zero changes an update by less than 1e-30.
inline float flush_subnormal(float x) { return std::fabs(x) < FLT_MIN ? 0.0f : x; }
// The same for every lane of a packet (the optimizers' updates).
inline simd::Packet flush_subnormal_packet(const simd::Packet& x) {
  return simd::select(simd::less(simd::abs(x), simd::set1(FLT_MIN)), simd::zero(), x);
}

class Optimizer {
 public:
  explicit Optimizer(ParameterList params, float learning_rate) : params_(std::move(params)), lr_(learning_rate) {
    EIGENNET_CHECK(learning_rate >= 0.0f, "optimizer: learning rate must be non-negative, got ", learning_rate);
    for (Parameter* p : params_) EIGENNET_CHECK(p != nullptr, "optimizer: null parameter");
  }
  virtual ~Optimizer() = default;

  virtual void step() = 0;
  void zero_grad() { eigennet::zero_grad(params_); }

  float learning_rate() const { return lr_; }
  void set_learning_rate(float lr) {
    // Same rule as the constructor: a schedule that yields NaN or a negative rate must not
    // silently corrupt the weights.
    EIGENNET_CHECK(lr >= 0.0f, "optimizer: learning rate must be non-negative, got ", lr);
    lr_ = lr;
  }
  int64_t steps() const { return steps_; }
  const ParameterList& parameters() const { return params_; }

  // Optimizer state (moments, step count) as named tensors, for checkpoints.
  virtual std::vector<std::pair<std::string, Tensor*>> state() = 0;
  void set_steps(int64_t steps) { steps_ = steps; }

 protected:
  ParameterList params_;
  float lr_;
  int64_t steps_ = 0;
};

// The global L2 norm of all trainable gradients (accumulated in double).
inline double global_grad_norm(const ParameterList& params) {
  double sum = 0;
  for (const Parameter* p : params) {
    if (!p->trainable()) continue;
    for (int64_t i = 0; i < p->grad.size(); ++i) sum += static_cast<double>(p->grad[i]) * p->grad[i];
  }
  return std::sqrt(sum);
}

// Scales all trainable gradients so that their global norm is at most max_norm. Returns the
// norm before clipping.
inline double clip_grad_norm(const ParameterList& params, double max_norm) {
  EIGENNET_CHECK(max_norm > 0, "clip_grad_norm: max_norm must be positive, got ", max_norm);
  const double norm = global_grad_norm(params);
  if (norm > max_norm) {
    const float scale = static_cast<float>(max_norm / norm);
    for (Parameter* p : params)
      if (p->trainable()) p->grad.flat() *= scale;
  }
  return norm;
}

}  // namespace eigennet
