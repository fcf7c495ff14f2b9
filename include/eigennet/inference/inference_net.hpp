// InferenceNet: a model compiled for inference.
//
//   InferenceNet net = compile_for_inference(model);     // a Sequential (model API) or a Classifier
//   const Tensor& out = net.forward(images);             // same result as model.forward(images, Mode::inference)
//
// Compiling walks the model once and turns its layers into a short list of steps:
//   - every BatchNorm that follows a convolution or a Dense layer is folded into that layer's
//     weights and bias (moving statistics), and a ReLU / ReLU6 after it becomes a clamp in the
//     same kernel's epilogue;
//   - each inverted residual block (an InvertedResidual layer, or the same pattern written as
//     plain layers: 1x1 conv, 3x3 depthwise, 1x1 conv, optionally inside a Residual) runs as one
//     fused step (kernels/inverted_residual_inference.hpp), with the skip connection added in the
//     projection's epilogue;
//   - 1x1 convolutions and Dense layers keep their weights packed for the pointwise engine; other
//     convolutions run im2col in cache-sized chunks on the same engine; pooling, softmax, flatten
//     run their kernels; dropout disappears;
//   - any other layer falls back to its own forward(x, y, Mode::inference).
//
// The net is a SNAPSHOT of the weights at compile time: after training changes the model (or
// new weights are loaded), compile again. Layers that fall back to their own forward are used by
// reference, so the model must outlive the net when summary() lists a "fallback" step.
// forward() allocates nothing once it has seen the largest batch; it reuses two activation
// buffers, so the result stays valid until the next forward.
#pragma once

#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/profile.hpp"
#include "../kernels/conv2d.hpp"
#include "../kernels/depthwise_conv2d.hpp"
#include "../kernels/inverted_residual_inference.hpp"
#include "../kernels/pooling.hpp"
#include "../kernels/pointwise_engine.hpp"
#include "../kernels/softmax.hpp"
#include "../layers/activation.hpp"
#include "../kernels/channel_pad.hpp"
#include "../layers/batch_norm.hpp"
#include "../layers/channel_pad.hpp"
#include "../layers/conv2d.hpp"
#include "../layers/dense.hpp"
#include "../layers/depthwise_conv2d.hpp"
#include "../layers/dropout.hpp"
#include "../layers/inverted_residual.hpp"
#include "../layers/pooling.hpp"
#include "../layers/residual.hpp"
#include "../layers/sequential.hpp"
#include "../models/classifier.hpp"

namespace eigennet {

namespace inference {

// Packed weights: aligned, and not zero-filled twice (pack_panels writes every float).
using AlignedFloats = std::vector<float, ZeroedAllocator<float>>;

// One step of a compiled net: y = step(x) on a batch.
class Step {
 public:
  explicit Step(Shape input) : input_(std::move(input)) {}
  virtual ~Step() = default;
  virtual void run(const Tensor& x, Tensor& y) = 0;
  // One line: what the step computes and which layers it came from.
  virtual std::string describe() const = 0;
  const Shape& input_shape() const { return input_; }
  const Shape& output_shape() const { return output_; }

