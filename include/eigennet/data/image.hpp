// Image: an 8-bit picture in memory (rows top to bottom, channels interleaved: HWC), decoded from
// JPEG, PNG, BMP or PNM by stb_image, converted to grayscale or RGB, and resized with stb's
// triangle (bilinear) filter.
//
// Decoding never throws: it reports the reason (stb's own, or a size limit) so that a loader
// decoding thousands of files in parallel can skip bad ones with a message. Dimensions are
// checked from the header (stbi_info) before anything is decoded, so a file that claims to be
// 100000 x 100000 pixels is refused without allocating for it. Before stb_image sees the data, a
// few checks refuse files that corrupt memory, overflow or over-allocate inside Debian 12's
// stb_image 2.27 (found by fuzz/fuzz_image; see detail::check_before_stb).
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "stb.hpp"

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

struct Image {
  int height = 0;
  int width = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels

  int64_t bytes() const { return int64_t{height} * width * channels; }
  uint8_t at(int y, int x, int c) const { return pixels[static_cast<size_t>((int64_t{y} * width + x) * channels + c)]; }
};

namespace detail {

// ITU-R BT.601 luma in integer arithmetic, the weights stb_image itself uses (they sum to 256,
// so white stays 255); rounded rather than truncated.
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

inline std::string describe_size(int width, int height) { return std::to_string(width) + "x" + std::to_string(height); }

// stb_image 2.27 (Debian 12's) trusts the code counts of a JPEG Huffman table (DHT segment):
// more than 256 codes in one table write past its fixed-size arrays, already while reading the
// header (stbi_info), so a crafted file corrupts memory (upstream fixed it in 2.28). This walks
// the marker segments as stb_image does (skipping stray bytes between segments, entropy-coded
// data up to the next marker that is not a restart, and reading every table of a DHT segment
// even past its declared length) and returns false when a table declares more than 256 codes.
// Data that is not a JPEG (no SOI marker at the start) passes.
inline bool jpeg_huffman_tables_fit(const uint8_t* p, size_t size) {
  size_t i = 0;
  if (size < 2 || p[i] != 0xFF) return true;
  while (i < size && p[i] == 0xFF) ++i;  // stb skips fill bytes before any marker code
  if (i >= size || p[i] != 0xD8) return true;
  ++i;
  while (i < size) {
    if (p[i] != 0xFF) {  // stray byte between segments
      ++i;
      continue;
    }
    while (i < size && p[i] == 0xFF) ++i;
    if (i >= size) break;
    const uint8_t marker = p[i++];
    if (marker == 0xD9) break;                                     // EOI
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // no length
    if (i + 2 > size) break;
    const size_t length = size_t{p[i]} << 8 | p[i + 1];
    if (marker == 0xC4) {  // DHT: class/id byte, 16 code counts, then the symbols; repeated
      size_t table = i + 2;
      for (int64_t remaining = static_cast<int64_t>(length) - 2; remaining > 0 && table < size;) {
        size_t codes = 0;
        for (size_t k = 1; k <= 16; ++k) codes += table + k < size ? p[table + k] : 0;  // stb reads 0 past the end
        if (codes > 256) return false;
        table += 17 + codes;
        remaining -= static_cast<int64_t>(17 + codes);
      }
      i = table;
      continue;
    }
    i += length;
    if (marker == 0xDA) {  // SOS: after the scan header, entropy-coded data up to a marker other than RSTn
      while (i < size) {
        if (p[i] != 0xFF) {
          ++i;
          continue;
        }
        size_t next = i + 1;
        while (next < size && p[next] == 0xFF) ++next;
        if (next < size && (p[next] == 0x00 || (p[next] >= 0xD0 && p[next] <= 0xD7))) {
          i = next + 1;  // stuffed 0xFF or a restart marker: still entropy-coded data
          continue;
        }
        break;  // i is at the 0xFF of the next marker
      }
    }
  }
  return true;
}

// stb_image reserves memory for a PNG IDAT chunk as large as the chunk claims (up to 2 GB)
// before it finds that the data is not there. stb cannot decode a PNG in which a chunk before
// IEND runs past the end of the file anyway, so such a file is refused up front. Returns the
// reason, empty when the data is not a PNG or its chunks fit.
inline std::string check_png_chunks(const uint8_t* p, size_t size) {
  static const uint8_t signature[8] = {137, 80, 78, 71, 13, 10, 26, 10};
  if (size < 8 || std::memcmp(p, signature, 8) != 0) return {};
  const auto be32 = [&](size_t at) {
    return uint32_t{p[at]} << 24 | uint32_t{p[at + 1]} << 16 | uint32_t{p[at + 2]} << 8 | uint32_t{p[at + 3]};
  };
  for (size_t i = 8; size - i >= 8;) {
    const uint32_t length = be32(i);
    if (std::memcmp(p + i + 4, "IEND", 4) == 0) break;
    const size_t left = size - i - 8;  // after the chunk's length and type
    if (length > left || left - length < 4)
      return "truncated or corrupt PNG: a chunk claims " + std::to_string(length) + " bytes but " +
             std::to_string(left) + " bytes are left in the file";
    i += 12 + size_t{length};
  }
  return {};
}

// stb_image 2.27 reads the width, height and maximum value of a PNM header into an int without
// an overflow check (undefined behaviour; fixed upstream in 2.28). Reads them as stb_image does
// (whitespace and # comments between them) and returns false when one does not fit in an int.
// Data that is not a binary PGM/PPM ("P5"/"P6") passes.
inline bool pnm_header_numbers_fit(const uint8_t* p, size_t size) {
  if (size < 2 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return true;
  const auto is_space = [](uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  size_t i = 2;
  for (int number = 0; number < 3; ++number) {
    for (;;) {  // whitespace, then a comment up to the end of its line, repeated
      while (i < size && is_space(p[i])) ++i;
      if (i >= size || p[i] != '#') break;
      while (i < size && p[i] != '\n' && p[i] != '\r') ++i;
    }
    int64_t value = 0;
    for (; i < size && p[i] >= '0' && p[i] <= '9'; ++i) {
      value = value * 10 + (p[i] - '0');
      if (value > INT32_MAX) return false;
    }
  }
  return true;
}

// The checks above, in one: the reason stb_image must not see these bytes, or an empty string.
inline std::string check_before_stb(const uint8_t* data, size_t size) {
  if (!jpeg_huffman_tables_fit(data, size))
    return "corrupt JPEG: a Huffman table (DHT segment) declares more than 256 codes";
  if (!pnm_header_numbers_fit(data, size)) return "corrupt PNM: a number in the header does not fit in 32 bits";
  return check_png_chunks(data, size);
}

}  // namespace detail

// Checks the dimensions an image header announces against the limits. Returns an empty string
// when they are acceptable, the reason otherwise.
inline std::string check_image_limits(int width, int height, const ImageLimits& limits) {
  if (width <= 0 || height <= 0) return "invalid dimensions " + detail::describe_size(width, height);
  if (width > limits.max_side || height > limits.max_side)
    return "dimensions " + detail::describe_size(width, height) + " exceed the limit of " +
           std::to_string(limits.max_side) + " pixels per side";
  if (int64_t{width} * height > limits.max_pixels)
    return "dimensions " + detail::describe_size(width, height) + " exceed the limit of " +
           std::to_string(limits.max_pixels) + " pixels";
  return {};
}

// Reads a whole file into `bytes` (reusing its capacity). Returns false and sets `error` when the
// file cannot be read or is empty or too large.
inline bool read_file_bytes(const std::string& path, const ImageLimits& limits, std::vector<uint8_t>& bytes,
                            std::string& error) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) {
    error = std::string("cannot open file: ") + std::strerror(errno);
    return false;
  }
  bool ok = std::fseek(file, 0, SEEK_END) == 0;
  const long size = ok ? std::ftell(file) : -1;
  ok = ok && size >= 0 && std::fseek(file, 0, SEEK_SET) == 0;
  if (!ok) {
    error = "cannot determine the file size (not a regular file?)";
  } else if (size == 0) {
    error = "empty file (0 bytes)";
    ok = false;
  } else if (size > limits.max_file_bytes) {
    error = "file of " + std::to_string(size) + " bytes exceeds the limit of " + std::to_string(limits.max_file_bytes) +
            " bytes";
    ok = false;
  } else {
    bytes.resize(static_cast<size_t>(size));
    if (std::fread(bytes.data(), 1, bytes.size(), file) != bytes.size()) {
      error = "read error";
      ok = false;
    }
  }
  std::fclose(file);
  return ok;
}

