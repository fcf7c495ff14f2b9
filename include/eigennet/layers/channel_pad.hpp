// ChannelPad: appends (and optionally prepends) zero channels, [H, W, C] -> [H, W, before + C +
// after]. Keras has no such layer; TensorFlow models write tf.pad(x, [[0,0],[0,0],[0,0],[before,
// after]]), as BlazeFace does on the shortcut of its widening residual blocks.
#pragma once

#include "../kernels/channel_pad.hpp"
#include "layer.hpp"

namespace eigennet {

class ChannelPad : public Layer {
 public:
  ChannelPad(std::string name, int64_t after, int64_t before = 0)
      : Layer(std::move(name)), before_(before), after_(after) {
    EIGENNET_CHECK(before >= 0 && after >= 0, "ChannelPad '", this->name(),
                   "': channel counts must not be negative, got before ", before, ", after ", after);
  }
  const char* type() const override { return "ChannelPad"; }
  int64_t before() const { return before_; }
  int64_t after() const { return after_; }

  void forward(const Tensor& x, Tensor& y, Mode) override {
    ProfileScope scope("channel pad forward");
    check_input(x);
    const int64_t c = x.shape().back(), pixels = x.size() / c;
    Shape out = x.shape();
    out[out.rank() - 1] = before_ + c + after_;
    y.resize(out);
    kernels::channel_pad_forward(y.data(), x.data(), pixels, c, before_, after_);
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    ProfileScope scope("channel pad backward");
    check_output_grad(y, dy);
    if (!dx) return;
    dx->resize(x.shape());
    const int64_t c = x.shape().back();
    kernels::channel_pad_backward(dx->data(), dy.data(), x.size() / c, c, before_, after_);
  }

 protected:
  Shape do_build(const Shape& in, Rng&) override {
    EIGENNET_CHECK(in.rank() >= 1 && in.back() > 0, "ChannelPad '", name(),
                   "': expects an input with a non-empty channel axis, got ", in);
    Shape out = in;
    out[out.rank() - 1] = before_ + in.back() + after_;
    return out;
  }

 private:
  int64_t before_, after_;
};

}  // namespace eigennet
