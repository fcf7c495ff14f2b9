// Face detection with BlazeFace (models/blazeface.hpp): from a picture of any size to the faces
// in it, each with a box, six keypoints and a score, in the picture's pixels.
//
//   FaceDetector detector;                          // weights/blazeface_back_256.safetensors
//   for (const FaceDetection& face : detector.detect(image)) ...
//
// The steps, as MediaPipe's face detection graph does them:
//   1. letterbox: the picture is scaled (data/resample.hpp) to fit the model's square input
//      keeping its aspect ratio, centred, the borders black, and mapped to [-1, 1]
//      (x / 127.5 - 1); or "fitted": scaled
//      alike but padded only to the next multiple of the network's coarse stride (the network is
//      convolutional, models/blazeface.hpp), so a 640x480 picture becomes a 256x192 input
//      (fit_whole; off by default: measured, the network finds fewer faces without the black
//      borders it was trained with, weights/README.md);
//   2. the network gives a score logit and 16 regression values per anchor (896 on its own input);
//   3. decode (TensorsToDetectionsCalculator): score = sigmoid(logit); box centre = anchor centre
//      + (dx / input_width, dy / input_height), box size = (w / input_width, h / input_height),
//      keypoint k = anchor centre + (kx / input_width, ky / input_height), all in units of the
//      input; anchors scoring below min_score drop out;
//   4. weighted non-maximum suppression (NonMaxSuppressionCalculator, algorithm WEIGHTED): the best
//      remaining detection and every other whose IoU with it exceeds nms_iou (0.3) are replaced by
//      their score-weighted mean box and keypoints, with the best score;
//   5. the boxes are mapped back through the letterbox to the picture's pixels.
// Optionally (tiles) a second pass runs the network on overlapping tiles of the picture, which
// shows small faces to the network larger (a tile's side is scaled to the input size); with
// fit_tiles (the default) the tiles are fitted inputs and one spans a whole side of the picture
// when that side is at most tile_stretch tile sides long (a 640x480 picture: two 384x480 tiles,
// 256x320 inputs, instead of four 384x384 squares: 30% fewer input pixels in all); tile
// detections that touch a tile's inner edge (a face cut by the tile) are dropped, and both
// passes are merged by step 4 again. Suppressing
// in picture pixels instead of model units changes nothing: IoU and weighted means are unchanged
// by the letterbox's shift and (up to the rounding of the scaled size to whole pixels) scaling.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.hpp"
#include "../data/image.hpp"
#include "../data/resample.hpp"
#include "../io/model_io.hpp"
#include "../io/weights_folders.hpp"
#include "../core/parallel.hpp"
#include "../inference/blazeface_inference.hpp"
#include "../models/blazeface.hpp"
#include "anchors.hpp"

namespace eigennet {

// MediaPipe's keypoint order. "Right" and "left" are the person's: facing the camera, the right
// eye is on the left of the picture.
enum class FaceKeypoint { right_eye = 0, left_eye = 1, nose_tip = 2, mouth_center = 3, right_ear = 4, left_ear = 5 };

struct FaceDetection {
  Box box;                          // in the picture's pixels (or model units before mapping)
  std::array<Point, 6> keypoints;   // indexed by FaceKeypoint
  float score = 0;                  // sigmoid of the logit, in (0, 1)
  float support = 1;                // sum of the scores of the anchor detections merged into this one

