// Ensemble: several saved classifiers whose class probabilities are averaged (an ensemble of one
// is the model itself). Every member must predict the same classes in the same order; each keeps
// its own input size, so members trained at different sizes combine.
//
//   Ensemble e = load_ensemble({"weights/a.safetensors", "weights/b.safetensors"});
//   Tensor p = predict(e, images, indices, {64, /*tta_flip=*/true});   // [N, classes]
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "../data/image_source.hpp"
#include "../train/predict.hpp"
#include "classifier_io.hpp"

namespace eigennet {

struct Ensemble {
  std::vector<std::string> paths;
  std::vector<LoadedClassifier> members;

  const std::vector<std::string>& class_names() const { return members.front().spec.class_names; }
  int64_t classes() const { return static_cast<int64_t>(class_names().size()); }
};

inline Ensemble load_ensemble(const std::vector<std::string>& paths) {
  EIGENNET_CHECK(!paths.empty(), "load_ensemble: no classifier file given");
  Ensemble ensemble;
  for (const auto& path : paths) {
    LoadedClassifier member = load_classifier(path);
    if (!ensemble.members.empty() && member.spec.class_names != ensemble.class_names()) {
      const auto join = [](const std::vector<std::string>& names) {
        std::string out;
        for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
        return out;
      };
      fail("'", path, "' predicts the classes (", join(member.spec.class_names), ") but '", paths.front(),
           "' predicts (", join(ensemble.class_names()),
           "): the models of an ensemble must have the same classes in the same order");
    }
    ensemble.paths.push_back(path);
    ensemble.members.push_back(std::move(member));
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
    const Tensor p = predict(*member.model, source, options).probabilities;
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
