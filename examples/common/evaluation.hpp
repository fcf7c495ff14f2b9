// Pieces shared by the example programs: finding the dataset, running a classifier over a set of
// images, and writing the evaluation outputs (report, metrics.json, confusion-matrix PNG).
#pragma once

#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <eigennet/eigennet.hpp>
#include <eigennet/models/classifier.hpp>

namespace examples {

namespace fs = std::filesystem;

// data/fer2013 in the working directory or the project, then ../shared/data/fer2013 beside
// either; empty when none exists.
inline std::string find_default_dataset() {
  std::vector<std::string> candidates = {"data/fer2013", "../shared/data/fer2013"};
#ifdef EIGENNET_SOURCE_DIR
  candidates.push_back(std::string(EIGENNET_SOURCE_DIR) + "/data/fer2013");
  candidates.push_back(std::string(EIGENNET_SOURCE_DIR) + "/../shared/data/fer2013");
#endif
  for (const auto& c : candidates) {
    std::error_code ec;
    if (fs::is_directory(c, ec)) return fs::weakly_canonical(c, ec).string();
  }
  return {};
}

inline const char* dataset_help =
    "FER-2013 was not found. Pass --data DIR, or place the dataset at data/fer2013 in the project.\n"
    "Expected layout (an image-folder export of the Kaggle 'Challenges in Representation Learning:\n"
    "Facial Expression Recognition' data, e.g. the widely used 'msambare/fer2013' layout):\n"
    "  DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg   (classes: angry disgust fear happy\n"
    "  neutral sad surprise; 48x48 grayscale), or DIR/<class>/* for a stratified 80/10/10 split.\n";

// Probabilities [N, classes] of the images `indices` of `set`, in inference mode (through the
// model compiled for inference), averaged with the horizontally mirrored images when tta_flip.
inline eigennet::Tensor predict_probabilities(eigennet::Classifier& model, const eigennet::ImageSet& set,
                                              const std::vector<int64_t>& indices, eigennet::BatchOptions options,
                                              bool tta_flip, int64_t batch_size) {
  using namespace eigennet;
  InferenceNet net = compile_for_inference(model);
  const int64_t n = static_cast<int64_t>(indices.size()), k = model.classes();
  Tensor probabilities(Shape{n, k});
  Tensor images, p(Shape{1, k});
  std::vector<int32_t> labels;
  options.augment = false;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t count = std::min(batch_size, n - begin);
    for (int pass = 0; pass < (tta_flip ? 2 : 1); ++pass) {
      options.flip = pass == 1;
      assemble_batch(set, indices.data() + begin, count, 0, options, images, labels);
      const Tensor& logits = net.forward(images);
      p.resize(logits.shape());
      kernels::softmax_forward(p.data(), logits.data(), count, k);
      float* out = probabilities.data() + begin * k;
      for (int64_t i = 0; i < count * k; ++i) out[i] = pass == 0 ? p[i] : 0.5f * (out[i] + p[i]);
    }
  }
  return probabilities;
}

// Several saved classifiers whose class probabilities are averaged: an ensemble (of one, the
// model itself). Every member must predict the same classes in the same order; each member keeps
// its own input size, so members trained at different sizes can be combined.
struct Ensemble {
  std::vector<std::string> paths;
  std::vector<eigennet::LoadedClassifier> members;

  const std::vector<std::string>& class_names() const { return members.front().spec.class_names; }
};

inline std::string join(const std::vector<std::string>& parts, const std::string& separator) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : separator) + p;
  return out;
}

inline Ensemble load_ensemble(const std::vector<std::string>& paths) {
  using namespace eigennet;
  EIGENNET_CHECK(!paths.empty(), "no classifier file given");
  Ensemble ensemble;
  for (const auto& path : paths) {
    LoadedClassifier member = load_classifier(path);
    if (!ensemble.members.empty() && member.spec.class_names != ensemble.class_names())
      fail("'", path, "' predicts the classes (", join(member.spec.class_names, ", "), ") but '", paths.front(),
           "' predicts (", join(ensemble.class_names(), ", "),
           "): the models of an ensemble must have the same classes in the same order");
    ensemble.paths.push_back(path);
    ensemble.members.push_back(std::move(member));
  }
  return ensemble;
}

// The mean of the members' probabilities (each as predict_probabilities above, at the member's
// own input size and with its normalization defaults). set_for(member) gives the images each
// member sees (the same set, or one already resized to that member's input).
inline eigennet::Tensor predict_probabilities(
    Ensemble& ensemble, const std::function<const eigennet::ImageSet&(const eigennet::LoadedClassifier&)>& set_for,
    const std::vector<int64_t>& indices, bool tta_flip, int64_t batch_size) {
  using namespace eigennet;
  Tensor mean;
  for (size_t m = 0; m < ensemble.members.size(); ++m) {
    const LoadedClassifier& member = ensemble.members[m];
    BatchOptions options;
    options.height = static_cast<int>(member.spec.base.height);
    options.width = static_cast<int>(member.spec.base.width);
    const Tensor p = predict_probabilities(*member.model, set_for(member), indices, options, tta_flip, batch_size);
    if (m == 0) {
      mean = p;
    } else {
      for (int64_t i = 0; i < p.size(); ++i) mean[i] += p[i];
    }
  }
  const float scale = 1.0f / static_cast<float>(ensemble.members.size());
  for (int64_t i = 0; i < mean.size(); ++i) mean[i] *= scale;
  return mean;
}

inline eigennet::Tensor predict_probabilities(Ensemble& ensemble, const eigennet::ImageSet& set,
                                              const std::vector<int64_t>& indices, bool tta_flip,
                                              int64_t batch_size) {
  return predict_probabilities(
      ensemble, [&set](const eigennet::LoadedClassifier&) -> const eigennet::ImageSet& { return set; }, indices,
      tta_flip, batch_size);
}

// Writes report.txt, metrics.json (to which add_fields may add) and confusion_matrix.png to
// out_dir, and prints the report.
inline void write_evaluation(const std::string& out_dir, const eigennet::ClassificationMetrics& metrics,
                             const std::string& title,
                             const std::function<void(eigennet::Json&)>& add_fields = nullptr) {
  using namespace eigennet;
  const std::string report = classification_report(metrics, 4) + "\nconfusion matrix (rows: true, columns: predicted)\n" +
                             confusion_matrix_table(metrics);
  std::printf("%s\n%s\n", title.c_str(), report.c_str());
  std::fflush(stdout);
  write_file_atomically(out_dir + "/report.txt", title + "\n\n" + report);
  Json json = metrics_to_json(metrics);
  if (add_fields) add_fields(json);
  save_json(out_dir + "/metrics.json", json);
  save_confusion_matrix_png(out_dir + "/confusion_matrix.png", metrics, title);
}

}  // namespace examples
