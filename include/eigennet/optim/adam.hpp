// Adam (Kingma & Ba) as Keras implements it, with Keras' defaults:
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2
//   w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
// and optional AdamW-style decoupled weight decay applied first: w -= lr * weight_decay * w.
// (PyTorch adds eps after dividing sqrt(v) by sqrt(1 - b2^t); the difference only matters when
// sqrt(v) is comparable to eps.)
#pragma once

#include <cmath>

#include "optimizer.hpp"

namespace eigennet {

class Adam : public Optimizer {
 public:
  struct Options {
    float learning_rate = 1e-3f;
    float beta1 = 0.9f;
    float beta2 = 0.999f;
    float epsilon = 1e-7f;
    float weight_decay = 0.0f;  // decoupled (AdamW)
  };
  explicit Adam(ParameterList params) : Adam(std::move(params), Options{}) {}
  Adam(ParameterList params, Options options) : Optimizer(std::move(params), options.learning_rate), options_(options) {
    EIGENNET_CHECK(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1,
                   "Adam: betas must be in [0, 1), got ", options.beta1, ", ", options.beta2);
    EIGENNET_CHECK(options.epsilon > 0, "Adam: epsilon must be positive, got ", options.epsilon);
    EIGENNET_CHECK(options.weight_decay >= 0, "Adam: weight_decay must be non-negative, got ", options.weight_decay);
    m_.resize(params_.size());
    v_.resize(params_.size());
    for (size_t i = 0; i < params_.size(); ++i) {
      if (params_[i]->kind != ParameterKind::weight) continue;
      m_[i] = Tensor(params_[i]->value.shape());
      v_[i] = Tensor(params_[i]->value.shape());
    }
  }

  void step() override {
    ++steps_;
    const double t = static_cast<double>(steps_);
    const float alpha =
        static_cast<float>(lr_ * std::sqrt(1.0 - std::pow(options_.beta2, t)) / (1.0 - std::pow(options_.beta1, t)));
    const float b1 = options_.beta1, b2 = options_.beta2, eps = options_.epsilon;
    const float decay = lr_ * options_.weight_decay;
    for (size_t i = 0; i < params_.size(); ++i) {
      Parameter& p = *params_[i];
      if (!p.trainable()) continue;
      float* w = p.value.data();
      const float* g = p.grad.data();
      float* m = m_[i].data();
      float* v = v_[i].data();
      const int64_t n = p.value.size();
      parallel_for(n, n, [&](int64_t j) {
        if (decay != 0.0f) w[j] -= decay * w[j];
        m[j] = flush_subnormal(b1 * m[j] + (1 - b1) * g[j]);
        v[j] = flush_subnormal(b2 * v[j] + (1 - b2) * g[j] * g[j]);
        w[j] -= alpha * m[j] / (std::sqrt(v[j]) + eps);
      });
    }
  }

  std::vector<std::pair<std::string, Tensor*>> state() override {
    std::vector<std::pair<std::string, Tensor*>> out;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (params_[i]->kind != ParameterKind::weight) continue;
      out.emplace_back("optimizer/" + params_[i]->name + "/m", &m_[i]);
      out.emplace_back("optimizer/" + params_[i]->name + "/v", &v_[i]);
    }
    return out;
  }
  const Options& options() const { return options_; }

 private:
  Options options_;
  std::vector<Tensor> m_, v_;
};

}  // namespace eigennet
