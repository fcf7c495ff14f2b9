// The face crop a FER-2013 classifier expects, from a face detection.
//
// FER-2013's images are 48x48 grayscale crops, square, a little tighter than the whole head. A
// detector's box is a different square (BlazeFace's is about the eyebrows-to-chin face), so the
// crop is the detector box scaled and shifted by amounts calibrated on FER-2013 *training* faces
// pasted at known places into larger pictures (benchmarks/bench_face_detection.cpp --calibrate:
// the medians of pasted side / box width and of the pasted square's centre offset from the box
// centre, in box widths; the values and how they were found: weights/README.md):
//   side   = scale * box width
//   centre = box centre + (offset_x, offset_y) * box width
// By default the crop is turned about its centre so that the eyes are level (FER-2013's faces
// are roughly upright), and a classifier does best on crops cut at its own input size and, when
// it can afford three forward passes, averaged over crops 0.9, 1 and 1.1 times as large
// (face_crops): measured in weights/README.md. Pixels outside the picture repeat its edge. The crop is
// sampled at the picture's resolution (bilinear) and then resized to the classifier's input with
// stb's filter, which averages when shrinking, as a photo shrunk to 48x48 would.
#pragma once

#include <cmath>
#include <vector>

#include "../data/image.hpp"
#include "face_detector.hpp"

namespace eigennet {

struct FaceCropOptions {
  // Calibrated for the back_256 detector (see above and weights/README.md): medians over 1,940
  // FER-2013 training faces found in 2,000 pictures. calibrated_face_crop() gives each variant's.
  float scale = 1.1526f;
  float offset_x = 0.0046f;
  float offset_y = -0.0887f;
  bool level_eyes = true;   // turn the crop so that the line between the eyes is horizontal
  bool grayscale = true;    // one channel of BT.601 luma, as FER-2013; false keeps the picture's channels
};

// The calibrated crop for each detector variant (front_128: medians over 1,912 faces found in the
// same 2,000 pictures).
inline FaceCropOptions calibrated_face_crop(BlazeFaceVariant variant) {
  FaceCropOptions o;
  if (variant == BlazeFaceVariant::front_128) {
    o.scale = 1.1783f;
    o.offset_x = 0.0042f;
    o.offset_y = -0.0958f;
  }
  return o;
}

// Where a crop lies in the picture: its centre, side and angle (radians, counter-clockwise turn
// of the picture that levels the eyes; 0 without level_eyes).
struct FaceCropGeometry {
  Point center;
  float side = 0;
  float angle = 0;

  // The axis-aligned square of the crop (before any turn), in the picture's pixels.
  Box square() const { return Box::from_center(center.x, center.y, side, side); }
};

inline FaceCropGeometry face_crop_geometry(const FaceDetection& face, const FaceCropOptions& options = {}) {
  FaceCropGeometry g;
  const float w = face.box.width;
  g.center = {face.box.center_x() + options.offset_x * w, face.box.center_y() + options.offset_y * w};
  g.side = options.scale * w;
  if (options.level_eyes) {
    // The person's right eye is on the picture's left.
    const Point& r = face.keypoint(FaceKeypoint::right_eye);
    const Point& l = face.keypoint(FaceKeypoint::left_eye);
    g.angle = std::atan2(l.y - r.y, l.x - r.x);
  }
  return g;
}

// Crops `face` out of `image` as a size x size picture (1 channel with grayscale, else the
// image's channels).
inline Image face_crop(const Image& image, const FaceDetection& face, int size, const FaceCropOptions& options = {}) {
  EIGENNET_CHECK(size > 0 && size <= 4096, "face_crop: invalid output size ", size);
  EIGENNET_CHECK(image.width > 0 && image.height > 0 && (image.channels == 1 || image.channels == 3),
                 "face_crop: expects a non-empty picture with 1 or 3 channels, got ", image.width, "x", image.height,
                 "x", image.channels);
  EIGENNET_CHECK(static_cast<int64_t>(image.pixels.size()) == image.bytes(), "face_crop: the picture holds ",
                 image.pixels.size(), " bytes, not ", image.width, "x", image.height, "x", image.channels);
  const FaceCropGeometry g = face_crop_geometry(face, options);
  EIGENNET_CHECK(std::isfinite(g.side) && g.side > 0 && std::isfinite(g.center.x) && std::isfinite(g.center.y),
                 "face_crop: the detection gives an empty or invalid crop (side ", g.side, ")");
  const int in_c = image.channels, out_c = options.grayscale ? 1 : in_c;
  // Sampled at (at least) the picture's own resolution inside the crop, then filtered down.
  const float native = std::ceil(g.side);
  const int n = std::max(size, native >= 4096.0f ? 4096 : static_cast<int>(native));
  const float step = g.side / static_cast<float>(n), c = std::cos(g.angle), s = std::sin(g.angle);
  std::vector<uint8_t> sampled(static_cast<size_t>(n) * n * out_c);
  const auto pixel = [&](int x, int y, int k) {
    x = std::min(std::max(x, 0), image.width - 1);
    y = std::min(std::max(y, 0), image.height - 1);
    return static_cast<float>(image.pixels[(static_cast<size_t>(y) * image.width + x) * in_c + k]);
  };
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) {
      // Pixel centre in the crop's frame, relative to the crop centre, then turned into the picture.
      const float u = (static_cast<float>(i) + 0.5f) * step - 0.5f * g.side;
      const float v = (static_cast<float>(j) + 0.5f) * step - 0.5f * g.side;
      const float x = g.center.x + c * u - s * v - 0.5f, y = g.center.y + s * u + c * v - 0.5f;
      const int x0 = static_cast<int>(std::floor(x)), y0 = static_cast<int>(std::floor(y));
      const float fx = x - static_cast<float>(x0), fy = y - static_cast<float>(y0);
      float value[3];
      for (int k = 0; k < in_c; ++k)
        value[k] = (1 - fy) * ((1 - fx) * pixel(x0, y0, k) + fx * pixel(x0 + 1, y0, k)) +
                   fy * ((1 - fx) * pixel(x0, y0 + 1, k) + fx * pixel(x0 + 1, y0 + 1, k));
      uint8_t* o = sampled.data() + (static_cast<size_t>(j) * n + i) * out_c;
      if (out_c == 1 && in_c == 3) {
        o[0] = detail::luma(static_cast<int>(std::lround(value[0])), static_cast<int>(std::lround(value[1])),
                            static_cast<int>(std::lround(value[2])));
      } else {
        for (int k = 0; k < out_c; ++k) o[k] = static_cast<uint8_t>(std::lround(value[k]));
      }
    }
  Image out;
  out.width = out.height = size;
  out.channels = out_c;
  out.pixels.resize(static_cast<size_t>(size) * size * out_c);
  EIGENNET_CHECK(resize_image(sampled.data(), n, n, out_c, out.pixels.data(), size, size),
                 "face_crop: resizing ", n, "x", n, " to ", size, "x", size, " failed");
  return out;
}

// The face cropped at several sizes (multiples of options.scale), for averaging a classifier's
// probabilities over them.
inline std::vector<Image> face_crops(const Image& image, const FaceDetection& face, int size,
                                     const FaceCropOptions& options = {},
                                     const std::vector<float>& scales = {0.9f, 1.0f, 1.1f}) {
  std::vector<Image> out;
  for (float s : scales) {
    EIGENNET_CHECK(s > 0 && std::isfinite(s), "face_crops: invalid scale ", s);
    FaceCropOptions o = options;
    o.scale *= s;
    out.push_back(face_crop(image, face, size, o));
  }
  return out;
}

}  // namespace eigennet
