// predict: the emotion of every face in each picture, with the probability of every class.
//   predict [--model FILE[,FILE...]] [--json] [--no-detect] [--annotate OUT.png] IMAGE...
// A picture that already is a face crop (no side over 64 pixels, as FER-2013's 48x48 crops) is
// classified whole; in any other picture the faces are found by BlazeFace (include/eigennet/
// detect/), each cut out as the classifier's training faces were, and classified one by one.
// --no-detect classifies every picture whole. Without --model it uses the project's 7-class
// classifier (one network distilled from the 7-class ensemble, as accurate on the test split);
// several comma-separated model files are an ensemble (probabilities averaged).
// Exit status: 0 when every picture was read and holds a face, 3 when some readable picture
// holds none, 1 when a picture cannot be read.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <utility>

#include <eigennet/eigennet.hpp>

#include "common/cli.hpp"
#include "common/paths.hpp"

namespace fs = std::filesystem;
using namespace eigennet;

namespace {
Json box_json(const Box& b) {
  Json j = Json::array();
  for (float v : {b.x, b.y, b.width, b.height}) j.push_back(std::round(v * 10.0) / 10.0);
  return j;
}

// One picture's faces and where their classifier inputs are in the sets below.
struct Picture {
  std::string path;
  std::vector<PictureFace> faces;
  int64_t first_row = 0;  // the row of its first face
};
}  // namespace

