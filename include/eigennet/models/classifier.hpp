// Classifier: a convolutional base that ends in a global pooling ([C] features per image)
// followed by a small head that maps the features to class logits. The study's head is
//   GlobalMaxPooling -> Dense 128 (ReLU) -> Dropout 0.4 -> Dense N (softmax)
// where the pooling belongs to the base and the softmax to the loss (or predict_probabilities).
//
// Base and head are separate Sequentials so that a frozen base can be run once per image and
// its features cached while only the head trains (the study's method).
#pragma once

#include <memory>
#include <string>

#include "../kernels/softmax.hpp"
#include "../layers/activation.hpp"
#include "../layers/dense.hpp"
#include "../layers/dropout.hpp"
#include "../layers/sequential.hpp"
#include "mobilenet_v2.hpp"

namespace eigennet {

struct HeadConfig {
  int64_t hidden_units = 128;  // 0: no hidden layer (pooling -> dropout -> Dense N)
  float dropout = 0.4f;
  int64_t classes = 7;
};

// The head as its own model with input [features].
inline std::unique_ptr<Sequential> make_classifier_head(int64_t features, const HeadConfig& h, uint64_t seed = 0) {
  EIGENNET_CHECK(h.classes >= 2, "classifier head: needs at least 2 classes, got ", h.classes);
  EIGENNET_CHECK(h.hidden_units >= 0, "classifier head: hidden_units must be >= 0, got ", h.hidden_units);
  auto head = std::make_unique<Sequential>("head", Shape{features}, seed);
  if (h.hidden_units > 0) {
    head->add<Dense>("head_dense", h.hidden_units);
    head->add<ReLU>("head_relu");
  }
  if (h.dropout > 0.0f) head->add<Dropout>("head_dropout", h.dropout, seed ^ 0xD50Full);
  head->add<Dense>("predictions", h.classes);
  return head;
}

class Classifier : public Model {
 public:
  // base: a model whose per-sample output is [features] (e.g. MobileNetV2 with pooling).
  Classifier(std::unique_ptr<Sequential> base, const HeadConfig& head_config, uint64_t seed = 0)
      : base_(std::move(base)), head_config_(head_config) {
    EIGENNET_CHECK(base_ != nullptr, "Classifier: base is null");
    EIGENNET_CHECK(base_->model_output_shape().rank() == 1, "Classifier: the base must end in a global pooling "
                   "(per-sample output [features]), but it outputs ", base_->model_output_shape());
    head_ = make_classifier_head(base_->model_output_shape()[0], head_config, seed);
  }

  Sequential& base() { return *base_; }
  Sequential& head() { return *head_; }
  const HeadConfig& head_config() const { return head_config_; }
  int64_t classes() const { return head_config_.classes; }
  int64_t feature_size() const { return base_->model_output_shape()[0]; }

  // Logits [N, classes] for images [N, H, W, 3]. Valid until the next forward.
  const Tensor& forward(const Tensor& images, Mode mode) override {
    const Tensor& features = base_->forward(images, mode);
    head_->forward(features, logits_, mode);
    return logits_;
  }
  // Backpropagates d loss / d logits of the latest forward. A fully frozen base is skipped.
  void backward(const Tensor& dlogits) override {
    const Tensor& features = base_->output();
    const bool base_trains = base_->has_trainable_parameters();
    head_->backward(features, logits_, dlogits, base_trains ? &dfeatures_ : nullptr);
    if (base_trains) base_->backward(dfeatures_);
  }

  ParameterList parameters() override {
    ParameterList all = base_->parameters(), h = head_->parameters();
    all.insert(all.end(), h.begin(), h.end());
    return all;
  }
  void for_each_layer(const std::function<void(Layer&)>& fn) override {
    base_->for_each_layer(fn);
    head_->for_each_layer(fn);
  }
  // The head's layers are reported first, then the base's (the order of backward).
  void set_backward_hook(std::function<void(Layer&)> hook) override {
    head_->set_backward_hook(hook);
    base_->set_backward_hook(std::move(hook));
  }
  // The head gets `seed` itself, so that training the head alone on cached features (frozen
  // base) draws the same dropout masks as training the whole classifier.
  void reseed(uint64_t seed) override {
    head_->reseed(seed);
    base_->reseed(mix64(seed ^ 0xBA5Eull));
  }

  void freeze_base() { set_frozen(base_->parameters(), true); }
  void unfreeze_base() { set_frozen(base_->parameters(), false); }
  // Freezes every base parameter that comes before the layer or block `name` (e.g. "block_13"
  // or "Conv_1") and unfreezes the rest: fine-tuning from a named block up.
  void freeze_below(const std::string& name) {
    ParameterList params = base_->parameters();
    size_t first = params.size();
    for (size_t i = 0; i < params.size() && first == params.size(); ++i) {
      const std::string& n = params[i]->name;
      if (n.size() > name.size() && n.compare(0, name.size(), name) == 0 && (n[name.size()] == '/' || n[name.size()] == '_'))
        first = i;
    }
    EIGENNET_CHECK(first < params.size(), "Classifier::freeze_below: no layer or block named '", name, "' in the base");
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i]->kind == ParameterKind::weight) params[i]->frozen = i < first;
  }

 private:
  std::unique_ptr<Sequential> base_, head_;
  HeadConfig head_config_;
  Tensor logits_, dfeatures_;
};

}  // namespace eigennet
