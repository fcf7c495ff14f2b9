// Pooling layers: MaxPool2D and AvgPool2D over windows, GlobalMaxPool and GlobalAvgPool over
// height x width ([H, W, C] -> [C]). Global max pooling routes its gradient to the arg-max.
#pragma once

#include <vector>

#include "../kernels/pooling.hpp"
#include "layer.hpp"

namespace eigennet {

namespace detail {
class WindowPool : public Layer {
 public:
  WindowPool(std::string name, KernelSize pool, int64_t stride, Padding padding)
      : Layer(std::move(name)), pool_(pool), stride_(stride > 0 ? stride : 0), padding_(padding) {
    EIGENNET_CHECK(pool.h > 0 && pool.w > 0, "pooling '", this->name(), "': pool size must be positive, got ", pool.h,
                   "x", pool.w);
    EIGENNET_CHECK(stride >= 0, "pooling '", this->name(), "': stride must be positive, got ", stride);
  }

 public:
  // Window geometry for a batch of this layer's input (after build).
  WindowGeometry geometry(int64_t batch) const {
    const Shape& in = input_shape();
    const int64_t sh = stride_ ? stride_ : pool_.h, sw = stride_ ? stride_ : pool_.w;
    return make_window_geometry(batch, in[0], in[1], in[2], in[2], pool_.h, pool_.w, sh, sw, padding_, type());
  }

 protected:
  Shape do_build(const Shape& in, Rng&) override {
    EIGENNET_CHECK(in.rank() == 3, type(), " '", name(), "': expects [height, width, channels] input, got ", in);
    const int64_t sh = stride_ ? stride_ : pool_.h, sw = stride_ ? stride_ : pool_.w;
    const WindowGeometry g = make_window_geometry(1, in[0], in[1], in[2], in[2], pool_.h, pool_.w, sh, sw, padding_,
                                                  (std::string(type()) + " '" + name() + "'").c_str());
    return Shape{g.out_h, g.out_w, in[2]};
  }

  KernelSize pool_;
  int64_t stride_;  // 0: equal to the pool size (Keras' default)
  Padding padding_;
};
}  // namespace detail

class MaxPool2D : public detail::WindowPool {
 public:
  // stride 0 means "same as the pool size", as Keras' strides=None.
  explicit MaxPool2D(std::string name, KernelSize pool = 2, int64_t stride = 0, Padding padding = Padding::valid)
      : WindowPool(std::move(name), pool, stride, padding) {}
  const char* type() const override { return "MaxPool2D"; }

  void forward(const Tensor& x, Tensor& y, Mode) override {
    ProfileScope scope("pooling forward");
    check_input(x);
    const WindowGeometry g = geometry(x.dim(0));
    y.resize(Shape{g.batch, g.out_h, g.out_w, g.out_c});
    argmax_.resize(static_cast<size_t>(y.size()));
    kernels::max_pool2d_forward(y.data(), argmax_.data(), x.data(), g);
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope("pooling backward");
    check_output_grad(y, dy);
    if (!dx) return;
    dx->resize(x.shape());
    kernels::max_pool2d_backward(dx->data(), dy.data(), argmax_.data(), geometry(x.dim(0)));
  }

 private:
  std::vector<int32_t> argmax_;
};

class AvgPool2D : public detail::WindowPool {
 public:
  explicit AvgPool2D(std::string name, KernelSize pool = 2, int64_t stride = 0, Padding padding = Padding::valid)
      : WindowPool(std::move(name), pool, stride, padding) {}
  const char* type() const override { return "AvgPool2D"; }

  void forward(const Tensor& x, Tensor& y, Mode) override {
    ProfileScope scope("pooling forward");
    check_input(x);
    const WindowGeometry g = geometry(x.dim(0));
    y.resize(Shape{g.batch, g.out_h, g.out_w, g.out_c});
    kernels::avg_pool2d_forward(y.data(), x.data(), g);
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope("pooling backward");
    check_output_grad(y, dy);
    if (!dx) return;
    dx->resize(x.shape());
    kernels::avg_pool2d_backward(dx->data(), dy.data(), geometry(x.dim(0)));
  }
};

class GlobalAvgPool : public Layer {
 public:
  explicit GlobalAvgPool(std::string name) : Layer(std::move(name)) {}
  const char* type() const override { return "GlobalAvgPool"; }

  void forward(const Tensor& x, Tensor& y, Mode) override {
    ProfileScope scope("pooling forward");
    check_input(x);
    y.resize(Shape{x.dim(0), x.dim(3)});
    kernels::global_avg_pool_forward(y.data(), x.data(), x.dim(0), x.dim(1) * x.dim(2), x.dim(3));
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope("pooling backward");
    check_output_grad(y, dy);
    if (!dx) return;
    dx->resize(x.shape());
    kernels::global_avg_pool_backward(dx->data(), dy.data(), x.dim(0), x.dim(1) * x.dim(2), x.dim(3));
  }

 protected:
  Shape do_build(const Shape& in, Rng&) override {
    EIGENNET_CHECK(in.rank() == 3, "GlobalAvgPool '", name(), "': expects [height, width, channels] input, got ", in);
    return Shape{in[2]};
  }
};

class GlobalMaxPool : public Layer {
 public:
  explicit GlobalMaxPool(std::string name) : Layer(std::move(name)) {}
  const char* type() const override { return "GlobalMaxPool"; }

  void forward(const Tensor& x, Tensor& y, Mode) override {
    ProfileScope scope("pooling forward");
    check_input(x);
    y.resize(Shape{x.dim(0), x.dim(3)});
    argmax_.resize(static_cast<size_t>(y.size()));
    kernels::global_max_pool_forward(y.data(), argmax_.data(), x.data(), x.dim(0), x.dim(1) * x.dim(2), x.dim(3));
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope("pooling backward");
    check_output_grad(y, dy);
    if (!dx) return;
    dx->resize(x.shape());
    kernels::global_max_pool_backward(dx->data(), dy.data(), argmax_.data(), x.dim(0), x.dim(1) * x.dim(2), x.dim(3));
  }

 protected:
  Shape do_build(const Shape& in, Rng&) override {
    EIGENNET_CHECK(in.rank() == 3, "GlobalMaxPool '", name(), "': expects [height, width, channels] input, got ", in);
    return Shape{in[2]};
  }

 private:
  std::vector<int32_t> argmax_;
};

}  // namespace eigennet
