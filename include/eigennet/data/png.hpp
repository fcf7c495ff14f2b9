// PNG decoding with libpng: every bit depth (1, 2, 4, 8, 16) and color type (gray, gray+alpha,
// RGB, RGBA, palette, with tRNS transparency as an alpha channel), interlaced (Adam7) or not, and
// the EXIF orientation of an eXIf chunk. Used by decode_image (image.hpp).
//
// - libpng reports errors through a callback that longjmps back to png_guarded (never prints,
//   never aborts); decode_png returns the message. Warnings (e.g. a bad CRC in an ancillary chunk, which
//   libpng skips) are ignored.
// - The dimensions are checked against ImageLimits once libpng has read the chunks before the
//   image data, before anything is allocated for the pixels. Chunks that do not make the pixels
//   (text, color profiles, ...) are skipped, neither inflated nor stored. libpng reads the image
//   data chunk by chunk as it decodes, so a chunk that claims more bytes than the file holds
//   allocates nothing; a file that ends before its image data does is refused.
// - 16-bit samples are scaled to 8 bits with rounding (v * 255 / 65535, libpng's
//   png_set_scale_16); gamma and color-profile chunks are ignored, as by Pillow and stb_image.
// - libspng was measured too (benchmarks/bench_decode.cpp): slower than Debian's libpng here.
#pragma once

#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <png.h>

#include "exif.hpp"
#include "image_types.hpp"

namespace eigennet {
namespace detail {

struct PngInput {
  const uint8_t* data;
  size_t size;
  size_t position;
  char message[256];
};

// Frees what libpng allocated, also after an error (libpng's longjmp ends in png_guarded, whose
// caller owns this object).
struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  PngReader() = default;
  PngReader(const PngReader&) = delete;
  PngReader& operator=(const PngReader&) = delete;
  ~PngReader() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

[[noreturn]] inline void png_fail(png_structp png, png_const_charp message) {
  auto* input = static_cast<PngInput*>(png_get_error_ptr(png));
  std::snprintf(input->message, sizeof(input->message), "%s", message);
  png_longjmp(png, 1);
}

inline void png_ignore_warning(png_structp, png_const_charp) {}

inline void png_read_input(png_structp png, png_bytep out, size_t length) {
  auto* input = static_cast<PngInput*>(png_get_io_ptr(png));
  if (input->size - input->position < length) png_error(png, "the file ends early (truncated?)");
  std::memcpy(out, input->data + input->position, length);
  input->position += length;
}

inline int png_exif_orientation(png_structp png, png_infop info) {
  png_uint_32 length = 0;
  png_bytep exif = nullptr;
  if (png_get_eXIf_1(png, info, &length, &exif) == 0 || !exif) return 1;
  return exif_orientation(exif, length);
}

// Runs one call into libpng; false when libpng reported an error (the message is in the
// PngInput). The setjmp lives here, in a frame of its own, so that no local variable of
// decode_png is live across it.
template <typename Call>
bool png_guarded(png_structp png, Call&& call) {
  if (setjmp(png_jmpbuf(png))) return false;
  call();
  return true;
}

// Decodes a PNG into `out` (options.color channels), or, with header_only, only sets out.width
// and out.height to the size a full decode would have. Returns false and sets `error` when the
// file is refused.
inline bool decode_png(const uint8_t* data, size_t size, const DecodeOptions& options, bool header_only, Image& out,
                       std::string& error) {
  thread_local std::vector<uint8_t> decoded, scratch;
  thread_local std::vector<png_bytep> rows;
  PngInput input{data, size, 0, {}};
  PngReader reader;
  reader.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &input, png_fail, png_ignore_warning);
  if (reader.png) reader.info = png_create_info_struct(reader.png);
  if (!reader.info) {
    error = "cannot create a PNG reader (out of memory)";
    return false;
  }
  png_structp png = reader.png;
  png_infop info = reader.info;
  const auto failed = [&] {
    error = std::string("corrupt or unsupported PNG (libpng: ") + input.message + ")";
    return false;
  };
  if (!png_guarded(png, [&] {
        png_set_read_fn(png, &input, png_read_input);
        // Only the chunks that make the pixels, and eXIf, are kept; all others are skipped, not
        // inflated (a 1.3 MB file of 200 zTXt chunks of 7 MB of text each kept libpng busy for
        // 15 s before they were skipped).
        static const png_byte unused[] = "bKGD\0cHRM\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0pHYs\0sBIT\0sCAL\0"
                                         "sPLT\0sRGB\0sTER\0tEXt\0tIME\0zTXt";
        png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, nullptr, 0);  // unknown chunks
        png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, unused, static_cast<int>(sizeof(unused) / 5));
        png_read_info(png, info);
      }))
    return failed();
  const png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
  // (libpng itself refuses sides above 1,000,000)
  error = check_image_limits(static_cast<int>(width), static_cast<int>(height), options.limits);
  if (!error.empty()) return false;
  int orientation = options.apply_exif_orientation ? png_exif_orientation(png, info) : 1;
  if (header_only) {
    out.width = static_cast<int>(orientation_transposes(orientation) ? height : width);
    out.height = static_cast<int>(orientation_transposes(orientation) ? width : height);
    return true;
  }

  // Everything to 8-bit gray, gray+alpha, RGB or RGBA.
  const int color_type = png_get_color_type(png, info), bit_depth = png_get_bit_depth(png, info);
  if (!png_guarded(png, [&] {
        if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
        if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
        if (bit_depth == 16) png_set_scale_16(png);
        png_set_interlace_handling(png);
        png_read_update_info(png, info);
      }))
    return failed();
  const int file_channels = png_get_channels(png, info);
  if (png_get_bit_depth(png, info) != 8 || file_channels < 1 || file_channels > 4 ||
      png_get_rowbytes(png, info) != static_cast<size_t>(width) * file_channels) {
    error = "unsupported PNG: unexpected pixel layout after conversion to 8 bits";
    return false;
  }

  const int channels = channels_of(options.color);
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.channels = channels;
  out.pixels.resize(static_cast<size_t>(out.bytes()));
  // Straight into the output when the layout already matches, else through `decoded`.
  const bool direct = file_channels == channels;
  if (!direct) decoded.resize(static_cast<size_t>(width) * height * file_channels);
  uint8_t* target = direct ? out.pixels.data() : decoded.data();
  rows.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = target + static_cast<size_t>(y) * width * file_channels;
  if (!png_guarded(png, [&] { png_read_image(png, rows.data()); })) return failed();

  // An eXIf chunk may also follow the image data. The pixels are complete: a damaged or missing
  // end of the file does not refuse them.
  if (options.apply_exif_orientation && orientation == 1 &&
      png_guarded(png, [&] { png_read_end(png, info); }))
    orientation = png_exif_orientation(png, info);
  if (!direct)
    convert_pixels(decoded.data(), file_channels, out.pixels.data(), channels, int64_t{width} * height, options.alpha);
  if (orientation > 1) apply_orientation(out, orientation, scratch);
  return true;
}

}  // namespace detail
}  // namespace eigennet
