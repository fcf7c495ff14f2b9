// BatchNormalization over the last (channel) axis, Keras semantics:
//   training:  y = gamma * (x - mean_B) / sqrt(var_B + eps) + beta with batch statistics, and
//              moving = moving * momentum + batch * (1 - momentum); the moving variance uses the
//              unbiased batch variance (as TensorFlow's fused kernel and PyTorch do).
//   inference: the same with the moving statistics.
// As in Keras, a frozen BatchNorm (gamma and beta frozen) always runs in inference mode, so a
// frozen base keeps its statistics during transfer learning.
#pragma once

#include <cmath>

#include "../kernels/batch_norm.hpp"
#include "layer.hpp"

namespace eigennet {

class BatchNorm : public Layer {
 public:
  explicit BatchNorm(std::string name, float momentum = 0.99f, float epsilon = 1e-3f)
      : Layer(std::move(name)), momentum_(momentum), epsilon_(epsilon) {
    EIGENNET_CHECK(momentum >= 0.0f && momentum <= 1.0f, "BatchNorm '", this->name(), "': momentum must be in [0, 1], got ",
                   momentum);
    EIGENNET_CHECK(epsilon > 0.0f, "BatchNorm '", this->name(), "': epsilon must be positive, got ", epsilon);
  }
  const char* type() const override { return "BatchNorm"; }

  Parameter& gamma() { return gamma_; }
  Parameter& beta() { return beta_; }
  Parameter& moving_mean() { return moving_mean_; }
  Parameter& moving_variance() { return moving_variance_; }
  float epsilon() const { return epsilon_; }
  float momentum() const { return momentum_; }
  // Makes the next forward re-estimate this layer from its input so that it computes the same
  // function in training and inference mode: with the input's per-channel mean m and (biased)
  // variance v, gamma = sqrt(v + eps) * gamma_old_scale, beta = m * old_scale + beta_old,
  // moving statistics = (m, v). For a layer loaded from BN-folded weights (gamma 1, mean 0,
  // variance 1 - eps, beta = folded bias) this gives gamma = sqrt(v + eps), beta = m + bias.
  // The forward that performs it runs in inference mode and its output is unchanged.
  void recalibrate_on_next_forward() { recalibrate_ = true; }

  // Whether forward in `mode` uses batch statistics.
  bool uses_batch_statistics(Mode mode) const { return mode == Mode::train && !(gamma_.frozen && beta_.frozen); }

  void forward(const Tensor& x, Tensor& y, Mode mode) override {
    ProfileScope scope("batchnorm forward");
    check_input(x);
    const int64_t c = channels(), m = x.size() / c;
    float* mean = stats_.data();
    float* inv_std = mean + c;
    float* scale = mean + 2 * c;
    float* shift = mean + 3 * c;
    float* variance = mean + 4 * c;
    if (recalibrate_) recalibrate(x, m, c, mean, variance);
    trained_ = uses_batch_statistics(mode) && !recalibrate_;
    recalibrate_ = false;
    if (trained_) {
      kernels::batch_norm_statistics(mean, variance, x.data(), m, c);
      const float unbiased = m > 1 ? static_cast<float>(m) / static_cast<float>(m - 1) : 1.0f;
      for (int64_t j = 0; j < c; ++j) {
        moving_mean_.value[j] = moving_mean_.value[j] * momentum_ + mean[j] * (1 - momentum_);
        moving_variance_.value[j] = moving_variance_.value[j] * momentum_ + variance[j] * unbiased * (1 - momentum_);
      }
    } else {
      for (int64_t j = 0; j < c; ++j) {
        mean[j] = moving_mean_.value[j];
        variance[j] = moving_variance_.value[j];
      }
    }
    for (int64_t j = 0; j < c; ++j) {
      inv_std[j] = 1.0f / std::sqrt(variance[j] + epsilon_);
      scale[j] = gamma_.value[j] * inv_std[j];
      shift[j] = beta_.value[j] - mean[j] * scale[j];
    }
    y.resize(x.shape());
    kernels::scale_shift(y.data(), x.data(), scale, shift, m, c);
  }

  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope("batchnorm backward");
    check_input(x);
    check_output_grad(y, dy);
    const int64_t c = channels(), m = x.size() / c;
    const float* mean = stats_.data();
    const float* inv_std = mean + c;
    const float* scale = mean + 2 * c;
    if (dx) dx->resize(x.shape());
    float* dgamma = grad_or_null(gamma_);
    float* dbeta = grad_or_null(beta_);
    if (trained_) {
      kernels::batch_norm_backward(dx ? dx->data() : nullptr, dgamma, dbeta, dy.data(), x.data(), gamma_.value.data(),
                                   mean, inv_std, m, c, sums_.data());
    } else {
      kernels::batch_norm_backward_inference(dx ? dx->data() : nullptr, dgamma, dbeta, dy.data(), x.data(), scale, mean,
                                             inv_std, m, c);
    }
  }

 protected:
  Shape do_build(const Shape& in, Rng&) override {
    EIGENNET_CHECK(in.rank() >= 1, "BatchNorm '", name(), "': input needs a channel axis");
    const int64_t c = in.back();
    gamma_ = Parameter::weight(name() + "/gamma", Shape{c});
    gamma_.value.fill(1.0f);
    beta_ = Parameter::weight(name() + "/beta", Shape{c});
    moving_mean_ = Parameter::statistic(name() + "/moving_mean", Shape{c});
    moving_variance_ = Parameter::statistic(name() + "/moving_variance", Shape{c});
    moving_variance_.value.fill(1.0f);
    register_parameter(gamma_);
    register_parameter(beta_);
    register_parameter(moving_mean_);
    register_parameter(moving_variance_);
    stats_ = Tensor(Shape{5 * c});
    sums_ = Tensor(Shape{2 * c});
    return in;
  }

 private:
  int64_t channels() const { return input_shape().back(); }

  // Sets gamma, beta and the moving statistics as described at recalibrate_on_next_forward().
  // The current layer computes y = x * s + t with s = gamma / sqrt(mv + eps) and
  // t = beta - mm * s; the new one keeps s and t while its statistics become (m, v).
  void recalibrate(const Tensor& x, int64_t m, int64_t c, float* mean, float* variance) {
    kernels::batch_norm_statistics(mean, variance, x.data(), m, c);
    for (int64_t j = 0; j < c; ++j) {
      const float s = gamma_.value[j] / std::sqrt(moving_variance_.value[j] + epsilon_);
      const float t = beta_.value[j] - moving_mean_.value[j] * s;
      gamma_.value[j] = s * std::sqrt(variance[j] + epsilon_);
      beta_.value[j] = mean[j] * s + t;
      moving_mean_.value[j] = mean[j];
      moving_variance_.value[j] = variance[j];
    }
  }

  float momentum_, epsilon_;
  Parameter gamma_, beta_, moving_mean_, moving_variance_;
  Tensor stats_;  // mean, inv_std, scale, shift, variance of the latest forward
  Tensor sums_;
  bool trained_ = false;
  bool recalibrate_ = false;
};

}  // namespace eigennet
