// DepthwiseConv2D: one k_h x k_w filter per channel (depth multiplier 1), Keras kernel layout
// [kh, kw, C, 1].
#pragma once

#include "../core/init.hpp"
#include "../kernels/depthwise_conv2d.hpp"
#include "layer.hpp"

namespace eigennet {

class DepthwiseConv2D : public Layer {
 public:
  DepthwiseConv2D(std::string name, KernelSize kernel, int64_t stride = 1, Padding padding = Padding::same,
                  bool use_bias = true, Init init = Init::glorot_uniform)
      : Layer(std::move(name)), kernel_(kernel), stride_(stride), padding_(padding), use_bias_(use_bias), init_(init) {
    EIGENNET_CHECK(kernel.h > 0 && kernel.w > 0, "DepthwiseConv2D '", this->name(),
                   "': kernel size must be positive, got ", kernel.h, "x", kernel.w);
    EIGENNET_CHECK(stride > 0, "DepthwiseConv2D '", this->name(), "': stride must be positive, got ", stride);
  }
  const char* type() const override { return "DepthwiseConv2D"; }

  Parameter& kernel() { return kernel_param_; }
  Parameter& bias() { return bias_param_; }
  bool use_bias() const { return use_bias_; }
  WindowGeometry geometry(int64_t batch) const {
    const Shape& in = input_shape();
    return make_window_geometry(batch, in[0], in[1], in[2], in[2], kernel_.h, kernel_.w, stride_, stride_, padding_,
                                "DepthwiseConv2D");
  }

  void forward(const Tensor& x, Tensor& y, Mode) override {
    ProfileScope scope("depthwise forward");
    check_input(x);
    const WindowGeometry g = geometry(x.dim(0));
    y.resize(Shape{g.batch, g.out_h, g.out_w, g.out_c});
    kernels::depthwise_conv2d_forward(y.data(), x.data(), kernel_param_.value.data(),
                                      use_bias_ ? bias_param_.value.data() : nullptr, g);
  }

  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope("depthwise backward");
    check_input(x);
    check_output_grad(y, dy);
    const WindowGeometry g = geometry(x.dim(0));
    float* dw = grad_or_null(kernel_param_);
    float* db = use_bias_ ? grad_or_null(bias_param_) : nullptr;
    if (dw || db) kernels::depthwise_conv2d_backward_weight(dw, db, dy.data(), x.data(), g);
    if (dx) {
      dx->resize(x.shape());
      kernels::depthwise_conv2d_backward_input(dx->data(), dy.data(), kernel_param_.value.data(), g);
    }
  }

 protected:
  Shape do_build(const Shape& in, Rng& rng) override {
    EIGENNET_CHECK(in.rank() == 3, "DepthwiseConv2D '", name(), "': expects [height, width, channels] input, got ", in);
    kernel_param_ = Parameter::weight(name() + "/depthwise_kernel", Shape{kernel_.h, kernel_.w, in[2], 1});
    init_kernel(kernel_param_.value, init_, kernel_.h * kernel_.w * in[2], kernel_.h * kernel_.w, rng);
    register_parameter(kernel_param_);
    if (use_bias_) {
      bias_param_ = Parameter::weight(name() + "/bias", Shape{in[2]});
      register_parameter(bias_param_);
    }
    const WindowGeometry g = make_window_geometry(1, in[0], in[1], in[2], in[2], kernel_.h, kernel_.w, stride_, stride_,
                                                  padding_, ("DepthwiseConv2D '" + name() + "'").c_str());
    return Shape{g.out_h, g.out_w, in[2]};
  }

 private:
  KernelSize kernel_;
  int64_t stride_;
  Padding padding_;
  bool use_bias_;
  Init init_;
  Parameter kernel_param_, bias_param_;
};

}  // namespace eigennet