 protected:
  Shape input_, output_;
};

using Steps = std::vector<std::unique_ptr<Step>>;

inline const char* clamp_name(const kernels::Clamp& c) {
  if (!c.active()) return "";
  if (c.lo == 0.0f && c.hi == 6.0f) return " + relu6";
  if (c.lo == 0.0f && std::isinf(c.hi)) return " + relu";
  return " + clamp";
}

// A convolution (or Dense) with its BatchNorm folded in: weights [kh, kw, in, out] scaled per
// output channel, and a bias. A pointwise convolution of a MobileNetV2 block is packed straight
// from the layer's kernel (`packed`, `weight` then empty): the weights are the bulk of a model's
// memory, and a copy of them only to pack it again was a third of the memory a loaded model first
// touched (and first touches of memory are most of the time of loading one).
struct FoldedConv {
  std::vector<float> weight;  // Keras layout, flattened [kh * kw * in, out] (depthwise: [kh * kw * C])
  std::vector<float> bias;    // [out]
  kernels::Clamp clamp;
  std::string names;          // the layers it came from
  AlignedFloats packed;       // or the weights [in, out] already scaled and packed (pointwise)
};

// Folds a BatchNorm (moving statistics) into the bias and gives the scale of each output channel
// that the weights take: b'[o] = b[o] s[o] + beta[o] - mean[o] s[o], s = gamma / sqrt(var + eps).
// Computed in double.
inline std::vector<double> fold_batch_norm_bias(FoldedConv& f, BatchNorm& bn) {
  const int64_t c = static_cast<int64_t>(f.bias.size());
  EIGENNET_CHECK(bn.gamma().value.size() == c, "compile_for_inference: BatchNorm '", bn.name(), "' has ",
                 bn.gamma().value.size(), " channels but the layer before it has ", c);
  std::vector<double> scale(static_cast<size_t>(c));
  for (int64_t o = 0; o < c; ++o) {
    const double s = static_cast<double>(bn.gamma().value[o]) /
                     std::sqrt(static_cast<double>(bn.moving_variance().value[o]) + static_cast<double>(bn.epsilon()));
    scale[static_cast<size_t>(o)] = s;
    f.bias[static_cast<size_t>(o)] =
        static_cast<float>(static_cast<double>(f.bias[static_cast<size_t>(o)]) * s + bn.beta().value[o] -
                           static_cast<double>(bn.moving_mean().value[o]) * s);
  }
  f.names += " + " + bn.name();
  return scale;
}

// Folds a BatchNorm into weights whose last axis is the channel: w'[.., o] = w[.., o] s[o]
// (rounded once from double), and into the bias as above.
inline void fold_batch_norm(FoldedConv& f, BatchNorm& bn) {
  const std::vector<double> scale = fold_batch_norm_bias(f, bn);
  const size_t c = scale.size();
  // Row by row (the channel is the last axis), so the pass over the weights is sequential.
  for (size_t row = 0; row < f.weight.size(); row += c)
    for (size_t o = 0; o < c; ++o) f.weight[row + o] = static_cast<float>(static_cast<double>(f.weight[row + o]) * scale[o]);
}

// Packs w [k, n] into panels, each column scaled by `scale` when given (as fold_batch_norm
// scales it: the same floats).
inline AlignedFloats pack(const float* w, int64_t k, int64_t n, const std::vector<double>* scale = nullptr) {
  AlignedFloats packed(static_cast<size_t>(kernels::pointwise::packed_size(k, n)));
  prefault_for_writing(packed.data(), packed.size() * sizeof(float));
  kernels::pointwise::pack_panels(packed.data(), w, k, n, false);
  if (scale != nullptr) {
    const int64_t width = kernels::pointwise::panel_width;
    for (int64_t p = 0; p < kernels::pointwise::panel_count(n); ++p) {
      const int64_t n0 = p * width, valid = std::min<int64_t>(width, n - n0);
      float* panel = packed.data() + p * k * width;
      for (int64_t kk = 0; kk < k; ++kk)
        for (int64_t j = 0; j < valid; ++j)
          panel[kk * width + j] = static_cast<float>(static_cast<double>(panel[kk * width + j]) * (*scale)[static_cast<size_t>(n0 + j)]);
    }
  }
  return packed;
}
inline AlignedFloats pack(const std::vector<float>& w, int64_t k, int64_t n) { return pack(w.data(), k, n); }

inline kernels::pointwise::Epilogue epilogue_of(const std::vector<float>& bias, const kernels::Clamp& clamp) {
  kernels::pointwise::Epilogue e;
  e.bias = bias.data();
  e.lo = clamp.lo;
  e.hi = clamp.hi;
  return e;
}

// Conv2D (+ BatchNorm) (+ ReLU): 1x1 stride 1 straight through the engine, others by chunked im2col.
class ConvStep : public Step {
 public:
  ConvStep(Conv2D& conv, FoldedConv folded)
      : Step(conv.input_shape()), f_(std::move(folded)), geometry_(conv.geometry(1)) {
    output_ = conv.output_shape();
    const int64_t patch = kernels::conv2d_patch_size(geometry_);
    packed_ = pack(f_.weight, patch, geometry_.out_c);
  }
  void run(const Tensor& x, Tensor& y) override {
    WindowGeometry g = geometry_;
    g.batch = x.dim(0);
    y.resize(output_.with_batch(g.batch));
    const kernels::pointwise::Packed w{packed_.data(), kernels::conv2d_patch_size(g), g.out_c};
    const kernels::pointwise::Epilogue e = epilogue_of(f_.bias, f_.clamp);
    if (pointwise())
      kernels::pointwise::multiply(y.data(), g.out_c, x.data(), g.in_c, g.out_pixels(), w, e);
    else
      kernels::conv2d_forward_packed(y.data(), x.data(), w, g, e);
  }
  std::string describe() const override {
    return std::string(pointwise() ? "pointwise conv " : "conv (im2col in chunks) ") + f_.names + clamp_name(f_.clamp);
  }
  bool pointwise() const {
    return geometry_.kernel_h == 1 && geometry_.kernel_w == 1 && geometry_.stride_h == 1 && geometry_.stride_w == 1;
  }
  const WindowGeometry& geometry() const { return geometry_; }
  FoldedConv& folded() { return f_; }

 private:
  FoldedConv f_;
  WindowGeometry geometry_;
  AlignedFloats packed_;
};

// DepthwiseConv2D (+ BatchNorm) (+ ReLU).
class DepthwiseStep : public Step {
 public:
  DepthwiseStep(DepthwiseConv2D& dw, FoldedConv folded)
      : Step(dw.input_shape()), f_(std::move(folded)), geometry_(dw.geometry(1)) {
    output_ = dw.output_shape();
  }
  void run(const Tensor& x, Tensor& y) override {
    WindowGeometry g = geometry_;
    g.batch = x.dim(0);
    y.resize(output_.with_batch(g.batch));
    kernels::depthwise_conv2d_forward(y.data(), x.data(), f_.weight.data(), f_.bias.data(), g, f_.clamp);
  }
  std::string describe() const override { return "depthwise conv " + f_.names + clamp_name(f_.clamp); }
  const WindowGeometry& geometry() const { return geometry_; }
  FoldedConv& folded() { return f_; }