  const Point& keypoint(FaceKeypoint k) const { return keypoints[static_cast<size_t>(k)]; }
};

// Step 3: decodes one image's network outputs (scores [anchors], boxes [anchors, 16]) into the
// detections scoring at least min_score, in units of the model input (0..1 on each axis).
inline std::vector<FaceDetection> decode_blazeface(const float* scores, const float* boxes,
                                                   const std::vector<Anchor>& anchors, float input_width,
                                                   float input_height, float min_score) {
  std::vector<FaceDetection> out;
  const float inv_x = 1.0f / input_width, inv_y = 1.0f / input_height;
  for (size_t i = 0; i < anchors.size(); ++i) {
    // MediaPipe clips the logit to +-100 (score_clipping_thresh) before the sigmoid.
    const float logit = std::min(std::max(scores[i], -100.0f), 100.0f);
    const float score = 1.0f / (1.0f + std::exp(-logit));
    if (!(score >= min_score)) continue;  // also drops NaN
    const float* r = boxes + i * 16;
    const Anchor& a = anchors[i];
    FaceDetection d;
    d.score = score;
    d.support = score;
    d.box = Box::from_center(a.x + r[0] * inv_x, a.y + r[1] * inv_y, r[2] * inv_x, r[3] * inv_y);
    for (size_t k = 0; k < 6; ++k) d.keypoints[k] = {a.x + r[4 + 2 * k] * inv_x, a.y + r[5 + 2 * k] * inv_y};
    out.push_back(d);
  }
  return out;
}

// A square input.
inline std::vector<FaceDetection> decode_blazeface(const float* scores, const float* boxes,
                                                   const std::vector<Anchor>& anchors, float input_size,
                                                   float min_score) {
  return decode_blazeface(scores, boxes, anchors, input_size, input_size, min_score);
}

// Step 4: MediaPipe's weighted non-maximum suppression. Detections in order of decreasing score
// (ties keep their input order); each round takes the best remaining one, gathers every
// remaining detection whose IoU with it is above iou_threshold (itself included), and outputs
// their score-weighted mean box and keypoints with the best one's score.
inline std::vector<FaceDetection> weighted_non_max_suppression(std::vector<FaceDetection> detections,
                                                               float iou_threshold) {
  std::stable_sort(detections.begin(), detections.end(),
                   [](const FaceDetection& a, const FaceDetection& b) { return a.score > b.score; });
  std::vector<FaceDetection> out;
  std::vector<FaceDetection> remaining;
  while (!detections.empty()) {
    const FaceDetection top = detections.front();
    double weight = 0, x = 0, y = 0, w = 0, h = 0, support = 0;
    std::array<double, 12> kp{};
    remaining.clear();
    for (const FaceDetection& d : detections) {
      if (intersection_over_union(top.box, d.box) > iou_threshold || &d == &detections.front()) {
        const double s = d.score;
        weight += s;
        support += d.support;
        x += s * d.box.x;
        y += s * d.box.y;
        w += s * d.box.width;
        h += s * d.box.height;
        for (size_t k = 0; k < 6; ++k) {
          kp[2 * k] += s * d.keypoints[k].x;
          kp[2 * k + 1] += s * d.keypoints[k].y;
        }
      } else {
        remaining.push_back(d);
      }
    }
    FaceDetection merged = top;
    merged.support = static_cast<float>(support);
    merged.box = {static_cast<float>(x / weight), static_cast<float>(y / weight), static_cast<float>(w / weight),
                  static_cast<float>(h / weight)};
    for (size_t k = 0; k < 6; ++k)
      merged.keypoints[k] = {static_cast<float>(kp[2 * k] / weight), static_cast<float>(kp[2 * k + 1] / weight)};
    out.push_back(merged);
    detections.swap(remaining);
  }
  return out;
}

// Step 1's geometry: a region of the picture (in its pixels) scaled by (scale_x, scale_y) and
// placed at (pad_x, pad_y) in a width x height model input. The two scales differ only by the
// rounding of the scaled size to whole pixels.
struct Letterbox {
  int width = 0, height = 0;
  float region_x = 0, region_y = 0;
  float scale_x = 1, scale_y = 1;
  float pad_x = 0, pad_y = 0;

