// Dropout: inverted dropout in training mode, the identity in inference mode. The mask comes
// from the layer's own Rng, so a seed makes training repeatable.
#pragma once

#include <cstring>

#include "../kernels/dropout.hpp"
#include "layer.hpp"

namespace eigennet {

class Dropout : public Layer {
 public:
  Dropout(std::string name, float rate, uint64_t seed = 0) : Layer(std::move(name)), rate_(rate), rng_(seed) {
    EIGENNET_CHECK(rate >= 0.0f && rate < 1.0f, "Dropout '", this->name(), "': rate must be in [0, 1), got ", rate);
  }
  const char* type() const override { return "Dropout"; }
  float rate() const { return rate_; }
  void reseed(uint64_t seed) override { rng_.reseed(seed); }
  // In data-parallel training a process holds rows [before, n - after) of a batch of n rows (the
  // other processes hold the rest). With this, each forward draws the masks of the other rows
  // too and discards them, so that every item gets the mask one process would draw for it.
  void set_rows_elsewhere(int64_t before, int64_t after) {
    EIGENNET_CHECK(before >= 0 && after >= 0, "Dropout '", name(), "': negative row counts ", before, ", ", after);
    rows_before_ = before;
    rows_after_ = after;
  }

  void forward(const Tensor& x, Tensor& y, Mode mode) override {
    ProfileScope scope("dropout");
    check_input(x);
    active_ = mode == Mode::train && rate_ > 0.0f;
    if (&y != &x) y.resize(x.shape());
    if (!active_) {
      if (&y != &x) std::memcpy(y.data(), x.data(), static_cast<size_t>(x.size()) * sizeof(float));
      return;
    }
    mask_.resize(x.shape());
    const int64_t row = x.size() / x.dim(0);
    for (int64_t i = 0; i < rows_before_ * row; ++i) rng_.next_u64();  // one draw per element
    kernels::dropout_make_mask(mask_.data(), x.size(), rate_, rng_);
    for (int64_t i = 0; i < rows_after_ * row; ++i) rng_.next_u64();
    kernels::multiply(y.data(), x.data(), mask_.data(), x.size());
  }
  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    (void)x;
    check_output_grad(y, dy);
    if (!dx) return;
    if (dx != &dy) dx->resize(dy.shape());
    if (active_) kernels::multiply(dx->data(), dy.data(), mask_.data(), dy.size());
    else if (dx != &dy) std::memcpy(dx->data(), dy.data(), static_cast<size_t>(dy.size()) * sizeof(float));
  }
  bool supports_in_place() const override { return true; }

 protected:
  Shape do_build(const Shape& in, Rng&) override { return in; }

 private:
  float rate_;
  Rng rng_;
  Tensor mask_;
  bool active_ = false;
  int64_t rows_before_ = 0, rows_after_ = 0;
};

}  // namespace eigennet