 private:
  FoldedConv f_;
  WindowGeometry geometry_;
};

// Dense (+ BatchNorm) (+ ReLU).
class DenseStep : public Step {
 public:
  DenseStep(Dense& dense, FoldedConv folded) : Step(dense.input_shape()), f_(std::move(folded)) {
    output_ = dense.output_shape();
    packed_ = pack(f_.weight, input_[0], output_[0]);
  }
  void run(const Tensor& x, Tensor& y) override {
    y.resize(output_.with_batch(x.dim(0)));
    const kernels::pointwise::Packed w{packed_.data(), input_[0], output_[0]};
    kernels::pointwise::multiply(y.data(), output_[0], x.data(), input_[0], x.dim(0), w, epilogue_of(f_.bias, f_.clamp));
  }
  std::string describe() const override { return "dense " + f_.names + clamp_name(f_.clamp); }

 private:
  FoldedConv f_;
  AlignedFloats packed_;
};

// y = clamp(x * scale + shift) per channel: a BatchNorm not after a convolution, or a lone ReLU.
class AffineStep : public Step {
 public:
  AffineStep(const Shape& shape, std::vector<float> scale, std::vector<float> shift, kernels::Clamp clamp,
             std::string names)
      : Step(shape), scale_(std::move(scale)), shift_(std::move(shift)), clamp_(clamp), names_(std::move(names)) {
    output_ = shape;
  }
  void run(const Tensor& x, Tensor& y) override {
    y.resize(x.shape());
    const int64_t c = input_.back(), rows = x.size() / c;
    const float lo = clamp_.lo, hi = clamp_.hi;
    parallel_for(rows, rows * c, [&](int64_t r) {
      const float* xr = x.data() + r * c;
      float* yr = y.data() + r * c;
      for (int64_t j = 0; j < c; ++j) yr[j] = std::min(std::max(xr[j] * scale_[static_cast<size_t>(j)] + shift_[static_cast<size_t>(j)], lo), hi);
    });
  }
  std::string describe() const override { return "affine " + names_ + clamp_name(clamp_); }
  // True when the step only clamps (a lone ReLU): scale 1, shift 0.
  bool clamp_only() const {
    for (size_t j = 0; j < scale_.size(); ++j)
      if (scale_[j] != 1.0f || shift_[j] != 0.0f) return false;
    return clamp_.active();
  }
  const kernels::Clamp& clamp() const { return clamp_; }
  const std::string& names() const { return names_; }
  void add_clamp(const kernels::Clamp& c, const std::string& name) {
    clamp_.lo = std::max(clamp_.lo, c.lo);
    clamp_.hi = std::min(clamp_.hi, c.hi);
    names_ += " + " + name;
  }