  // A point in units of the model input (0..1) -> picture pixels.
  Point point_to_image(Point p) const {
    return {region_x + (p.x * static_cast<float>(width) - pad_x) / scale_x,
            region_y + (p.y * static_cast<float>(height) - pad_y) / scale_y};
  }
  FaceDetection to_image(const FaceDetection& d) const {
    FaceDetection out = d;
    const Point corner = point_to_image(Point{d.box.x, d.box.y});
    out.box = {corner.x, corner.y, d.box.width * static_cast<float>(width) / scale_x,
               d.box.height * static_cast<float>(height) / scale_y};
    for (size_t k = 0; k < 6; ++k) out.keypoints[k] = point_to_image(d.keypoints[k]);
    return out;
  }
};

// Geometry of letterboxing a region_w x region_h region into an input_w x input_h input: the
// largest scale at which it fits, centred.
inline Letterbox make_letterbox(int region_x, int region_y, int region_w, int region_h, int input_w, int input_h) {
  EIGENNET_CHECK(region_w > 0 && region_h > 0 && input_w > 0 && input_h > 0, "letterbox: invalid region ", region_w,
                 "x", region_h, " or input ", input_w, "x", input_h);
  const double s = std::min(static_cast<double>(input_w) / region_w, static_cast<double>(input_h) / region_h);
  const int new_w = std::min(input_w, std::max(1, static_cast<int>(std::lround(region_w * s))));
  const int new_h = std::min(input_h, std::max(1, static_cast<int>(std::lround(region_h * s))));
  Letterbox l;
  l.width = input_w;
  l.height = input_h;
  l.region_x = static_cast<float>(region_x);
  l.region_y = static_cast<float>(region_y);
  l.scale_x = static_cast<float>(new_w) / static_cast<float>(region_w);
  l.scale_y = static_cast<float>(new_h) / static_cast<float>(region_h);
  l.pad_x = static_cast<float>((input_w - new_w) / 2);
  l.pad_y = static_cast<float>((input_h - new_h) / 2);
  return l;
}
inline Letterbox make_letterbox(int region_x, int region_y, int region_w, int region_h, int size) {
  return make_letterbox(region_x, region_y, region_w, region_h, size, size);
}

// Step 1: writes the region (whole pixels inside the picture) letterboxed into `input`
// (input_h * input_w * 3 floats, RGB in [-1, 1], black borders: -1). Grayscale pictures are
// replicated into the three channels.
inline Letterbox letterbox_image(const Image& image, int region_x, int region_y, int region_w, int region_h,
                                 int input_w, int input_h, float* input) {
  EIGENNET_CHECK(image.channels == 1 || image.channels == 3, "letterbox: images must have 1 or 3 channels, got ",
                 image.channels);
  EIGENNET_CHECK(static_cast<int64_t>(image.pixels.size()) == image.bytes(), "letterbox: the picture holds ",
                 image.pixels.size(), " bytes, not ", image.width, "x", image.height, "x", image.channels);
  EIGENNET_CHECK(region_x >= 0 && region_y >= 0 && region_w > 0 && region_h > 0 &&
                     region_x + region_w <= image.width && region_y + region_h <= image.height,
                 "letterbox: region ", region_w, "x", region_h, " at (", region_x, ", ", region_y,
                 ") is not inside the ", image.width, "x", image.height, " picture");
  const Letterbox l = make_letterbox(region_x, region_y, region_w, region_h, input_w, input_h);
  const int new_w = static_cast<int>(std::lround(l.scale_x * static_cast<float>(region_w)));
  const int new_h = static_cast<int>(std::lround(l.scale_y * static_cast<float>(region_h)));
  const int c = image.channels;
  std::fill_n(input, static_cast<int64_t>(input_w) * input_h * 3, -1.0f);
  const uint8_t* source = image.pixels.data() + (static_cast<int64_t>(region_y) * image.width + region_x) * c;
  float* placed = input + (static_cast<int64_t>(l.pad_y) * input_w + static_cast<int64_t>(l.pad_x)) * 3;
  resize_to_floats(source, int64_t{image.width} * c, region_h, region_w, c, placed, int64_t{input_w} * 3, new_h, new_w,
                   1.0f / 127.5f, -1.0f);
  return l;
}
inline Letterbox letterbox_image(const Image& image, int region_x, int region_y, int region_w, int region_h, int size,
                                 float* input) {
  return letterbox_image(image, region_x, region_y, region_w, region_h, size, size, input);
}

// The side of the tiles of the second pass: round(tile_fraction * the picture's longest side).
inline int detection_tile_side(int width, int height, float tile_fraction) {
  return std::max(1, static_cast<int>(std::lround(tile_fraction * static_cast<float>(std::max(width, height)))));
}

// Tiles of side detection_tile_side() covering the picture, overlapping by at least a quarter of
// a side, for the second pass. Along a side of the picture no longer than `stretch` tile sides,
// one tile spans it whole (so with stretch 1 the tiles are squares but where the picture is
// shorter than a tile; with 1.25 a 640x480 picture gets two 384x480 tiles, not four 384x384).
inline std::vector<Box> detection_tiles(int width, int height, float tile_fraction, float stretch = 1.0f) {
  const int side = detection_tile_side(width, height, tile_fraction);
  const auto spans = [&](int length) {
    std::vector<std::pair<int, int>> out;  // (start, length)
    if (static_cast<float>(length) <= stretch * static_cast<float>(side)) return std::vector<std::pair<int, int>>{{0, length}};
    const int n = static_cast<int>(std::ceil((length - side) / (0.75 * side))) + 1;
    for (int i = 0; i < n; ++i)
      out.emplace_back(static_cast<int>(std::lround(static_cast<double>(length - side) * i / (n - 1))), side);
    return out;
  };
  std::vector<Box> tiles;
  for (const auto& [y, h] : spans(height))
    for (const auto& [x, w] : spans(width))
      tiles.push_back({static_cast<float>(x), static_cast<float>(y), static_cast<float>(w), static_cast<float>(h)});
  return tiles;
}

// A region of the picture that one run of the network looks at: its `side` pixels become the
// network's input size (the whole picture: its longest side; a tile: the tile side); fitted: the
// input is only as large as the scaled region (rounded up to the coarse stride), else square.
struct DetectionRegion {
  Box box;
  float side = 0;
  bool fitted = false;
};

// The defaults are the setting chosen on FER-2013 training faces pasted into photos (the most
// faces found with at most one false face per ten face-free photos; weights/README.md): the
// 256x256 model, the tiled second pass (fitted tiles: two on a 640x480 picture), score 0.65 in
// both passes. fast() leaves out the tiles (one run of the network instead of three on a 640x480
// picture) for fewer small faces found.
struct FaceDetectorOptions {
  BlazeFaceVariant variant = BlazeFaceVariant::back_256;
  std::string weights;         // empty: find_blazeface_weights(variant)
  float min_score = 0.65f;     // MediaPipe's graphs use 0.5 (short range) and 0.6 (full range)
  float nms_iou = 0.3f;        // MediaPipe's min_suppression_threshold
  bool tiles = true;           // second pass over overlapping tiles (small faces)
  float tile_fraction = 0.6f;  // tile side / the picture's longest side
  float tile_min_score = -1;   // score threshold of tile detections; < 0: min_score
  // Tiles as fitted inputs (step 1 above), spanning a side of the picture at most tile_stretch
  // tile sides long; false: square tiles letterboxed into the square input.
  bool fit_tiles = true;
  float tile_stretch = 1.25f;
  // The whole picture as a fitted input too, instead of MediaPipe's square letterbox.
  bool fit_whole = false;

