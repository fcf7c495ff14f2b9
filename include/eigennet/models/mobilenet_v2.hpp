// MobileNetV2 (Sandler et al., 2018) built exactly as keras.applications.MobileNetV2 builds it:
// same layer names, channel rounding, TF-SAME padding, BatchNorm epsilon 1e-3 / momentum 0.99,
// so that Keras' ImageNet weights load by name.
//
// The architecture is the paper's Table 2: each row {t, c, n, s} is n inverted residual blocks
// with expansion t, c output channels (times alpha), the first with stride s.
#pragma once

#include <cmath>
#include <memory>
#include <sstream>
#include <string>

#include "../layers/activation.hpp"
#include "../layers/batch_norm.hpp"
#include "../layers/conv2d.hpp"
#include "../layers/dense.hpp"
#include "../layers/inverted_residual.hpp"
#include "../layers/depthwise_conv2d.hpp"
#include "../layers/pooling.hpp"
#include "../layers/residual.hpp"
#include "../layers/sequential.hpp"

namespace eigennet {

// Rounds v to the nearest multiple of divisor, never below divisor and never more than 10%
// below v (the rounding Keras and the paper's reference code use for channel counts).
inline int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t rounded = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (static_cast<double>(rounded) < 0.9 * v) rounded += divisor;
  return rounded;
}

enum class GlobalPooling { none, avg, max };

struct MobileNetV2Config {
  float alpha = 1.0f;          // width multiplier
  int64_t height = 224;        // input size (>= 32)
  int64_t width = 224;
  bool include_top = false;    // the ImageNet classifier: global average pooling + Dense(classes)
  GlobalPooling pooling = GlobalPooling::none;  // without the top: none -> [h, w, C], avg/max -> [C]
  int64_t classes = 1000;
  float bn_momentum = 0.99f;
  float bn_epsilon = 1e-3f;
  // true: each block is one fused InvertedResidual layer (fast); false: the same block as a
  // Sequential of plain layers (the reference the fused one is tested against).
  bool fused_blocks = true;
};

struct InvertedResidualSetting {
  int64_t expansion, channels, repeats, stride;
};

// Table 2 of the paper (after the first 3x3 convolution).
inline const InvertedResidualSetting mobilenet_v2_table[] = {
    {1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1},
};

// Keras' name for a MobileNetV2 model, e.g. "mobilenetv2_1.00_224".
inline std::string mobilenet_v2_name(const MobileNetV2Config& c) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "mobilenetv2_%.2f_%lld", static_cast<double>(c.alpha), static_cast<long long>(c.height));
  return buf;
}

// Channels of the last 1x1 convolution (Conv_1): 1280, scaled only when alpha > 1.
inline int64_t mobilenet_v2_feature_channels(float alpha) {
  return alpha > 1.0f ? make_divisible(1280.0 * alpha, 8) : 1280;
}

namespace detail {

inline void add_conv_bn_relu6(Sequential& net, const std::string& conv, const std::string& bn, const std::string& relu,
                              int64_t filters, KernelSize kernel, int64_t stride, const MobileNetV2Config& c) {
  net.add<Conv2D>(conv, filters, kernel, stride, Padding::same, /*use_bias=*/false);
  net.add<BatchNorm>(bn, c.bn_momentum, c.bn_epsilon);
  net.add<ReLU6>(relu);
}

// One inverted residual block: [1x1 expand -> BN -> ReLU6] -> 3x3 depthwise -> BN -> ReLU6 ->
// 1x1 project -> BN (linear bottleneck), plus the input when the stride is 1 and the channel
// counts match. Block 0 has no expansion and Keras calls it "expanded_conv".
inline std::unique_ptr<Layer> inverted_residual_block(int64_t block_id, int64_t in_channels, int64_t expansion,
                                                      int64_t out_channels, int64_t stride,
                                                      const MobileNetV2Config& c) {
  const std::string prefix = block_id == 0 ? "expanded_conv_" : "block_" + std::to_string(block_id) + "_";
  auto body = std::make_unique<Sequential>(block_id == 0 ? "expanded_conv" : "block_" + std::to_string(block_id));
  if (expansion != 1) {
    add_conv_bn_relu6(*body, prefix + "expand", prefix + "expand_BN", prefix + "expand_relu", expansion * in_channels,
                      1, 1, c);
  }
  body->add<DepthwiseConv2D>(prefix + "depthwise", 3, stride, Padding::same, /*use_bias=*/false);
  body->add<BatchNorm>(prefix + "depthwise_BN", c.bn_momentum, c.bn_epsilon);
  body->add<ReLU6>(prefix + "depthwise_relu");
  body->add<Conv2D>(prefix + "project", out_channels, 1, 1, Padding::same, /*use_bias=*/false);
  body->add<BatchNorm>(prefix + "project_BN", c.bn_momentum, c.bn_epsilon);
  if (stride == 1 && in_channels == out_channels) return std::make_unique<Residual>(prefix + "add", std::move(body));
  return body;
}

}  // namespace detail

