// EXIF orientation: the Orientation tag (0x0112) of an EXIF block, and the flip or rotation that
// turns the stored pixels upright.
//
// Cameras and phones store the sensor's pixels as captured and record in the tag how the
// picture must be turned to be seen upright; viewers, Pillow's ImageOps.exif_transpose, OpenCV's
// imread and torchvision's decode_jpeg(apply_exif_orientation=True) apply it. Only the first
// image directory (IFD0) is read, where the tag lives; every offset is checked against the
// block, and a block that cannot be read means "as stored" (1).
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "image_types.hpp"

namespace eigennet {
namespace detail {

// The orientation (1-8) in an EXIF block that starts at its TIFF header ("II*\0" or "MM\0*"),
// 1 when there is none or the block is malformed.
inline int exif_orientation(const uint8_t* tiff, size_t size) {
  if (size < 8) return 1;
  const bool little = tiff[0] == 'I' && tiff[1] == 'I';
  if (!little && !(tiff[0] == 'M' && tiff[1] == 'M')) return 1;
  const auto u16 = [&](size_t at) {
    return little ? uint32_t{tiff[at]} | uint32_t{tiff[at + 1]} << 8 : uint32_t{tiff[at]} << 8 | uint32_t{tiff[at + 1]};
  };
  const auto u32 = [&](size_t at) { return little ? u16(at) | u16(at + 2) << 16 : u16(at) << 16 | u16(at + 2); };
  if (u16(2) != 42) return 1;
  const size_t ifd = u32(4);
  if (ifd > size - 2) return 1;
  const size_t entries = u16(ifd);
  for (size_t i = 0; i < entries; ++i) {
    const size_t entry = ifd + 2 + 12 * i;
    if (entry + 12 > size) break;  // the directory runs past the block
    if (u16(entry) != 0x0112) continue;
    // The value is inline (a single SHORT, or a LONG from a lenient writer); count must be 1.
    const uint32_t type = u16(entry + 2), count = u32(entry + 4);
    if (count != 1 || (type != 3 && type != 4)) return 1;
    const uint32_t value = type == 3 ? u16(entry + 8) : u32(entry + 8);
    return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
  }
  return 1;
}

// Whether an orientation swaps width and height (the transposing ones: 5 to 8).
inline bool orientation_transposes(int orientation) { return orientation >= 5 && orientation <= 8; }

// Turns `image` upright for `orientation` (EXIF values, as Pillow's exif_transpose maps them:
// 2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose, 6 rotate 90 clockwise,
// 7 transverse, 8 rotate 90 counter-clockwise). `scratch` is reused memory.
inline void apply_orientation(Image& image, int orientation, std::vector<uint8_t>& scratch) {
  if (orientation < 2 || orientation > 8) return;
  const int h = image.height, w = image.width, c = image.channels;
  const bool transpose = orientation_transposes(orientation);
  const int out_h = transpose ? w : h, out_w = transpose ? h : w;
  scratch.resize(image.pixels.size());
  const uint8_t* in = image.pixels.data();
  for (int y = 0; y < out_h; ++y) {
    uint8_t* row = scratch.data() + static_cast<size_t>(y) * out_w * c;
    for (int x = 0; x < out_w; ++x) {
      int sy = y, sx = x;  // the stored pixel that lands at (y, x)
      switch (orientation) {
        case 2: sx = w - 1 - x; break;
        case 3: sy = h - 1 - y; sx = w - 1 - x; break;
        case 4: sy = h - 1 - y; break;
        case 5: sy = x; sx = y; break;
        case 6: sy = h - 1 - x; sx = y; break;
        case 7: sy = h - 1 - x; sx = w - 1 - y; break;
        default: sy = x; sx = w - 1 - y; break;  // 8
      }
      std::memcpy(row + static_cast<size_t>(x) * c, in + (static_cast<size_t>(sy) * w + sx) * c, static_cast<size_t>(c));
    }
  }
  image.pixels.swap(scratch);
  image.height = out_h;
  image.width = out_w;
}

}  // namespace detail
}  // namespace eigennet