  // One pass of the 256x256 model at score 0.6.
  static FaceDetectorOptions fast() {
    FaceDetectorOptions o;
    o.tiles = false;
    o.min_score = 0.6f;
    return o;
  }
};

// weights/blazeface_<variant>.safetensors, from the folders io/weights_folders.hpp searches.
inline std::string find_blazeface_weights(BlazeFaceVariant variant) {
  return find_weights_file(std::string("blazeface_") + to_string(variant) + ".safetensors", "face detector weights");
}

// Loads converted BlazeFace weights (tools/convert_blazeface.py) into a network, checking that
// the file is one and of the same variant.
inline void load_blazeface_weights(BlazeFace& net, const std::string& path) {
  const SafetensorsFile file = read_safetensors(path);
  const auto meta = [&](const std::string& key) -> std::string {
    auto it = file.metadata.find(key);
    return it == file.metadata.end() ? std::string() : it->second;
  };
  EIGENNET_CHECK(meta("format") == "eigennet-blazeface", "'", path,
                 "' is not a BlazeFace weight file (metadata format is '", meta("format"),
                 "', expected 'eigennet-blazeface')");
  EIGENNET_CHECK(meta("variant") == to_string(net.variant()), "'", path, "' holds the BlazeFace variant '",
                 meta("variant"), "' but the network is '", to_string(net.variant()), "'");
  load_parameters(net.parameters(), file);
}

class FaceDetector {
 public:
  explicit FaceDetector(FaceDetectorOptions options = {}) : options_(std::move(options)), net_(options_.variant) {
    EIGENNET_CHECK(options_.min_score > 0 && options_.min_score < 1, "FaceDetector: min_score must be in (0, 1), got ",
                   options_.min_score);
    EIGENNET_CHECK(options_.nms_iou > 0 && options_.nms_iou < 1, "FaceDetector: nms_iou must be in (0, 1), got ",
                   options_.nms_iou);
    EIGENNET_CHECK(options_.tile_fraction > 0 && options_.tile_fraction <= 1,
                   "FaceDetector: tile_fraction must be in (0, 1], got ", options_.tile_fraction);
    EIGENNET_CHECK(options_.tile_stretch >= 1, "FaceDetector: tile_stretch must be at least 1, got ",
                   options_.tile_stretch);
    if (options_.weights.empty()) options_.weights = find_blazeface_weights(options_.variant);
    load_blazeface_weights(net_, options_.weights);
    recompile();
  }

