// Adam (Kingma & Ba) as Keras implements it, with Keras' defaults:
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2
//   w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)
// and optional AdamW-style decoupled weight decay applied first: w -= lr * weight_decay * w.
// (PyTorch adds eps after dividing sqrt(v) by sqrt(1 - b2^t); the difference only matters when
// sqrt(v) is comparable to eps.)
#pragma once

#include <cmath>

#include "../core/parallel.hpp"
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
    Coefficients k;
    k.alpha =
        static_cast<float>(lr_ * std::sqrt(1.0 - std::pow(options_.beta2, t)) / (1.0 - std::pow(options_.beta1, t)));
    k.beta1 = options_.beta1;
    k.beta2 = options_.beta2;
    k.epsilon = options_.epsilon;
    k.decay = lr_ * options_.weight_decay;
    for (size_t i = 0; i < params_.size(); ++i) {
      Parameter& p = *params_[i];
      if (!p.trainable()) continue;
      float* w = p.value.data();
      const float* g = p.grad.data();
      float* m = m_[i].data();
      float* v = v_[i].data();
      parallel_chunks(p.value.size(), 1, [&](int64_t begin, int64_t end, int) {
        update(w + begin, g + begin, m + begin, v + begin, end - begin, k);
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
  // The step's constants: alpha = lr * sqrt(1 - b2^t) / (1 - b1^t), decay = lr * weight_decay.
  struct Coefficients {
    float alpha = 0, beta1 = 0, beta2 = 0, epsilon = 0, decay = 0;
  };
  // One step for n values, in SIMD packets (the remainder in a partial packet):
  //   w -= decay * w;  m = flush(b1 m + (1 - b1) g);  v = flush(b2 v + (1 - b2) g^2);
  //   w -= alpha * m / (sqrt(v) + eps)
  // with flush() = flush_subnormal_packet. Element by element, the same arithmetic as
  // the scalar formula (up to the compiler's fusing of a multiply and an add).
  static void update(float* __restrict w, const float* __restrict g, float* __restrict m, float* __restrict v,
                     int64_t n, const Coefficients& k) {
    using simd::Packet;
    const Packet b1 = simd::set1(k.beta1), c1 = simd::set1(1 - k.beta1);
    const Packet b2 = simd::set1(k.beta2), c2 = simd::set1(1 - k.beta2);
    const Packet alpha = simd::set1(k.alpha), eps = simd::set1(k.epsilon), decay = simd::set1(k.decay);
    const bool decays = k.decay != 0.0f;
    auto one = [&](int64_t j, int lanes) {
      Packet wj = simd::load_partial(w + j, lanes);
      const Packet gj = simd::load_partial(g + j, lanes);
      if (decays) wj = simd::sub(wj, simd::mul(decay, wj));
      const Packet mj = flush_subnormal_packet(simd::fmadd(b1, simd::load_partial(m + j, lanes), simd::mul(c1, gj)));
      const Packet vj =
          flush_subnormal_packet(simd::fmadd(b2, simd::load_partial(v + j, lanes), simd::mul(simd::mul(c2, gj), gj)));
      wj = simd::sub(wj, simd::div(simd::mul(alpha, mj), simd::add(simd::sqrt(vj), eps)));
      simd::store_partial(m + j, mj, lanes);
      simd::store_partial(v + j, vj, lanes);
      simd::store_partial(w + j, wj, lanes);
    };
    simd::for_each_packet(n, one);
  }

  Options options_;
  std::vector<Tensor> m_, v_;
};

}  // namespace eigennet
