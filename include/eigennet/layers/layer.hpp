// Layer: the interface every layer implements. A layer owns its parameters (and their
// gradients) and the small state its backward needs (batch statistics, arg-max indices,
// dropout masks). Activations are owned by the container (Sequential) and passed in, so each
// activation is stored once, as in llm.c.
//
// Life cycle: build(input shape) once, then forward / backward pairs. Shapes are per sample
// (no batch dimension) in build; tensors passed to forward / backward carry the batch first.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/parameter.hpp"
#include "../core/profile.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"

namespace eigennet {

// Training mode uses batch statistics and dropout; inference mode is deterministic.
enum class Mode { train, inference };

class Layer {
 public:
  explicit Layer(std::string name) : name_(std::move(name)) {}
  virtual ~Layer() = default;
  Layer(const Layer&) = delete;  // parameters are referenced by address
  Layer& operator=(const Layer&) = delete;

  const std::string& name() const { return name_; }
  virtual const char* type() const = 0;

  // Allocates and initializes parameters for a per-sample input shape; returns the per-sample
  // output shape. Throws Error when the shape does not suit the layer.
  Shape build(const Shape& input_shape, Rng& rng) {
    EIGENNET_CHECK(!built_, type(), " '", name_, "': build called twice");
    input_shape_ = input_shape;
    output_shape_ = do_build(input_shape, rng);
    built_ = true;
    return output_shape_;
  }
  bool built() const { return built_; }
  const Shape& input_shape() const { return input_shape_; }
  const Shape& output_shape() const { return output_shape_; }

  // y = layer(x). y is resized by the layer (no allocation once its capacity suffices).
  virtual void forward(const Tensor& x, Tensor& y, Mode mode) = 0;
  // Given x and y of the latest forward and dy = dL/dy: accumulates parameter gradients of
  // trainable parameters and, when dx is not null, writes dL/dx into *dx.
  virtual void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) = 0;

  // This layer's parameters (recursively for containers), in a fixed order.
  virtual ParameterList parameters() { return own_parameters_; }
  virtual bool has_trainable_parameters() const {
    for (const Parameter* p : own_parameters_)
      if (p->trainable()) return true;
    return false;
  }
  // True when backward reads y; the next layer may then not overwrite y in place.
  virtual bool needs_output_for_backward() const { return false; }
  // True when forward(x, y) works with y aliasing x (elementwise layers).
  virtual bool supports_in_place() const { return false; }
  // Calls fn on this layer and, for containers, on every layer inside it (depth first).
  virtual void for_each_layer(const std::function<void(Layer&)>& fn) { fn(*this); }
  // Re-seeds any randomness (dropout) so that a resumed run repeats an uninterrupted one.
  virtual void reseed(uint64_t seed) { (void)seed; }

 protected:
  virtual Shape do_build(const Shape& input_shape, Rng& rng) = 0;

  void register_parameter(Parameter& p) { own_parameters_.push_back(&p); }

  // Checks that x is a batch of this layer's input shape.
  void check_input(const Tensor& x) const {
    EIGENNET_CHECK(built_, type(), " '", name_, "' is used before build()");
    EIGENNET_CHECK(x.rank() == input_shape_.rank() + 1 && x.shape().without_batch() == input_shape_, type(), " '",
                   name_, "': expected input of shape [batch, ", input_shape_.to_string().substr(1), ", got ",
                   x.shape());
    EIGENNET_CHECK(x.dim(0) > 0, type(), " '", name_, "': empty batch");
  }
  void check_output_grad(const Tensor& y, const Tensor& dy) const {
    EIGENNET_CHECK(dy.shape() == y.shape(), type(), " '", name_, "': gradient of shape ", dy.shape(),
                   " does not match the output shape ", y.shape());
  }
  static float* grad_or_null(Parameter& p) { return p.trainable() ? p.grad.data() : nullptr; }

 private:
  std::string name_;
  Shape input_shape_, output_shape_;
  bool built_ = false;
  ParameterList own_parameters_;
};

// Kernel size (height x width); an int means a square kernel.
struct KernelSize {
  KernelSize(int64_t size) : h(size), w(size) {}  // NOLINT: implicit on purpose, Conv2D(..., 3)
  KernelSize(int64_t height, int64_t width) : h(height), w(width) {}
  int64_t h, w;
};

}  // namespace eigennet
