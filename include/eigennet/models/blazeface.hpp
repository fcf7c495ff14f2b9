// BlazeFace (Bazarevsky et al., 2019, "BlazeFace: Sub-millisecond Neural Face Detection on Mobile
// GPUs"), MediaPipe's face detector, built from the library's layers.
//
// Two published variants share the layers and differ in depth and input size:
//   front_128: 128x128 input, the "short-range" model for faces filling much of the picture;
//   back_256:  256x256 input, the model for smaller, farther faces.
// Each is a 5x5 stride-2 convolution (TensorFlow SAME padding: 1 row/column before, 2 after)
// followed by BlazeBlocks: y = ReLU(pointwise(depthwise3x3(x)) + shortcut(x)), where the shortcut
// is the identity, or for a block with stride 2 a 2x2 max pooling, zero-padded in channels when
// the block widens. Two grids of anchors read the features: 2 anchors per cell of a 16x16 grid
// and 6 per cell of an 8x8 grid (896 in all). For each anchor a 1x1 convolution gives one score
// logit ("classifier") and 16 regression values ("regressor": box centre offset x, y, width,
// height, then x, y of six keypoints), all in input pixels; see detect/face_detector.hpp for the
// decoding.
//
// The network is convolutional: built for a larger or non-square input (any multiple of 32 pixels
// for back_256, of 16 for front_128 on each side) its grids grow with the input (a 256x192 input
// gives back_256 a 16x12 and an 8x6 grid) and so do its anchors (detect/anchors.hpp), while the
// weights stay the same. The names "16x16" and "8x8" are those of the variant's own input.
//
// The architecture is a table, as MobileNetV2's: each row {channels, stride, repeats} is
// `repeats` BlazeBlocks with that many output channels, the first with that stride. Layer names
// follow Keras' style: conv1, block_3_depthwise, block_3_project, block_3_shortcut_pool, ...,
// classifier_16x16, regressor_8x8.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../layers/activation.hpp"
#include "../layers/channel_pad.hpp"
#include "../layers/conv2d.hpp"
#include "../layers/depthwise_conv2d.hpp"
#include "../layers/pooling.hpp"
#include "../layers/residual.hpp"
#include "../layers/sequential.hpp"