int main(int argc, char** argv) {
  return cli::run("predict", [&] {
    std::string model_path, annotate;
    bool json = false, tta_flip = false, no_detect = false, fast_detect = false, no_neutral = false;
    int64_t threads = 0;
    std::vector<std::string> paths;
    cli::Parser p("predict",
                  "Finds the faces in pictures and prints each face's emotion and every class's probability "
                  "(exit status 3: some picture holds no face).");
    p.option("model", model_path,
             "classifier file; several, comma-separated, are an ensemble (default: the project's 7-class network, "
             "emotions_7class_distilled.safetensors, from weights/ here, beside the program or in its install prefix's share/eigennet/weights)",
             "FILE[,FILE...]");
    p.flag("no-neutral", no_neutral,
           "without --model: the project's 6-class network (no neutral class), emotions_6class_distilled.safetensors");
    p.flag("json", json,
           "print one JSON object per picture: {\"image\", \"faces\": [{\"box\", \"crop\", \"score\", \"label\", "
           "\"probabilities\"}]} (score null when the picture was classified whole)");
    p.flag("no-detect", no_detect, "classify every picture whole, without looking for faces");
    p.flag("fast-detect", fast_detect, "one pass of the face detector instead of three (the whole picture, then two tiles of a 640x480 one): faster, fewer small faces found");
    p.option("annotate", annotate, "write the picture with its faces and their emotions drawn on it (one IMAGE only)",
             "OUT.png");
    p.flag("tta-flip", tta_flip, "average with the mirrored face");
    p.option("threads", threads, "OpenMP threads (0 = all cores)", 0, 1024);
    p.positional(paths, "IMAGE...", "JPEG, PNG or BMP files (grayscale, RGB, RGBA or CMYK, any size)");
    if (!p.parse(argc, argv)) return 0;
    if (paths.empty()) throw cli::UsageError("no images given (see --help)");
    if (!annotate.empty() && paths.size() != 1)
      throw cli::UsageError("--annotate draws one picture; " + std::to_string(paths.size()) + " were given");
    if (!annotate.empty() && fs::path(annotate).extension() != ".png")
      throw cli::UsageError("--annotate: '" + annotate + "' must end in .png");
    if (no_neutral && !model_path.empty())
      throw cli::UsageError("--no-neutral chooses the project's 6-class network; it does not go with --model");
    if (model_path.empty()) model_path = examples::project_classifier(no_neutral);
    const std::vector<std::string> model_paths = cli::split_list(model_path);
    if (model_paths.empty()) throw cli::UsageError("--model: no file given");
    for (const auto& path : model_paths)
      if (!fs::exists(path)) throw cli::UsageError("--model: '" + path + "' does not exist");
    if (threads > 0) set_threads(static_cast<int>(threads));

    // The pictures are read, their faces found and cut out before the classifiers are loaded
    // (from their files' headers: input sizes and classes), so that the classifiers' weights
    // land in the memory of the detector, released by then.
    std::vector<ClassifierSpec> specs;
    for (const auto& path : model_paths) specs.push_back(read_classifier_spec(path));
    const std::vector<std::string>& classes = specs.front().class_names;  // load_ensemble checks the others
    // A large JPEG is decoded through its DCT at a reduced size: no smaller than the largest
    // input of the members, and, when faces are looked for, than 640 pixels (a face a tenth of
    // the picture wide stays larger than the classifier's input).
    DecodeOptions decode;
    for (const auto& spec : specs) {
      decode.min_height = std::max(decode.min_height, static_cast<int>(spec.base.height));
      decode.min_width = std::max(decode.min_width, static_cast<int>(spec.base.width));
    }
    if (!no_detect) {
      decode.min_height = std::max(decode.min_height, 640);
      decode.min_width = std::max(decode.min_width, 640);
    }

    // The detector is loaded when the first picture that is not a face crop needs it.
    std::optional<FaceDetector> detector;
    const FaceDetectorOptions detector_options = fast_detect ? FaceDetectorOptions::fast() : FaceDetectorOptions{};
    const FaceCropOptions crop = calibrated_face_crop(detector_options.variant);

    // Each face is cut out once per input size that the members use; the pictures themselves
    // are not kept (but the one to annotate).
    std::map<std::pair<int, int>, ImageSet> inputs;
    for (const auto& spec : specs) {
      const int h = static_cast<int>(spec.base.height), w = static_cast<int>(spec.base.width);
      inputs.try_emplace({h, w}, h, w, 3, classes);
    }
    std::vector<Picture> pictures;
    std::optional<Image> to_annotate;
    int64_t rows = 0;
    int failures = 0, without_faces = 0;
    for (const auto& path : paths) {
      Image image;
      std::string error;
      if (!read_image(path, decode, image, error)) {
        std::fprintf(stderr, "predict: '%s': %s\n", path.c_str(), error.c_str());
        ++failures;
        continue;
      }
      if (!no_detect && !is_face_crop(image) && !detector) {
        cli::keep_freed_memory();  // from here on, for the classifiers to reuse the detector's pages
        detector.emplace(detector_options);
      }
      Picture picture{path, picture_faces(image, no_detect ? nullptr : &*detector, crop), rows};
      without_faces += picture.faces.empty();
      for (const PictureFace& face : picture.faces) {
        for (auto& [size, set] : inputs)
          set.add(classifier_input(image, face, size.first, size.second, 3, crop).pixels.data(), 0, path);
        ++rows;
      }
      if (!annotate.empty()) to_annotate = std::move(image);
      pictures.push_back(std::move(picture));
    }

    detector.reset();
    Ensemble ensemble = load_ensemble(model_paths);
    const int64_t k = ensemble.classes();
    Tensor probs;
    if (rows > 0) {
      std::vector<int64_t> indices(static_cast<size_t>(rows));
      for (int64_t i = 0; i < rows; ++i) indices[static_cast<size_t>(i)] = i;
      const auto set_for = [&](const LoadedClassifier& member) -> const ImageSet& {
        return inputs.at({static_cast<int>(member.spec.base.height), static_cast<int>(member.spec.base.width)});
      };
      probs = predict(ensemble, set_for, indices, {32, tta_flip});
    }
    const auto row = [&](int64_t r) { return probs.data() + r * k; };
    const auto best_of = [&](int64_t r) { return std::max_element(row(r), row(r) + k) - row(r); };

    for (const Picture& picture : pictures) {
      if (json) {
        Json faces = Json::array();
        for (size_t f = 0; f < picture.faces.size(); ++f) {
          const PictureFace& face = picture.faces[f];
          const int64_t r = picture.first_row + static_cast<int64_t>(f);
          Json j = Json::object();
          j["box"] = box_json(face.box);
          j["crop"] = box_json(face.crop);
          j["score"] = face.detected ? Json(std::round(face.score * 1e4) / 1e4) : Json();
          j["label"] = classes[static_cast<size_t>(best_of(r))];
          Json probabilities = Json::object();
          for (int64_t c = 0; c < k; ++c) probabilities[classes[static_cast<size_t>(c)]] = static_cast<double>(row(r)[c]);
          j["probabilities"] = probabilities;
          faces.push_back(j);
        }
        Json j = Json::object();
        j["image"] = picture.path;
        j["faces"] = faces;
        std::printf("%s\n", j.dump(-1).c_str());
        continue;
      }
      const bool whole = picture.faces.size() == 1 && !picture.faces[0].detected;
      if (!whole)
        std::printf("%s: %zu face%s\n", picture.path.c_str(), picture.faces.size(), picture.faces.size() == 1 ? "" : "s");
      if (picture.faces.empty()) std::printf("  no face found\n");
      for (size_t f = 0; f < picture.faces.size(); ++f) {
        const PictureFace& face = picture.faces[f];
        const int64_t r = picture.first_row + static_cast<int64_t>(f);
        const int64_t best = best_of(r);
        const char* indent = whole ? "  " : "    ";
        if (whole) {
          std::printf("%s: %s (%.1f%%)\n", picture.path.c_str(), classes[static_cast<size_t>(best)].c_str(),
                      100.0 * row(r)[best]);
        } else {
          std::printf("  face %zu: %s (%.1f%%)  score %.3f  box %.0f %.0f %.0f %.0f  crop %.0f %.0f %.0f %.0f\n", f + 1,
                      classes[static_cast<size_t>(best)].c_str(), 100.0 * row(r)[best], face.score, face.box.x,
                      face.box.y, face.box.width, face.box.height, face.crop.x, face.crop.y, face.crop.width,
                      face.crop.height);
        }
        for (int64_t c = 0; c < k; ++c)
          std::printf("%s%-10s %6.2f%%\n", indent, classes[static_cast<size_t>(c)].c_str(), 100.0 * row(r)[c]);
      }
    }

    if (to_annotate && !pictures.empty()) {
      const Picture& picture = pictures.front();
      std::vector<FaceDetection> detections;
      std::vector<std::string> labels;
      for (size_t f = 0; f < picture.faces.size(); ++f) {
        const int64_t r = picture.first_row + static_cast<int64_t>(f);
        char text[64];
        std::snprintf(text, sizeof text, "%s %.0f%%", classes[static_cast<size_t>(best_of(r))].c_str(),
                      100.0 * row(r)[best_of(r)]);
        labels.push_back(text);
        if (picture.faces[f].detected) detections.push_back(picture.faces[f].detection);
      }
      Canvas canvas = annotate_faces(*to_annotate, detections, labels, crop);
      if (detections.empty() && !labels.empty())  // classified whole: the label in the corner
        canvas.draw_text(1, 1, labels.front(), colors::orange, 1);
      canvas.save_png(annotate);
    }
    cli::exit_without_cleanup("predict", failures ? 1 : without_faces ? 3 : 0);
  });
}
