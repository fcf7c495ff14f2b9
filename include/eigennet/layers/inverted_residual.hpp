// InvertedResidual: MobileNetV2's block as one fused layer.
//
//   [expand 1x1 -> BN -> ReLU6] -> depthwise 3x3 -> BN -> ReLU6 -> project 1x1 -> BN [+ input]
//
// The parameters live in ordinary sub-layers (Conv2D, BatchNorm, DepthwiseConv2D) with Keras'
// names, so weights load by name and the rules of each (BatchNorm's moving averages, frozen
// behaviour, recalibration) stay in one place. Forward and backward are fused here:
//   forward:  E = X We;  A = relu6(bn(E)) is computed row by row inside the depthwise sweep and
//             never stored;  D = depthwise(A) (+ its statistics in the same sweep);
//             B = relu6(bn(D)) (inference: in the same sweep);  P = B Wp;  Y = bn(P) (+ X)
//   backward: dP = bn'(dY);  dB = dP Wp^T with relu6' and the depthwise BatchNorm's sums in its
//             epilogue;  one depthwise sweep applies that BatchNorm's backward to each row of
//             dz (dD = bn'(dz)), recomputes A row by row and gives dA, dWdw and, masked by
//             relu6', the sums of the expand BatchNorm;  dE = bn'(dA);  dX = dE We^T (+ dY);
//             where E is large (blocks 1-3 of MobileNetV2 at 96x96, batch 32) the sweep takes
//             dX and dWe from each row of dA while it is in cache, and only their terms in the
//             expand BatchNorm's sums are added after it (kernels::ExpandBelow): dA and dE are
//             never stored.
// Activations E, D, B, P are kept for backward; the gradient buffers are shared by all blocks
// (blocks run one after another).
#pragma once

#include <memory>
#include <vector>

#include "../kernels/batch_norm_act.hpp"
#include "../kernels/depthwise_fused.hpp"
#include "../kernels/pointwise_conv2d.hpp"
#include "batch_norm.hpp"
#include "conv2d.hpp"
#include "depthwise_conv2d.hpp"
#include "layer.hpp"

namespace eigennet {

class InvertedResidual : public Layer {
 public:
  // prefix: Keras' layer-name prefix, "expanded_conv_" or "block_<id>_". The layer itself is
  // named by the prefix without its trailing underscore ("block_3"), with or without a skip
  // connection (which is decided at build, from the input channels).
  InvertedResidual(const std::string& prefix, int64_t expansion, int64_t out_channels, int64_t stride,
                   float bn_momentum = 0.99f, float bn_epsilon = 1e-3f)
      : Layer(prefix.substr(0, prefix.size() - 1)),
        expansion_(expansion),
        out_channels_(out_channels),
        stride_(stride),
        prefix_(prefix),
        bn_momentum_(bn_momentum),
        bn_epsilon_(bn_epsilon),
        depthwise_(prefix + "depthwise", 3, stride, Padding::same, false),
        depthwise_bn_(prefix + "depthwise_BN", bn_momentum, bn_epsilon),
        project_(prefix + "project", out_channels, 1, 1, Padding::same, false),
        project_bn_(prefix + "project_BN", bn_momentum, bn_epsilon) {
    EIGENNET_CHECK(expansion >= 1, "InvertedResidual '", name(), "': expansion must be >= 1, got ", expansion);
    EIGENNET_CHECK(stride == 1 || stride == 2, "InvertedResidual '", name(), "': stride must be 1 or 2, got ", stride);
  }
  const char* type() const override { return "InvertedResidual"; }

  bool has_skip() const { return skip_; }
  bool has_expansion() const { return expansion_ != 1; }
  // Only when has_expansion(), after build.
  Conv2D& expand() { return *expand_; }
  BatchNorm& expand_bn() { return *expand_bn_; }
  DepthwiseConv2D& depthwise() { return depthwise_; }
  BatchNorm& depthwise_bn() { return depthwise_bn_; }
  Conv2D& project() { return project_; }
  BatchNorm& project_bn() { return project_bn_; }

