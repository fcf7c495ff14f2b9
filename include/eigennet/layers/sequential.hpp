// Sequential: layers applied in order. It owns the intermediate activations (one buffer per
// layer output, elementwise layers run in place when the layer before does not need its
// output) and two ping-pong gradient buffers for backward.
//
// Two ways to use it:
//   - as a Layer inside another container: forward(x, y, mode) / backward(x, y, dy, dx);
//   - as a model (layers/model.hpp, what fit() trains): give it the per-sample input shape, add
//     layers (each is built as it is added), then `const Tensor& out = net.forward(x, mode)` and
//     `net.backward(dloss)`.
//
// Backward skips work nobody needs: layers below the lowest trainable parameter are not
// visited, and no input gradient is computed for the first layer of a model.
#pragma once

#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "layer.hpp"
#include "model.hpp"

namespace eigennet {

class Sequential : public Layer, public Model {
 public:
  // A container to be nested in another; it is built by its parent.
  explicit Sequential(std::string name = "sequential") : Layer(std::move(name)) {}
  // A model with a known per-sample input shape: layers are built as they are added, with
  // weights initialized from `seed`.
  Sequential(std::string name, const Shape& input_shape, uint64_t seed = 0)
      : Layer(std::move(name)), rng_(seed), model_input_(input_shape) {
    current_shape_ = input_shape;
  }
  const char* type() const override { return "Sequential"; }

  // Constructs a layer in place: net.add<Conv2D>("conv", 8, 3).
  template <typename L, typename... Args>
  L& add(Args&&... args) {
    auto layer = std::make_unique<L>(std::forward<Args>(args)...);
    L& ref = *layer;
    add(std::move(layer));
    return ref;
  }
  Layer& add(std::unique_ptr<Layer> layer) {
    EIGENNET_CHECK(layer != nullptr, "Sequential '", name(), "': cannot add a null layer");
    for (const auto& existing : layers_)
      EIGENNET_CHECK(existing->name() != layer->name(), "Sequential '", name(), "': duplicate layer name '", layer->name(),
                     "'");
    if (model_input_) {
      current_shape_ = layer->build(current_shape_, rng_);
    } else {
      EIGENNET_CHECK(!built(), "Sequential '", name(), "': cannot add layers after it was built");
    }
    layers_.push_back(std::move(layer));
    return *layers_.back();
  }

  size_t size() const { return layers_.size(); }
  Layer& operator[](size_t i) { return *layers_.at(i); }
  const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
  // The layer with this name, searched recursively; nullptr when absent.
  Layer* find(const std::string& layer_name) {
    for (auto& l : layers_) {
      if (l->name() == layer_name) return l.get();
      if (auto* s = dynamic_cast<Sequential*>(l.get()))
        if (Layer* found = s->find(layer_name)) return found;
    }
    return nullptr;
  }
  // Per-sample shape this model produces (model use).
  const Shape& model_output_shape() const { return current_shape_; }

  ParameterList parameters() override {
    ParameterList all;
    for (auto& l : layers_) {
      ParameterList p = l->parameters();
      all.insert(all.end(), p.begin(), p.end());
    }
    return all;
  }
  void for_each_layer(const std::function<void(Layer&)>& fn) override {
    fn(*this);
    for (auto& l : layers_) l->for_each_layer(fn);
  }
  // Reports each of this container's own layers as its backward ends (Model::set_backward_hook);
  // also when the container runs inside another (a Classifier's head).
  void set_backward_hook(std::function<void(Layer&)> hook) override { backward_hook_ = std::move(hook); }
  bool has_trainable_parameters() const override {
    for (const auto& l : layers_)
      if (l->has_trainable_parameters()) return true;
    return false;
  }
  bool needs_output_for_backward() const override {
    return !layers_.empty() && layers_.back()->needs_output_for_backward();
  }
  void reseed(uint64_t seed) override {
    Rng rng(seed);
    for (auto& l : layers_) l->reseed(rng.next_u64());
  }

  // ---- Layer API -------------------------------------------------------------------------
  void forward(const Tensor& x, Tensor& y, Mode mode) override {
    EIGENNET_CHECK(!layers_.empty(), "Sequential '", name(), "' has no layers");
    const size_t n = layers_.size();
    outputs_.resize(n);
    if (activations_.size() < n) activations_.resize(n);
    const Tensor* in = &x;
    for (size_t i = 0; i < n; ++i) {
      Tensor* out;
      if (i + 1 == n) {
        out = &y;
      } else if (i > 0 && layers_[i]->supports_in_place() && !layers_[i - 1]->needs_output_for_backward()) {
        out = const_cast<Tensor*>(in);  // in is an activation this container owns
      } else {
        out = &activations_[i];
      }
      layers_[i]->forward(*in, *out, mode);
      outputs_[i] = out;
      in = out;
    }
  }

  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    const size_t n = layers_.size();
    EIGENNET_CHECK(outputs_.size() == n && n > 0, "Sequential '", name(), "': backward before forward");
    (void)y;
    // lowest = the first layer that must run: the lowest one with trainable parameters, or 0
    // when the caller wants dx.
    size_t lowest = n;
    for (size_t i = 0; i < n; ++i)
      if (layers_[i]->has_trainable_parameters()) {
        lowest = i;
        break;
      }
    if (dx) lowest = 0;
    const Tensor* grad = &dy;
    for (size_t i = n; i-- > lowest;) {
      const Tensor& in = i == 0 ? x : *outputs_[i - 1];
      const Tensor& out = *outputs_[i];
      Tensor* grad_in = nullptr;
      if (i > lowest) grad_in = &grads_[i % 2];
      else if (i == 0) grad_in = dx;
      layers_[i]->backward(in, out, *grad, grad_in);
      if (backward_hook_) backward_hook_(*layers_[i]);
      grad = grad_in;
    }
  }

  // ---- Model API -------------------------------------------------------------------------
  // Runs the model on a batch; the result stays valid until the next forward.
  const Tensor& forward(const Tensor& x, Mode mode) override {
    EIGENNET_CHECK(model_input_.has_value(), "Sequential '", name(),
                   "': forward(x, mode) needs a model built with an input shape");
    EIGENNET_CHECK(x.rank() == model_input_->rank() + 1 && x.shape().without_batch() == *model_input_, "Sequential '",
                   name(), "': expected input of shape [batch, ", model_input_->to_string().substr(1), ", got ",
                   x.shape());
    input_.copy_from(x);  // the caller's x may not outlive backward
    forward(input_, output_, mode);
    return output_;
  }
  // The output of the latest model-API forward.
  const Tensor& output() const { return output_; }
  // Backpropagates dL/d(output) of the latest forward; accumulates parameter gradients.
  void backward(const Tensor& doutput) override { backward(input_, output_, doutput, nullptr); }

  ParameterList trainable_parameters() {
    ParameterList all = parameters(), out;
    for (Parameter* p : all)
      if (p->trainable()) out.push_back(p);
    return out;
  }

 protected:
  Shape do_build(const Shape& in, Rng& rng) override {
    Shape s = in;
    for (auto& l : layers_) s = l->build(s, rng);
    return s;
  }

 private:
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<Tensor> activations_;
  std::vector<Tensor*> outputs_;
  Tensor grads_[2];
  Rng rng_;
  std::optional<Shape> model_input_;
  Shape current_shape_;
  Tensor input_, output_;
  std::function<void(Layer&)> backward_hook_;
};

}  // namespace eigennet
