// The decoded image in memory and the options of decoding, shared by the format decoders
// (jpeg.hpp, png.hpp) and the public entry points in image.hpp.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace eigennet {

// The color layout images are kept in: 1 channel (grayscale) or 3 (RGB).
enum class ColorMode { grayscale, rgb };

inline int channels_of(ColorMode mode) { return mode == ColorMode::grayscale ? 1 : 3; }
inline const char* to_string(ColorMode mode) { return mode == ColorMode::grayscale ? "grayscale" : "rgb"; }

// What happens to the alpha channel of RGBA and gray+alpha files.
enum class AlphaMode {
  composite_black,  // color * alpha / 255: transparent areas become black, as if drawn on black
  drop,             // alpha ignored: transparent pixels keep whatever color they store
};

// Files beyond these limits are refused before decoding.
struct ImageLimits {
  int max_side = 16384;                       // width and height, pixels
  int64_t max_pixels = int64_t{1} << 26;      // width * height (64 Mpixel: 256 MB as RGBA)
  int64_t max_file_bytes = int64_t{1} << 28;  // 256 MB
};

// Everything decode_image and read_image can be told.
struct DecodeOptions {
  ColorMode color = ColorMode::rgb;
  AlphaMode alpha = AlphaMode::composite_black;
  ImageLimits limits;
  // Turns the image upright as its EXIF Orientation tag says (JPEG APP1 segment, PNG eXIf
  // chunk), so that a phone photo taken sideways comes out as it was seen, as Pillow's
  // ImageOps.exif_transpose, OpenCV's imread and torchvision's decode_jpeg do. false: the pixels
  // as stored.
  bool apply_exif_orientation = true;
  // The smallest size the caller needs, upright (0 = full size). A JPEG at least twice as large
  // in both directions is decoded at 1/2, 1/4 or 1/8 scale by its inverse DCT (as Pillow's
  // draft() does): the strongest reduction that keeps the image at least this large. The caller
  // resizes the result to its exact size. Other formats always decode at full size.
  int min_height = 0;
  int min_width = 0;
};

struct Image {
  int height = 0;
  int width = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels

  int64_t bytes() const { return int64_t{height} * width * channels; }
  uint8_t at(int y, int x, int c) const { return pixels[static_cast<size_t>((int64_t{y} * width + x) * channels + c)]; }
};

// Checks the dimensions an image header announces against the limits. Returns an empty string
// when they are acceptable, the reason otherwise.
inline std::string check_image_limits(int width, int height, const ImageLimits& limits) {
  const auto size = [&] { return std::to_string(width) + "x" + std::to_string(height); };
  if (width <= 0 || height <= 0) return "invalid dimensions " + size();
  if (width > limits.max_side || height > limits.max_side)
    return "dimensions " + size() + " exceed the limit of " + std::to_string(limits.max_side) + " pixels per side";
  if (int64_t{width} * height > limits.max_pixels)
    return "dimensions " + size() + " exceed the limit of " + std::to_string(limits.max_pixels) + " pixels";
  return {};
}

namespace detail {

// ITU-R BT.601 luma in integer arithmetic (the weights sum to 256, so white stays 255), rounded.
inline uint8_t luma(int r, int g, int b) { return static_cast<uint8_t>((77 * r + 150 * g + 29 * b + 128) >> 8); }
inline uint8_t premultiply(int value, int alpha) { return static_cast<uint8_t>((value * alpha + 127) / 255); }

// Converts `count` pixels of `in_channels` (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) to
// `out_channels` (1 or 3).
inline void convert_pixels(const uint8_t* in, int in_channels, uint8_t* out, int out_channels, int64_t count,
                           AlphaMode alpha) {
  const bool composite = alpha == AlphaMode::composite_black;
  if (in_channels == out_channels) {
    std::memcpy(out, in, static_cast<size_t>(count * in_channels));
    return;
  }
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* p = in + i * in_channels;
    int r, g, b;
    if (in_channels <= 2) {
      const int gray = (in_channels == 2 && composite) ? premultiply(p[0], p[1]) : p[0];
      r = g = b = gray;
    } else {
      r = p[0];
      g = p[1];
      b = p[2];
      if (in_channels == 4 && composite) {
        r = premultiply(r, p[3]);
        g = premultiply(g, p[3]);
        b = premultiply(b, p[3]);
      }
    }
    uint8_t* q = out + i * out_channels;
    if (out_channels == 1) {
      q[0] = in_channels <= 2 ? static_cast<uint8_t>(r) : luma(r, g, b);
    } else {
      q[0] = static_cast<uint8_t>(r);
      q[1] = static_cast<uint8_t>(g);
      q[2] = static_cast<uint8_t>(b);
    }
  }
}

}  // namespace detail
}  // namespace eigennet