  ParameterList parameters() override {
    ParameterList all;
    auto append = [&](Layer& l) {
      ParameterList p = l.parameters();
      all.insert(all.end(), p.begin(), p.end());
    };
    if (expand_) {
      append(*expand_);
      append(*expand_bn_);
    }
    append(depthwise_);
    append(depthwise_bn_);
    append(project_);
    append(project_bn_);
    return all;
  }
  void for_each_layer(const std::function<void(Layer&)>& fn) override {
    fn(*this);
    if (expand_) {
      fn(*expand_);
      fn(*expand_bn_);
    }
    fn(depthwise_);
    fn(depthwise_bn_);
    fn(project_);
    fn(project_bn_);
  }
  bool has_trainable_parameters() const override {
    return (expand_ && (expand_->has_trainable_parameters() || expand_bn_->has_trainable_parameters())) ||
           depthwise_.has_trainable_parameters() || depthwise_bn_.has_trainable_parameters() ||
           project_.has_trainable_parameters() || project_bn_.has_trainable_parameters();
  }

  void forward(const Tensor& x, Tensor& y, Mode mode) override {
    check_input(x);
    const int64_t n = x.dim(0);
    const WindowGeometry g = depthwise_.geometry(n);
    const int64_t m_in = g.in_pixels(), m_out = g.out_pixels(), e = g.in_c;
    float* stats = stats_.data();  // mean and variance, reused by each BatchNorm in turn

    // The expand BatchNorm + ReLU6 is applied inside the depthwise sweeps (forward and backward),
    // so its output is never stored: only E = X We is.
    if (expand_) {
      ProfileScope scope("block expand (1x1 + bn statistics)");
      e_.resize(Shape{n, g.in_h, g.in_w, e});
      const bool need_stats = expand_bn_->needs_input_statistics(mode);
      if (need_stats)  // the statistics come from the product's epilogue, not a separate pass
        kernels::pointwise_conv2d_forward_statistics(e_.data(), x.data(), expand_->kernel().value.data(), m_in, in_c(),
                                                     e, stats, stats + e);
      else
        kernels::pointwise_conv2d_forward(e_.data(), x.data(), expand_->kernel().value.data(), nullptr, m_in, in_c(), e);
      expand_bn_->prepare_forward(mode, need_stats ? stats : nullptr, need_stats ? stats + e : nullptr, m_in);
      expand_transform_ = {expand_bn_->scale(), expand_bn_->shift()};
    }
    const float* dw_input = expand_ ? e_.data() : x.data();
    const kernels::Relu6Affine* input_transform = expand_ ? &expand_transform_ : nullptr;
    {
      ProfileScope scope("block depthwise (3x3 + bn + relu6)");
      const bool need_stats = depthwise_bn_.needs_input_statistics(mode);
      b_.resize(Shape{n, g.out_h, g.out_w, e});
      if (need_stats) {
        // Training: D is kept for the BatchNorm backward; B = relu6(bn(D)) in a second pass.
        d_.resize(b_.shape());
        kernels::depthwise_conv2d_forward_fused(d_.data(), dw_input, depthwise_.kernel().value.data(), g,
                                                input_transform, nullptr, stats, stats + e);
        depthwise_bn_.prepare_forward(mode, stats, stats + e, m_out);
        kernels::batch_norm_act_forward<kernels::Activation::relu6>(b_.data(), d_.data(), depthwise_bn_.scale(),
                                                                     depthwise_bn_.shift(), m_out, e);
        d_valid_ = true;
      } else {
        // Inference (or frozen BatchNorm): the normalization only needs the moving statistics.
        // D is still needed by backward when something below trains, so it is kept then.
        depthwise_bn_.prepare_forward(mode, nullptr, nullptr, m_out);
        const kernels::Relu6Affine output_transform{depthwise_bn_.scale(), depthwise_bn_.shift()};
        if (mode == Mode::train) {
          d_.resize(b_.shape());
          kernels::depthwise_conv2d_forward_fused(d_.data(), dw_input, depthwise_.kernel().value.data(), g,
                                                  input_transform, nullptr, nullptr, nullptr);
          kernels::batch_norm_act_forward<kernels::Activation::relu6>(b_.data(), d_.data(), depthwise_bn_.scale(),
                                                                       depthwise_bn_.shift(), m_out, e);
          d_valid_ = true;
        } else {
          kernels::depthwise_conv2d_forward_fused(b_.data(), dw_input, depthwise_.kernel().value.data(), g,
                                                  input_transform, &output_transform, nullptr, nullptr);
          d_valid_ = false;
        }
      }
    }
    {
      ProfileScope scope("block project (1x1 + bn [+ add])");
      p_.resize(Shape{n, g.out_h, g.out_w, out_channels_});
      const bool need_stats = project_bn_.needs_input_statistics(mode);
      if (need_stats)
        kernels::pointwise_conv2d_forward_statistics(p_.data(), b_.data(), project_.kernel().value.data(), m_out, e,
                                                     out_channels_, stats, stats + out_channels_);
      else
        kernels::pointwise_conv2d_forward(p_.data(), b_.data(), project_.kernel().value.data(), nullptr, m_out, e,
                                          out_channels_);
      project_bn_.prepare_forward(mode, need_stats ? stats : nullptr, need_stats ? stats + out_channels_ : nullptr,
                                  m_out);
      y.resize(p_.shape());
      if (skip_)
        kernels::batch_norm_add_forward(y.data(), p_.data(), project_bn_.scale(), project_bn_.shift(), x.data(), m_out,
                                        out_channels_);
      else
        kernels::batch_norm_act_forward<kernels::Activation::none>(y.data(), p_.data(), project_bn_.scale(),
                                                                    project_bn_.shift(), m_out, out_channels_);
    }
  }

