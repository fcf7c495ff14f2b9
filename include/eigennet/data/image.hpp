// Image: an 8-bit picture in memory (rows top to bottom, channels interleaved: HWC), decoded from
// a JPEG (libjpeg-turbo, jpeg.hpp), PNG (libpng, png.hpp) or BMP (stb_image) file, turned upright
// by its EXIF orientation, converted to grayscale or RGB, and resized with stb's triangle
// (bilinear) filter.
//
// The format is recognized by the file's first bytes, never by its name. Other formats (GIF,
// WebP, TIFF, PNM, HEIF, ...) are refused with a message that names them and the supported
// ones: stb_image (Debian 12's 2.27) decodes only BMP here, the one format of its that survived
// the fuzz campaign (fuzz/README.md); its JPEG, PNG and PNM decoders did not. A BMP shorter than
// its pixel rows is refused first: stb_image would decode the missing rows as black.
//
// Decoding never throws: it reports the reason (the decoder's own, or a size limit) so that a
// loader decoding thousands of files in parallel can skip bad ones with a message. Dimensions are
// checked from the header before anything is allocated for the pixels, so a file that claims to
// be 100000 x 100000 pixels is refused at once.
#pragma once

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "exif.hpp"
#include "image_types.hpp"
#include "jpeg.hpp"
#include "png.hpp"
#include "stb.hpp"

