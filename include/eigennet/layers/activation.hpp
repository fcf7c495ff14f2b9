// ReLU (optionally capped: ReLU6 is ReLU with max_value 6, as in Keras) and Softmax.
#pragma once

#include <limits>

#include "../kernels/activation.hpp"
#include "../kernels/softmax.hpp"
#include "layer.hpp"

namespace eigennet {

class ReLU : public Layer {
 public:
  explicit ReLU(std::string name, float max_value = std::numeric_limits<float>::infinity())
      : Layer(std::move(name)), cap_(max_value) {
    EIGENNET_CHECK(max_value > 0.0f, "ReLU '", this->name(), "': max_value must be positive, got ", max_value);
  }
  const char* type() const override { return cap_ == 6.0f ? "ReLU6" : "ReLU"; }
  float max_value() const { return cap_; }

  void forward(const Tensor& x, Tensor& y, Mode) override {
    ProfileScope scope("relu forward");
    check_input(x);
    if (&y != &x) y.resize(x.shape());
    kernels::relu_forward(y.data(), x.data(), x.size(), cap_);
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope("relu backward");
    (void)x;
    check_output_grad(y, dy);
    if (!dx) return;
    if (dx != &dy) dx->resize(y.shape());
    kernels::relu_backward(dx->data(), dy.data(), y.data(), y.size(), cap_);
  }
  bool needs_output_for_backward() const override { return true; }
  bool supports_in_place() const override { return true; }

 protected:
  Shape do_build(const Shape& in, Rng&) override { return in; }

 private:
  float cap_;
};

// ReLU6: min(max(x, 0), 6), MobileNetV2's activation.
class ReLU6 : public ReLU {
 public:
  explicit ReLU6(std::string name) : ReLU(std::move(name), 6.0f) {}
};

// Softmax over the last axis of [batch, classes]. For training, prefer SoftmaxCrossEntropy on
// logits: it is fused and numerically stable.
class Softmax : public Layer {
 public:
  explicit Softmax(std::string name) : Layer(std::move(name)) {}
  const char* type() const override { return "Softmax"; }

  void forward(const Tensor& x, Tensor& y, Mode) override {
    check_input(x);
    y.resize(x.shape());
    kernels::softmax_forward(y.data(), x.data(), x.dim(0), x.dim(1));
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    (void)x;
    check_output_grad(y, dy);
    if (!dx) return;
    dx->resize(y.shape());
    kernels::softmax_backward(dx->data(), dy.data(), y.data(), y.dim(0), y.dim(1));
  }
  bool needs_output_for_backward() const override { return true; }

 protected:
  Shape do_build(const Shape& in, Rng&) override {
    EIGENNET_CHECK(in.rank() == 1, "Softmax '", name(), "': expects [classes] input, got ", in);
    return in;
  }
};

}  // namespace eigennet
