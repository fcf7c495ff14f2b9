// Canvas: a small RGB raster for the library's plots (confusion matrices, training curves).
// Lines (Bresenham, square brush for thickness), rectangles, text from stb_easy_font (a bitmap
// font made of quads, drawn here at an integer scale so it stays crisp) and PNG output through
// stb_image_write, written atomically.
//
// stb is header-only; each translation unit that includes this header gets its own static copy
// of stb_image_write (STB_IMAGE_WRITE_STATIC), so nothing has to be compiled separately. If the
// including file already included stb_image_write.h itself, its declarations are used instead
// and that file is responsible for providing the implementation.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../io/atomic_file.hpp"
#include "color.hpp"

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-align"
#endif
#ifndef INCLUDE_STB_IMAGE_WRITE_H
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#undef STB_IMAGE_WRITE_IMPLEMENTATION
#undef STB_IMAGE_WRITE_STATIC
#endif
#include <stb_easy_font.h>  // all of it is static already
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace eigennet {

enum class HAlign { left, center, right };
enum class VAlign { top, middle, bottom };

class Canvas {
 public:
  // stb_easy_font glyph metrics in font units: capitals are 7 units tall, descenders (g, p, y)
  // reach 2 units lower. Text boxes below are measured on the capital height.
  static constexpr int font_cap_height = 7;
  static constexpr int font_descent = 2;

  Canvas(int width, int height, Color background = colors::white) : width_(width), height_(height) {
    EIGENNET_CHECK(width > 0 && height > 0 && width <= 16384 && height <= 16384, "Canvas: invalid size ", width,
                   "x", height);
    pixels_.resize(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
    clear(background);
  }

  int width() const { return width_; }
  int height() const { return height_; }
  // Row-major RGB bytes, 3 per pixel.
  const std::vector<uint8_t>& pixels() const { return pixels_; }

  Color pixel(int x, int y) const {
    EIGENNET_CHECK(contains(x, y), "Canvas::pixel: (", x, ", ", y, ") is outside the ", width_, "x", height_,
                   " canvas");
    const uint8_t* p = &pixels_[offset(x, y)];
    return {p[0], p[1], p[2]};
  }
  bool contains(int x, int y) const { return x >= 0 && y >= 0 && x < width_ && y < height_; }

  void clear(Color color) { fill_rect(0, 0, width_, height_, color); }

  // Drawing is clipped to the canvas: shapes may extend past its edges.
  void set_pixel(int x, int y, Color color) {
    if (!contains(x, y)) return;
    uint8_t* p = &pixels_[offset(x, y)];
    p[0] = color.r;
    p[1] = color.g;
    p[2] = color.b;
  }

  void fill_rect(int x, int y, int w, int h, Color color) {
    const int x0 = std::max(x, 0), y0 = std::max(y, 0);
    const int x1 = std::min(x + w, width_), y1 = std::min(y + h, height_);
    for (int row = y0; row < y1; ++row)
      for (int col = x0; col < x1; ++col) set_pixel(col, row, color);
  }

  // The outline of the rectangle [x, x + w) x [y, y + h), `thickness` pixels drawn inwards.
  void draw_rect(int x, int y, int w, int h, Color color, int thickness = 1) {
    thickness = std::max(1, std::min({thickness, w, h}));
    fill_rect(x, y, w, thickness, color);
    fill_rect(x, y + h - thickness, w, thickness, color);
    fill_rect(x, y, thickness, h, color);
    fill_rect(x + w - thickness, y, thickness, h, color);
  }

  // A line from (x0, y0) to (x1, y1), both ends included (Bresenham), with a square brush of
  // `thickness` pixels centered on the ideal line.
  void draw_line(int x0, int y0, int x1, int y1, Color color, int thickness = 1) {
    const int before = (std::max(thickness, 1) - 1) / 2;
    const int size = std::max(thickness, 1);
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int step_x = x0 < x1 ? 1 : -1, step_y = y0 < y1 ? 1 : -1;
    int error = dx + dy;
    for (;;) {
      fill_rect(x0 - before, y0 - before, size, size, color);
      if (x0 == x1 && y0 == y1) break;
      const int twice = 2 * error;
      if (twice >= dy) {
        error += dy;
        x0 += step_x;
      }
      if (twice <= dx) {
        error += dx;
        y0 += step_y;
      }
    }
  }

  // Pixel size of `text` at `scale`: width of the ink, height of a capital letter.
  struct TextSize {
    int width = 0;
    int height = 0;
  };
  static TextSize measure_text(std::string_view text, int scale) {
    int width = 0;
    for (const GlyphQuad& q : glyph_quads(text)) width = std::max(width, q.x + q.w);
    return {width * scale, font_cap_height * scale};
  }

  // Horizontal text. (x, y) is the anchor: `halign` says which side of the text it is on and
  // `valign` which part of the capital height (descenders hang below the box).
  void draw_text(int x, int y, std::string_view text, Color color, int scale = 2, HAlign halign = HAlign::left,
                 VAlign valign = VAlign::top) {
    scale = std::max(scale, 1);
    const TextSize size = measure_text(text, scale);
    const int left = x - (halign == HAlign::center ? size.width / 2 : halign == HAlign::right ? size.width : 0);
    const int top = y - (valign == VAlign::middle ? size.height / 2 : valign == VAlign::bottom ? size.height : 0);
    for (const GlyphQuad& q : glyph_quads(text))
      fill_rect(left + q.x * scale, top + q.y * scale, q.w * scale, q.h * scale, color);
  }

  // Text rotated 90 degrees counter-clockwise (reads bottom to top, like a y-axis title),
  // centered on (center_x, center_y).
  void draw_text_vertical(int center_x, int center_y, std::string_view text, Color color, int scale = 2) {
    scale = std::max(scale, 1);
    const TextSize size = measure_text(text, scale);
    // Text coordinates (u right, v down) map to canvas (left + v, bottom - u).
    const int left = center_x - size.height / 2;
    const int bottom = center_y + size.width / 2;
    for (const GlyphQuad& q : glyph_quads(text))
      fill_rect(left + q.y * scale, bottom - (q.x + q.w) * scale, q.h * scale, q.w * scale, color);
  }

  // The image as PNG bytes.
  std::vector<uint8_t> encode_png() const {
    std::vector<uint8_t> bytes;
    auto append = [](void* context, void* data, int size) {
      auto* out = static_cast<std::vector<uint8_t>*>(context);
      const auto* begin = static_cast<const uint8_t*>(data);
      out->insert(out->end(), begin, begin + size);
    };
    const int ok = stbi_write_png_to_func(append, &bytes, width_, height_, 3, pixels_.data(), width_ * 3);
    EIGENNET_CHECK(ok != 0 && !bytes.empty(), "Canvas: PNG encoding of a ", width_, "x", height_, " image failed");
    return bytes;
  }

  // Writes the image as a PNG file (temporary file + rename). Throws Error naming `path`.
  void save_png(const std::string& path) const {
    const std::vector<uint8_t> bytes = encode_png();
    write_file_atomically(path, bytes.data(), bytes.size());
  }

 private:
  // One filled rectangle of a glyph, in font units relative to the text's top-left corner.
  struct GlyphQuad {
    int x, y, w, h;
  };
  static std::vector<GlyphQuad> glyph_quads(std::string_view text) {
    // stb_easy_font indexes a table with (c - 32) and knows only printable ASCII: anything else
    // (control characters, bytes of UTF-8 sequences) is drawn as '?'.
    std::string printable(text);
    for (char& c : printable)
      if (c < 32 || c > 126) c = '?';
    // At most 11 quads ('X') of 64 bytes (16 floats) per glyph; floats keep the buffer aligned
    // for stb's float stores.
    std::vector<float> vertices(printable.size() * 16 * 16 + 16);
    const int quads = stb_easy_font_print(0.0f, 0.0f, printable.data(), nullptr, vertices.data(),
                                          static_cast<int>(vertices.size() * sizeof(float)));
    std::vector<GlyphQuad> result;
    result.reserve(static_cast<size_t>(quads));
    for (int i = 0; i < quads; ++i) {
      // Each vertex is x, y, z, color (16 bytes); vertices 0 and 2 are opposite corners.
      const float* v = &vertices[static_cast<size_t>(i) * 16];
      const int x0 = static_cast<int>(v[0]), y0 = static_cast<int>(v[1]);
      const int x1 = static_cast<int>(v[8]), y1 = static_cast<int>(v[9]);
      result.push_back({x0, y0, x1 - x0, y1 - y0});
    }
    return result;
  }

  size_t offset(int x, int y) const {
    return (static_cast<size_t>(y) * static_cast<size_t>(width_) + static_cast<size_t>(x)) * 3;
  }

  int width_;
  int height_;
  std::vector<uint8_t> pixels_;
};

}  // namespace eigennet