namespace eigennet {

// For messages: the formats decode_image accepts.
inline const char* supported_image_formats() { return "JPEG, PNG and BMP"; }

namespace detail {

enum class ImageFormat { jpeg, png, bmp, unsupported };

// The format from the first bytes (magic numbers); `name` says what an unsupported file seems to
// be, for the message.
inline ImageFormat image_format(const uint8_t* p, size_t size, std::string& name) {
  const auto starts = [&](const char* magic, size_t at = 0) {
    const size_t n = std::strlen(magic);
    return size >= at + n && std::memcmp(p + at, magic, n) == 0;
  };
  if (size >= 2 && p[0] == 0xFF && p[1] == 0xD8) return ImageFormat::jpeg;
  if (starts("\x89PNG\r\n\x1a\n")) return ImageFormat::png;
  if (starts("BM")) return ImageFormat::bmp;
  if (starts("GIF87a") || starts("GIF89a")) {
    name = "a GIF file";
  } else if (starts("RIFF") && starts("WEBP", 8)) {
    name = "a WebP file";
  } else if (size >= 4 && ((p[0] == 'I' && p[1] == 'I' && p[2] == 42 && p[3] == 0) ||
                            (p[0] == 'M' && p[1] == 'M' && p[2] == 0 && p[3] == 42))) {
    name = "a TIFF file";
  } else if (size >= 3 && p[0] == 'P' && p[1] >= '1' && p[1] <= '7' &&
             (p[2] == ' ' || p[2] == '\t' || p[2] == '\r' || p[2] == '\n')) {
    name = "a PNM (PBM/PGM/PPM/PAM) file";
  } else if (starts("ftyp", 4) && (starts("heic", 8) || starts("heix", 8) || starts("mif1", 8) || starts("avif", 8))) {
    name = "a HEIF/AVIF file";
  } else if (starts("8BPS")) {
    name = "a Photoshop (PSD) file";
  }
  return ImageFormat::unsupported;
}

// stb_image decodes the rows a truncated BMP lacks as black, so a 300-byte file could announce
// (and be decoded to) a 5-megapixel image (fuzz_image found one). stb_image reads only
// uncompressed BMPs, whose pixel data has a known size: rows of width x bits-per-pixel padded to
// 4 bytes, from the data offset in the file header on. A file shorter than that is refused.
// Called after stbi_info has accepted the header (so it is at least 26 bytes long).
inline std::string check_bmp_length(const uint8_t* p, size_t size, int width, int height) {
  const auto u16 = [&](size_t at) { return uint32_t{p[at]} | uint32_t{p[at + 1]} << 8; };
  const uint32_t offset = u16(10) | u16(12) << 16, header = u16(14) | u16(16) << 16;
  const size_t bits_at = header == 12 ? 24 : 28;  // OS/2 BITMAPCOREHEADER, or BITMAPINFOHEADER and later
  if (size < bits_at + 2) return "truncated BMP header";
  const int64_t row_bits = int64_t{width} * u16(bits_at);
  const int64_t needed = int64_t{offset} + (row_bits + 31) / 32 * 4 * (height - 1) + (row_bits + 7) / 8;
  if (needed <= static_cast<int64_t>(size)) return {};
  return "truncated BMP: " + std::to_string(width) + "x" + std::to_string(height) + " pixels of " +
         std::to_string(u16(bits_at)) + " bits need " + std::to_string(needed) + " bytes, the file has " +
         std::to_string(size);
}

// BMP through stb_image: the header's dimensions first, then the pixels.
inline bool decode_bmp(const uint8_t* data, size_t size, const DecodeOptions& options, bool header_only, Image& out,
                       std::string& error) {
  if (size > static_cast<size_t>(INT_MAX)) {
    error = "BMP file larger than 2 GB";
    return false;
  }
  const int length = static_cast<int>(size);
  int width = 0, height = 0, file_channels = 0;
  if (!stbi_info_from_memory(data, length, &width, &height, &file_channels)) {
    error = std::string("corrupt or unsupported BMP (stb_image: ") + stbi_failure_reason() + ")";
    return false;
  }
  error = check_image_limits(width, height, options.limits);
  if (error.empty()) error = check_bmp_length(data, size, width, height);
  if (!error.empty()) return false;
  out.width = width;
  out.height = height;
  if (header_only) return true;
  stbi_uc* decoded = stbi_load_from_memory(data, length, &width, &height, &file_channels, 0);
  if (!decoded) {
    error = std::string("corrupt or unsupported BMP (stb_image: ") + stbi_failure_reason() + ")";
    return false;
  }
  out.channels = channels_of(options.color);
  out.pixels.resize(static_cast<size_t>(out.bytes()));
  convert_pixels(decoded, file_channels, out.pixels.data(), out.channels, int64_t{width} * height, options.alpha);
  stbi_image_free(decoded);
  return true;
}

inline bool decode_any(const uint8_t* data, size_t size, const DecodeOptions& options, bool header_only, Image& out,
                       std::string& error) {
  if (size == 0) {
    error = "empty file (0 bytes)";
    return false;
  }
  std::string format;
  switch (image_format(data, size, format)) {
    case ImageFormat::jpeg: return decode_jpeg(data, size, options, header_only, out, error);
    case ImageFormat::png: return decode_png(data, size, options, header_only, out, error);
    case ImageFormat::bmp: return decode_bmp(data, size, options, header_only, out, error);
    case ImageFormat::unsupported: break;
  }
  error = (format.empty() ? std::string("not an image file of a supported format")
                          : "unsupported image format: " + format) +
          " (supported: " + supported_image_formats() + ")";
  return false;
}

}  // namespace detail

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

// Decodes an encoded image held in memory into `out` (reusing its capacity): 1 channel
// (grayscale) or 3 (RGB), upright, at full size or reduced as options.min_height/min_width
// allow. Returns false and sets `error` (the decoder's reason, or the limit that was hit) when
// the data is not a decodable image.
inline bool decode_image(const uint8_t* data, size_t size, const DecodeOptions& options, Image& out,
                         std::string& error) {
  return detail::decode_any(data, size, options, false, out, error);
}

inline bool decode_image(const uint8_t* data, size_t size, ColorMode color, AlphaMode alpha, const ImageLimits& limits,
                         Image& out, std::string& error) {
  DecodeOptions options;
  options.color = color;
  options.alpha = alpha;
  options.limits = limits;
  return decode_image(data, size, options, out, error);
}

// Reads and decodes a file. Returns false and sets `error` on failure (see decode_image).
inline bool read_image(const std::string& path, const DecodeOptions& options, Image& out, std::string& error) {
  thread_local std::vector<uint8_t> bytes;
  if (!read_file_bytes(path, options.limits, bytes, error)) return false;
  return decode_image(bytes.data(), bytes.size(), options, out, error);
}

inline bool read_image(const std::string& path, ColorMode color, AlphaMode alpha, const ImageLimits& limits, Image& out,
                       std::string& error) {
  DecodeOptions options;
  options.color = color;
  options.alpha = alpha;
  options.limits = limits;
  return read_image(path, options, out, error);
}

// The size decode_image would produce at full scale (upright, when options say so), from the
// file's header without decoding the pixels. An eXIf chunk after a PNG's image data is not seen
// here (decoding sees it).
inline bool read_image_size(const std::string& path, const DecodeOptions& options, int& width, int& height,
                            std::string& error) {
  thread_local std::vector<uint8_t> bytes;
  if (!read_file_bytes(path, options.limits, bytes, error)) return false;
  Image header;
  if (!detail::decode_any(bytes.data(), bytes.size(), options, true, header, error)) return false;
  width = header.width;
  height = header.height;
  return true;
}

inline bool read_image_size(const std::string& path, int& width, int& height, std::string& error) {
  return read_image_size(path, DecodeOptions{}, width, height, error);
}

// Convenience: reads an image or throws an Error that names the file and the reason.
inline Image load_image(const std::string& path, const DecodeOptions& options) {
  Image image;
  std::string error;
  EIGENNET_CHECK(read_image(path, options, image, error), "load_image: '", path, "': ", error);
  return image;
}

inline Image load_image(const std::string& path, ColorMode color = ColorMode::rgb,
                        AlphaMode alpha = AlphaMode::composite_black, const ImageLimits& limits = {}) {
  DecodeOptions options;
  options.color = color;
  options.alpha = alpha;
  options.limits = limits;
  return load_image(path, options);
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