 private:
  std::vector<float> scale_, shift_;
  kernels::Clamp clamp_;
  std::string names_;
};

// A fused inverted residual block (see kernels/inverted_residual_inference.hpp). Its skip
// connection is none, the input (`residual`), or a shortcut network (BlazeFace's max pooling and
// zero channels) whose steps run first, writing into the output, which the projection's epilogue
// then adds to.
class InvertedResidualStep : public Step {
 public:
  using Skip = kernels::InvertedResidualInference::Skip;
  // expand may be null (no expansion); shortcut steps only with skip == Skip::output.
  InvertedResidualStep(const Shape& input, const Shape& output, FoldedConv* expand, FoldedConv depthwise,
                       const WindowGeometry& depthwise_geometry, FoldedConv project, Skip skip, Steps shortcut = {})
      : Step(input), geometry_(depthwise_geometry), shortcut_(std::move(shortcut)) {
    output_ = output;
    const int64_t in_c = input_[2], hidden = geometry_.in_c, out_c = output_[2];
    EIGENNET_CHECK(skip != Skip::input || (input == output && geometry_.stride_h == 1),
                   "compile_for_inference: a skip connection needs stride 1 and equal shapes, got ", input, " and ",
                   output);
    EIGENNET_CHECK((skip == Skip::output) == !shortcut_.empty(),
                   "compile_for_inference: a shortcut skip connection needs its shortcut steps");
    EIGENNET_CHECK((!expand || !expand->packed.empty() || static_cast<int64_t>(expand->weight.size()) == in_c * hidden) &&
                       (!project.packed.empty() || static_cast<int64_t>(project.weight.size()) == hidden * out_c),
                   "compile_for_inference: the pointwise weights of a block do not match its shapes");
    EIGENNET_CHECK(shortcut_.empty() || shortcut_.back()->output_shape() == output, "compile_for_inference: the shortcut gives ",
                   shortcut_.empty() ? Shape{} : shortcut_.back()->output_shape(), " but the block ", output);
    names_ = (expand ? expand->names + clamp_name(expand->clamp) + ", " : std::string()) + depthwise.names +
             clamp_name(depthwise.clamp) + ", " + project.names;
    if (expand) {
      expand_bias_ = expand->bias;
      expand_packed_ = expand->packed.empty() ? pack(expand->weight, in_c, hidden) : std::move(expand->packed);
      weights_.expand = {expand_packed_.data(), in_c, hidden};
      weights_.expand_bias = expand_bias_.data();
      weights_.expand_clamp = expand->clamp;
    }
    depthwise_ = std::move(depthwise);
    project_bias_ = project.bias;
    project_packed_ = project.packed.empty() ? pack(project.weight, hidden, out_c) : std::move(project.packed);
    weights_.depthwise = depthwise_.weight.data();
    weights_.depthwise_bias = depthwise_.bias.data();
    weights_.depthwise_clamp = depthwise_.clamp;
    weights_.project = {project_packed_.data(), hidden, out_c};
    weights_.project_bias = project_bias_.data();
    weights_.project_clamp = project.clamp;
    weights_.skip = skip;
  }
  void run(const Tensor& x, Tensor& y) override {
    WindowGeometry g = geometry_;
    g.batch = x.dim(0);
    const Tensor* in = &x;
    for (size_t i = 0; i < shortcut_.size(); ++i) {
      Tensor& out = i + 1 == shortcut_.size() ? y : shortcut_buffers_[i % 2];
      shortcut_[i]->run(*in, out);
      in = &out;
    }
    y.resize(output_.with_batch(g.batch));
    kernels::inverted_residual_inference(y.data(), x.data(), input_[2], g, weights_);
  }
  std::string describe() const override {
    std::string s = "inverted residual block [" + names_ + "]";
    if (weights_.skip == Skip::input) s += " + skip connection";
    if (!shortcut_.empty()) {
      s += " + shortcut {";
      for (const auto& step : shortcut_) s += " " + step->describe() + ";";
      s += " }";
    }
    return s + clamp_name(weights_.project_clamp);
  }
  // A clamp after the block (a ReLU after the skip connection's add) moves into the projection's
  // epilogue, which clamps after adding the skip connection. Only when the projection has none.
  bool absorb_clamp(const kernels::Clamp& c, const std::string& names) {
    if (weights_.project_clamp.active()) return false;
    weights_.project_clamp = c;
    names_ += " + " + names;
    return true;
  }

 private:
  WindowGeometry geometry_;
  std::string names_;
  FoldedConv depthwise_;
  std::vector<float> expand_bias_, project_bias_;
  AlignedFloats expand_packed_, project_packed_;
  kernels::InvertedResidualInference weights_;
  Steps shortcut_;
  Tensor shortcut_buffers_[2];
};

// Zero channels before and after: y[p, :] = [0 x before, x[p, :], 0 x after].
class ChannelPadStep : public Step {
 public:
  explicit ChannelPadStep(ChannelPad& layer)
      : Step(layer.input_shape()), before_(layer.before()), after_(layer.after()), name_(layer.name()) {
    output_ = layer.output_shape();
  }
  void run(const Tensor& x, Tensor& y) override {
    y.resize(output_.with_batch(x.dim(0)));
    const int64_t c = input_.back();
    kernels::channel_pad_forward(y.data(), x.data(), x.size() / c, c, before_, after_);
  }
  std::string describe() const override { return "channel pad " + name_; }

 private:
  int64_t before_, after_;
  std::string name_;
};

class GlobalPoolStep : public Step {
 public:
  GlobalPoolStep(Layer& layer, bool max) : Step(layer.input_shape()), max_(max), name_(layer.name()) {
    output_ = layer.output_shape();
  }
  void run(const Tensor& x, Tensor& y) override {
    const int64_t n = x.dim(0), pixels = x.dim(1) * x.dim(2), c = x.dim(3);
    y.resize(Shape{n, c});
    if (max_) {
      argmax_.resize(static_cast<size_t>(n * c));
      kernels::global_max_pool_forward(y.data(), argmax_.data(), x.data(), n, pixels, c);
    } else {
      kernels::global_avg_pool_forward(y.data(), x.data(), n, pixels, c);
    }
  }
  std::string describe() const override { return std::string(max_ ? "global max pool " : "global avg pool ") + name_; }

 private:
  bool max_;
  std::string name_;
  std::vector<int32_t> argmax_;
};

class WindowPoolStep : public Step {
 public:
  WindowPoolStep(detail::WindowPool& layer, bool max)
      : Step(layer.input_shape()), max_(max), name_(layer.name()), geometry_(layer.geometry(1)) {
    output_ = layer.output_shape();
  }
  void run(const Tensor& x, Tensor& y) override {
    WindowGeometry g = geometry_;
    g.batch = x.dim(0);
    y.resize(output_.with_batch(g.batch));
    if (max_) {
      argmax_.resize(static_cast<size_t>(y.size()));
      kernels::max_pool2d_forward(y.data(), argmax_.data(), x.data(), g);
    } else {
      kernels::avg_pool2d_forward(y.data(), x.data(), g);
    }
  }
  std::string describe() const override { return std::string(max_ ? "max pool " : "avg pool ") + name_; }

