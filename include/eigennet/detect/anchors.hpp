// SSD anchors and the geometry shared by detectors: points, boxes, intersection over union.
//
// BlazeFace predicts, for every anchor, a score and offsets from the anchor's centre. Its anchors
// are those of MediaPipe's SsdAnchorsCalculator with the options of MediaPipe's face detection
// graphs (face_detection_short_range / _full_range .pbtxt): fixed_anchor_size (every anchor is
// 1 x 1 in normalized units, so only its centre matters), anchor_offset 0.5 (cell centres), one
// aspect ratio plus the interpolated scale (two anchors per layer), and layers that share a
// stride share one grid. The front model's strides {8, 16, 16, 16} on a 128x128 input give 2
// anchors per cell of a 16x16 grid, then 6 per cell of an 8x8 grid: 896 in all; the back model's
// {16, 32, 32, 32} on 256x256 give the same grids.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/error.hpp"

namespace eigennet {

struct Point {
  float x = 0, y = 0;
};

// An axis-aligned rectangle: top-left corner and size (in pixels, or normalized units).
struct Box {
  float x = 0, y = 0, width = 0, height = 0;

  float center_x() const { return x + 0.5f * width; }
  float center_y() const { return y + 0.5f * height; }
  float right() const { return x + width; }
  float bottom() const { return y + height; }
  float area() const { return std::max(width, 0.0f) * std::max(height, 0.0f); }
  static Box from_center(float cx, float cy, float w, float h) { return {cx - 0.5f * w, cy - 0.5f * h, w, h}; }
};

// Area of the intersection over area of the union; 0 for disjoint or empty boxes.
inline float intersection_over_union(const Box& a, const Box& b) {
  const float w = std::min(a.right(), b.right()) - std::max(a.x, b.x);
  const float h = std::min(a.bottom(), b.bottom()) - std::max(a.y, b.y);
  if (w <= 0 || h <= 0) return 0.0f;
  const float inter = w * h, uni = a.area() + b.area() - inter;
  return uni > 0 ? inter / uni : 0.0f;
}

// An anchor's centre, in units of the model input (0..1).
struct Anchor {
  float x = 0, y = 0;
};

// Anchors of MediaPipe's SsdAnchorsCalculator with fixed_anchor_size and anchor_offset 0.5:
// consecutive layers of equal stride share a grid of ceil(input_height / stride) x
// ceil(input_width / stride) cells, each cell getting anchors_per_layer anchors per layer; grids
// in order, cells row by row. Centres in units of the input (x of its width, y of its height).
inline std::vector<Anchor> ssd_anchors(int input_height, int input_width, const std::vector<int>& strides,
                                       int anchors_per_layer = 2) {
  EIGENNET_CHECK(input_height > 0 && input_width > 0 && anchors_per_layer > 0, "ssd_anchors: invalid input size ",
                 input_width, "x", input_height, " or anchors per layer ", anchors_per_layer);
  std::vector<Anchor> anchors;
  for (size_t layer = 0; layer < strides.size();) {
    const int stride = strides[layer];
    EIGENNET_CHECK(stride > 0, "ssd_anchors: stride must be positive, got ", stride);
    size_t last = layer;
    while (last < strides.size() && strides[last] == stride) ++last;
    const int per_cell = static_cast<int>(last - layer) * anchors_per_layer;
    const int rows = (input_height + stride - 1) / stride, cols = (input_width + stride - 1) / stride;
    for (int y = 0; y < rows; ++y)
      for (int x = 0; x < cols; ++x)
        for (int a = 0; a < per_cell; ++a)
          anchors.push_back({(static_cast<float>(x) + 0.5f) / static_cast<float>(cols),
                             (static_cast<float>(y) + 0.5f) / static_cast<float>(rows)});
    layer = last;
  }
  return anchors;
}

// The square input of MediaPipe's graphs.
inline std::vector<Anchor> ssd_anchors(int input_size, const std::vector<int>& strides, int anchors_per_layer = 2) {
  return ssd_anchors(input_size, input_size, strides, anchors_per_layer);
}

}  // namespace eigennet
