// A picture with its detected faces drawn on it: the detector's box (green), the square crop that
// is classified (orange), the eyes, and a label above each face (stb_easy_font, as the plots).
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "../data/image.hpp"
#include "../plot/canvas.hpp"
#include "face_crop.hpp"

namespace eigennet {

// labels[i] is drawn above face i (none when labels is shorter).
inline Canvas annotate_faces(const Image& image, const std::vector<FaceDetection>& faces,
                             const std::vector<std::string>& labels = {}, const FaceCropOptions& crop = {}) {
  EIGENNET_CHECK(image.channels == 1 || image.channels == 3, "annotate_faces: images must have 1 or 3 channels, got ",
                 image.channels);
  EIGENNET_CHECK(static_cast<int64_t>(image.pixels.size()) == image.bytes(), "annotate_faces: the picture holds ",
                 image.pixels.size(), " bytes, not ", image.width, "x", image.height, "x", image.channels);
  Canvas canvas(image.width, image.height);
  for (int y = 0; y < image.height; ++y)
    for (int x = 0; x < image.width; ++x) {
      const int c = image.channels;
      canvas.set_pixel(x, y, {image.at(y, x, 0), image.at(y, x, c == 3 ? 1 : 0), image.at(y, x, c == 3 ? 2 : 0)});
    }
  const int thickness = std::max(1, std::max(image.width, image.height) / 320);
  const int text_scale = std::max(1, std::max(image.width, image.height) / 320);
  const auto round = [](float v) { return static_cast<int>(std::lround(v)); };
  for (size_t i = 0; i < faces.size(); ++i) {
    const FaceDetection& f = faces[i];
    canvas.draw_rect(round(f.box.x), round(f.box.y), round(f.box.width), round(f.box.height), colors::green, thickness);
    const Box s = face_crop_geometry(f, crop).square();
    canvas.draw_rect(round(s.x), round(s.y), round(s.width), round(s.height), colors::orange, thickness);
    for (FaceKeypoint k : {FaceKeypoint::right_eye, FaceKeypoint::left_eye}) {
      const Point& p = f.keypoint(k);
      canvas.fill_rect(round(p.x) - thickness, round(p.y) - thickness, 2 * thickness + 1, 2 * thickness + 1,
                       colors::red);
    }
    if (i < labels.size() && !labels[i].empty()) {
      const int x = round(s.x), y = std::max(0, round(s.y) - 2 * thickness);
      const Canvas::TextSize size = canvas.measure_text(labels[i], text_scale);
      const int top = std::max(0, y - size.height - 2 * text_scale);
      canvas.fill_rect(x, top, size.width + 2 * text_scale, size.height + 2 * text_scale, colors::orange);
      canvas.draw_text(x + text_scale, top + text_scale, labels[i], colors::black, text_scale);
    }
  }
  return canvas;
}

}  // namespace eigennet
