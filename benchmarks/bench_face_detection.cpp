// bench_face_detection: how well the face detector (detect/face_detector.hpp) finds FER-2013 faces
// pasted into 640x480 photos, what it costs, how many faces it reports on photos that hold none,
// and how the emotion classifier does through detect -> crop -> classify. Not a test: its
// numbers go to weights/README.md, with the commands (benchmarks/face_detection.sh) that give them.
//
// Each FER-2013 face (48x48 grayscale) is enlarged to a random side of 100-300 pixels and pasted
// at a random place into a random face-free photo (benchmarks/make_face_free_photos.py); the
// face counts as found when the square the classifier is given (the calibrated crop, or the
// detector's own box) overlaps the pasted square with IoU >= 0.5. Every other detection in the
// picture is an extra. The network runs once per picture (and tile) with a low score floor; each
// threshold setting is then applied to those candidates, exactly as FaceDetector::detect does.
//
//   --calibrate   fits the crop (scale and offset of the pasted square relative to the box, as
//                 medians) on the faces found; run it on --split train.
//   --timing      times detection at batch 1 next to the classifier, interleaved.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <eigennet/detect/face_crop.hpp>
#include <eigennet/detect/face_detector.hpp>
#include <eigennet/eigennet.hpp>

namespace fs = std::filesystem;
using namespace eigennet;

namespace {

struct Args {
  std::string data, split = "test", photos, half = "all", classifier, variant = "back_256";
  int64_t count = 0;
  uint64_t seed = 1;
  bool tiles = false, calibrate = false, timing = false, classify = true;
  std::vector<float> scores = {0.5f}, tile_scores;
  std::vector<std::string> report;  // "SCORE" or "SCORE/TILE_SCORE": settings to classify
  float floor = 0.3f, tile_fraction = 0.6f, tile_stretch = 1.25f;
  bool square = false;     // square tiles letterboxed into the square input (FaceDetectorOptions::fit_tiles off)
  bool fit_whole = false;  // the whole picture as a fitted input
  int threads = 0, rounds = 30;
  std::string dump;  // write the false faces (crops of face-free photos) here
  std::string features;  // CSV of every detection at the first setting
};

std::vector<float> parse_floats(const std::string& text) {
  std::vector<float> out;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) out.push_back(std::stof(part));
  return out;
}
std::vector<std::string> parse_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) out.push_back(part);
  return out;
}

Args parse(int argc, char** argv) {
  Args a;
#ifdef EIGENNET_SOURCE_DIR
  a.data = std::string(EIGENNET_SOURCE_DIR) + "/../shared/data/fer2013";
  a.classifier = std::string(EIGENNET_SOURCE_DIR) + "/weights/emotions_7class.safetensors";
#endif
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      EIGENNET_CHECK(i + 1 < argc, "option ", k, " needs a value");
      return argv[++i];
    };
    if (k == "--data") a.data = next();
    else if (k == "--split") a.split = next();
    else if (k == "--photos") a.photos = next();
    else if (k == "--half") a.half = next();
    else if (k == "--classifier") a.classifier = next();
    else if (k == "--model") a.variant = next();
    else if (k == "--count") a.count = std::stoll(next());
    else if (k == "--seed") a.seed = std::stoull(next());
    else if (k == "--tiles") a.tiles = true;
    else if (k == "--tile-fraction") a.tile_fraction = std::stof(next());
    else if (k == "--tile-stretch") a.tile_stretch = std::stof(next());
    else if (k == "--square") a.square = true;
    else if (k == "--fit-whole") a.fit_whole = true;
    else if (k == "--calibrate") a.calibrate = true;
    else if (k == "--timing") a.timing = true;
    else if (k == "--no-classify") a.classify = false;
    else if (k == "--scores") a.scores = parse_floats(next());
    else if (k == "--tile-scores") a.tile_scores = parse_floats(next());
    else if (k == "--report") a.report = parse_list(next());
    else if (k == "--floor") a.floor = std::stof(next());
    else if (k == "--threads") a.threads = std::stoi(next());
    else if (k == "--rounds") a.rounds = std::stoi(next());
    else if (k == "--dump-false-faces") a.dump = next();
    else if (k == "--features") a.features = next();
    else if (k == "--help") {
      std::printf(
          "bench_face_detection [--split train|test] [--count N] --photos DIR [--half even|odd|all]\n"
          "  [--model front_128|back_256] [--tiles] [--tile-fraction F] [--tile-stretch X] [--square] [--fit-whole]\n"
          "  [--scores S,...] [--tile-scores S,...]\n"
          "  [--report S[/T],...] [--classifier FILE] [--no-classify] [--calibrate] [--timing] [--seed N]\n"
          "  [--threads N] [--data FER_DIR] [--dump-false-faces DIR]\n");
      std::exit(0);
    } else {
      fail("unknown option '", k, "' (see --help)");
    }
  }
  EIGENNET_CHECK(a.variant == "front_128" || a.variant == "back_256", "--model: front_128 or back_256");
  EIGENNET_CHECK(!a.photos.empty(), "--photos DIR is required (benchmarks/make_face_free_photos.py makes it)");
  if (a.tile_scores.empty()) a.tile_scores = a.scores;
  return a;
}