// Builds MobileNetV2 as a Sequential model with input [height, width, 3]. Weights are
// initialized from `seed` (Keras' initializers); load ImageNet weights with
// load_mobilenet_v2_weights.
inline std::unique_ptr<Sequential> make_mobilenet_v2(const MobileNetV2Config& c, uint64_t seed = 0) {
  const float alphas[] = {0.35f, 0.5f, 0.75f, 1.0f, 1.3f, 1.4f};
  bool known_alpha = false;
  for (float a : alphas) known_alpha |= std::fabs(a - c.alpha) < 1e-6f;
  EIGENNET_CHECK(known_alpha, "MobileNetV2: alpha must be one of 0.35, 0.5, 0.75, 1.0, 1.3, 1.4 (got ", c.alpha, ")");
  EIGENNET_CHECK(c.height >= 32 && c.width >= 32, "MobileNetV2: input must be at least 32x32, got ", c.height, "x",
                 c.width);
  EIGENNET_CHECK(!c.include_top || c.classes > 0, "MobileNetV2: classes must be positive, got ", c.classes);

  auto net = std::make_unique<Sequential>(mobilenet_v2_name(c), Shape{c.height, c.width, 3}, seed);
  detail::add_conv_bn_relu6(*net, "Conv1", "bn_Conv1", "Conv1_relu", make_divisible(32.0 * c.alpha, 8), 3, 2, c);

  int64_t channels = make_divisible(32.0 * c.alpha, 8);
  int64_t block_id = 0;
  for (const InvertedResidualSetting& row : mobilenet_v2_table) {
    // Keras truncates filters * alpha to an int before rounding.
    const int64_t out_channels = make_divisible(static_cast<double>(static_cast<int64_t>(row.channels * c.alpha)), 8);
    for (int64_t i = 0; i < row.repeats; ++i, ++block_id) {
      const int64_t stride = i == 0 ? row.stride : 1;
      if (c.fused_blocks) {
        net->add<InvertedResidual>(block_id == 0 ? "expanded_conv_" : "block_" + std::to_string(block_id) + "_",
                                   row.expansion, out_channels, stride, c.bn_momentum, c.bn_epsilon);
      } else {
        net->add(detail::inverted_residual_block(block_id, channels, row.expansion, out_channels, stride, c));
      }
      channels = out_channels;
    }
  }
  detail::add_conv_bn_relu6(*net, "Conv_1", "Conv_1_bn", "out_relu", mobilenet_v2_feature_channels(c.alpha), 1, 1, c);

  if (c.include_top) {
    net->add<GlobalAvgPool>("global_average_pooling2d");
    net->add<Dense>("predictions", c.classes);
  } else if (c.pooling == GlobalPooling::avg) {
    net->add<GlobalAvgPool>("global_average_pooling2d");
  } else if (c.pooling == GlobalPooling::max) {
    net->add<GlobalMaxPool>("global_max_pooling2d");
  }
  return net;
}

}  // namespace eigennet
