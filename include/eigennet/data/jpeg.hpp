// JPEG decoding with libjpeg-turbo (the libjpeg API): baseline, progressive and arithmetic-coded
// files; grayscale, YCbCr, RGB, and CMYK/YCCK converted to RGB; EXIF orientation; optional
// reduced-size decoding through the inverse DCT. Used by decode_image (image.hpp).
//
// - Errors never leave libjpeg through its default handler (which prints and calls exit()): the
//   error manager below keeps the message and longjmps back to jpeg_guarded, and decode_jpeg
//   returns the message.
// - Warnings that mean the pixels are incomplete or wrong (a truncated file, corrupt entropy-coded
//   data, an inconsistent progression) are errors too: such files are refused, not returned half
//   gray. A file that ends without its EOI marker is refused as well, as Pillow refuses it: the
//   decoder cannot tell it from one cut between two progressive scans. Warnings about data the
//   decoder does not need (stray bytes between segments, an unknown JFIF version or Adobe
//   transform code) are ignored, as Pillow and OpenCV do.
// - The dimensions are checked against ImageLimits after libjpeg has read the header and before
//   it allocates anything for the pixels, and the scans of a progressive file are limited (see
//   jpeg_scan_limit): a small file with many scans over a large image otherwise costs minutes.
// - The TurboJPEG API is not used: its 2.1 header function refuses valid files with unusual
//   chroma sampling (e.g. Cb 2x1, Cr 1x1) that libjpeg and Pillow decode.
// - jpeglib.h and jerror.h declare, in every file that includes eigennet/data, libjpeg's
//   unprefixed names: types (boolean, JSAMPLE, INT16, INT32, UINT8, ...) and macros (TRUE, FALSE,
//   LOCAL, GLOBAL, EXTERN, METHODDEF, FAR, ERREXIT, WARNMS, ...).
#pragma once

#include <algorithm>
#include <csetjmp>
#include <cstddef>
#include <cstdint>
#include <cstdio>  // jpeglib.h needs FILE and size_t declared before it
#include <cstring>
#include <string>
#include <vector>

#include <jpeglib.h>
// jpeglib.h before jerror.h (the message codes)
#include <jerror.h>

#include "exif.hpp"
#include "image_types.hpp"

