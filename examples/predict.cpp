// predict: the predicted emotion and the probability of every class for each image.
//   predict [--model FILE[,FILE...]] [--json] IMAGE...
// Without --model it uses the 7-class ensemble in the project's weights/ folder. Several
// comma-separated model files are an ensemble: their class probabilities are averaged.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <utility>

#include <eigennet/eigennet.hpp>

#include "common/cli.hpp"
#include "common/paths.hpp"

namespace fs = std::filesystem;
using namespace eigennet;

namespace {
// The project's 7-class ensemble (weights/README.md), from the first folder that holds it (see
// common/paths.hpp); a UsageError naming every folder it looked in when none does.
std::string default_model() {
  const std::vector<std::string> members = {"emotions_7class.safetensors", "emotions_7class_seed7.safetensors"};
  const std::vector<std::string> folders = examples::model_folders();
  for (const auto& folder : folders) {
    if (!fs::exists(folder + "/" + members.front())) continue;
    std::string list;
    for (const auto& m : members)
      if (fs::exists(folder + "/" + m)) list += (list.empty() ? "" : ",") + folder + "/" + m;
    return list;
  }
  throw cli::UsageError("no --model given, and the project's classifier (" + members.front() +
                        ") is in none of: " + examples::join(folders) + "; pass --model FILE");
}
}  // namespace

int main(int argc, char** argv) {
  return cli::run("predict", [&] {
    std::string model_path;
    bool json = false, tta_flip = false;
    int64_t threads = 0;
    std::vector<std::string> paths;
    cli::Parser p("predict", "Classifies face images with a saved classifier and prints every class's probability.");
    p.option("model", model_path,
             "classifier file; several, comma-separated, are an ensemble (default: the project's 7-class ensemble, "
             "from weights/ here, beside the program or in its install prefix's share/eigennet/weights)",
             "FILE[,FILE...]");
    p.flag("json", json, "print one JSON object per image instead of text");
    p.flag("tta-flip", tta_flip, "average with the mirrored image");
    p.option("threads", threads, "OpenMP threads (0 = all cores)", 0, 1024);
    p.positional(paths, "IMAGE...", "JPEG, PNG or BMP files (grayscale, RGB, RGBA or CMYK, any size)");
    if (!p.parse(argc, argv)) return 0;
    if (paths.empty()) throw cli::UsageError("no images given (see --help)");
    if (model_path.empty()) model_path = default_model();
    const std::vector<std::string> model_paths = cli::split_list(model_path);
    if (model_paths.empty()) throw cli::UsageError("--model: no file given");
    for (const auto& path : model_paths)
      if (!fs::exists(path)) throw cli::UsageError("--model: '" + path + "' does not exist");
    if (threads > 0) set_threads(static_cast<int>(threads));

    Ensemble ensemble = load_ensemble(model_paths);
    const auto& classes = ensemble.class_names();
    // Each readable image is kept at its own size (a large JPEG is decoded through its DCT to a
    // reduced size, no smaller than the largest input of the members) and resized to each
    // model's input below; unreadable files are reported and make the exit status non-zero.
    DecodeOptions decode;
    for (const auto& member : ensemble.members) {
      decode.min_height = std::max(decode.min_height, static_cast<int>(member.spec.base.height));
      decode.min_width = std::max(decode.min_width, static_cast<int>(member.spec.base.width));
    }
    std::vector<Image> decoded;
    std::vector<std::string> accepted;
    int failures = 0;
    for (const auto& path : paths) {
      Image image;
      std::string error;
      if (!read_image(path, decode, image, error)) {
        std::fprintf(stderr, "predict: '%s': %s\n", path.c_str(), error.c_str());
        ++failures;
        continue;
      }
      decoded.push_back(std::move(image));
      accepted.push_back(path);
    }
    if (!accepted.empty()) {
      std::vector<int64_t> indices(accepted.size());
      for (size_t i = 0; i < indices.size(); ++i) indices[i] = static_cast<int64_t>(i);
      const int64_t k = static_cast<int64_t>(classes.size());
      // The images resized once per input size that the members use.
      std::map<std::pair<int, int>, ImageSet> resized;
      const auto set_for = [&](const LoadedClassifier& member) -> const ImageSet& {
        const int h = static_cast<int>(member.spec.base.height), w = static_cast<int>(member.spec.base.width);
        const auto [it, inserted] = resized.try_emplace({h, w}, h, w, 3, classes);
        if (inserted)
          for (size_t i = 0; i < decoded.size(); ++i) it->second.add(resize_image(decoded[i], h, w).pixels.data(), 0, accepted[i]);
        return it->second;
      };
      const Tensor probs = predict(ensemble, set_for, indices, {32, tta_flip});
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
