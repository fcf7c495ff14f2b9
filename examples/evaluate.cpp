// evaluate: a saved classifier on an image folder (<root>/<class>/*, all of it test data) ->
// accuracy, classification report, confusion matrix (text and PNG) and metrics.json.
// Class folders are matched to the model's classes by name; folders the model does not know
// are reported and skipped. Several comma-separated model files are evaluated as an ensemble
// (their class probabilities averaged). With --detect, each picture that is not already a face
// crop is classified by its best face (BlazeFace, include/eigennet/detect/); pictures without a
// face are skipped and named, as unreadable files are.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>

#include <eigennet/eigennet.hpp>

#include "common/cli.hpp"
#include "common/paths.hpp"

namespace fs = std::filesystem;
using namespace eigennet;

int main(int argc, char** argv) {
  return cli::run("evaluate", [&] {
    std::string model_path, data, out = "runs/evaluate";
    int64_t batch_size = 64, threads = 0, max_per_class = 0;
    bool tta_flip = false, detect = false, no_neutral = false;
    cli::Parser p("evaluate", "Evaluates a saved classifier (model.safetensors from train_emotions) on an image folder.");
    p.option(
        "model", model_path,
        "classifier file (safetensors with eigennet metadata); several, comma-separated, are an ensemble "
        "(default: the project's 7-class network, emotions_7class_distilled.safetensors, found as predict finds it)",
        "FILE[,FILE...]");
    p.flag("no-neutral", no_neutral,
           "without --model: the project's 6-class network (no neutral class), emotions_6class_distilled.safetensors");
    p.option("data", data, "folder of class folders, all used as test data", "DIR");
    p.option("out", out, "output directory for report.txt, metrics.json, confusion_matrix.png", "DIR");
    p.option("batch-size", batch_size, "images per forward pass", 1, 4096);
    p.option("max-per-class", max_per_class, "use at most N images per class (0 = all)", 0, 1 << 30);
    p.flag("tta-flip", tta_flip, "average predictions with the mirrored image");
    p.flag("detect", detect,
           "classify each picture's best face (pictures larger than 64x64; those without a face are skipped)");
    p.option("threads", threads, "OpenMP threads (0 = all cores)", 0, 1024);
    if (!p.parse(argc, argv)) return 0;
    if (data.empty()) throw cli::UsageError("--data is required");
    if (no_neutral && !model_path.empty())
      throw cli::UsageError("--no-neutral chooses the project's 6-class network; it does not go with --model");
    if (model_path.empty()) model_path = examples::project_classifier(no_neutral);
    const std::vector<std::string> model_paths = cli::split_list(model_path);
    if (model_paths.empty()) throw cli::UsageError("--model: no file given");
    for (const auto& path : model_paths)
      if (!fs::exists(path)) throw cli::UsageError("--model: '" + path + "' does not exist");
    if (!fs::is_directory(data)) throw cli::UsageError("--data: '" + data + "' is not a directory");
    if (fs::exists(out) && !fs::is_directory(out))
      throw cli::UsageError("--out: '" + out + "' exists and is not a directory");
    if (threads > 0) set_threads(static_cast<int>(threads));

    Ensemble ensemble = load_ensemble(model_paths);
    const std::vector<std::string>& model_classes = ensemble.class_names();

    // Match class folders to the model's classes by name.
    std::vector<std::string> folders, known, unknown;
    for (const auto& entry : fs::directory_iterator(data))
      if (entry.is_directory() && entry.path().filename().string()[0] != '.')
        folders.push_back(entry.path().filename().string());
    std::sort(folders.begin(), folders.end());
    for (const auto& f : folders)
      (std::find(model_classes.begin(), model_classes.end(), f) != model_classes.end() ? known : unknown).push_back(f);
    for (const auto& f : unknown)
      std::fprintf(stderr, "evaluate: skipping folder '%s': the model has no class of that name\n", f.c_str());
    if (known.empty()) {
      std::string names;
      for (const auto& c : model_classes) names += (names.empty() ? "" : ", ") + c;
      fail("'", data, "' has no class folder named like the model's classes (", names, ")");
    }

    ImageFolderOptions folder;
    folder.color = ColorMode::rgb;
    folder.classes = known;
    folder.max_per_class = max_per_class;
    std::optional<FaceDetector> detector;
    const FaceCropOptions crop = calibrated_face_crop(FaceDetectorOptions{}.variant);
    if (detect) {
      // Stored at the largest input of the members, cut there from the picture.
      for (const auto& member : ensemble.members) {
        folder.height = std::max(folder.height, static_cast<int>(member.spec.base.height));
        folder.width = std::max(folder.width, static_cast<int>(member.spec.base.width));
      }
      folder.prepare = [&](const Image& picture, int height, int width, Image& stored, std::string& reason) {
        if (!is_face_crop(picture) && !detector) detector.emplace();
        const std::vector<PictureFace> faces = picture_faces(picture, detector ? &*detector : nullptr, crop);
        if (faces.empty()) {
          reason = "no face found";
          return false;
        }
        stored = classifier_input(picture, faces.front(), height, width, 3, crop);
        return true;
      };
    }
    ImageSet images = load_image_folder(data, folder);
    // Labels index the folder's classes; map them to the model's class indices.
    std::vector<int32_t> labels;
    std::vector<int64_t> indices;
    for (int64_t i = 0; i < images.size(); ++i) {
      const std::string& name = images.class_names()[static_cast<size_t>(images.label(i))];
      labels.push_back(static_cast<int32_t>(std::find(model_classes.begin(), model_classes.end(), name) -
                                            model_classes.begin()));
      indices.push_back(i);
    }
    const Tensor probabilities = predict(ensemble, images, indices, {batch_size, tta_flip});
    const ClassificationMetrics metrics = evaluate_classifier(probabilities, labels, model_classes, {2});
    fs::create_directories(out);
    char title[256];
    std::vector<std::string> model_names;
    for (const auto& path : model_paths) model_names.push_back(fs::path(path).filename().string());
    std::snprintf(title, sizeof title, "%s on %s: accuracy %.4f", examples::join(model_names, " + ").c_str(),
                  fs::path(data).filename().c_str(), metrics.accuracy);
    const std::string report = save_evaluation(out, metrics, title, [&](Json& j) {
      j["model"] = model_path;
      Json models = Json::array();
      for (const auto& path : model_paths) models.push_back(path);
      j["models"] = models;
      j["data"] = data;
      j["tta_flip"] = tta_flip;
      j["detect"] = detect;
      j["skipped_files"] = images.skipped_count();
      Json skipped = Json::array();
      for (const auto& f : unknown) skipped.push_back(f);
      j["skipped_folders"] = skipped;
    });
    std::printf("%s\n%s\n", title, report.c_str());
    return 0;
  });
}
