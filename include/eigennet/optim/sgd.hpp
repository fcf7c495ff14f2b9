// SGD with momentum (Keras form: velocity = momentum * velocity - lr * g; w += velocity, which
// equals PyTorch's for a constant learning rate), optional Nesterov and decoupled weight decay.
#pragma once

#include "optimizer.hpp"

namespace eigennet {

class SGD : public Optimizer {
 public:
  struct Options {
    float learning_rate = 0.01f;
    float momentum = 0.0f;
    bool nesterov = false;
    float weight_decay = 0.0f;  // decoupled
  };
  SGD(ParameterList params, Options options) : Optimizer(std::move(params), options.learning_rate), options_(options) {
    EIGENNET_CHECK(options.momentum >= 0 && options.momentum < 1, "SGD: momentum must be in [0, 1), got ",
                   options.momentum);
    EIGENNET_CHECK(options.weight_decay >= 0, "SGD: weight_decay must be non-negative, got ", options.weight_decay);
    velocity_.resize(params_.size());
    for (size_t i = 0; i < params_.size(); ++i)
      if (params_[i]->kind == ParameterKind::weight) velocity_[i] = Tensor(params_[i]->value.shape());
  }

  void step() override {
    ++steps_;
    const float mu = options_.momentum, lr = lr_, decay = lr_ * options_.weight_decay;
    for (size_t i = 0; i < params_.size(); ++i) {
      Parameter& p = *params_[i];
      if (!p.trainable()) continue;
      float* w = p.value.data();
      const float* g = p.grad.data();
      float* vel = velocity_[i].data();
      for (int64_t j = 0; j < p.value.size(); ++j) {
        if (decay != 0.0f) w[j] -= decay * w[j];
        vel[j] = flush_subnormal(mu * vel[j] - lr * g[j]);
        w[j] += options_.nesterov ? mu * vel[j] - lr * g[j] : vel[j];
      }
    }
  }

  std::vector<std::pair<std::string, Tensor*>> state() override {
    std::vector<std::pair<std::string, Tensor*>> out;
    for (size_t i = 0; i < params_.size(); ++i)
      if (params_[i]->kind == ParameterKind::weight)
        out.emplace_back("optimizer/" + params_[i]->name + "/velocity", &velocity_[i]);
    return out;
  }

 private:
  Options options_;
  std::vector<Tensor> velocity_;
};

}  // namespace eigennet