  void backward(const Tensor& x, const Tensor& y, const Tensor& dy, Tensor* dx) override {
    check_input(x);
    check_output_grad(y, dy);
    const int64_t n = x.dim(0);
    const WindowGeometry g = depthwise_.geometry(n);
    const int64_t m_in = g.in_pixels(), m_out = g.out_pixels(), e = g.in_c;
    const bool below_needed = dx != nullptr || (expand_ && (expand_->has_trainable_parameters() ||
                                                            expand_bn_->has_trainable_parameters()));
    Tensor& grad_p = shared_buffer(0);
    Tensor& grad_b = shared_buffer(1);
    // Without an expansion the depthwise input gradient is dx itself: written there directly.
    Tensor& grad_a = !expand_ && dx ? *dx : shared_buffer(2);
    double* sums = sums_.data();
    if (!d_valid_) {
      // The latest forward ran in inference mode, which does not keep D: recompute it.
      d_.resize(b_.shape());
      kernels::depthwise_conv2d_forward_fused(d_.data(), expand_ ? e_.data() : x.data(),
                                              depthwise_.kernel().value.data(), g,
                                              expand_ ? &expand_transform_ : nullptr, nullptr, nullptr, nullptr);
      d_valid_ = true;
    }
    {
      ProfileScope scope("block project backward");
      grad_p.resize(p_.shape());
      bn_backward<kernels::Activation::none>(project_bn_, dy.data(), dy.data(), p_.data(), grad_p.data(), sums, m_out,
                                             out_channels_);
      grad_b.resize(b_.shape());
      kernels::pointwise_conv2d_backward(nullptr, grad_or_null(project_.kernel()), nullptr, grad_p.data(), b_.data(),
                                         project_.kernel().value.data(), m_out, e, out_channels_);
      // dz = relu6'(dB) and the depthwise BatchNorm's backward sums in the input gradient's
      // epilogue, then dD = bn'(dz) in place. The mask comes from D (read for the sums anyway)
      // and the BatchNorm's coefficients, as the forward computed B = relu6(bn(D)).
      kernels::pointwise::Epilogue mask;
      mask.relu6_mask = d_.data();
      mask.ld_mask = e;
      mask.mask_scale = depthwise_bn_.scale();
      mask.mask_shift = depthwise_bn_.shift();
      const kernels::pointwise::Packed wp =
          kernels::pointwise::pack_to_scratch<27>(project_.kernel().value.data(), out_channels_, e, true);
      const bool need_sums = depthwise_bn_.needs_backward_sums();
      if (need_sums)
        kernels::pointwise::multiply_with_batch_norm_sums(grad_b.data(), e, grad_p.data(), out_channels_, m_out, wp, mask,
                                                          d_.data(), e, depthwise_bn_.mean(), depthwise_bn_.inv_std(),
                                                          sums, sums + e);
      else
        kernels::pointwise::multiply(grad_b.data(), e, grad_p.data(), out_channels_, m_out, wp, mask);
      depthwise_bn_.prepare_backward(need_sums ? sums : nullptr, need_sums ? sums + e : nullptr, m_out);
      // dD = bn'(dz) is applied row by row inside the depthwise backward sweep (AboveBatchNorm).
    }
    if (!below_needed && !depthwise_.has_trainable_parameters()) return;
    {
      ProfileScope scope("block depthwise backward");
      // With an expansion, the depthwise input relu6(bn(E)) is recomputed row by row, and the
      // input gradient comes out masked by relu6' with the expand BatchNorm's sums.
      kernels::BelowBatchNormRelu6 below;
      const bool fuse_below = expand_ && below_needed;
      if (fuse_below) {
        below.x = e_.data();
        below.mean = expand_bn_->mean();
        below.inv_std = expand_bn_->inv_std();
        below.s1 = sums;
        below.s2 = sums + e;
      }
      const kernels::AboveBatchNorm above{d_.data(), depthwise_bn_.mean(), depthwise_bn_.k(), depthwise_bn_.a(),
                                          depthwise_bn_.b()};
      // Where E is large next to the expand weights (the first blocks), the expand convolution's
      // gradients are taken from each row of dA inside the sweep: dA is never stored.
      kernels::ExpandBelow expand_below;
      const bool fuse_expand = fuse_below && m_in >= expand_in_sweep_pixels_per_in_c2 * in_c() * in_c();
      if (fuse_expand)
        expand_below = expand_below_setup(x, dy, dx, e);
      else
        grad_a.resize(Shape{n, g.in_h, g.in_w, e});
      kernels::depthwise_conv2d_backward_fused(
          fuse_expand ? nullptr : grad_a.data(), grad_or_null(depthwise_.kernel()), grad_b.data(),
          expand_ ? e_.data() : x.data(), depthwise_.kernel().value.data(), g, expand_ ? &expand_transform_ : nullptr,
          fuse_below ? &below : nullptr, &above, fuse_expand ? &expand_below : nullptr);
      if (!below_needed) return;
      if (expand_) {
        BatchNorm& bn = *expand_bn_;
        const bool sums_needed = bn.needs_backward_sums();
        bn.prepare_backward(sums_needed ? below.s1 : nullptr, sums_needed ? below.s2 : nullptr, m_in);
        if (fuse_expand) {
          kernels::expand_backward_finish(grad_or_null(expand_->kernel()), expand_below, m_in, e, bn.mean(), bn.a(),
                                          bn.b());
          return;
        }
        // dE = bn'(dz), dz = relu6'(dA) already applied.
        kernels::batch_norm_act_backward_apply<kernels::Activation::none>(
            grad_a.data(), grad_a.data(), grad_a.data(), e_.data(), bn.mean(), bn.k(), bn.a(), bn.b(), m_in, e);
      }
    }
    ProfileScope scope("block expand backward");
    if (expand_) {
      kernels::pointwise_conv2d_backward(nullptr, grad_or_null(expand_->kernel()), nullptr, grad_a.data(), x.data(),
                                         expand_->kernel().value.data(), m_in, in_c(), e);
      if (dx) {
        // dX = dE We^T, plus dY through the skip connection in the same epilogue.
        dx->resize(x.shape());
        kernels::pointwise::Epilogue skip;
        if (skip_) {
          skip.residual = dy.data();
          skip.ld_residual = in_c();
        }
        kernels::pointwise_conv2d_backward_input(dx->data(), grad_a.data(), expand_->kernel().value.data(), m_in,
                                                 in_c(), e, skip);
      }
    } else if (dx && skip_) {
      kernels::add_forward(dx->data(), dx->data(), dy.data(), dy.size());
    }
  }

