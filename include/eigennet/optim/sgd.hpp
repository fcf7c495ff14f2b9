// SGD with momentum (Keras form: velocity = momentum * velocity - lr * g; w += velocity, which
// equals PyTorch's for a constant learning rate), optional Nesterov and decoupled weight decay.
#pragma once

#include "../core/parallel.hpp"
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
    Coefficients k;
    k.momentum = options_.momentum;
    k.learning_rate = lr_;
    k.decay = lr_ * options_.weight_decay;
    k.nesterov = options_.nesterov;
    for (size_t i = 0; i < params_.size(); ++i) {
      Parameter& p = *params_[i];
      if (!p.trainable()) continue;
      float* w = p.value.data();
      const float* g = p.grad.data();
      float* vel = velocity_[i].data();
      parallel_chunks(p.value.size(), 1, [&](int64_t begin, int64_t end, int) {
        update(w + begin, g + begin, vel + begin, end - begin, k);
      });
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
  struct Coefficients {
    float momentum = 0, learning_rate = 0, decay = 0;  // decay = lr * weight_decay
    bool nesterov = false;
  };
  // One step for n values, in SIMD packets (the remainder in a partial packet):
  //   w -= decay * w;  vel = flush(mu vel - lr g);  w += nesterov ? mu vel - lr g : vel
  // with flush() = flush_subnormal_packet.
  static void update(float* __restrict w, const float* __restrict g, float* __restrict vel, int64_t n,
                     const Coefficients& k) {
    using simd::Packet;
    const Packet mu = simd::set1(k.momentum), lr = simd::set1(k.learning_rate), decay = simd::set1(k.decay);
    const bool decays = k.decay != 0.0f, nesterov = k.nesterov;
    auto one = [&](int64_t j, int lanes) {
      Packet wj = simd::load_partial(w + j, lanes);
      const Packet step = simd::mul(lr, simd::load_partial(g + j, lanes));
      if (decays) wj = simd::sub(wj, simd::mul(decay, wj));
      Packet vj = simd::sub(simd::mul(mu, simd::load_partial(vel + j, lanes)), step);
      vj = flush_subnormal_packet(vj);
      wj = simd::add(wj, nesterov ? simd::sub(simd::mul(mu, vj), step) : vj);
      simd::store_partial(vel + j, vj, lanes);
      simd::store_partial(w + j, wj, lanes);
    };
    simd::for_each_packet(n, one);
  }

  Options options_;
  std::vector<Tensor> velocity_;
};

}  // namespace eigennet
