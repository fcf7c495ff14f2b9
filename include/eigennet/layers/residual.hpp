// Residual: y = x + body(x), the skip connection of an inverted residual block. The body must
// map its input shape to itself.
#pragma once

#include <memory>

#include "../kernels/activation.hpp"
#include "sequential.hpp"

namespace eigennet {

class Residual : public Layer {
 public:
  Residual(std::string name, std::unique_ptr<Sequential> body) : Layer(std::move(name)), body_(std::move(body)) {
    EIGENNET_CHECK(body_ != nullptr, "Residual '", this->name(), "': body is null");
  }
  const char* type() const override { return "Residual"; }
  Sequential& body() { return *body_; }

  void forward(const Tensor& x, Tensor& y, Mode mode) override {
    check_input(x);
    Tensor& body_out = body_->needs_output_for_backward() ? body_output_ : y;
    body_->forward(x, body_out, mode);
    ProfileScope scope("residual add");
    y.resize(x.shape());
    kernels::add_forward(y.data(), body_out.data(), x.data(), x.size());
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    check_output_grad(y, dy);
    const Tensor& body_out = body_->needs_output_for_backward() ? body_output_ : y;
    body_->backward(x, body_out, dy, dx);
    if (dx) {
      ProfileScope scope("residual add");
      kernels::add_forward(dx->data(), dx->data(), dy.data(), dy.size());
    }
  }
  ParameterList parameters() override { return body_->parameters(); }
  void for_each_layer(const std::function<void(Layer&)>& fn) override {
    fn(*this);
    body_->for_each_layer(fn);
  }
  bool has_trainable_parameters() const override { return body_->has_trainable_parameters(); }
  void reseed(uint64_t seed) override { body_->reseed(seed); }

 protected:
  Shape do_build(const Shape& in, Rng& rng) override {
    const Shape out = body_->build(in, rng);
    EIGENNET_CHECK(out == in, "Residual '", name(), "': body maps ", in, " to ", out,
                   "; a residual connection needs equal shapes");
    return out;
  }

 private:
  std::unique_ptr<Sequential> body_;
  Tensor body_output_;
};

}  // namespace eigennet
