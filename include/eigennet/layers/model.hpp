// Model: what the training loop (train/fit.hpp), evaluation and prediction need from a network.
// A Sequential and a Classifier are models; so is a user's own layer graph once it implements
// these five functions:
//
//   class MyNet : public eigennet::Model {
//     const Tensor& forward(const Tensor& x, Mode mode) override;  // outputs, e.g. logits [N, K]
//     void backward(const Tensor& doutputs) override;              // accumulates gradients
//     ParameterList parameters() override;                         // weights and statistics
//     void reseed(uint64_t seed) override;                         // dropout's randomness
//   };
//
// Two optional functions let tools look inside (a Sequential and a Classifier have both): the
// layers (e.g. to synchronize BatchNorm across processes) and a hook called during backward as
// each layer's gradients become final (e.g. to send them while the layers below still compute).
#pragma once

#include <cstdint>
#include <functional>

#include "../core/parameter.hpp"
#include "../core/tensor.hpp"
#include "layer.hpp"

namespace eigennet {

class Model {
 public:
  virtual ~Model() = default;

  // Outputs for a batch of inputs (batch first); valid until the next forward.
  virtual const Tensor& forward(const Tensor& inputs, Mode mode) = 0;
  // Backpropagates d loss / d outputs of the latest forward: accumulates the gradients of the
  // trainable parameters (the optimizer zeroes them).
  virtual void backward(const Tensor& doutputs) = 0;
  // Every parameter, weights and statistics, in a fixed order: what a model file and a
  // checkpoint hold.
  virtual ParameterList parameters() = 0;
  // Re-seeds the model's own randomness (dropout masks), so that an epoch can be repeated
  // exactly: a resumed run equals an uninterrupted one.
  virtual void reseed(uint64_t seed) = 0;

  // Calls fn on every layer of the model, containers and the layers inside them. A model that
  // does not override it shows no layers.
  virtual void for_each_layer(const std::function<void(Layer&)>& fn) { (void)fn; }
  // After this, backward() calls hook(layer) as soon as `layer` has finished its backward: the
  // gradients of its parameters are then final for this backward (no later part adds to them).
  // Layers are reported in the order their backward ends; layers backward skips (nothing
  // trainable below them) are not reported. An empty function removes the hook. A model that does
  // not override it reports nothing: its gradients are all final when backward() returns.
  virtual void set_backward_hook(std::function<void(Layer&)> hook) { (void)hook; }
};

}  // namespace eigennet