// Decodes an encoded image held in memory into `out` (reusing its capacity) with 1 channel
// (grayscale) or 3 (RGB). Returns false and sets `error` (stb_image's reason, or the limit that
// was hit) when the data is not a decodable image.
inline bool decode_image(const uint8_t* data, size_t size, ColorMode color, AlphaMode alpha, const ImageLimits& limits,
                         Image& out, std::string& error) {
  if (size == 0) {
    error = "empty file (0 bytes)";
    return false;
  }
  if (size > static_cast<size_t>(INT32_MAX)) {
    error = "encoded image larger than 2 GB";
    return false;
  }
  const int length = static_cast<int>(size);
  error = detail::check_before_stb(data, size);
  if (!error.empty()) return false;
  int width = 0, height = 0, file_channels = 0;
  if (!stbi_info_from_memory(data, length, &width, &height, &file_channels)) {
    error = std::string("not a readable image (stb_image: ") + stbi_failure_reason() + ")";
    return false;
  }
  error = check_image_limits(width, height, limits);
  if (!error.empty()) return false;

  stbi_uc* decoded = stbi_load_from_memory(data, length, &width, &height, &file_channels, 0);
  if (!decoded) {
    error = std::string("cannot decode (stb_image: ") + stbi_failure_reason() + ")";
    return false;
  }
  out.height = height;
  out.width = width;
  out.channels = channels_of(color);
  out.pixels.resize(static_cast<size_t>(out.bytes()));
  detail::convert_pixels(decoded, file_channels, out.pixels.data(), out.channels, int64_t{width} * height, alpha);
  stbi_image_free(decoded);
  return true;
}