  const FaceDetectorOptions& options() const { return options_; }
  // The network as loaded (at the variant's own input size); detection runs compiled snapshots of
  // it (compile_for_inference), one per input shape it meets, so call recompile() after changing
  // its weights.
  BlazeFace& network() { return net_; }
  void recompile() {
    shaped_.clear();
    shaped_.push_back(make_shaped(input_size(), input_size()));
  }
  // The anchors of the variant's own square input.
  const std::vector<Anchor>& anchors() const { return shaped_.front().anchors; }
  // Input shapes compiled so far and kept (the square one, and the most recently used others:
  // at most max_shapes, so pictures of many sizes do not grow the memory without end).
  size_t network_shapes() const { return shaped_.size(); }
  static constexpr size_t max_shapes = 6;
  int input_size() const { return static_cast<int>(net_.input_size()); }

  // The faces in an RGB or grayscale picture, best first, in its pixels.
  std::vector<FaceDetection> detect(const Image& image) {
    const float tile_score = options_.tile_min_score < 0 ? options_.min_score : options_.tile_min_score;
    return select(candidates(image, std::min(options_.min_score, tile_score)), options_.min_score, tile_score,
                  options_.nms_iou);
  }

  // The regions one detect() looks at: the whole picture, then the tiles when options().tiles.
  std::vector<DetectionRegion> regions(int width, int height) const {
    std::vector<DetectionRegion> out{{{0, 0, static_cast<float>(width), static_cast<float>(height)},
                                      static_cast<float>(std::max(width, height)), options_.fit_whole}};
    if (!options_.tiles) return out;
    const float side = static_cast<float>(detection_tile_side(width, height, options_.tile_fraction));
    for (const Box& t :
         detection_tiles(width, height, options_.tile_fraction, options_.fit_tiles ? options_.tile_stretch : 1.0f))
      if (t.width < static_cast<float>(width) || t.height < static_cast<float>(height))
        out.push_back({t, side, options_.fit_tiles});
    return out;
  }