 private:
  bool max_;
  std::string name_;
  WindowGeometry geometry_;
  std::vector<int32_t> argmax_;
};

class SoftmaxStep : public Step {
 public:
  explicit SoftmaxStep(Layer& layer) : Step(layer.input_shape()), name_(layer.name()) { output_ = input_; }
  void run(const Tensor& x, Tensor& y) override {
    y.resize(x.shape());
    kernels::softmax_forward(y.data(), x.data(), x.dim(0), x.dim(1));
  }
  std::string describe() const override { return "softmax " + name_; }

 private:
  std::string name_;
};

class FlattenStep : public Step {
 public:
  explicit FlattenStep(Layer& layer) : Step(layer.input_shape()), name_(layer.name()) { output_ = layer.output_shape(); }
  void run(const Tensor& x, Tensor& y) override {
    y.resize(output_.with_batch(x.dim(0)));
    std::memcpy(y.data(), x.data(), static_cast<size_t>(x.size()) * sizeof(float));
  }
  std::string describe() const override { return "flatten " + name_; }

 private:
  std::string name_;
};

// y = body(x) + shortcut(x) (shortcut: the identity when it has no steps) for a residual body
// that is not an inverted residual block.
class ResidualStep : public Step {
 public:
  ResidualStep(Residual& layer, Steps body, Steps shortcut = {})
      : Step(layer.input_shape()), name_(layer.name()), body_(std::move(body)), shortcut_(std::move(shortcut)) {
    output_ = layer.output_shape();
  }
  void run(const Tensor& x, Tensor& y) override {
    run_chain(body_, x, y);
    const Tensor* skip_tensor = &x;
    if (!shortcut_.empty()) {
      run_chain(shortcut_, x, shortcut_output_);
      skip_tensor = &shortcut_output_;
    }
    EIGENNET_CHECK(skip_tensor->size() == y.size(), "compile_for_inference: residual '", name_, "' adds ",
                   skip_tensor->shape(), " to ", y.shape());
    float* out = y.data();
    const float* skip = skip_tensor->data();
    parallel_for(y.size() / 1024 + 1, y.size(), [&](int64_t b) {
      const int64_t end = std::min(y.size(), (b + 1) * 1024);
      for (int64_t i = b * 1024; i < end; ++i) out[i] += skip[i];
    });
  }
  std::string describe() const override {
    std::string s = "residual " + name_ + " {";
    for (const auto& step : body_) s += " " + step->describe() + ";";
    if (shortcut_.empty()) return s + " } + skip connection";
    s += " } + shortcut {";
    for (const auto& step : shortcut_) s += " " + step->describe() + ";";
    return s + " }";
  }

 private:
  void run_chain(Steps& steps, const Tensor& x, Tensor& y) {
    if (steps.empty()) {
      y.copy_from(x);
      return;
    }
    const Tensor* in = &x;
    for (size_t i = 0; i < steps.size(); ++i) {
      Tensor& out = i + 1 == steps.size() ? y : buffers_[i % 2];
      steps[i]->run(*in, out);
      in = &out;
    }
  }

  std::string name_;
  Steps body_, shortcut_;
  Tensor buffers_[2], shortcut_output_;
};

// A layer compile_for_inference does not know: its own forward in inference mode.
class FallbackStep : public Step {
 public:
  explicit FallbackStep(Layer& layer) : Step(layer.input_shape()), layer_(layer) { output_ = layer.output_shape(); }
  void run(const Tensor& x, Tensor& y) override { layer_.forward(x, y, Mode::inference); }
  std::string describe() const override { return std::string("fallback: ") + layer_.type() + " '" + layer_.name() + "'"; }