BlazeFaceVariant variant_of(const std::string& name) {
  return name == "front_128" ? BlazeFaceVariant::front_128 : BlazeFaceVariant::back_256;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// The face-free photos of one half (even or odd position in name order), or all.
std::vector<Image> load_photos(const std::string& dir, const std::string& half, std::vector<std::string>& names) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  std::vector<Image> out;
  for (size_t i = 0; i < files.size(); ++i) {
    if ((half == "even" && i % 2) || (half == "odd" && i % 2 == 0)) continue;
    Image im = load_image(files[i], ColorMode::rgb);
    EIGENNET_CHECK(im.width == 640 && im.height == 480, "'", files[i], "' is not 640x480");
    out.push_back(std::move(im));
    names.push_back(fs::path(files[i]).filename().string());
  }
  EIGENNET_CHECK(!out.empty(), "no photos in '", dir, "' (half ", half, ")");
  return out;
}

struct Composite {
  Image photo;
  Box pasted;
};

// Face `index` of the set pasted into one of the photos at a random place and side.
Composite make_composite(const ImageSet& faces, int64_t index, const std::vector<Image>& photos, uint64_t seed) {
  Rng rng(seed * 1000003ULL + static_cast<uint64_t>(index));
  Composite c;
  c.photo = photos[rng.below(photos.size())];
  const int side = 100 + static_cast<int>(rng.below(201));
  const int x = static_cast<int>(rng.below(static_cast<uint64_t>(640 - side + 1)));
  const int y = static_cast<int>(rng.below(static_cast<uint64_t>(480 - side + 1)));
  std::vector<uint8_t> big(static_cast<size_t>(side) * side);
  EIGENNET_CHECK(resize_image(faces.image(index), faces.height(), faces.width(), 1, big.data(), side, side),
                 "resize failed");
  for (int j = 0; j < side; ++j)
    for (int i = 0; i < side; ++i)
      for (int k = 0; k < 3; ++k)
        c.photo.pixels[((static_cast<size_t>(y + j) * 640) + x + i) * 3 + k] = big[static_cast<size_t>(j) * side + i];
  c.pasted = {static_cast<float>(x), static_cast<float>(y), static_cast<float>(side), static_cast<float>(side)};
  return c;
}

struct Setting {
  float score, tile_score;
  std::string label() const {
    char t[64];
    if (tile_score > 1) std::snprintf(t, sizeof t, "%.2f notile", score);
    else if (tile_score == score) std::snprintf(t, sizeof t, "%.2f", score);
    else std::snprintf(t, sizeof t, "%.2f/%.2f", score, tile_score);
    return t;
  }
};

// Class probabilities [crops x classes] of the classifier for square grayscale crops,
// preprocessed as evaluate does (RGB-replicated images rendered at the model's input size,
// x / 127.5 - 1).
std::vector<float> probabilities(LoadedClassifier& c, const std::vector<std::vector<uint8_t>>& crops, int crop_size) {
  ImageSet set(crop_size, crop_size, 3, c.spec.class_names);
  std::vector<uint8_t> rgb(static_cast<size_t>(crop_size) * crop_size * 3);
  for (const auto& gray : crops) {
    for (size_t i = 0; i < gray.size(); ++i) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = gray[i];
    set.add(rgb.data(), 0, "");
  }
  BatchOptions options;
  options.height = static_cast<int>(c.spec.base.height);
  options.width = static_cast<int>(c.spec.base.width);
  std::vector<float> out;
  Tensor images, p;
  std::vector<int32_t> labels;
  const int64_t n = set.size(), batch = 64;
  std::vector<int64_t> indices(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) indices[static_cast<size_t>(i)] = i;
  for (int64_t begin = 0; begin < n; begin += batch) {
    const int64_t count = std::min(batch, n - begin);
    assemble_batch(set, indices.data() + begin, count, 0, options, images, labels);
    const Tensor& logits = c.model->forward(images, Mode::inference);
    p.resize(logits.shape());
    kernels::softmax_forward(p.data(), logits.data(), count, logits.dim(1));
    out.insert(out.end(), p.data(), p.data() + p.size());
  }
  return out;
}

