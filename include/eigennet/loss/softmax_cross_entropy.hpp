// SoftmaxCrossEntropy: the training loss on logits, fused with the softmax for stability,
// with optional class weights and label smoothing (PyTorch's definition; see
// kernels/softmax.hpp).
#pragma once

#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../kernels/softmax.hpp"
#include "loss.hpp"

namespace eigennet {

class SoftmaxCrossEntropy : public Loss {
 public:
  struct Options {
    std::vector<float> class_weights;  // empty: all 1
    float label_smoothing = 0.0f;
  };
  SoftmaxCrossEntropy() = default;
  explicit SoftmaxCrossEntropy(Options options) : options_(std::move(options)) {
    EIGENNET_CHECK(options_.label_smoothing >= 0.0f && options_.label_smoothing <= 1.0f,
                   "SoftmaxCrossEntropy: label_smoothing must be in [0, 1], got ", options_.label_smoothing);
    for (float w : options_.class_weights)
      EIGENNET_CHECK(w >= 0.0f, "SoftmaxCrossEntropy: class weights must be non-negative, got ", w);
  }

  // Mean loss of logits [batch, classes] against labels; keeps d loss / d logits for gradient().
  // With mixed_labels (a mixed batch, data/mixing.hpp): weight * that + (1 - weight) * the loss
  // against mixed_labels.
  float forward(const Tensor& logits, const std::vector<int32_t>& labels, const std::vector<int32_t>* mixed_labels = nullptr,
                float weight = 1) {
    EIGENNET_CHECK(logits.rank() == 2, "SoftmaxCrossEntropy: logits must be [batch, classes], got ", logits.shape());
    EIGENNET_CHECK(static_cast<int64_t>(labels.size()) == logits.dim(0), "SoftmaxCrossEntropy: ", labels.size(),
                   " labels for a batch of ", logits.dim(0));
    EIGENNET_CHECK(mixed_labels == nullptr || mixed_labels->size() == labels.size(), "SoftmaxCrossEntropy: ",
                   mixed_labels ? mixed_labels->size() : 0, " mixed labels for a batch of ", labels.size());
    EIGENNET_CHECK(options_.class_weights.empty() ||
                       static_cast<int64_t>(options_.class_weights.size()) == logits.dim(1),
                   "SoftmaxCrossEntropy: ", options_.class_weights.size(), " class weights for ", logits.dim(1),
                   " classes");
    gradient_.resize(logits.shape());
    if (mixed_labels) scratch_.resize(logits.shape());
    return static_cast<float>(kernels::mixed_softmax_cross_entropy(
        gradient_.data(), scratch_.data(), logits.data(), labels.data(), mixed_labels ? mixed_labels->data() : nullptr,
        weight, logits.dim(0), logits.dim(1), options_.class_weights.empty() ? nullptr : options_.class_weights.data(),
        options_.label_smoothing));
  }
  float forward(const Tensor& logits, const Batch& batch) override {
    return forward(logits, batch.labels, batch.mixed() ? &batch.mixed_labels : nullptr, batch.mix_weight);
  }
  // d loss / d logits of the latest forward.
  const Tensor& gradient() const override { return gradient_; }
  const Options& options() const { return options_; }

 private:
  Options options_;
  Tensor gradient_, scratch_;
};

}  // namespace eigennet
