// detect_faces: the faces in each picture, found by BlazeFace (include/eigennet/detect/).
//   detect_faces [--model back_256|front_128] [--fast] [--min-score S] [--level-eyes]
//                [--annotate OUT.png] [--crops DIR] [--json] IMAGE...
// For each face it prints the detector's box, the square crop a FER-2013 classifier would be
// given (both in the picture's pixels, x y width height), the score and the eyes. --annotate
// draws them (one picture), --crops writes each face's 48x48 grayscale crop as a PNG.
// Exit status: 0 when every picture holds a face, 3 when some readable picture holds none,
// 1 when a picture cannot be read.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <eigennet/detect/annotate.hpp>
#include <eigennet/detect/face_crop.hpp>
#include <eigennet/detect/face_detector.hpp>
#include <eigennet/eigennet.hpp>

#include "common/cli.hpp"

namespace fs = std::filesystem;
using namespace eigennet;

namespace {
Json box_json(const Box& b) {
  Json j = Json::array();
  for (float v : {b.x, b.y, b.width, b.height}) j.push_back(std::round(v * 10.0) / 10.0);
  return j;
}
}  // namespace

int main(int argc, char** argv) {
  return cli::run("detect_faces", [&] {
    std::string model = "back_256", annotate, crops, weights;
    bool fast = false, json = false, level_eyes = false;
    double min_score = -1;
    int64_t threads = 0;
    std::vector<std::string> paths;
    cli::Parser p("detect_faces", "Finds the faces in pictures with BlazeFace and prints their boxes and crops.");
    p.choice("model", model, {"back_256", "front_128"}, "detector: 256x256 (small, far faces) or 128x128 (near faces)");
    p.option("weights", weights, "detector weights (default: weights/blazeface_<model>.safetensors)", "FILE");
    p.flag("fast", fast, "no second pass over tiles: 1 run of the network instead of 5, fewer small faces found");
    p.option("min-score", min_score, "score threshold (default: the detector's tuned threshold)", 0.01, 0.99);
    p.flag("level-eyes", level_eyes, "turn each crop so that the eyes are level");
    p.option("annotate", annotate, "write the (first) picture with the faces drawn on it", "OUT.png");
    p.option("crops", crops, "write each face's 48x48 grayscale crop into this folder", "DIR");
    p.flag("json", json, "one JSON object per picture");
    p.option("threads", threads, "OpenMP threads (0 = all cores)", 0, 1024);
    p.positional(paths, "IMAGE...", "JPEG, PNG or BMP files");
    if (!p.parse(argc, argv)) return 0;
    if (paths.empty()) throw cli::UsageError("no images given (see --help)");
    if (threads > 0) set_threads(static_cast<int>(threads));
    if (!crops.empty()) fs::create_directories(crops);

    FaceDetectorOptions options = fast ? FaceDetectorOptions::fast() : FaceDetectorOptions{};
    options.variant = model == "front_128" ? BlazeFaceVariant::front_128 : BlazeFaceVariant::back_256;
    options.weights = weights;
    if (min_score > 0) options.min_score = static_cast<float>(min_score);
    FaceDetector detector(options);
    FaceCropOptions crop = calibrated_face_crop(options.variant);
    crop.level_eyes = level_eyes;

    int failures = 0, without_faces = 0;
    for (size_t i = 0; i < paths.size(); ++i) {
      Image image;
      std::string error;
      if (!read_image(paths[i], ColorMode::rgb, AlphaMode::composite_black, ImageLimits{}, image, error)) {
        std::fprintf(stderr, "detect_faces: '%s': %s\n", paths[i].c_str(), error.c_str());
        ++failures;
        continue;
      }
      const std::vector<FaceDetection> faces = detector.detect(image);
      without_faces += faces.empty();
      Json list = Json::array();
      if (!json) std::printf("%s: %dx%d, %zu face%s\n", paths[i].c_str(), image.width, image.height, faces.size(),
                             faces.size() == 1 ? "" : "s");
      for (size_t k = 0; k < faces.size(); ++k) {
        const FaceDetection& f = faces[k];
        const Box s = face_crop_geometry(f, crop).square();
        const Point& r = f.keypoint(FaceKeypoint::right_eye);
        const Point& l = f.keypoint(FaceKeypoint::left_eye);
        if (json) {
          Json face = Json::object();
          face["box"] = box_json(f.box);
          face["crop"] = box_json(s);
          face["score"] = std::round(f.score * 1e4) / 1e4;
          Json eyes = Json::array();
          for (float v : {r.x, r.y, l.x, l.y}) eyes.push_back(std::round(v * 10.0) / 10.0);
          face["eyes"] = eyes;
          list.push_back(face);
        } else {
          std::printf("  face %zu: score %.3f  box %.0f %.0f %.0f %.0f  crop %.0f %.0f %.0f %.0f  eyes (%.0f, %.0f) (%.0f, %.0f)\n",
                      k + 1, f.score, f.box.x, f.box.y, f.box.width, f.box.height, s.x, s.y, s.width, s.height, r.x,
                      r.y, l.x, l.y);
        }
        if (!crops.empty()) {
          const Image c = face_crop(image, f, 48, crop);
          Canvas canvas(48, 48);
          for (int y = 0; y < 48; ++y)
            for (int x = 0; x < 48; ++x) canvas.set_pixel(x, y, {c.at(y, x, 0), c.at(y, x, 0), c.at(y, x, 0)});
          canvas.save_png(crops + "/" + fs::path(paths[i]).stem().string() + "_face" + std::to_string(k + 1) + ".png");
        }
      }
      if (json) {
        Json j = Json::object();
        j["image"] = paths[i];
        j["faces"] = list;
        std::printf("%s\n", j.dump(-1).c_str());
      } else if (faces.empty()) {
        std::printf("  no face found\n");
      }
      if (!annotate.empty()) {
        std::vector<std::string> labels;
        for (const FaceDetection& f : faces) {
          char text[32];
          std::snprintf(text, sizeof text, "%.2f", f.score);
          labels.push_back(text);
        }
        annotate_faces(image, faces, labels, crop).save_png(annotate);
        annotate.clear();  // the first picture only
      }
    }
    return failures ? 1 : without_faces ? 3 : 0;
  });
}
