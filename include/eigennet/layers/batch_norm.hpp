// BatchNormalization over the last (channel) axis, Keras semantics:
//   training:  y = gamma * (x - mean_B) / sqrt(var_B + eps) + beta with batch statistics, and
//              moving = moving * momentum + batch * (1 - momentum); the moving variance uses the
//              unbiased batch variance (as TensorFlow's fused kernel and PyTorch do).
//   inference: the same with the moving statistics.
// As in Keras, a frozen BatchNorm (gamma and beta frozen) always runs in inference mode, so a
// frozen base keeps its statistics during transfer learning.
//
// Besides forward/backward, the layer exposes its per-channel coefficients (prepare_forward,
// prepare_backward) so that fused layers (InvertedResidual) can run the normalization inside
// their own sweeps while this class keeps the parameters, statistics and rules in one place.
//
// In data-parallel training each process holds a part of the batch. By default each normalizes
// with its own part's statistics; with a BatchStatisticsSync (distributed/sync_batch_norm.hpp)
// the statistics, and the sums of the backward, are those of the whole batch.
#pragma once

#include <cmath>
#include <cstring>

#include "../kernels/batch_norm_act.hpp"
#include "layer.hpp"

namespace eigennet {

// Combines a BatchNorm's per-process batch statistics with those of the other processes of a
// data-parallel run (every process calls it for the same layers in the same order).
class BatchStatisticsSync {
 public:
  virtual ~BatchStatisticsSync() = default;
  // In: per-channel mean and biased variance of this process's m rows. Out: those of the rows of
  // all processes. Returns the number of rows of all processes.
  virtual int64_t combine_statistics(float* mean, float* variance, int64_t m, int64_t c) = 0;
  // In: s1 = sum dz and s2 = sum dz * x_hat over this process's m rows. Out: the sums over the
  // rows of all processes, in this process's gradient units (each process's loss is the mean
  // over its own items, so its gradients carry a factor 1 / its items).
  virtual void combine_gradient_sums(double* s1, double* s2, int64_t m, int64_t c) = 0;
};

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
  // variance v, and the current affine map y = s x + t, the layer becomes gamma = s sqrt(v + eps),
  // beta = s m + t, moving statistics (m, v). For a layer loaded from BN-folded weights (gamma 1,
  // mean 0, variance 1 - eps, beta = folded bias) that is gamma = sqrt(v + eps), beta = m + bias.
  // The forward that performs it runs in inference mode and its output is unchanged.
  void recalibrate_on_next_forward() { recalibrate_ = true; }

  // Re-estimation of the moving statistics, for weights that no single training run produced
  // (an average of several networks, train/weight_average.hpp): while on, each training-mode
  // forward weighs its batch statistics equally with those of every earlier batch since it was
  // turned on (a cumulative mean; the first batch replaces the old statistics), instead of the
  // momentum.
  void set_reestimating(bool on) { reestimated_batches_ = on ? 0 : -1; }

  // Normalizes with the statistics of the batch of all processes (null: this process's only).
  // The sync must outlive its use.
  void set_statistics_sync(BatchStatisticsSync* sync) { sync_ = sync; }
  BatchStatisticsSync* statistics_sync() const { return sync_; }

  // Whether forward in `mode` normalizes with batch statistics.
  bool uses_batch_statistics(Mode mode) const {
    return mode == Mode::train && (!(gamma_.frozen && beta_.frozen) || reestimated_batches_ >= 0);
  }

