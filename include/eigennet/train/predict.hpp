// predict() and evaluate(): a trained model over a data source, batched, in inference mode.
//
//   Predictions p = predict(model, source, {64, /*tta_flip=*/true});   // probabilities [N, K]
//   ClassificationMetrics m = evaluate(model, source, class_names);    // accuracy, F1, confusion
//
// Test-time flip averages each item's class probabilities with those of its mirror image
// (sources that can mirror: ImageSource). Several models (an ensemble, models/ensemble.hpp)
// average their probabilities the same way.
//
// Models that compile_for_inference knows (a Classifier, a Sequential built with an input shape)
// run through the net compiled for inference (BatchNorm folded, blocks fused; equal to the
// model's own inference forward to float rounding), compiled once per call (an Ensemble keeps
// its members compiled from loading on); others, or
// `compiled = false`, run the model's own forward in inference mode.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../data/source.hpp"
#include "../inference/inference_net.hpp"
#include "../kernels/softmax.hpp"
#include "../layers/model.hpp"
#include "../metrics/classification.hpp"

namespace eigennet {

struct PredictOptions {
  int64_t batch_size = 64;
  bool tta_flip = false;  // average with the mirrored inputs
  bool compiled = true;   // through compile_for_inference where the model supports it
};

struct Predictions {
  Tensor probabilities;         // [N, K], softmax of the model's outputs, item i of the source in row i
  std::vector<int32_t> labels;  // the source's labels, [N]
};

namespace detail {

// predict() through `net` (compiled from `model`), or the model's own forward when net is null.
inline Predictions predict_through(Model& model, InferenceNet* net, DataSource& source, const PredictOptions& options) {
  EIGENNET_CHECK(options.batch_size > 0, "predict: batch_size must be positive, got ", options.batch_size);
  const int64_t n = source.size();
  EIGENNET_CHECK(n > 0, "predict: the source is empty");
  std::unique_ptr<DataSource> mirrored;
  if (options.tta_flip) {
    mirrored = source.mirrored();
    EIGENNET_CHECK(mirrored != nullptr, "predict: test-time flip needs a source that can mirror its inputs");
    mirrored->start_epoch(0);
  }
  source.start_epoch(0);
  Predictions out;
  out.labels.reserve(static_cast<size_t>(n));
  Batch batch;
  Tensor p;
  for (int64_t begin = 0; begin < n; begin += options.batch_size) {
    const int64_t count = std::min(options.batch_size, n - begin);
    for (int pass = 0; pass < (mirrored ? 2 : 1); ++pass) {
      (pass == 0 ? source : *mirrored).get(begin, count, batch);
      const Tensor& logits = net ? net->forward(batch.inputs) : model.forward(batch.inputs, Mode::inference);
      EIGENNET_CHECK(logits.rank() == 2 && logits.dim(0) == count, "predict: the model must output [batch, classes], got ",
                     logits.shape());
      const int64_t k = logits.dim(1);
      if (begin == 0 && pass == 0) out.probabilities.resize(Shape{n, k});
      p.resize(logits.shape());
      kernels::softmax_forward(p.data(), logits.data(), count, k);
      float* dst = out.probabilities.data() + begin * k;
      for (int64_t i = 0; i < count * k; ++i) dst[i] = pass == 0 ? p[i] : 0.5f * (dst[i] + p[i]);
      if (pass == 0) out.labels.insert(out.labels.end(), batch.labels.begin(), batch.labels.end());
    }
  }
  return out;
}

}  // namespace detail

inline Predictions predict(Model& model, DataSource& source, const PredictOptions& options = {}) {
  const std::unique_ptr<InferenceNet> net = options.compiled ? compile_for_inference_if_supported(model) : nullptr;
  return detail::predict_through(model, net.get(), source, options);
}

// Accuracy, top-2 accuracy, per-class precision/recall/F1 and the confusion matrix of a model on
// a labeled source.
inline ClassificationMetrics evaluate(Model& model, DataSource& source, std::vector<std::string> class_names = {},
                                      const PredictOptions& options = {}) {
  const Predictions p = predict(model, source, options);
  return evaluate_classifier(p.probabilities, p.labels, std::move(class_names), {2});
}

}  // namespace eigennet
