// Dense: y = x W + b on [batch, features], Keras kernel layout [in, out]. Flatten turns
// [H, W, C] into [H*W*C] for a dense layer after convolutions.
#pragma once

#include "../core/init.hpp"
#include "../kernels/dense.hpp"
#include "layer.hpp"

namespace eigennet {

class Dense : public Layer {
 public:
  Dense(std::string name, int64_t units, bool use_bias = true, Init init = Init::glorot_uniform)
      : Layer(std::move(name)), units_(units), use_bias_(use_bias), init_(init) {
    EIGENNET_CHECK(units > 0, "Dense '", this->name(), "': units must be positive, got ", units);
  }
  const char* type() const override { return "Dense"; }
  Parameter& kernel() { return kernel_param_; }
  Parameter& bias() { return bias_param_; }
  int64_t units() const { return units_; }

  void forward(const Tensor& x, Tensor& y, Mode) override {
    ProfileScope scope("dense forward");
    check_input(x);
    y.resize(Shape{x.dim(0), units_});
    kernels::dense_forward(y.data(), x.data(), kernel_param_.value.data(), use_bias_ ? bias_param_.value.data() : nullptr,
                           x.dim(0), x.dim(1), units_);
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope("dense backward");
    check_input(x);
    check_output_grad(y, dy);
    if (dx) dx->resize(x.shape());
    kernels::dense_backward(dx ? dx->data() : nullptr, grad_or_null(kernel_param_),
                            use_bias_ ? grad_or_null(bias_param_) : nullptr, dy.data(), x.data(),
                            kernel_param_.value.data(), x.dim(0), x.dim(1), units_);
  }

 protected:
  Shape do_build(const Shape& in, Rng& rng) override {
    EIGENNET_CHECK(in.rank() == 1, "Dense '", name(), "': expects [features] input, got ", in,
                   " (add Flatten or a global pooling layer before it)");
    kernel_param_ = Parameter::weight(name() + "/kernel", Shape{in[0], units_});
    init_kernel(kernel_param_.value, init_, in[0], units_, rng);
    register_parameter(kernel_param_);
    if (use_bias_) {
      bias_param_ = Parameter::weight(name() + "/bias", Shape{units_});
      register_parameter(bias_param_);
    }
    return Shape{units_};
  }

 private:
  int64_t units_;
  bool use_bias_;
  Init init_;
  Parameter kernel_param_, bias_param_;
};

class Flatten : public Layer {
 public:
  explicit Flatten(std::string name) : Layer(std::move(name)) {}
  const char* type() const override { return "Flatten"; }
  void forward(const Tensor& x, Tensor& y, Mode) override {
    check_input(x);
    y.copy_from(x);
    y.reshape(Shape{x.dim(0), x.size() / x.dim(0)});
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    check_output_grad(y, dy);
    if (!dx) return;
    dx->copy_from(dy);
    dx->reshape(x.shape());
  }

 protected:
  Shape do_build(const Shape& in, Rng&) override { return Shape{in.elements()}; }
};

}  // namespace eigennet