namespace eigennet {

enum class BlazeFaceVariant { front_128, back_256 };

inline const char* to_string(BlazeFaceVariant v) { return v == BlazeFaceVariant::front_128 ? "front_128" : "back_256"; }

struct BlazeBlockSetting {
  int64_t channels, stride, repeats;
  bool residual = true;  // false: depthwise -> pointwise -> ReLU without a skip connection
};

struct BlazeFaceArchitecture {
  int64_t input_size;
  int64_t stem_channels;
  std::vector<BlazeBlockSetting> to_16x16;  // blocks from the stem to the 16x16 grid
  std::vector<BlazeBlockSetting> to_8x8;    // blocks from the 16x16 grid to the 8x8 grid
  int64_t anchors_16x16 = 2, anchors_8x8 = 6;
};

// The two variants, read from the graphs of MediaPipe's face_detection_front and
// face_detection_back models (layer by layer in tools/convert_blazeface.py).
inline BlazeFaceArchitecture blazeface_architecture(BlazeFaceVariant variant) {
  if (variant == BlazeFaceVariant::front_128)
    return {128, 24,
            {{24, 1, 1}, {28, 1, 1}, {32, 2, 1}, {36, 1, 1}, {42, 1, 1}, {48, 2, 1},
             {56, 1, 1}, {64, 1, 1}, {72, 1, 1}, {80, 1, 1}, {88, 1, 1}},
            {{96, 2, 1}, {96, 1, 4}}};
  return {256, 24,
          {{24, 1, 7}, {24, 2, 1}, {24, 1, 7}, {48, 2, 1}, {48, 1, 7}, {96, 2, 1}, {96, 1, 7}},
          {{96, 2, 1, false}}};
}

// Strides of the two grids: the fine ("16x16") one and the coarse ("8x8") one.
inline int64_t blazeface_fine_stride(const BlazeFaceArchitecture& a) { return a.input_size / 16; }
inline int64_t blazeface_coarse_stride(const BlazeFaceArchitecture& a) { return a.input_size / 8; }

// One BlazeBlock as a layer: "block_<index>_...".
inline std::unique_ptr<Layer> make_blaze_block(int index, int64_t in_channels, const BlazeBlockSetting& s,
                                               int64_t stride) {
  const std::string prefix = "block_" + std::to_string(index) + "_";
  const auto add_body = [&](Sequential& net) {
    net.add<DepthwiseConv2D>(prefix + "depthwise", 3, stride, Padding::same, /*use_bias=*/false);
    net.add<Conv2D>(prefix + "project", s.channels, 1, 1, Padding::same, /*use_bias=*/true);
  };
  auto block = std::make_unique<Sequential>(prefix + "block");
  if (!s.residual) {
    add_body(*block);
  } else {
    EIGENNET_CHECK(s.channels >= in_channels, "BlazeFace ", prefix, ": a residual block cannot narrow from ",
                   in_channels, " to ", s.channels, " channels");
    auto body = std::make_unique<Sequential>(prefix + "body");
    add_body(*body);
    std::unique_ptr<Sequential> shortcut;
    if (stride != 1 || s.channels != in_channels) {
      shortcut = std::make_unique<Sequential>(prefix + "shortcut");
      if (stride != 1) shortcut->add<MaxPool2D>(prefix + "shortcut_pool", stride, stride, Padding::valid);
      if (s.channels != in_channels) shortcut->add<ChannelPad>(prefix + "shortcut_pad", s.channels - in_channels);
    }
    block->add<Residual>(prefix + "add", std::move(body), std::move(shortcut));
  }
  block->add<ReLU>(prefix + "relu");
  return block;
}

// The network with its four heads. forward() gives, per image, the score logits and the 16
// regression values of every anchor (896 at the variant's own input size), fine-grid anchors first
// (row by row, then anchor), then the coarse grid's, the order of MediaPipe's anchors.
class BlazeFace {
 public:
  // input_height, input_width: 0 = the variant's own square input.
  explicit BlazeFace(BlazeFaceVariant variant, uint64_t seed = 0, int64_t input_height = 0, int64_t input_width = 0)
      : variant_(variant),
        arch_(blazeface_architecture(variant)),
        height_(input_height > 0 ? input_height : arch_.input_size),
        width_(input_width > 0 ? input_width : arch_.input_size) {
    const int64_t coarse = blazeface_coarse_stride(arch_), fine = blazeface_fine_stride(arch_);
    EIGENNET_CHECK(height_ % coarse == 0 && width_ % coarse == 0, "BlazeFace ", to_string(variant), ": input ",
                   width_, "x", height_, " is not a multiple of ", coarse, " pixels on each side");
    to_16x16_ = std::make_unique<Sequential>("blazeface_" + std::string(to_string(variant)),
                                             Shape{height_, width_, 3}, seed);
    to_16x16_->add<Conv2D>("conv1", arch_.stem_channels, 5, 2, Padding::same, true);
    to_16x16_->add<ReLU>("conv1_relu");
    int index = 1;
    int64_t channels = arch_.stem_channels;
    const auto add_blocks = [&](Sequential& net, const std::vector<BlazeBlockSetting>& table) {
      for (const BlazeBlockSetting& s : table)
        for (int64_t r = 0; r < s.repeats; ++r) {
          net.add(make_blaze_block(index++, channels, s, r == 0 ? s.stride : 1));
          channels = s.channels;
        }
    };
    add_blocks(*to_16x16_, arch_.to_16x16);
    const Shape grid16 = to_16x16_->model_output_shape();
    EIGENNET_CHECK(grid16[0] == height_ / fine && grid16[1] == width_ / fine, "BlazeFace: the first stage ends at ",
                   grid16, ", expected a ", width_ / fine, "x", height_ / fine, " grid");
    to_8x8_ = std::make_unique<Sequential>("blazeface_8x8", grid16, seed + 1);
    add_blocks(*to_8x8_, arch_.to_8x8);
    const Shape grid8 = to_8x8_->model_output_shape();
    EIGENNET_CHECK(grid8[0] == height_ / coarse && grid8[1] == width_ / coarse, "BlazeFace: the second stage ends at ",
                   grid8, ", expected a ", width_ / coarse, "x", height_ / coarse, " grid");
    anchors_ = grid16[0] * grid16[1] * arch_.anchors_16x16 + grid8[0] * grid8[1] * arch_.anchors_8x8;
    Rng rng(seed + 2);
    classifier_16_ = std::make_unique<Conv2D>("classifier_16x16", arch_.anchors_16x16, 1);
    regressor_16_ = std::make_unique<Conv2D>("regressor_16x16", arch_.anchors_16x16 * 16, 1);
    classifier_8_ = std::make_unique<Conv2D>("classifier_8x8", arch_.anchors_8x8, 1);
    regressor_8_ = std::make_unique<Conv2D>("regressor_8x8", arch_.anchors_8x8 * 16, 1);
    classifier_16_->build(grid16, rng);
    regressor_16_->build(grid16, rng);
    classifier_8_->build(grid8, rng);
    regressor_8_->build(grid8, rng);
  }