 private:
  Layer& layer_;
};

// ---- Compiling --------------------------------------------------------------------------------

// The layers of a Sequential with nested Sequentials inlined (they compute the same).
inline void flatten_layers(Sequential& s, std::vector<Layer*>& out) {
  for (const auto& l : s.layers()) {
    if (auto* nested = dynamic_cast<Sequential*>(l.get()))
      flatten_layers(*nested, out);
    else
      out.push_back(l.get());
  }
}

// A layer's bias (zeros without one) and name, its weights not yet taken.
inline FoldedConv folded_bias(Parameter* bias, int64_t out_channels, const std::string& name) {
  FoldedConv f;
  f.bias.assign(static_cast<size_t>(out_channels), 0.0f);
  if (bias) std::copy(bias->value.data(), bias->value.data() + out_channels, f.bias.begin());
  f.names = name;
  return f;
}

inline FoldedConv folded_from(Parameter& kernel, Parameter* bias, int64_t out_channels, const std::string& name) {
  FoldedConv f = folded_bias(bias, out_channels, name);
  f.weight.assign(kernel.value.data(), kernel.value.data() + kernel.value.size());
  return f;
}

inline kernels::Clamp clamp_of(ReLU& relu) {
  kernels::Clamp c;
  c.lo = 0.0f;
  c.hi = relu.max_value();
  return c;
}

// Consumes a BatchNorm and then a ReLU after position i, folding them into f.
inline void absorb_following(const std::vector<Layer*>& layers, size_t& i, FoldedConv& f) {
  if (i + 1 < layers.size())
    if (auto* bn = dynamic_cast<BatchNorm*>(layers[i + 1])) {
      fold_batch_norm(f, *bn);
      ++i;
    }
  if (i + 1 < layers.size())
    if (auto* relu = dynamic_cast<ReLU*>(layers[i + 1])) {
      f.clamp = clamp_of(*relu);
      f.names += " + " + relu->name();
      ++i;
    }
}

// Replaces the steps [first, first + count) by an inverted residual block when they are one:
// [1x1 conv,] 3x3 depthwise, 1x1 conv. With `residual`, they must be the whole list (the body of
// a Residual), and its skip connection is the input, or `shortcut` when that has steps.
inline bool fuse_block(Steps& steps, size_t first, bool residual, Steps* shortcut = nullptr) {
  auto* a = first < steps.size() ? dynamic_cast<ConvStep*>(steps[first].get()) : nullptr;
  const bool expands = a != nullptr && a->pointwise();
  const size_t d = first + (expands ? 1 : 0);
  auto* dw = d < steps.size() ? dynamic_cast<DepthwiseStep*>(steps[d].get()) : nullptr;
  auto* p = d + 1 < steps.size() ? dynamic_cast<ConvStep*>(steps[d + 1].get()) : nullptr;
  if (!dw || !p || !p->pointwise()) return false;
  const WindowGeometry& g = dw->geometry();
  if (g.kernel_h != 3 || g.kernel_w != 3 || g.stride_h != g.stride_w) return false;
  const size_t end = d + 2;
  if (residual && (first != 0 || end != steps.size())) return false;
  const Shape input = steps[first]->input_shape(), output = steps[d + 1]->output_shape();
  using Skip = InvertedResidualStep::Skip;
  const bool has_shortcut = residual && shortcut != nullptr && !shortcut->empty();
  if (residual && !has_shortcut && (input != output || g.stride_h != 1)) return false;
  if (has_shortcut && shortcut->back()->output_shape() != output) return false;
  const Skip skip = !residual ? Skip::none : has_shortcut ? Skip::output : Skip::input;
  auto fused = std::make_unique<InvertedResidualStep>(input, output, expands ? &a->folded() : nullptr,
                                                      std::move(dw->folded()), g, std::move(p->folded()), skip,
                                                      has_shortcut ? std::move(*shortcut) : Steps{});
  steps.erase(steps.begin() + static_cast<std::ptrdiff_t>(first), steps.begin() + static_cast<std::ptrdiff_t>(end));
  steps.insert(steps.begin() + static_cast<std::ptrdiff_t>(first), std::move(fused));
  return true;
}

inline Steps compile_layers(Sequential& model, bool fuse_plain_blocks = true);

// A pointwise convolution and its BatchNorm, packed straight from the kernel (see FoldedConv).
inline FoldedConv folded_pointwise(Conv2D& conv, BatchNorm& bn) {
  const int64_t in = conv.input_shape()[2], out = conv.output_shape()[2];
  EIGENNET_CHECK(conv.kernel().value.size() == in * out, "compile_for_inference: '", conv.name(),
                 "' is not a 1x1 convolution");
  FoldedConv f = folded_bias(conv.use_bias() ? &conv.bias() : nullptr, out, conv.name());
  const std::vector<double> scale = fold_batch_norm_bias(f, bn);
  f.packed = pack(conv.kernel().value.data(), in, out, &scale);
  return f;
}

inline std::unique_ptr<Step> compile_inverted_residual(InvertedResidual& block) {
  FoldedConv expand;
  if (block.has_expansion()) {
    expand = folded_pointwise(block.expand(), block.expand_bn());
    expand.clamp = kernels::Clamp{0.0f, 6.0f};
  }
  DepthwiseConv2D& d = block.depthwise();
  FoldedConv depthwise =
      folded_from(d.kernel(), d.use_bias() ? &d.bias() : nullptr, d.output_shape()[2], d.name());
  fold_batch_norm(depthwise, block.depthwise_bn());
  depthwise.clamp = kernels::Clamp{0.0f, 6.0f};
  FoldedConv project = folded_pointwise(block.project(), block.project_bn());
  return std::make_unique<InvertedResidualStep>(block.input_shape(), block.output_shape(),
                                                block.has_expansion() ? &expand : nullptr, std::move(depthwise),
                                                d.geometry(1), std::move(project),
                                                block.has_skip() ? InvertedResidualStep::Skip::input
                                                                 : InvertedResidualStep::Skip::none);
}

// With fuse_plain_blocks, inverted residual blocks written as plain layers become fused steps.
inline Steps compile_list(const std::vector<Layer*>& layers, bool fuse_plain_blocks = true) {
  Steps steps;
  for (size_t i = 0; i < layers.size(); ++i) {
    Layer* l = layers[i];
    if (auto* conv = dynamic_cast<Conv2D*>(l)) {
      FoldedConv f = folded_from(conv->kernel(), conv->use_bias() ? &conv->bias() : nullptr, conv->output_shape()[2],
                                 conv->name());
      absorb_following(layers, i, f);
      steps.push_back(std::make_unique<ConvStep>(*conv, std::move(f)));
    } else if (auto* dw = dynamic_cast<DepthwiseConv2D*>(l)) {
      FoldedConv f =
          folded_from(dw->kernel(), dw->use_bias() ? &dw->bias() : nullptr, dw->output_shape()[2], dw->name());
      absorb_following(layers, i, f);
      steps.push_back(std::make_unique<DepthwiseStep>(*dw, std::move(f)));
    } else if (auto* dense = dynamic_cast<Dense*>(l)) {
      FoldedConv f = folded_from(dense->kernel(), dense->bias().value.size() ? &dense->bias() : nullptr,
                                 dense->units(), dense->name());
      absorb_following(layers, i, f);
      steps.push_back(std::make_unique<DenseStep>(*dense, std::move(f)));
    } else if (auto* block = dynamic_cast<InvertedResidual*>(l)) {
      steps.push_back(compile_inverted_residual(*block));
    } else if (auto* residual = dynamic_cast<Residual*>(l)) {
      // The body unfused, so that its block can be fused with the skip connection.
      Steps body = compile_layers(residual->body(), false);
      Steps shortcut = residual->shortcut() ? compile_layers(*residual->shortcut()) : Steps{};
      if (fuse_block(body, 0, true, &shortcut)) {
        steps.push_back(std::move(body.front()));
      } else {
        for (size_t b = 0; b < body.size(); ++b) fuse_block(body, b, false);
        steps.push_back(std::make_unique<ResidualStep>(*residual, std::move(body), std::move(shortcut)));
      }
    } else if (auto* bn = dynamic_cast<BatchNorm*>(l)) {
      const int64_t c = bn->input_shape().back();
      std::vector<float> scale(static_cast<size_t>(c)), shift(scale.size());
      for (int64_t j = 0; j < c; ++j) {
        const double s = bn->gamma().value[j] / std::sqrt(static_cast<double>(bn->moving_variance().value[j]) +
                                                          static_cast<double>(bn->epsilon()));
        scale[static_cast<size_t>(j)] = static_cast<float>(s);
        shift[static_cast<size_t>(j)] = static_cast<float>(bn->beta().value[j] - bn->moving_mean().value[j] * s);
      }
      auto step = std::make_unique<AffineStep>(bn->input_shape(), std::move(scale), std::move(shift), kernels::Clamp{},
                                               bn->name());
      if (i + 1 < layers.size())
        if (auto* relu = dynamic_cast<ReLU*>(layers[i + 1])) {
          step->add_clamp(clamp_of(*relu), relu->name());
          ++i;
        }
      steps.push_back(std::move(step));
    } else if (auto* relu = dynamic_cast<ReLU*>(l)) {
      const int64_t c = relu->input_shape().back();
      steps.push_back(std::make_unique<AffineStep>(relu->input_shape(), std::vector<float>(static_cast<size_t>(c), 1.0f),
                                                   std::vector<float>(static_cast<size_t>(c), 0.0f), clamp_of(*relu),
                                                   relu->name()));
    } else if (dynamic_cast<Dropout*>(l)) {
      continue;  // the identity in inference
    } else if (dynamic_cast<GlobalAvgPool*>(l) || dynamic_cast<GlobalMaxPool*>(l)) {
      steps.push_back(std::make_unique<GlobalPoolStep>(*l, dynamic_cast<GlobalMaxPool*>(l) != nullptr));
    } else if (auto* maxpool = dynamic_cast<MaxPool2D*>(l)) {
      steps.push_back(std::make_unique<WindowPoolStep>(*maxpool, true));
    } else if (auto* avgpool = dynamic_cast<AvgPool2D*>(l)) {
      steps.push_back(std::make_unique<WindowPoolStep>(*avgpool, false));
    } else if (auto* pad = dynamic_cast<ChannelPad*>(l)) {
      steps.push_back(std::make_unique<ChannelPadStep>(*pad));
    } else if (dynamic_cast<Softmax*>(l)) {
      steps.push_back(std::make_unique<SoftmaxStep>(*l));
    } else if (dynamic_cast<Flatten*>(l)) {
      steps.push_back(std::make_unique<FlattenStep>(*l));
    } else {
      steps.push_back(std::make_unique<FallbackStep>(*l));
    }
  }
  // Inverted residual blocks written as plain layers (no skip connection).
  if (fuse_plain_blocks)
    for (size_t i = 0; i < steps.size(); ++i) fuse_block(steps, i, false);
  // A ReLU after a fused block (BlazeFace's, after the skip connection's add) joins its epilogue.
  for (size_t i = 0; i + 1 < steps.size(); ++i) {
    auto* block = dynamic_cast<InvertedResidualStep*>(steps[i].get());
    auto* clamp = dynamic_cast<AffineStep*>(steps[i + 1].get());
    if (block && clamp && clamp->clamp_only() && block->absorb_clamp(clamp->clamp(), clamp->names()))
      steps.erase(steps.begin() + static_cast<std::ptrdiff_t>(i + 1));
  }
  return steps;
}

inline Steps compile_layers(Sequential& model, bool fuse_plain_blocks) {
  std::vector<Layer*> layers;
  flatten_layers(model, layers);
  return compile_list(layers, fuse_plain_blocks);
}

}  // namespace inference

class InferenceNet {
 public:
  InferenceNet(std::string name, inference::Steps steps, Shape input)
      : name_(std::move(name)), steps_(std::move(steps)), input_(std::move(input)) {
    output_ = steps_.empty() ? input_ : steps_.back()->output_shape();
    for (size_t i = 0; i < steps_.size(); ++i) {
      std::string d = steps_[i]->describe();
      if (d.size() > 60) d = d.substr(0, 57) + "...";
      profile_labels_.push_back("inference step " + std::to_string(i) + ": " + d);
    }
  }