// Reads and decodes a file. Returns false and sets `error` on failure (see decode_image).
inline bool read_image(const std::string& path, ColorMode color, AlphaMode alpha, const ImageLimits& limits, Image& out,
                       std::string& error) {
  thread_local std::vector<uint8_t> bytes;
  if (!read_file_bytes(path, limits, bytes, error)) return false;
  return decode_image(bytes.data(), bytes.size(), color, alpha, limits, out, error);
}

// Reads the dimensions from a file's header without decoding the pixels.
inline bool read_image_size(const std::string& path, int& width, int& height, std::string& error) {
  // The whole file, not stbi_info on the path: stb_image must not see data that fails the checks.
  thread_local std::vector<uint8_t> bytes;
  if (!read_file_bytes(path, ImageLimits{}, bytes, error)) return false;
  error = detail::check_before_stb(bytes.data(), bytes.size());
  if (!error.empty()) return false;
  int channels = 0;
  if (stbi_info_from_memory(bytes.data(), static_cast<int>(bytes.size()), &width, &height, &channels)) return true;
  error = std::string("not a readable image (stb_image: ") + stbi_failure_reason() + ")";
  return false;
}

// Convenience: reads an image or throws an Error that names the file and the reason.
inline Image load_image(const std::string& path, ColorMode color = ColorMode::rgb,
                        AlphaMode alpha = AlphaMode::composite_black, const ImageLimits& limits = {}) {
  Image image;
  std::string error;
  EIGENNET_CHECK(read_image(path, color, alpha, limits, image, error), "load_image: '", path, "': ", error);
  return image;
}

// Resizes an 8-bit HWC image with stb_image_resize's triangle filter: bilinear interpolation
// when enlarging, a correspondingly wider tent (an area average that avoids aliasing) when
// shrinking; edges clamp. Same-size input is copied. Returns false only when stb cannot allocate
// its scratch memory.
inline bool resize_image(const uint8_t* in, int in_height, int in_width, int channels, uint8_t* out, int out_height,
                         int out_width) {
  if (in_height == out_height && in_width == out_width) {
    std::memcpy(out, in, static_cast<size_t>(int64_t{in_height} * in_width * channels));
    return true;
  }
  return stbir_resize_uint8_generic(in, in_width, in_height, 0, out, out_width, out_height, 0, channels,
                                    STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, STBIR_FILTER_TRIANGLE,
                                    STBIR_COLORSPACE_LINEAR, nullptr) != 0;
}

inline Image resize_image(const Image& image, int height, int width) {
  EIGENNET_CHECK(height > 0 && width > 0, "resize_image: invalid target size ", width, "x", height);
  Image out;
  out.height = height;
  out.width = width;
  out.channels = image.channels;
  out.pixels.resize(static_cast<size_t>(out.bytes()));
  EIGENNET_CHECK(
      resize_image(image.pixels.data(), image.height, image.width, image.channels, out.pixels.data(), height, width),
      "resize_image: stb_image_resize failed for ", image.width, "x", image.height, " -> ", width, "x", height);
  return out;
}

}  // namespace eigennet