  void reseed(uint64_t) override {}

 protected:
  Shape do_build(const Shape& in, Rng& rng) override {
    EIGENNET_CHECK(in.rank() == 3, "InvertedResidual '", name(), "': expects [height, width, channels] input, got ", in);
    Shape s = in;
    if (has_expansion()) {
      expand_ = std::make_unique<Conv2D>(prefix_ + "expand", in[2] * expansion_, 1, 1, Padding::same, false);
      expand_bn_ = std::make_unique<BatchNorm>(prefix_ + "expand_BN", bn_momentum_, bn_epsilon_);
      s = expand_->build(s, rng);
      s = expand_bn_->build(s, rng);
    }
    s = depthwise_.build(s, rng);
    s = depthwise_bn_.build(s, rng);
    s = project_.build(s, rng);
    s = project_bn_.build(s, rng);
    skip_ = stride_ == 1 && in[2] == out_channels_;
    const int64_t widest = std::max(in[2] * expansion_, out_channels_);
    stats_ = Tensor(Shape{2 * widest});
    sums_ = std::vector<double>(static_cast<size_t>(2 * widest));
    return s;
  }

 private:
  int64_t in_c() const { return input_shape()[2]; }

  // dx = bn'(act'(dy)) with the sums pass when the BatchNorm needs it. dx may alias dy.
  template <kernels::Activation act>
  static void bn_backward(BatchNorm& bn, const float* dy, const float* y_act, const float* x, float* dx, double* sums,
                          int64_t m, int64_t c) {
    const bool need_sums = bn.needs_backward_sums();
    if (need_sums) kernels::batch_norm_act_backward_sums<act>(sums, sums + c, dy, y_act, x, bn.mean(), bn.inv_std(), m, c);
    bn.prepare_backward(need_sums ? sums : nullptr, need_sums ? sums + c : nullptr, m);
    kernels::batch_norm_act_backward_apply<act>(dx, dy, y_act, x, bn.mean(), bn.k(), bn.a(), bn.b(), m, c);
  }

