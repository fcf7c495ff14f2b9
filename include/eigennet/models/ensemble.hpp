// Ensemble: several saved classifiers whose class probabilities are averaged (an ensemble of one
// is the model itself). Every member must predict the same classes in the same order; each keeps
// its own input size, so members trained at different sizes combine.
//
//   Ensemble e = load_ensemble({"weights/a.safetensors", "weights/b.safetensors"});
//   Tensor p = predict(e, images, indices, {64, /*tta_flip=*/true});   // [N, classes]
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/parallel.hpp"
#include "../data/image_source.hpp"
#include "../train/predict.hpp"
#include "classifier_io.hpp"

namespace eigennet {

struct Ensemble {
  std::vector<std::string> paths;
  std::vector<LoadedClassifier> members;
  // Each member compiled for inference (a snapshot of its weights at loading: recompile with
  // compile_for_inference after changing them), used by predict() unless told otherwise.
  std::vector<std::unique_ptr<InferenceNet>> compiled;

  const std::vector<std::string>& class_names() const { return members.front().spec.class_names; }
  int64_t classes() const { return static_cast<int64_t>(class_names().size()); }
};

inline Ensemble load_ensemble(const std::vector<std::string>& paths) {
  EIGENNET_CHECK(!paths.empty(), "load_ensemble: no classifier file given");
  // The files load and compile in parallel, one per thread (mostly reading and first touches of
  // memory); an error is reported for the first failing file in the order given.
  const int64_t n = static_cast<int64_t>(paths.size());
  std::vector<LoadedClassifier> loaded(paths.size());
  std::vector<std::unique_ptr<InferenceNet>> compiled(paths.size());
  parallel_items(n, [&](int64_t i) {
    const size_t k = static_cast<size_t>(i);
    loaded[k] = load_classifier(paths[k]);
    compiled[k] = compile_for_inference_if_supported(*loaded[k].model);
  });
  Ensemble ensemble;
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::string& path = paths[i];
    LoadedClassifier member = std::move(loaded[i]);
    if (!ensemble.members.empty() && member.spec.class_names != ensemble.class_names()) {
      const auto join = detail::join_class_names;
      fail("'", path, "' predicts the classes (", join(member.spec.class_names), ") but '", paths.front(),
           "' predicts (", join(ensemble.class_names()),
           "): the models of an ensemble must have the same classes in the same order");
    }
    ensemble.paths.push_back(path);
    ensemble.members.push_back(std::move(member));
    ensemble.compiled.push_back(std::move(compiled[i]));
  }
  return ensemble;
}

// The batch options a saved classifier expects: its input size and its preprocessing.
inline BatchOptions input_options(const ClassifierSpec& spec) {
  BatchOptions options;
  options.height = static_cast<int>(spec.base.height);
  options.width = static_cast<int>(spec.base.width);
  options.normalization = Normalization::mobilenet_v2();
  return options;
}

// Mean probabilities [N, classes] of the members on the images `indices`; set_for(member) gives
// the images each member sees (the same set, or one already resized to that member's input).
inline Tensor predict(Ensemble& ensemble,
                      const std::function<const ImageSet&(const LoadedClassifier&)>& set_for,
                      const std::vector<int64_t>& indices, const PredictOptions& options = {}) {
  EIGENNET_CHECK(!ensemble.members.empty(), "predict: the ensemble has no members");
  Tensor mean;
  for (size_t m = 0; m < ensemble.members.size(); ++m) {
    LoadedClassifier& member = ensemble.members[m];
    ImageSource source(set_for(member), indices, input_options(member.spec));
    InferenceNet* net = options.compiled && m < ensemble.compiled.size() ? ensemble.compiled[m].get() : nullptr;
    const Tensor p = (net ? detail::predict_through(*member.model, net, source, options)
                          : predict(*member.model, source, options))
                         .probabilities;
    if (m == 0) mean = p;
    else
      for (int64_t i = 0; i < p.size(); ++i) mean[i] += p[i];
  }
  const float scale = 1.0f / static_cast<float>(ensemble.members.size());
  for (int64_t i = 0; i < mean.size(); ++i) mean[i] *= scale;
  return mean;
}

inline Tensor predict(Ensemble& ensemble, const ImageSet& images, const std::vector<int64_t>& indices,
                      const PredictOptions& options = {}) {
  return predict(ensemble, [&images](const LoadedClassifier&) -> const ImageSet& { return images; }, indices, options);
}

}  // namespace eigennet