namespace eigennet {
namespace detail {

// A progressive file is decoded by passes over all its coefficients, one per scan, so a small
// file of many nearly empty scans over a large image is a "decompression bomb": on this (busy)
// machine 500 scans over 2048x2048 gray took 2.6 s, so 64 megapixels would take 40 s. The limit: 500
// scans (TurboJPEG's TJFLAG_LIMITSCANS), and no more than 2^32 samples (width x height x
// components) over all scans: a 64-megapixel color image may have 21 scans, a 12-megapixel one
// 119, a 4-megapixel one 341; encoders write about 10.
inline int jpeg_scan_limit(const jpeg_decompress_struct& info) {
  const int64_t samples =
      std::max<int64_t>(1, int64_t{info.image_width} * int64_t{info.image_height} * info.num_components);
  return static_cast<int>(std::clamp<int64_t>((int64_t{1} << 32) / samples, 1, 500));
}

// libjpeg sees `base`; the rest is ours.
struct JpegErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

// A decompressor and what its callbacks need. Destroying it frees everything libjpeg allocated,
// also after an error (libjpeg's longjmp ends in jpeg_guarded, whose caller owns this object).
struct JpegReader {
  jpeg_decompress_struct info{};
  JpegErrorManager errors{};
  jpeg_progress_mgr progress{};
  JpegReader() = default;
  JpegReader(const JpegReader&) = delete;
  JpegReader& operator=(const JpegReader&) = delete;
  ~JpegReader() { jpeg_destroy_decompress(&info); }  // safe before jpeg_create_decompress (info.mem is null)
};

[[noreturn]] inline void jpeg_fail(j_common_ptr info) {
  auto* errors = reinterpret_cast<JpegErrorManager*>(info->err);
  info->err->format_message(info, errors->message);
  std::longjmp(errors->jump, 1);
}

inline void jpeg_message(j_common_ptr info, int level) {
  if (level >= 0) return;  // trace messages
  switch (info->err->msg_code) {
    case JWRN_EXTRANEOUS_DATA:
    case JWRN_ADOBE_XFORM:
    case JWRN_JFIF_MAJOR:
      ++info->err->num_warnings;
      return;
    default:  // JWRN_JPEG_EOF, JWRN_HIT_MARKER, JWRN_HUFF_BAD_CODE, JWRN_ARITH_BAD_CODE, ...
      jpeg_fail(info);
  }
}

inline void jpeg_silent(j_common_ptr) {}

// Called by libjpeg while it reads the input; stops files with too many progressive scans.
inline void jpeg_count_scans(j_common_ptr common) {
  auto* info = reinterpret_cast<j_decompress_ptr>(common);
  if (!info->progressive_mode) return;
  const int limit = jpeg_scan_limit(*info);
  if (info->input_scan_number <= limit) return;
  auto* errors = reinterpret_cast<JpegErrorManager*>(common->err);
  std::snprintf(errors->message, sizeof(errors->message),
                "progressive JPEG with more than %d scans, the limit for its %ux%ux%d samples", limit,
                info->image_width, info->image_height, info->num_components);
  std::longjmp(errors->jump, 1);
}

// Pillow's CMYK -> RGB (Convert.c, cmyk2rgb) for JPEG's Adobe convention, where the stored
// values are inverted (255 = no ink): with C, K the ink, R = (255 - K) - C (255 - K) / 255, rounded.
inline uint8_t adobe_cmyk_channel(int stored_color, int stored_black) {
  const int t = (255 - stored_color) * stored_black + 128;
  return static_cast<uint8_t>(stored_black - (((t >> 8) + t) >> 8));
}

// The orientation in the first EXIF APP1 segment that libjpeg saved (1 without one).
inline int jpeg_exif_orientation(const jpeg_decompress_struct& info) {
  for (jpeg_saved_marker_ptr m = info.marker_list; m; m = m->next)
    if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0)
      return exif_orientation(m->data + 6, m->data_length - 6);
  return 1;
}

// Runs one call into libjpeg; false when libjpeg reported an error (the message is in the
// reader). The setjmp lives here, in a frame of its own, so that no local variable of
// decode_jpeg is live across it.
template <typename Call>
bool jpeg_guarded(JpegReader& reader, Call&& call) {
  if (setjmp(reader.errors.jump)) return false;
  call();
  return true;
}

// Decodes a JPEG into `out` (options.color channels), or, with header_only, only sets
// out.width and out.height to the size a full decode would have. Returns false and sets
// `error` when the file is refused.
inline bool decode_jpeg(const uint8_t* data, size_t size, const DecodeOptions& options, bool header_only, Image& out,
                        std::string& error) {
  thread_local std::vector<uint8_t> cmyk_rows, scratch;
  JpegReader reader;
  jpeg_decompress_struct& info = reader.info;
  info.err = jpeg_std_error(&reader.errors.base);
  reader.errors.base.error_exit = jpeg_fail;
  reader.errors.base.emit_message = jpeg_message;
  reader.errors.base.output_message = jpeg_silent;
  reader.progress.progress_monitor = jpeg_count_scans;
  const auto failed = [&] {
    error = std::string("corrupt or unsupported JPEG (libjpeg-turbo: ") + reader.errors.message + ")";
    return false;
  };
  if (!jpeg_guarded(reader, [&] {
        jpeg_create_decompress(&info);
        info.progress = &reader.progress;
        jpeg_mem_src(&info, data, static_cast<unsigned long>(size));
        if (options.apply_exif_orientation) jpeg_save_markers(&info, JPEG_APP0 + 1, 0xFFFF);
        jpeg_read_header(&info, TRUE);
      }))
    return failed();

  // (libjpeg itself refuses sides above 65500)
  error = check_image_limits(static_cast<int>(info.image_width), static_cast<int>(info.image_height), options.limits);
  if (!error.empty()) return false;
  const int orientation = options.apply_exif_orientation ? jpeg_exif_orientation(info) : 1;
  const bool transposed = orientation_transposes(orientation);
  if (header_only) {
    out.width = static_cast<int>(transposed ? info.image_height : info.image_width);
    out.height = static_cast<int>(transposed ? info.image_width : info.image_height);
    return true;
  }

  const bool cmyk = info.jpeg_color_space == JCS_CMYK || info.jpeg_color_space == JCS_YCCK;
  const int channels = channels_of(options.color);
  info.out_color_space = cmyk ? JCS_CMYK : (channels == 1 ? JCS_GRAYSCALE : JCS_RGB);
  // The strongest reduction (1/8, 1/4, 1/2) that keeps both sides at the requested minimum.
  if (options.min_width > 0 || options.min_height > 0) {
    const JDIMENSION need_w = static_cast<JDIMENSION>(std::max(1, transposed ? options.min_height : options.min_width));
    const JDIMENSION need_h = static_cast<JDIMENSION>(std::max(1, transposed ? options.min_width : options.min_height));
    for (unsigned denominator = 8; denominator >= 2; denominator /= 2) {
      if ((info.image_width + denominator - 1) / denominator >= need_w &&
          (info.image_height + denominator - 1) / denominator >= need_h) {
        info.scale_num = 1;
        info.scale_denom = denominator;
        break;
      }
    }
  }
  // A progressive file is read through all its scans here.
  if (!jpeg_guarded(reader, [&] { jpeg_start_decompress(&info); })) return failed();

  const int width = static_cast<int>(info.output_width), height = static_cast<int>(info.output_height);
  out.width = width;
  out.height = height;
  out.channels = channels;
  out.pixels.resize(static_cast<size_t>(out.bytes()));
  const size_t out_stride = static_cast<size_t>(width) * channels;
  if (cmyk) cmyk_rows.resize(static_cast<size_t>(width) * 4 * 4);
  JSAMPROW rows[4];
  while (info.output_scanline < info.output_height) {
    const JDIMENSION first = info.output_scanline;
    const JDIMENSION count = std::min<JDIMENSION>(4, info.output_height - first);
    for (JDIMENSION i = 0; i < count; ++i)
      rows[i] = cmyk ? cmyk_rows.data() + i * static_cast<size_t>(width) * 4 : out.pixels.data() + (first + i) * out_stride;
    JDIMENSION read = 0;
    if (!jpeg_guarded(reader, [&] { read = jpeg_read_scanlines(&info, rows, count); })) return failed();
    if (!cmyk) continue;
    for (JDIMENSION i = 0; i < read; ++i) {
      const uint8_t* p = cmyk_rows.data() + i * static_cast<size_t>(width) * 4;
      uint8_t* q = out.pixels.data() + (first + i) * out_stride;
      for (int x = 0; x < width; ++x, p += 4, q += channels) {
        const uint8_t r = adobe_cmyk_channel(p[0], p[3]), g = adobe_cmyk_channel(p[1], p[3]),
                      b = adobe_cmyk_channel(p[2], p[3]);
        if (channels == 1) {
          q[0] = luma(r, g, b);
        } else {
          q[0] = r;
          q[1] = g;
          q[2] = b;
        }
      }
    }
  }
  // No jpeg_finish_decompress: once every row is decoded, what follows the image data does not
  // matter.
  if (orientation > 1) apply_orientation(out, orientation, scratch);
  return true;
}

}  // namespace detail
}  // namespace eigennet
