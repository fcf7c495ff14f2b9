// predict: the predicted emotion and the probability of every class for each image.
//   predict [--model FILE] [--json] IMAGE...
// Without --model it uses the 7-class model in the project's weights/ folder.
#include <cstdio>
#include <filesystem>

#include <eigennet/eigennet.hpp>

#include "common/cli.hpp"
#include "common/evaluation.hpp"

namespace fs = std::filesystem;
using namespace eigennet;

namespace {
std::string default_model() {
  std::vector<std::string> candidates = {"weights/emotions_7class.safetensors"};
#ifdef EIGENNET_SOURCE_DIR
  candidates.push_back(std::string(EIGENNET_SOURCE_DIR) + "/weights/emotions_7class.safetensors");
#endif
  for (const auto& c : candidates)
    if (fs::exists(c)) return c;
  return candidates.front();
}
}  // namespace

int main(int argc, char** argv) {
  return cli::run("predict", [&] {
    std::string model_path = default_model();
    bool json = false, tta_flip = false;
    int64_t threads = 0;
    std::vector<std::string> paths;
    cli::Parser p("predict", "Classifies face images with a saved classifier and prints every class's probability.");
    p.option("model", model_path, "classifier file", "FILE");
    p.flag("json", json, "print one JSON object per image instead of text");
    p.flag("tta-flip", tta_flip, "average with the mirrored image");
    p.option("threads", threads, "OpenMP threads (0 = all cores)", 0, 1024);
    p.positional(paths, "IMAGE...", "JPEG, PNG or BMP files (grayscale, RGB or RGBA, any size)");
    if (!p.parse(argc, argv)) return 0;
    if (paths.empty()) throw cli::UsageError("no images given (see --help)");
    if (!fs::exists(model_path)) throw cli::UsageError("--model: '" + model_path + "' does not exist");
    if (threads > 0) set_threads(static_cast<int>(threads));

    LoadedClassifier loaded = load_classifier(model_path);
    const auto& classes = loaded.spec.class_names;
    const int size_h = static_cast<int>(loaded.spec.base.height), size_w = static_cast<int>(loaded.spec.base.width);
    // Each readable image, resized to the model input, goes into one set; unreadable files are
    // reported and make the exit status non-zero.
    ImageSet set(size_h, size_w, 3, classes);
    std::vector<std::string> accepted;
    int failures = 0;
    for (const auto& path : paths) {
      Image image;
      std::string error;
      if (!read_image(path, ColorMode::rgb, AlphaMode::composite_black, ImageLimits{}, image, error)) {
        std::fprintf(stderr, "predict: '%s': %s\n", path.c_str(), error.c_str());
        ++failures;
        continue;
      }
      set.add(resize_image(image, size_h, size_w).pixels.data(), 0, path);
      accepted.push_back(path);
    }
    if (!accepted.empty()) {
      std::vector<int64_t> indices(accepted.size());
      for (size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<int64_t>(i);
      BatchOptions options;
      options.height = size_h;
      options.width = size_w;
      const Tensor probs = examples::predict_probabilities(*loaded.model, set, indices, options, tta_flip, 32);
      const int64_t k = static_cast<int64_t>(classes.size());
      for (size_t i = 0; i < accepted.size(); ++i) {
        const float* p = probs.data() + static_cast<int64_t>(i) * k;
        const int64_t best = std::max_element(p, p + k) - p;
        if (json) {
          Json j = Json::object();
          j["image"] = accepted[i];
          j["prediction"] = classes[static_cast<size_t>(best)];
          Json probabilities = Json::object();
          for (int64_t c = 0; c < k; ++c) probabilities[classes[static_cast<size_t>(c)]] = static_cast<double>(p[c]);
          j["probabilities"] = probabilities;
          std::printf("%s\n", j.dump(-1).c_str());
        } else {
          std::printf("%s: %s (%.1f%%)\n", accepted[i].c_str(), classes[static_cast<size_t>(best)].c_str(), 100.0 * p[best]);
          for (int64_t c = 0; c < k; ++c) std::printf("  %-10s %6.2f%%\n", classes[static_cast<size_t>(c)].c_str(), 100.0 * p[c]);
        }
      }
    }
    return failures ? 1 : 0;
  });
}
