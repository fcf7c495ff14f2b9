// Residual: y = body(x) + shortcut(x), a skip connection. Without a shortcut (MobileNetV2's
// inverted residual blocks) the shortcut is the identity and the body must map its input shape
// to itself. A shortcut is a small network of its own, such as BlazeFace's max pooling followed
// by zero channel padding, which lets a block that downsamples or widens keep its skip
// connection; body and shortcut must then produce the same shape.
#pragma once

#include <memory>

#include "../kernels/activation.hpp"
#include "sequential.hpp"

namespace eigennet {

class Residual : public Layer {
 public:
  // shortcut == nullptr: the identity.
  Residual(std::string name, std::unique_ptr<Sequential> body, std::unique_ptr<Sequential> shortcut = nullptr)
      : Layer(std::move(name)), body_(std::move(body)), shortcut_(std::move(shortcut)) {
    EIGENNET_CHECK(body_ != nullptr, "Residual '", this->name(), "': body is null");
  }
  const char* type() const override { return "Residual"; }
  Sequential& body() { return *body_; }
  // nullptr when the shortcut is the identity.
  Sequential* shortcut() { return shortcut_.get(); }

  void forward(const Tensor& x, Tensor& y, Mode mode) override {
    check_input(x);
    Tensor& body_out = body_->needs_output_for_backward() ? body_output_ : y;
    body_->forward(x, body_out, mode);
    const Tensor* skip = &x;
    if (shortcut_) {
      shortcut_->forward(x, shortcut_output_, mode);
      skip = &shortcut_output_;
    }
    ProfileScope scope("residual add");
    y.resize(body_out.shape());
    kernels::add_forward(y.data(), body_out.data(), skip->data(), y.size());
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    check_output_grad(y, dy);
    const Tensor& body_out = body_->needs_output_for_backward() ? body_output_ : y;
    body_->backward(x, body_out, dy, dx);
    if (!dx) {
      if (shortcut_ && shortcut_->has_trainable_parameters()) shortcut_->backward(x, shortcut_output_, dy, nullptr);
      return;
    }
    ProfileScope scope("residual add");
    if (shortcut_) {
      shortcut_->backward(x, shortcut_output_, dy, &shortcut_grad_);
      kernels::add_forward(dx->data(), dx->data(), shortcut_grad_.data(), dx->size());
    } else {
      kernels::add_forward(dx->data(), dx->data(), dy.data(), dy.size());
    }
  }
  ParameterList parameters() override {
    ParameterList all = body_->parameters();
    if (shortcut_) {
      const ParameterList s = shortcut_->parameters();
      all.insert(all.end(), s.begin(), s.end());
    }
    return all;
  }
  void for_each_layer(const std::function<void(Layer&)>& fn) override {
    fn(*this);
    body_->for_each_layer(fn);
    if (shortcut_) shortcut_->for_each_layer(fn);
  }
  bool has_trainable_parameters() const override {
    return body_->has_trainable_parameters() || (shortcut_ && shortcut_->has_trainable_parameters());
  }
  void reseed(uint64_t seed) override {
    body_->reseed(seed);
    if (shortcut_) shortcut_->reseed(seed + 1);
  }

 protected:
  Shape do_build(const Shape& in, Rng& rng) override {
    const Shape out = body_->build(in, rng);
    if (!shortcut_) {
      EIGENNET_CHECK(out == in, "Residual '", name(), "': body maps ", in, " to ", out,
                     "; a residual connection needs equal shapes");
      return out;
    }
    const Shape skip = shortcut_->build(in, rng);
    EIGENNET_CHECK(out == skip, "Residual '", name(), "': body maps ", in, " to ", out, " but the shortcut to ", skip,
                   "; a residual connection needs equal shapes");
    return out;
  }

 private:
  std::unique_ptr<Sequential> body_, shortcut_;
  Tensor body_output_, shortcut_output_, shortcut_grad_;
};

}  // namespace eigennet