  // The model's output for a batch of inputs; valid until the next forward.
  const Tensor& forward(const Tensor& x) {
    EIGENNET_CHECK(x.rank() == input_.rank() + 1 && x.shape().without_batch() == input_, "InferenceNet '", name_,
                   "': expected input of shape [batch, ", input_.to_string().substr(1), ", got ", x.shape());
    EIGENNET_CHECK(x.dim(0) > 0, "InferenceNet '", name_, "': empty batch");
    if (steps_.empty()) {
      (*buffers_)[0].copy_from(x);
      return (*buffers_)[0];
    }
    const Tensor* in = &x;
    for (size_t i = 0; i < steps_.size(); ++i) {
      Tensor& out = (*buffers_)[i % 2];
      ProfileScope scope(profile_labels_[i].c_str());
      steps_[i]->run(*in, out);
      in = &out;
    }
    return *in;
  }

  // Makes this net run in the activation buffers of `other` (nets that never run at once, e.g. one
  // network compiled for several input sizes): their memory is touched once, not once per net.
  // The result of either forward is then valid until the next forward of either.
  void share_buffers_with(const InferenceNet& other) { buffers_ = other.buffers_; }

  const std::string& name() const { return name_; }
  const Shape& input_shape() const { return input_; }    // per sample
  const Shape& output_shape() const { return output_; }  // per sample
  size_t steps() const { return steps_.size(); }
  // One line per step: what it computes and which layers were folded or fused into it.
  std::string summary() const {
    std::string s;
    for (size_t i = 0; i < steps_.size(); ++i) s += std::to_string(i) + ": " + steps_[i]->describe() + "\n";
    return s;
  }