  // The expand convolution's gradients come out of the depthwise backward sweep (ExpandBelow)
  // when the block has at least this many input pixels per in_c^2: the work that finishes them
  // grows with in_c^2 x e, what they save (passes over dE) with pixels x e. At 96x96, batch 32,
  // that is blocks 1-3 (32 to 288 pixels per in_c^2; blocks 4-6 have 4.5).
  static constexpr int64_t expand_in_sweep_pixels_per_in_c2 = 8;

  kernels::ExpandBelow expand_below_setup(const Tensor& x, const Tensor& dy, Tensor* dx, int64_t e) {
    const int64_t c = in_c();
    BatchNorm& bn = *expand_bn_;
    float* k = scratch<float, 15>(static_cast<size_t>(c * e + e));
    float* xt_dz = k + e;
    for (int64_t j = 0; j < e; ++j) k[j] = bn.gamma().value[j] * bn.inv_std()[j];  // as prepare_backward
    kernels::ExpandBelow expand;
    expand.x = x.data();
    expand.in_c = c;
    expand.weight = expand_->kernel().value.data();
    expand.k = k;
    if (dx) {
      dx->resize(x.shape());
      expand.dx = dx->data();
      if (skip_) expand.skip = dy.data();
    }
    if (grad_or_null(expand_->kernel())) {
      expand.xt_dz = xt_dz;
      expand.scatter = scratch<double, 16>(static_cast<size_t>(c * c + c));
      expand.shifted_sum = expand.scatter + c * c;
    }
    return expand;
  }

  // Gradient scratch shared by every block on this thread.
  static Tensor& shared_buffer(int i) {
    thread_local Tensor buffers[3];
    return buffers[i];
  }

  int64_t expansion_, out_channels_, stride_;
  bool skip_ = false;
  std::string prefix_;
  float bn_momentum_, bn_epsilon_;
  std::unique_ptr<Conv2D> expand_;  // absent when expansion == 1 (Keras' "expanded_conv")
  std::unique_ptr<BatchNorm> expand_bn_;
  DepthwiseConv2D depthwise_;
  BatchNorm depthwise_bn_;
  Conv2D project_;
  BatchNorm project_bn_;
  Tensor e_, d_, b_, p_;  // activations of the latest forward (E, D, B, P above)
  bool d_valid_ = false;   // inference-mode forwards do not store D
  kernels::Relu6Affine expand_transform_;  // the expand BatchNorm + ReLU6 of the latest forward
  Tensor stats_;
  std::vector<double> sums_;
};

}  // namespace eigennet
