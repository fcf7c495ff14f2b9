// BlazeFace compiled for inference (see inference_net.hpp): each BlazeBlock becomes one fused
// step, depthwise 3x3 and pointwise in bands of rows that stay in cache, with the shortcut (the
// input, or its max pooling padded with zero channels) added and the ReLU applied in the
// pointwise product's epilogue; the heads keep their weights packed. Gives what
// BlazeFace::forward gives, without its per-layer buffers and passes over memory.
//
//   BlazeFaceInference fast = compile_for_inference(blazeface);   // after its weights are loaded
//   fast.forward(images, scores, boxes);
//
// A snapshot of the weights, as every InferenceNet: compile again after they change.
#pragma once

#include <memory>

#include "../models/blazeface.hpp"
#include "inference_net.hpp"

namespace eigennet {

class BlazeFaceInference {
 public:
  explicit BlazeFaceInference(BlazeFace& net)
      : arch_(net.architecture()),
        to_16x16_(compile_for_inference(net.to_16x16())),
        to_8x8_(compile_for_inference(net.to_8x8())) {
    Conv2D* heads[4] = {&net.classifier_16x16(), &net.regressor_16x16(), &net.classifier_8x8(), &net.regressor_8x8()};
    for (int h = 0; h < 4; ++h) {
      Conv2D& c = *heads[h];
      heads_[h] = std::make_unique<inference::ConvStep>(
          c, inference::folded_from(c.kernel(), c.use_bias() ? &c.bias() : nullptr, c.output_shape()[2], c.name()));
    }
  }

  int64_t input_size() const { return arch_.input_size; }

  // x: [N, input_height, input_width, 3] in [-1, 1]; scores: [N, anchors] logits;
  // boxes: [N, anchors, 16].
  void forward(const Tensor& x, Tensor& scores, Tensor& boxes) {
    const Tensor& f16 = to_16x16_.forward(x);
    heads_[0]->run(f16, head_out_[0]);
    heads_[1]->run(f16, head_out_[1]);
    const Tensor& f8 = to_8x8_.forward(f16);
    heads_[2]->run(f8, head_out_[2]);
    heads_[3]->run(f8, head_out_[3]);
    BlazeFace::gather_heads(x.dim(0), head_out_, scores, boxes);
  }

  // Runs in the activation buffers of `other` (the same network compiled for another input size);
  // see InferenceNet::share_buffers_with.
  void share_buffers_with(const BlazeFaceInference& other) {
    to_16x16_.share_buffers_with(other.to_16x16_);
    to_8x8_.share_buffers_with(other.to_8x8_);
  }

  // One line per step of the two stages (what was folded and fused).
  std::string summary() const { return to_16x16_.summary() + to_8x8_.summary(); }

 private:
  BlazeFaceArchitecture arch_;
  InferenceNet to_16x16_, to_8x8_;
  std::unique_ptr<inference::ConvStep> heads_[4];
  Tensor head_out_[4];
};

inline BlazeFaceInference compile_for_inference(BlazeFace& net) { return BlazeFaceInference(net); }

}  // namespace eigennet