  void forward(const Tensor& x, Tensor& y, Mode mode) override {
    ProfileScope scope("batchnorm forward");
    check_input(x);
    const int64_t c = channels(), m = x.size() / c;
    float* batch_mean = nullptr;
    float* batch_variance = nullptr;
    if (needs_input_statistics(mode)) {
      batch_mean = batch_stats_.data();
      batch_variance = batch_mean + c;
      kernels::channel_statistics(batch_mean, batch_variance, x.data(), m, c);
    }
    prepare_forward(mode, batch_mean, batch_variance, m);
    y.resize(x.shape());
    kernels::batch_norm_act_forward<kernels::Activation::none>(y.data(), x.data(), scale(), shift(), m, c);
  }

  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope("batchnorm backward");
    check_input(x);
    check_output_grad(y, dy);
    const int64_t c = channels(), m = x.size() / c;
    double* s1 = nullptr;
    double* s2 = nullptr;
    if (needs_backward_sums()) {
      s1 = scratch<double, 6>(static_cast<size_t>(2 * c));
      s2 = s1 + c;
      kernels::batch_norm_act_backward_sums<kernels::Activation::none>(s1, s2, dy.data(), dy.data(), x.data(), mean(),
                                                                       inv_std(), m, c);
    }
    prepare_backward(s1, s2, m);
    if (!dx) return;
    dx->resize(x.shape());
    kernels::batch_norm_act_backward_apply<kernels::Activation::none>(dx->data(), dy.data(), dy.data(), x.data(), mean(),
                                                                      k(), a(), b(), m, c);
  }

  // ---- Coefficients, for this layer and for fused layers -------------------------------------
  // Whether forward needs the per-channel mean and biased variance of its input.
  bool needs_input_statistics(Mode mode) const { return uses_batch_statistics(mode) || recalibrate_; }

  // Sets up a forward over m rows. batch_mean/batch_variance (biased) are required when
  // needs_input_statistics(mode). Updates the moving statistics in training mode and makes
  // scale(), shift() (y = x * scale + shift), mean() and inv_std() valid.
  void prepare_forward(Mode mode, const float* batch_mean, const float* batch_variance, int64_t m) {
    const int64_t c = channels();
    if (recalibrate_) {
      EIGENNET_CHECK(batch_mean && batch_variance, "BatchNorm '", name(), "': recalibration needs input statistics");
      recalibrate(batch_mean, batch_variance);
      recalibrate_ = false;
      trained_ = false;  // this forward runs in inference mode with the new statistics
    } else {
      trained_ = uses_batch_statistics(mode);
    }
    float* mu = coefficients_.data();
    float* inv = mu + c;
    float* sc = mu + 2 * c;
    float* sh = mu + 3 * c;
    if (trained_) {
      EIGENNET_CHECK(batch_mean && batch_variance, "BatchNorm '", name(), "': training mode needs batch statistics");
      rows_ = m;
      if (sync_) {
        float* global = batch_stats_.data() + 2 * c;
        std::memcpy(global, batch_mean, static_cast<size_t>(c) * sizeof(float));
        std::memcpy(global + c, batch_variance, static_cast<size_t>(c) * sizeof(float));
        m = rows_ = sync_->combine_statistics(global, global + c, m, c);
        batch_mean = global;
        batch_variance = global + c;
      }
      const float unbiased = m > 1 ? static_cast<float>(m) / static_cast<float>(m - 1) : 1.0f;
      float keep = momentum_;
      if (reestimated_batches_ >= 0) {
        keep = static_cast<float>(reestimated_batches_) / static_cast<float>(reestimated_batches_ + 1);
        ++reestimated_batches_;
      }
      for (int64_t j = 0; j < c; ++j) {
        mu[j] = batch_mean[j];
        inv[j] = 1.0f / std::sqrt(batch_variance[j] + epsilon_);
        moving_mean_.value[j] = moving_mean_.value[j] * keep + batch_mean[j] * (1 - keep);
        moving_variance_.value[j] = moving_variance_.value[j] * keep + batch_variance[j] * unbiased * (1 - keep);
      }
    } else {
      for (int64_t j = 0; j < c; ++j) {
        mu[j] = moving_mean_.value[j];
        inv[j] = 1.0f / std::sqrt(moving_variance_.value[j] + epsilon_);
      }
    }
    for (int64_t j = 0; j < c; ++j) {
      sc[j] = gamma_.value[j] * inv[j];
      sh[j] = beta_.value[j] - mu[j] * sc[j];
    }
  }
  const float* mean() const { return coefficients_.data(); }
  const float* inv_std() const { return coefficients_.data() + channels(); }
  const float* scale() const { return coefficients_.data() + 2 * channels(); }
  const float* shift() const { return coefficients_.data() + 3 * channels(); }
  // Whether the latest forward normalized with batch statistics.
  bool used_batch_statistics() const { return trained_; }

  // Whether backward needs s1 = sum dz and s2 = sum dz * x_hat (dz: gradient at this layer's
  // output after any fused activation).
  bool needs_backward_sums() const { return trained_ || gamma_.trainable() || beta_.trainable(); }
  // Sets up a backward over m rows from the sums (null when !needs_backward_sums()):
  // accumulates dgamma and dbeta and makes k(), a(), b() valid for
  // dx = k * (dz - a - (x - mean) * b).
  void prepare_backward(const double* s1, const double* s2, int64_t m) {
    const int64_t c = channels();
    float* kk = coefficients_.data() + 4 * c;
    float* aa = kk + c;
    float* bb = kk + 2 * c;
    const float* inv = inv_std();
    // The parameter gradients take this process's sums (the optimizer's gradients are averaged
    // across processes elsewhere); the gradient through the batch statistics needs the sums of
    // the rows those statistics came from.
    const double* g1 = s1;
    const double* g2 = s2;
    if (trained_ && sync_) {
      double* global = global_sums_.data();
      std::memcpy(global, s1, static_cast<size_t>(c) * sizeof(double));
      std::memcpy(global + c, s2, static_cast<size_t>(c) * sizeof(double));
      sync_->combine_gradient_sums(global, global + c, m, c);
      g1 = global;
      g2 = global + c;
      m = rows_;
    }
    for (int64_t j = 0; j < c; ++j) {
      if (s1 && beta_.trainable()) beta_.grad[j] += static_cast<float>(s1[j]);
      if (s2 && gamma_.trainable()) gamma_.grad[j] += static_cast<float>(s2[j]);
      kk[j] = gamma_.value[j] * inv[j];
      if (trained_) {
        aa[j] = static_cast<float>(g1[j] / static_cast<double>(m));
        bb[j] = static_cast<float>(inv[j] * g2[j] / static_cast<double>(m));
      } else {
        aa[j] = 0.0f;
        bb[j] = 0.0f;
      }
    }
  }
  const float* k() const { return coefficients_.data() + 4 * channels(); }
  const float* a() const { return coefficients_.data() + 5 * channels(); }
  const float* b() const { return coefficients_.data() + 6 * channels(); }

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
    coefficients_ = Tensor(Shape{7 * c});
    batch_stats_ = Tensor(Shape{4 * c});
    global_sums_.assign(static_cast<size_t>(2 * c), 0.0);
    return in;
  }

 private:
  int64_t channels() const { return input_shape().back(); }

  void recalibrate(const float* mean, const float* variance) {
    for (int64_t j = 0; j < channels(); ++j) {
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
  Tensor coefficients_;  // mean, inv_std, scale, shift (forward); k, a, b (backward)
  Tensor batch_stats_;   // batch mean and biased variance (when computed here), then those of all processes
  std::vector<double> global_sums_;  // the backward's sums over all processes
  int64_t rows_ = 0;                 // rows behind the statistics of the latest training forward
  bool trained_ = false;
  bool recalibrate_ = false;
  int64_t reestimated_batches_ = -1;  // batches averaged so far while re-estimating; -1: not re-estimating
  BatchStatisticsSync* sync_ = nullptr;
};

}  // namespace eigennet