 private:
  std::string name_;
  inference::Steps steps_;
  Shape input_, output_;
  std::shared_ptr<std::array<Tensor, 2>> buffers_ = std::make_shared<std::array<Tensor, 2>>();
  std::vector<std::string> profile_labels_;  // per step, for eigennet::profiler()
};

// A snapshot of `model` (a Sequential built with an input shape) for inference; see the top of
// this file. Recompile after its weights change.
inline InferenceNet compile_for_inference(Sequential& model) {
  EIGENNET_CHECK(model.size() > 0, "compile_for_inference: model '", model.name(), "' has no layers");
  EIGENNET_CHECK(model[0].built(), "compile_for_inference: model '", model.name(), "' is not built");
  return InferenceNet(model.name(), inference::compile_layers(model), model[0].input_shape());
}

// A Classifier's base and head as one net: images -> logits.
inline InferenceNet compile_for_inference(Classifier& classifier) {
  inference::Steps steps = inference::compile_layers(classifier.base());
  inference::Steps head = inference::compile_layers(classifier.head());
  for (auto& s : head) steps.push_back(std::move(s));
  return InferenceNet(classifier.base().name() + "+head", std::move(steps), classifier.base()[0].input_shape());
}

// The model compiled for inference if compile_for_inference knows its kind (a Classifier, or a
// Sequential built with an input shape), else null. predict(), evaluate() and cache_features()
// run through it. The model must outlive the net (fallback steps use its layers).
inline std::unique_ptr<InferenceNet> compile_for_inference_if_supported(Model& model) {
  if (auto* classifier = dynamic_cast<Classifier*>(&model))
    return std::make_unique<InferenceNet>(compile_for_inference(*classifier));
  if (auto* sequential = dynamic_cast<Sequential*>(&model))
    if (sequential->size() > 0 && (*sequential)[0].built())
      return std::make_unique<InferenceNet>(compile_for_inference(*sequential));
  return nullptr;
}

}  // namespace eigennet