  BlazeFaceVariant variant() const { return variant_; }
  const BlazeFaceArchitecture& architecture() const { return arch_; }
  // The variant's own (square) input size, and the input this network was built for.
  int64_t input_size() const { return arch_.input_size; }
  int64_t input_height() const { return height_; }
  int64_t input_width() const { return width_; }
  int64_t anchor_count() const { return anchors_; }
  Sequential& to_16x16() { return *to_16x16_; }
  Sequential& to_8x8() { return *to_8x8_; }
  // The 1x1 heads: score logits and regression values on the 16x16 and the 8x8 grid.
  Conv2D& classifier_16x16() { return *classifier_16_; }
  Conv2D& regressor_16x16() { return *regressor_16_; }
  Conv2D& classifier_8x8() { return *classifier_8_; }
  Conv2D& regressor_8x8() { return *regressor_8_; }

  ParameterList parameters() {
    ParameterList all = to_16x16_->parameters();
    for (Layer* l : std::initializer_list<Layer*>{to_8x8_.get(), classifier_16_.get(), regressor_16_.get(),
                                                  classifier_8_.get(), regressor_8_.get()}) {
      const ParameterList p = l->parameters();
      all.insert(all.end(), p.begin(), p.end());
    }
    return all;
  }

  // x: [N, input_height, input_width, 3], RGB mapped to [-1, 1]. scores: [N, anchors] logits;
  // boxes: [N, anchors, 16].
  void forward(const Tensor& x, Tensor& scores, Tensor& boxes) {
    const Tensor& f16 = to_16x16_->forward(x, Mode::inference);
    classifier_16_->forward(f16, head_out_[0], Mode::inference);
    regressor_16_->forward(f16, head_out_[1], Mode::inference);
    const Tensor& f8 = to_8x8_->forward(f16, Mode::inference);
    classifier_8_->forward(f8, head_out_[2], Mode::inference);
    regressor_8_->forward(f8, head_out_[3], Mode::inference);
    gather_heads(x.dim(0), head_out_, scores, boxes);
  }

  // The four heads' outputs (classifier 16x16, regressor 16x16, classifier 8x8, regressor 8x8)
  // of n images in anchor order: scores [n, anchors], boxes [n, anchors, 16].
  static void gather_heads(int64_t n, const Tensor (&heads)[4], Tensor& scores, Tensor& boxes) {
    const int64_t a16 = heads[0].size() / n, a8 = heads[2].size() / n;
    EIGENNET_CHECK(heads[1].size() == 16 * heads[0].size() && heads[3].size() == 16 * heads[2].size(),
                   "BlazeFace: the regressors' outputs do not match the classifiers'");
    scores.resize(Shape{n, a16 + a8});
    boxes.resize(Shape{n, a16 + a8, 16});
    for (int64_t i = 0; i < n; ++i) {
      // Each head's NHWC output, flattened, is already in anchor order.
      std::copy_n(heads[0].data() + i * a16, a16, scores.data() + i * (a16 + a8));
      std::copy_n(heads[2].data() + i * a8, a8, scores.data() + i * (a16 + a8) + a16);
      std::copy_n(heads[1].data() + i * a16 * 16, a16 * 16, boxes.data() + i * (a16 + a8) * 16);
      std::copy_n(heads[3].data() + i * a8 * 16, a8 * 16, boxes.data() + (i * (a16 + a8) + a16) * 16);
    }
  }

 private:
  BlazeFaceVariant variant_;
  BlazeFaceArchitecture arch_;
  int64_t height_, width_, anchors_ = 0;
  std::unique_ptr<Sequential> to_16x16_, to_8x8_;
  std::unique_ptr<Conv2D> classifier_16_, regressor_16_, classifier_8_, regressor_8_;
  Tensor head_out_[4];
};

}  // namespace eigennet
