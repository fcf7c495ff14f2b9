// Conv2D: a k_h x k_w convolution over NHWC input, Keras kernel layout [kh, kw, in, out].
// 1x1 stride-1 convolutions go straight to a GEMM; others through im2col + GEMM.
#pragma once

#include "../core/init.hpp"
#include "../kernels/conv2d.hpp"
#include "../kernels/pointwise_conv2d.hpp"
#include "layer.hpp"

namespace eigennet {

class Conv2D : public Layer {
 public:
  Conv2D(std::string name, int64_t filters, KernelSize kernel, int64_t stride = 1, Padding padding = Padding::same,
         bool use_bias = true, Init init = Init::glorot_uniform)
      : Layer(std::move(name)), filters_(filters), kernel_(kernel), stride_(stride), padding_(padding),
        use_bias_(use_bias), init_(init) {
    EIGENNET_CHECK(filters > 0, "Conv2D '", this->name(), "': filters must be positive, got ", filters);
    EIGENNET_CHECK(kernel.h > 0 && kernel.w > 0, "Conv2D '", this->name(), "': kernel size must be positive, got ",
                   kernel.h, "x", kernel.w);
    EIGENNET_CHECK(stride > 0, "Conv2D '", this->name(), "': stride must be positive, got ", stride);
  }
  const char* type() const override { return "Conv2D"; }

  Parameter& kernel() { return kernel_param_; }
  Parameter& bias() { return bias_param_; }
  bool use_bias() const { return use_bias_; }
  // Window geometry for a batch of this layer's input (after build).
  WindowGeometry geometry(int64_t batch) const {
    const Shape& in = input_shape();
    WindowGeometry g = cached_;
    if (g.batch != batch) {
      g = geometry_for(batch, in);
      cached_ = g;
    }
    return g;
  }

  void forward(const Tensor& x, Tensor& y, Mode) override {
    ProfileScope scope(is_pointwise() ? "conv1x1 forward" : "conv2d forward");
    check_input(x);
    const WindowGeometry g = geometry(x.dim(0));
    y.resize(Shape{g.batch, g.out_h, g.out_w, g.out_c});
    const float* b = use_bias_ ? bias_param_.value.data() : nullptr;
    if (is_pointwise()) {
      kernels::pointwise_conv2d_forward(y.data(), x.data(), kernel_param_.value.data(), b, g.out_pixels(), g.in_c,
                                        g.out_c);
    } else {
      workspace_.resize(Shape{kernels::conv2d_workspace_size(g)});
      kernels::conv2d_forward(y.data(), x.data(), kernel_param_.value.data(), b, g, workspace_.data());
    }
  }

  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope(is_pointwise() ? "conv1x1 backward" : "conv2d backward");
    check_input(x);
    check_output_grad(y, dy);
    const WindowGeometry g = geometry(x.dim(0));
    if (dx) dx->resize(x.shape());
    float* dw = grad_or_null(kernel_param_);
    float* db = use_bias_ ? grad_or_null(bias_param_) : nullptr;
    float* din = dx ? dx->data() : nullptr;
    if (is_pointwise()) {
      kernels::pointwise_conv2d_backward(din, dw, db, dy.data(), x.data(), kernel_param_.value.data(),
                                         g.out_pixels(), g.in_c, g.out_c);
    } else {
      workspace_.resize(Shape{kernels::conv2d_workspace_size(g)});
      kernels::conv2d_backward(din, dw, db, dy.data(), x.data(), kernel_param_.value.data(), g, workspace_.data());
    }
  }

 protected:
  Shape do_build(const Shape& in, Rng& rng) override {
    EIGENNET_CHECK(in.rank() == 3, "Conv2D '", name(), "': expects [height, width, channels] input, got ", in);
    const int64_t in_c = in[2];
    kernel_param_ = Parameter::weight(name() + "/kernel", Shape{kernel_.h, kernel_.w, in_c, filters_});
    init_kernel(kernel_param_.value, init_, kernel_.h * kernel_.w * in_c, kernel_.h * kernel_.w * filters_, rng);
    register_parameter(kernel_param_);
    if (use_bias_) {
      bias_param_ = Parameter::weight(name() + "/bias", Shape{filters_});
      register_parameter(bias_param_);
    }
    const WindowGeometry g = geometry_for(1, in);
    return Shape{g.out_h, g.out_w, filters_};
  }

 private:
  bool is_pointwise() const { return kernel_.h == 1 && kernel_.w == 1 && stride_ == 1; }
  WindowGeometry geometry_for(int64_t batch, const Shape& in) const {
    return make_window_geometry(batch, in[0], in[1], in[2], filters_, kernel_.h, kernel_.w, stride_, stride_, padding_,
                                ("Conv2D '" + name() + "'").c_str());
  }

  int64_t filters_;
  KernelSize kernel_;
  int64_t stride_;
  Padding padding_;
  bool use_bias_;
  Init init_;
  Parameter kernel_param_, bias_param_;
  Tensor workspace_;
  mutable WindowGeometry cached_;
};

}  // namespace eigennet