std::vector<int> argmax_rows(const std::vector<float>& p, int64_t k) {
  std::vector<int> out;
  for (size_t i = 0; i + static_cast<size_t>(k) <= p.size(); i += static_cast<size_t>(k))
    out.push_back(static_cast<int>(std::max_element(p.begin() + static_cast<long>(i), p.begin() + static_cast<long>(i) + k) -
                                   (p.begin() + static_cast<long>(i))));
  return out;
}

std::vector<int> classify(LoadedClassifier& c, const std::vector<std::vector<uint8_t>>& crops, int crop_size) {
  return argmax_rows(probabilities(c, crops, crop_size), c.spec.head.classes);
}

int run_timing(const Args& a) {
  // One 640x480 photo with one 200-pixel face; each step timed in turn, round after round.
  std::vector<std::string> names;
  std::vector<Image> photos = load_photos(a.photos, a.half, names);
  ImageFolderOptions folder;
  folder.color = ColorMode::grayscale;
  folder.max_per_class = 1;
  folder.warnings = false;
  const ImageSet faces = load_image_folder(a.data + "/" + a.split, folder);
  Composite c = make_composite(faces, 0, photos, a.seed);
  FaceDetectorOptions o128 = FaceDetectorOptions::fast(), o256 = FaceDetectorOptions::fast(), o256t;
  o128.variant = BlazeFaceVariant::front_128;
  o256t.tiles = true;
  o256t.tile_fraction = a.tile_fraction;
  o256t.tile_stretch = a.tile_stretch;
  // The same detectors with MediaPipe's square letterbox (the defaults before fitted inputs).
  FaceDetectorOptions o128s = o128, o256s = o256, o256ts = o256t;
  o128s.fit_tiles = o256s.fit_tiles = o256ts.fit_tiles = false;
  FaceDetector d128(o128), d256(o256), d256t(o256t), d128s(o128s), d256s(o256s), d256ts(o256ts);
  LoadedClassifier classifier = load_classifier(a.classifier);
  const int size = static_cast<int>(classifier.spec.base.height);
  Tensor input(Shape{1, size, size, 3});
  std::map<std::string, std::vector<double>> times;
  const std::vector<std::string> order = {"detect front_128", "detect back_256", "detect back_256 + tiles",
                                          "detect front_128, square", "detect back_256, square",
                                          "detect back_256 + tiles, square", "classifier forward (1 face)",
                                          "face_crop 48x48"};
  FaceDetection face;
  {
    const auto found = d256.detect(c.photo);
    EIGENNET_CHECK(!found.empty(), "timing: the face was not found");
    face = found.front();
  }
  for (int r = 0; r < a.rounds + 3; ++r) {
    for (const std::string& what : order) {
      const auto t0 = std::chrono::steady_clock::now();
      if (what == "detect front_128") d128.detect(c.photo);
      else if (what == "detect back_256") d256.detect(c.photo);
      else if (what == "detect back_256 + tiles") d256t.detect(c.photo);
      else if (what == "detect front_128, square") d128s.detect(c.photo);
      else if (what == "detect back_256, square") d256s.detect(c.photo);
      else if (what == "detect back_256 + tiles, square") d256ts.detect(c.photo);
      else if (what == "classifier forward (1 face)") classifier.model->forward(input, Mode::inference);
      else face_crop(c.photo, face, 48, calibrated_face_crop(BlazeFaceVariant::back_256));
      if (r >= 3) times[what].push_back(seconds_since(t0) * 1e3);
    }
  }
  std::printf("timing: 640x480 photo, batch 1, %d threads, median of %d interleaved rounds\n", max_threads(), a.rounds);
  const double classifier_ms = median(times["classifier forward (1 face)"]);
  for (const std::string& what : order) {
    const double m = median(times[what]);
    std::printf("  %-30s %8.2f ms  (%.2fx the classifier)\n", what.c_str(), m, m / classifier_ms);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    if (a.threads > 0) set_threads(a.threads);
    if (a.timing) return run_timing(a);

    std::vector<std::string> photo_names;
    const std::vector<Image> photos = load_photos(a.photos, a.half, photo_names);
    ImageFolderOptions folder;
    folder.color = ColorMode::grayscale;
    folder.warnings = false;
    const ImageSet faces = load_image_folder(a.data + "/" + a.split, folder);
    EIGENNET_CHECK(faces.height() == 48 && faces.width() == 48, "expected 48x48 FER-2013 images");
    std::vector<int64_t> order(static_cast<size_t>(faces.size()));
    for (int64_t i = 0; i < faces.size(); ++i) order[static_cast<size_t>(i)] = i;
    Rng shuffle(a.seed);
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[shuffle.below(i)]);
    if (a.count > 0 && a.count < faces.size()) order.resize(static_cast<size_t>(a.count));
    const int64_t n = static_cast<int64_t>(order.size());

    FaceDetectorOptions options;
    options.variant = variant_of(a.variant);
    options.tiles = a.tiles;
    options.tile_fraction = a.tile_fraction;
    options.tile_stretch = a.tile_stretch;
    options.fit_tiles = !a.square;
    options.fit_whole = a.fit_whole;
    FaceDetector detector(options);
    FaceCropOptions calibrated = calibrated_face_crop(options.variant);
    calibrated.level_eyes = false;  // turned on explicitly below where a choice wants it
    FaceCropOptions raw_box;  // the detector's box as it is
    raw_box.level_eyes = false;
    raw_box.scale = 1.0f;
    raw_box.offset_x = raw_box.offset_y = 0.0f;

    std::printf("%s faces of %s/%s pasted into %zu face-free photos (half %s); model %s%s, %s%s, score floor %.2f\n",
                std::to_string(n).c_str(), a.data.c_str(), a.split.c_str(), photos.size(), a.half.c_str(),
                a.variant.c_str(), a.tiles ? (" + tiles (stretch " + std::to_string(a.tile_stretch) + ")").c_str() : "",
                a.square ? "square tiles" : "fitted tiles", a.fit_whole ? ", whole picture fitted" : "", a.floor);
    std::printf("calibrated crop: scale %.4f, offset (%.4f, %.4f) x box width\n", calibrated.scale,
                calibrated.offset_x, calibrated.offset_y);

    // The network's candidates for every picture, once.
    std::vector<Composite> composites(static_cast<size_t>(n));
    std::vector<std::vector<std::vector<FaceDetection>>> candidates(static_cast<size_t>(n));
    double detect_seconds = 0;
    for (int64_t i = 0; i < n; ++i) {
      composites[static_cast<size_t>(i)] = make_composite(faces, order[static_cast<size_t>(i)], photos, a.seed);
      const auto t0 = std::chrono::steady_clock::now();
      candidates[static_cast<size_t>(i)] = detector.candidates(composites[static_cast<size_t>(i)].photo, a.floor);
      detect_seconds += seconds_since(t0);
      if ((i + 1) % 500 == 0) std::fprintf(stderr, "  %lld / %lld pictures\n", static_cast<long long>(i + 1), static_cast<long long>(n));
    }
    std::vector<std::vector<std::vector<FaceDetection>>> empty_candidates(photos.size());
    for (size_t i = 0; i < photos.size(); ++i) empty_candidates[i] = detector.candidates(photos[i], a.floor);
    std::printf("network time: %.1f ms per picture (candidates of all passes)\n", 1e3 * detect_seconds / n);

    std::vector<Setting> settings;
    for (float s : a.scores)
      for (float t : (a.tiles ? a.tile_scores : std::vector<float>{s})) settings.push_back({s, t});
    // With tiles, the same thresholds on the whole-picture pass alone (tile score 2: none kept).
    if (a.tiles)
      for (float s : a.scores) settings.push_back({s, 2.0f});

    const auto detections_of = [&](const std::vector<std::vector<FaceDetection>>& passes, const Setting& s) {
      return FaceDetector::select(passes, s.score, s.tile_score, options.nms_iou);
    };
    // Index of the detection whose crop square best overlaps the pasted square, and that IoU.
    const auto best_match = [](const std::vector<FaceDetection>& found, const Box& pasted, const FaceCropOptions& crop) {
      int best = -1;
      float best_iou = 0;
      for (size_t j = 0; j < found.size(); ++j) {
        const float iou = intersection_over_union(face_crop_geometry(found[j], crop).square(), pasted);
        if (iou > best_iou) best_iou = iou, best = static_cast<int>(j);
      }
      return std::make_pair(best, best_iou);
    };

    if (a.calibrate) {
      // Medians over faces whose raw box overlaps the pasted square (IoU >= 0.3) at the first
      // setting: pasted side / box width, and the pasted centre's offset from the box centre in
      // box widths.
      std::vector<double> scale, dx, dy, eye_y, iou_after;
      for (int64_t i = 0; i < n; ++i) {
        const Composite& c = composites[static_cast<size_t>(i)];
        const std::vector<FaceDetection> d = detections_of(candidates[static_cast<size_t>(i)], settings.front());
        const auto [j, iou] = best_match(d, c.pasted, raw_box);
        if (j < 0 || iou < 0.3f) continue;
        const FaceDetection& f = d[static_cast<size_t>(j)];
        scale.push_back(c.pasted.width / f.box.width);
        dx.push_back((c.pasted.center_x() - f.box.center_x()) / f.box.width);
        dy.push_back((c.pasted.center_y() - f.box.center_y()) / f.box.width);
        eye_y.push_back((0.5 * (f.keypoints[0].y + f.keypoints[1].y) - c.pasted.y) / c.pasted.width);
      }
      FaceCropOptions fitted;
      fitted.scale = static_cast<float>(median(scale));
      fitted.offset_x = static_cast<float>(median(dx));
      fitted.offset_y = static_cast<float>(median(dy));
      for (int64_t i = 0; i < n; ++i) {
        const Composite& c = composites[static_cast<size_t>(i)];
        const auto d = detections_of(candidates[static_cast<size_t>(i)], settings.front());
        const auto [j, iou] = best_match(d, c.pasted, fitted);
        if (j >= 0) iou_after.push_back(iou);
      }
      calibrated.scale = fitted.scale;
      calibrated.offset_x = fitted.offset_x;
      calibrated.offset_y = fitted.offset_y;
      std::printf("calibration on %zu faces (of %lld): scale %.4f, offset_x %.4f, offset_y %.4f "
                  "(eyes at %.3f of the pasted side from its top); median IoU of the fitted crop %.3f\n",
                  scale.size(), static_cast<long long>(n), fitted.scale, fitted.offset_x, fitted.offset_y,
                  median(eye_y), median(iou_after));
    }

    std::printf("\n%-11s | %-23s | %-23s | %-26s | %s\n", "score", "found (calibrated crop)", "found (detector box)",
                "found by side 100-149/150-199/200-300", "extras / picture, false faces / 10 face-free photos");
    for (const Setting& s : settings) {
      int64_t found = 0, found_box = 0, extras = 0, bucket_found[3] = {}, bucket_total[3] = {};
      std::vector<double> ious;
      for (int64_t i = 0; i < n; ++i) {
        const Composite& c = composites[static_cast<size_t>(i)];
        const std::vector<FaceDetection> d = detections_of(candidates[static_cast<size_t>(i)], s);
        const auto [j, iou] = best_match(d, c.pasted, calibrated);
        const auto [jb, iou_box] = best_match(d, c.pasted, raw_box);
        const bool hit = iou >= 0.5f;
        const int bucket = c.pasted.width < 150 ? 0 : c.pasted.width < 200 ? 1 : 2;
        ++bucket_total[bucket];
        if (hit) ++found, ++bucket_found[bucket], ious.push_back(iou);
        found_box += iou_box >= 0.5f;
        extras += static_cast<int64_t>(d.size()) - (hit ? 1 : 0);
        (void)j, (void)jb;
      }
      int64_t false_faces = 0;
      for (size_t p = 0; p < photos.size(); ++p) false_faces += static_cast<int64_t>(detections_of(empty_candidates[p], s).size());
      std::printf("%-11s | %6.2f%% (IoU med %.2f) | %6.2f%%                | %5.1f%% / %5.1f%% / %5.1f%%      | %.3f, %.2f\n",
                  s.label().c_str(), 100.0 * found / n, median(ious), 100.0 * found_box / n,
                  100.0 * bucket_found[0] / std::max<int64_t>(1, bucket_total[0]),
                  100.0 * bucket_found[1] / std::max<int64_t>(1, bucket_total[1]),
                  100.0 * bucket_found[2] / std::max<int64_t>(1, bucket_total[2]), static_cast<double>(extras) / n,
                  10.0 * static_cast<double>(false_faces) / static_cast<double>(photos.size()));
    }

    if (!a.features.empty()) {
      // Every detection at the first setting with what it is (the matched face, an extra in a
      // picture with a face, a false face in a face-free photo) and features of its geometry.
      std::FILE* f = std::fopen(a.features.c_str(), "w");
      EIGENNET_CHECK(f, "cannot write '", a.features, "'");
      std::fprintf(f, "kind,picture,pasted_x,pasted_y,side,score,support,box_x,box_y,box_w,box_h,iou");
      for (int k = 0; k < 6; ++k) std::fprintf(f, ",k%d_x,k%d_y", k, k);
      std::fprintf(f, "\n");
      const auto row = [&](const char* kind, int64_t picture, const Box& pasted, const FaceDetection& d, float iou) {
        std::fprintf(f, "%s,%lld,%.0f,%.0f,%.0f,%.4f,%.4f,%.2f,%.2f,%.2f,%.2f,%.3f", kind,
                     static_cast<long long>(picture), pasted.x, pasted.y, pasted.width, d.score, d.support, d.box.x,
                     d.box.y, d.box.width, d.box.height, iou);
        for (const Point& k : d.keypoints) std::fprintf(f, ",%.2f,%.2f", k.x, k.y);
        std::fprintf(f, "\n");
      };
      for (int64_t i = 0; i < n; ++i) {
        const Composite& c = composites[static_cast<size_t>(i)];
        const auto d = detections_of(candidates[static_cast<size_t>(i)], settings.front());
        const auto [j, iou] = best_match(d, c.pasted, calibrated);
        for (size_t k = 0; k < d.size(); ++k) {
          const float o = intersection_over_union(face_crop_geometry(d[k], calibrated).square(), c.pasted);
          row(static_cast<int>(k) == j && iou >= 0.5f ? "face" : "extra", i, c.pasted, d[k], o);
        }
        if (!(iou >= 0.5f)) row("miss", i, c.pasted, FaceDetection{}, iou);
      }
      for (size_t p = 0; p < photos.size(); ++p)
        for (const FaceDetection& d : detections_of(empty_candidates[p], settings.front()))
          row("false", static_cast<int64_t>(p), Box{}, d, 0);
      std::fclose(f);
    }

    if (!a.dump.empty()) {
      // The face-free photos' detections at the first setting, for a look.
      fs::create_directories(a.dump);
      for (size_t p = 0; p < photos.size(); ++p) {
        const std::vector<FaceDetection> d = detections_of(empty_candidates[p], settings.front());
        for (size_t j = 0; j < d.size(); ++j) {
          FaceCropOptions crop = calibrated;
          crop.grayscale = false;
          const Image im = face_crop(photos[p], d[j], 96, crop);
          char name[512];
          std::snprintf(name, sizeof name, "%s/%s_%zu_%.2f.png", a.dump.c_str(), photo_names[p].c_str(), j, d[j].score);
          Canvas canvas(96, 96);
          for (int y = 0; y < 96; ++y)
            for (int x = 0; x < 96; ++x) canvas.set_pixel(x, y, {im.at(y, x, 0), im.at(y, x, 1), im.at(y, x, 2)});
          canvas.save_png(name);
          std::printf("false face: %s score %.3f\n", photo_names[p].c_str(), d[j].score);
        }
      }
    }

    if (a.classify && !a.report.empty()) {
      LoadedClassifier classifier = load_classifier(a.classifier);
      const auto& classes = classifier.spec.class_names;
      // FER labels index the folder's classes; map to the classifier's order by name.
      std::vector<int> truth;
      for (int64_t i = 0; i < n; ++i) {
        const std::string& name = faces.class_names()[static_cast<size_t>(faces.label(order[static_cast<size_t>(i)]))];
        const auto it = std::find(classes.begin(), classes.end(), name);
        EIGENNET_CHECK(it != classes.end(), "the classifier has no class '", name, "'");
        truth.push_back(static_cast<int>(it - classes.begin()));
      }
      std::vector<std::vector<uint8_t>> originals;
      for (int64_t i = 0; i < n; ++i) {
        const uint8_t* p = faces.image(order[static_cast<size_t>(i)]);
        originals.emplace_back(p, p + 48 * 48);
      }
      const std::vector<int> base = classify(classifier, originals, 48);
      int64_t base_correct = 0;
      for (int64_t i = 0; i < n; ++i) base_correct += base[static_cast<size_t>(i)] == truth[static_cast<size_t>(i)];
      std::printf("\nclassifier %s on the original 48x48 crops: %.2f%% (%lld / %lld)\n",
                  fs::path(a.classifier).filename().c_str(), 100.0 * base_correct / n,
                  static_cast<long long>(base_correct), static_cast<long long>(n));
      struct CropChoice {
        const char* name;
        FaceCropOptions crop;
        int size;
        std::vector<float> scales = {1.0f};  // several: probabilities averaged over crops this much larger
      };
      FaceCropOptions level = calibrated;
      level.level_eyes = true;
      const int input = static_cast<int>(classifier.spec.base.height);
      const std::vector<CropChoice> choices = {
          {"calibrated crop, 48x48", calibrated, 48},
          {"calibrated crop + level eyes, 48x48", level, 48},
          {"detector box, 48x48", raw_box, 48},
          {"calibrated crop, model input", calibrated, input},
          {"calibrated + level eyes, model input", level, input},
          {"calibrated, input, mean of x0.9 x1 x1.1", calibrated, input, {0.9f, 1.0f, 1.1f}},
          {"cal. + level, input, mean x0.9 x1 x1.1", level, input, {0.9f, 1.0f, 1.1f}}};
      for (const std::string& r : a.report) {
        const size_t slash = r.find('/');
        const Setting s{std::stof(r.substr(0, slash)), slash == std::string::npos ? std::stof(r) : std::stof(r.substr(slash + 1))};
        for (const CropChoice& choice : choices) {
          std::vector<int> hit(static_cast<size_t>(n), 0);
          std::vector<float> mean;
          for (float scale : choice.scales) {
            FaceCropOptions crop = choice.crop;
            crop.scale *= scale;
            std::vector<std::vector<uint8_t>> crops;
            for (int64_t i = 0; i < n; ++i) {
              const Composite& c = composites[static_cast<size_t>(i)];
              const auto d = detections_of(candidates[static_cast<size_t>(i)], s);
              const auto [j, iou] = best_match(d, c.pasted, choice.crop);
              hit[static_cast<size_t>(i)] = iou >= 0.5f;
              const Image image = j >= 0 ? face_crop(c.photo, d[static_cast<size_t>(j)], choice.size, crop)
                                         : Image{choice.size, choice.size, 1,
                                                 std::vector<uint8_t>(static_cast<size_t>(choice.size) * choice.size, 128)};
              crops.push_back(image.pixels);
            }
            const std::vector<float> p = probabilities(classifier, crops, choice.size);
            if (mean.empty()) mean.assign(p.size(), 0.0f);
            for (size_t i = 0; i < p.size(); ++i) mean[i] += p[i];
          }
          const std::vector<int> predicted = argmax_rows(mean, classifier.spec.head.classes);
          int64_t correct = 0, found = 0, correct_found = 0, base_found = 0;
          for (int64_t i = 0; i < n; ++i) {
            const bool ok = predicted[static_cast<size_t>(i)] == truth[static_cast<size_t>(i)];
            if (hit[static_cast<size_t>(i)]) {
              ++found;
              correct += ok;
              correct_found += ok;
              base_found += base[static_cast<size_t>(i)] == truth[static_cast<size_t>(i)];
            }
          }
          std::printf("score %-11s %-40s found %6.2f%%; accuracy %.2f%% of all faces (a face not found counts as "
                      "wrong), %.2f%% of the found (originals of those: %.2f%%)\n",
                      s.label().c_str(), choice.name, 100.0 * found / n, 100.0 * correct / n,
                      100.0 * correct_found / std::max<int64_t>(1, found),
                      100.0 * base_found / std::max<int64_t>(1, found));
        }
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_face_detection: %s\n", e.what());
    return 1;
  }
}