  // The two halves of detect(), for measuring several thresholds on one run of the network:
  // candidates() gives every anchor's detection scoring at least floor_score, decoded and mapped
  // to the picture, per pass (the whole picture, then each tile when options().tiles; tile
  // detections that touch an inner edge of their tile are left out); select() keeps those of the
  // whole picture scoring at least min_score and those of the tiles at least tile_min_score,
  // suppresses within each pass and then across the passes.
  std::vector<std::vector<FaceDetection>> candidates(const Image& image, float floor_score) {
    EIGENNET_CHECK(image.width > 0 && image.height > 0 && !image.pixels.empty(), "FaceDetector: empty picture");
    const std::vector<DetectionRegion> looked_at = regions(image.width, image.height);
    std::vector<std::vector<FaceDetection>> passes = decode_regions(image, looked_at, floor_score);
    for (size_t r = 1; r < looked_at.size(); ++r) {
      std::vector<FaceDetection> kept;
      for (const FaceDetection& d : passes[r])
        if (!cut_by_tile(d.box, looked_at[r].box, image)) kept.push_back(d);
      passes[r] = std::move(kept);
    }
    return passes;
  }
  static std::vector<FaceDetection> select(const std::vector<std::vector<FaceDetection>>& passes, float min_score,
                                           float tile_min_score, float nms_iou) {
    std::vector<FaceDetection> merged;
    int contributing = 0;
    for (size_t p = 0; p < passes.size(); ++p) {
      std::vector<FaceDetection> kept;
      for (const FaceDetection& d : passes[p])
        if (d.score >= (p == 0 ? min_score : tile_min_score)) kept.push_back(d);
      contributing += !kept.empty();
      for (const FaceDetection& d : weighted_non_max_suppression(std::move(kept), nms_iou)) merged.push_back(d);
    }
    return contributing <= 1 ? merged : weighted_non_max_suppression(std::move(merged), nms_iou);
  }

  // The input (width, height) of the network for a region: the variant's square, or for a fitted
  // region the region scaled by input_size / side and rounded up to the coarse stride.
  std::pair<int, int> input_shape(const DetectionRegion& region) const {
    const int size = input_size();
    if (!region.fitted) return {size, size};
    const int stride = static_cast<int>(blazeface_coarse_stride(net_.architecture()));
    const float scale = static_cast<float>(size) / region.side;
    const auto fit = [&](float length) {
      const int scaled = std::max(1, static_cast<int>(std::lround(length * scale)));
      return (scaled + stride - 1) / stride * stride;
    };
    return {fit(region.box.width), fit(region.box.height)};
  }

  // Steps 1-3 and 5 on regions of the picture (whole pixels inside it), one run of the network
  // per region: per region, the decoded detections of every anchor scoring at least min_score,
  // before suppression, in the picture's pixels. One region per run: the runs of every input
  // shape share one set of activation buffers (make_shaped), and the first touches of a larger
  // batch's memory cost more than batching gains (measured on a 640x480 picture, 2 threads:
  // detection 14.4 ms with one region per run, 15.3 with two; before the buffers were shared,
  // 5 per run took 30 ms and 2 or 1 took 26).
  std::vector<std::vector<FaceDetection>> decode_regions(const Image& image, const std::vector<DetectionRegion>& regions,
                                                         float min_score) {
    const size_t n = regions.size();
    EIGENNET_CHECK(n > 0, "FaceDetector: no region to look at");
    if (inputs_.size() < n) inputs_.resize(n);
    for (size_t r = 0; r < n; ++r) {
      const auto [width, height] = input_shape(regions[r]);
      inputs_[r].resize(Shape{1, height, width, 3});
    }
    // Every region is resized before any run, all regions on all threads: one region alone
    // would leave a thread idle.
    std::vector<Letterbox> letterboxes(n);
    parallel_items(static_cast<int64_t>(n), [&](int64_t i) {
      const size_t r = static_cast<size_t>(i);
      const Box& b = regions[r].box;
      letterboxes[r] = letterbox_image(image, static_cast<int>(b.x), static_cast<int>(b.y), static_cast<int>(b.width),
                                       static_cast<int>(b.height), static_cast<int>(inputs_[r].dim(2)),
                                       static_cast<int>(inputs_[r].dim(1)), inputs_[r].data());
    });
    std::vector<std::vector<FaceDetection>> found(n);
    for (size_t r = 0; r < n; ++r) {
      const int height = static_cast<int>(inputs_[r].dim(1)), width = static_cast<int>(inputs_[r].dim(2));
      Shaped& net = shaped(height, width);
      net.compiled->forward(inputs_[r], scores_, boxes_);
      found[r] = decode_blazeface(scores_.data(), boxes_.data(), net.anchors, static_cast<float>(width),
                                  static_cast<float>(height), min_score);
      for (FaceDetection& d : found[r]) d = letterboxes[r].to_image(d);
    }
    return found;
  }

