// Where the example programs look for what they were not told: FER-2013, the ImageNet weights
// (../shared/weights) and the project's trained classifiers (weights/). A program may be run from
// the source tree, from its build folder, or installed (bin/ with share/eigennet/weights/ beside
// it), so each search tries the working directory and the program's own folder and prefix (and,
// for data, the source tree), in that order, and a failed search names every place.
#pragma once

#include <eigennet/io/weights_folders.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "cli.hpp"

namespace examples {

namespace fs = std::filesystem;

inline std::string join(const std::vector<std::string>& parts, const std::string& separator = ", ") {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : separator) + p;
  return out;
}

// Folders that may hold the project's trained classifiers, in search order
// (eigennet/io/weights_folders.hpp).
inline std::vector<std::string> model_folders() { return eigennet::weights_folders(); }

// The project's classifier (weights/README.md) for programs given no --model: the 7-class network,
// or with six_classes the 6-class one (no neutral), from the first of model_folders() that holds
// it; a UsageError naming every folder it looked in when none does.
inline std::string project_classifier(bool six_classes) {
  const std::string file =
      six_classes ? "emotions_6class_distilled.safetensors" : "emotions_7class_distilled.safetensors";
  const std::vector<std::string> folders = model_folders();
  for (const auto& folder : folders)
    if (fs::exists(folder + "/" + file)) return folder + "/" + file;
  throw cli::UsageError("no --model given, and the project's classifier (" + file +
                        ") is in none of: " + join(folders) + "; pass --model FILE");
}

// Folders that may hold the ImageNet weights (../shared/weights beside the project).
inline std::vector<std::string> shared_weights_folders() {
  std::vector<std::string> folders = {"../shared/weights"};
#ifdef EIGENNET_SOURCE_DIR
  folders.push_back(std::string(EIGENNET_SOURCE_DIR) + "/../shared/weights");
#endif
  return folders;
}

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

}  // namespace examples