 private:
  // The network built for one input shape, the loaded weights copied in, compiled.
  struct Shaped {
    int height = 0, width = 0;
    uint64_t last_use = 0;
    std::unique_ptr<BlazeFace> net;  // kept: a compiled net may fall back to its layers
    std::unique_ptr<BlazeFaceInference> compiled;
    std::vector<Anchor> anchors;
  };
  Shaped make_shaped(int height, int width) {
    Shaped s;
    s.height = height;
    s.width = width;
    if (height == input_size() && width == input_size()) {
      s.compiled = std::make_unique<BlazeFaceInference>(net_);
    } else {
      {
        SkipWeightInitialization loaded_next;  // the loaded weights are copied in below
        s.net = std::make_unique<BlazeFace>(options_.variant, 0, height, width);
      }
      const ParameterList from = net_.parameters(), to = s.net->parameters();
      for (size_t i = 0; i < from.size(); ++i) to[i]->value.copy_from(from[i]->value);
      s.compiled = std::make_unique<BlazeFaceInference>(*s.net);
      s.compiled->share_buffers_with(*shaped_.front().compiled);  // one picture's runs follow each other
    }
    s.anchors = options_.variant == BlazeFaceVariant::front_128 ? ssd_anchors(height, width, {8, 16, 16, 16})
                                                                : ssd_anchors(height, width, {16, 32, 32, 32});
    EIGENNET_CHECK(s.compiled != nullptr, "FaceDetector: no network for ", width, "x", height);
    return s;
  }
  Shaped& shaped(int height, int width) {
    ++uses_;
    for (Shaped& s : shaped_)
      if (s.height == height && s.width == width) {
        s.last_use = uses_;
        return s;
      }
    if (shaped_.size() >= max_shapes) {  // drop the least recently used, never the square one
      auto oldest = std::min_element(shaped_.begin() + 1, shaped_.end(),
                                     [](const Shaped& a, const Shaped& b) { return a.last_use < b.last_use; });
      shaped_.erase(oldest);
    }
    shaped_.push_back(make_shaped(height, width));
    shaped_.back().last_use = uses_;
    return shaped_.back();
  }
  // True when the box reaches an edge of the tile that lies inside the picture.
  static bool cut_by_tile(const Box& b, const Box& t, const Image& image) {
    const float margin = 0.01f * std::max(t.width, t.height);
    return (t.x > 0 && b.x < t.x + margin) || (t.y > 0 && b.y < t.y + margin) ||
           (t.right() < static_cast<float>(image.width) && b.right() > t.right() - margin) ||
           (t.bottom() < static_cast<float>(image.height) && b.bottom() > t.bottom() - margin);
  }

  FaceDetectorOptions options_;
  BlazeFace net_;
  std::vector<Shaped> shaped_;  // the square input's first
  uint64_t uses_ = 0;
  std::vector<Tensor> inputs_;  // per region, in decode_regions
  Tensor scores_, boxes_;
};

// Convenience: the faces in a picture with a detector built from `options` (loaded once per
// thread and set of options, then reused).
inline std::vector<FaceDetection> detect_faces(const Image& image, const FaceDetectorOptions& options = {}) {
  thread_local std::unique_ptr<FaceDetector> detector;
  thread_local std::string key;
  const std::string wanted = std::string(to_string(options.variant)) + "|" + options.weights + "|" +
                             std::to_string(options.min_score) + "|" + std::to_string(options.nms_iou) + "|" +
                             std::to_string(options.tiles) + "|" + std::to_string(options.tile_fraction) + "|" +
                             std::to_string(options.tile_min_score) + "|" + std::to_string(options.fit_tiles) + "|" +
                             std::to_string(options.tile_stretch) + "|" + std::to_string(options.fit_whole);
  if (!detector || key != wanted) {
    detector = std::make_unique<FaceDetector>(options);
    key = wanted;
  }
  return detector->detect(image);
}

}  // namespace eigennet
