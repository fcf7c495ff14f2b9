// Image decoding (include/eigennet/data/image.hpp, jpeg.hpp, png.hpp, exif.hpp): every JPEG, PNG
// and BMP variant against Pillow's decode of the same file (fixtures made by
// tests/fixtures/make_image_fixtures.py), EXIF orientation, reduced-size JPEG decoding, and the
// refusal of broken, hostile and unsupported files with a reason.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>

#include "test_util.hpp"
#include <eigennet/data/image.hpp>
#include <eigennet/data/image_folder.hpp>
#include <eigennet/data/resample.hpp>

using namespace eigennet;
namespace fs = std::filesystem;

namespace {

const std::string images_dir = std::string(EIGENNET_FIXTURES_DIR) + "/images/";
const std::string pillow_dir = std::string(EIGENNET_FIXTURES_DIR) + "/images_pillow/";

using testing::contains;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

DecodeOptions options_for(ColorMode color, AlphaMode alpha = AlphaMode::composite_black, bool exif = true) {
  DecodeOptions o;
  o.color = color;
  o.alpha = alpha;
  o.apply_exif_orientation = exif;
  return o;
}

Image decode(const std::vector<uint8_t>& bytes, const DecodeOptions& options) {
  Image image;
  std::string error;
  const bool ok = decode_image(bytes.data(), bytes.size(), options, image, error);
  REQUIRE_MESSAGE(ok, error);
  CHECK(error.empty());
  REQUIRE(image.pixels.size() == static_cast<size_t>(image.bytes()));
  return image;
}

Image decode(const std::vector<uint8_t>& bytes, ColorMode color = ColorMode::rgb) {
  return decode(bytes, options_for(color));
}

// decode_image's reason for refusing `bytes` (empty when it decodes them).
std::string refusal(const std::vector<uint8_t>& bytes, const DecodeOptions& options = {}) {
  Image image;
  std::string error;
  if (decode_image(bytes.data(), bytes.size(), options, image, error)) return {};
  CHECK_MESSAGE(!error.empty(), "refused without a reason");
  return error;
}

// One line of images_pillow/expected.txt (see make_image_fixtures.py).
struct Expectation {
  std::string image, raw, output;
  int width = 0, height = 0, channels = 0, exif = 1, min_width = 0, min_height = 0, tolerance = 0;
};

std::vector<Expectation> expectations() {
  std::ifstream in(pillow_dir + "expected.txt");
  REQUIRE(in.good());
  std::vector<Expectation> all;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    Expectation e;
    fields >> e.image >> e.raw >> e.width >> e.height >> e.channels >> e.output >> e.exif >> e.min_width >>
        e.min_height >> e.tolerance;
    REQUIRE_MESSAGE(!fields.fail(), "bad line in expected.txt: ", line);
    all.push_back(e);
  }
  return all;
}

// eigennet's output for `color` and `alpha`, derived from Pillow's decode (1 gray, 2 gray+alpha,
// 3 RGB, 4 RGBA samples) by the rules image.hpp documents: alpha composited on black,
// value * alpha / 255 rounded; gray from RGB by BT.601 luma (77 R + 150 G + 29 B) / 256 rounded.
std::vector<uint8_t> derive(const std::vector<uint8_t>& raw, int channels, ColorMode color, AlphaMode alpha) {
  const size_t count = raw.size() / static_cast<size_t>(channels);
  const bool composite = alpha == AlphaMode::composite_black;
  const auto over_black = [](int v, int a) { return (v * a + 127) / 255; };
  std::vector<uint8_t> out;
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* p = raw.data() + i * static_cast<size_t>(channels);
    int r, g, b;
    if (channels <= 2) {
      r = g = b = channels == 2 && composite ? over_black(p[0], p[1]) : p[0];
    } else {
      r = p[0];
      g = p[1];
      b = p[2];
      if (channels == 4 && composite) {
        r = over_black(r, p[3]);
        g = over_black(g, p[3]);
        b = over_black(b, p[3]);
      }
    }
    if (color == ColorMode::grayscale) {
      out.push_back(static_cast<uint8_t>(channels <= 2 ? r : (77 * r + 150 * g + 29 * b + 128) >> 8));
    } else {
      out.insert(out.end(), {static_cast<uint8_t>(r), static_cast<uint8_t>(g), static_cast<uint8_t>(b)});
    }
  }
  return out;
}

int max_difference(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  REQUIRE(a.size() == b.size());
  int worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(int{a[i]} - int{b[i]}));
  return worst;
}

// Elementary geometry, for the EXIF orientations.
Image flip_left_right(const Image& a) {
  Image out = a;
  for (int y = 0; y < a.height; ++y)
    for (int x = 0; x < a.width; ++x)
      for (int c = 0; c < a.channels; ++c)
        out.pixels[static_cast<size_t>((y * a.width + x) * a.channels + c)] = a.at(y, a.width - 1 - x, c);
  return out;
}
Image flip_top_bottom(const Image& a) {
  Image out = a;
  for (int y = 0; y < a.height; ++y)
    for (int x = 0; x < a.width; ++x)
      for (int c = 0; c < a.channels; ++c)
        out.pixels[static_cast<size_t>((y * a.width + x) * a.channels + c)] = a.at(a.height - 1 - y, x, c);
  return out;
}
Image transpose(const Image& a) {
  Image out = a;
  out.width = a.height;
  out.height = a.width;
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x)
      for (int c = 0; c < a.channels; ++c)
        out.pixels[static_cast<size_t>((y * out.width + x) * a.channels + c)] = a.at(x, y, c);
  return out;
}

// A TIFF header and IFD0 whose entries are (tag, type, count, value).
struct Entry {
  uint16_t tag, type;
  uint32_t count, value;
};
std::vector<uint8_t> tiff(const std::vector<Entry>& entries, bool big_endian = false) {
  std::vector<uint8_t> out;
  const auto put = [&](uint32_t v, int bytes) {
    for (int i = 0; i < bytes; ++i)
      out.push_back(static_cast<uint8_t>(v >> (8 * (big_endian ? bytes - 1 - i : i))));
  };
  out.push_back(big_endian ? 'M' : 'I');
  out.push_back(big_endian ? 'M' : 'I');
  put(42, 2);
  put(8, 4);
  put(static_cast<uint32_t>(entries.size()), 2);
  for (const Entry& e : entries) {
    put(e.tag, 2);
    put(e.type, 2);
    put(e.count, 4);
    if (e.type == 3) {  // a SHORT sits in the first two bytes of the value field
      put(e.value, 2);
      put(0, 2);
    } else {
      put(e.value, 4);
    }
  }
  put(0, 4);
  return out;
}

// PNG chunk with its CRC.
std::vector<uint8_t> png_chunk(const char* type, const std::vector<uint8_t>& data, uint32_t claimed_length = 0) {
  const uint32_t length = claimed_length ? claimed_length : static_cast<uint32_t>(data.size());
  std::vector<uint8_t> out = {static_cast<uint8_t>(length >> 24), static_cast<uint8_t>(length >> 16),
                              static_cast<uint8_t>(length >> 8), static_cast<uint8_t>(length)};
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(type[i]));
  out.insert(out.end(), data.begin(), data.end());
  uLong crc = crc32(0, nullptr, 0);
  crc = crc32(crc, out.data() + 4, static_cast<uInt>(4 + data.size()));
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<uint8_t>(crc >> (8 * i)));
  return out;
}

std::vector<uint8_t> png_header(uint32_t width, uint32_t height, uint8_t depth = 8, uint8_t color_type = 0) {
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  const std::vector<uint8_t> ihdr = {static_cast<uint8_t>(width >> 24),  static_cast<uint8_t>(width >> 16),
                                     static_cast<uint8_t>(width >> 8),   static_cast<uint8_t>(width),
                                     static_cast<uint8_t>(height >> 24), static_cast<uint8_t>(height >> 16),
                                     static_cast<uint8_t>(height >> 8),  static_cast<uint8_t>(height),
                                     depth,                              color_type,
                                     0,                                  0,
                                     0};
  const std::vector<uint8_t> chunk = png_chunk("IHDR", ihdr);
  out.insert(out.end(), chunk.begin(), chunk.end());
  return out;
}

// Offset of the first JPEG marker `code` (0xFF code) after SOI, found by walking the segments.
size_t jpeg_marker(const std::vector<uint8_t>& jpeg, uint8_t code) {
  size_t i = 2;
  while (i + 4 <= jpeg.size() && jpeg[i] == 0xFF) {
    if (jpeg[i + 1] == code) return i;
    i += 2 + (size_t{jpeg[i + 2]} << 8 | jpeg[i + 3]);
  }
  FAIL("JPEG marker not found");
  return 0;
}

// A grayscale progressive JPEG of `scans` scans (at most 694): the DC scan, then each AC
// coefficient in its own spectral band, first at reduced precision (Al) and then refined bit by
// bit; the refinement steps are spread over the coefficients until the count is reached.
struct JpegEncoderErrors {
  jpeg_error_mgr base;
  std::jmp_buf jump;
};
[[noreturn]] void encoder_failed(j_common_ptr info) { std::longjmp(reinterpret_cast<JpegEncoderErrors*>(info->err)->jump, 1); }

bool encode_progressive(int scans, std::vector<uint8_t>& out) {
  std::vector<jpeg_scan_info> script;
  script.push_back({1, {0, 0, 0, 0}, 0, 0, 0, 0});
  int refinements = scans - 64;  // beyond the DC scan and one scan per AC coefficient
  for (int k = 1; k <= 63; ++k) {
    const int al = std::min(10, std::max(0, refinements));
    refinements -= al;
    script.push_back({1, {0, 0, 0, 0}, k, k, 0, al});
    for (int bit = al; bit > 0; --bit) script.push_back({1, {0, 0, 0, 0}, k, k, bit, bit - 1});
  }
  REQUIRE(static_cast<int>(script.size()) == scans);
  std::vector<uint8_t> pixels(32 * 32);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 37) ^ (i >> 3));
  jpeg_compress_struct info{};
  JpegEncoderErrors errors{};
  info.err = jpeg_std_error(&errors.base);
  errors.base.error_exit = encoder_failed;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  if (setjmp(errors.jump)) {
    jpeg_destroy_compress(&info);
    std::free(buffer);
    return false;
  }
  jpeg_create_compress(&info);
  jpeg_mem_dest(&info, &buffer, &size);
  info.image_width = info.image_height = 32;
  info.input_components = 1;
  info.in_color_space = JCS_GRAYSCALE;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, 100, TRUE);
  info.scan_info = script.data();
  info.num_scans = scans;
  jpeg_start_compress(&info, TRUE);
  for (JDIMENSION y = 0; y < 32; ++y) {
    JSAMPROW row = pixels.data() + y * 32;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  out.assign(buffer, buffer + size);
  std::free(buffer);
  return true;
}

}  // namespace

TEST_CASE("every JPEG, PNG and BMP variant decodes as Pillow decodes it") {
  int comparisons = 0, worst = 0;
  std::map<std::string, int> worst_by_kind;
  for (const Expectation& e : expectations()) {
    const std::vector<uint8_t> bytes = read_bytes(images_dir + e.image);
    const std::vector<uint8_t> raw = read_bytes(pillow_dir + e.raw);
    REQUIRE(raw.size() == static_cast<size_t>(e.width * e.height * e.channels));
    std::vector<ColorMode> colors;
    if (e.output != "gray") colors.push_back(ColorMode::rgb);
    if (e.output != "rgb") colors.push_back(ColorMode::grayscale);
    for (ColorMode color : colors) {
      for (AlphaMode alpha : {AlphaMode::composite_black, AlphaMode::drop}) {
        CAPTURE(e.image);
        CAPTURE(e.raw);
        CAPTURE(to_string(color));
        CAPTURE(alpha == AlphaMode::drop);
        DecodeOptions options = options_for(color, alpha, e.exif != 0);
        options.min_width = e.min_width;
        options.min_height = e.min_height;
        const Image image = decode(bytes, options);
        CHECK(image.width == e.width);
        CHECK(image.height == e.height);
        CHECK(image.channels == channels_of(color));
        if (image.width != e.width || image.height != e.height) continue;
        const int difference = max_difference(image.pixels, derive(raw, e.channels, color, alpha));
        CHECK(difference <= e.tolerance);
        worst = std::max(worst, difference);
        int& by_kind = worst_by_kind[e.image.substr(e.image.rfind('.') + 1)];  // by format
        by_kind = std::max(by_kind, difference);
        ++comparisons;
      }
    }
  }
  std::string summary;
  for (const auto& [kind, value] : worst_by_kind) summary += " " + kind + " " + std::to_string(value);
  MESSAGE(comparisons, " decodes compared with Pillow's; largest difference per format:", summary);
  CHECK(comparisons >= 200);
  CHECK(worst == 0);
}

TEST_CASE("EXIF orientations 1-8 turn the stored pixels as flips, transposition and rotations do") {
  const Image stored = decode(read_bytes(images_dir + "exif1.jpg"));
  REQUIRE(stored.width == 13);
  REQUIRE(stored.height == 7);
  const Image t = transpose(stored);
  const std::map<int, Image> upright = {
      {1, stored},
      {2, flip_left_right(stored)},
      {3, flip_top_bottom(flip_left_right(stored))},
      {4, flip_top_bottom(stored)},
      {5, t},
      {6, flip_left_right(t)},                   // 90 degrees clockwise
      {7, flip_top_bottom(flip_left_right(t))},  // transverse
      {8, flip_top_bottom(t)},                   // 90 degrees counter-clockwise
  };
  for (const auto& [orientation, expected] : upright) {
    CAPTURE(orientation);
    const std::vector<uint8_t> bytes = read_bytes(images_dir + "exif" + std::to_string(orientation) + ".jpg");
    // The files differ only in the tag: as stored, they decode to the same pixels.
    CHECK(decode(bytes, options_for(ColorMode::rgb, AlphaMode::drop, false)).pixels == stored.pixels);
    const Image turned = decode(bytes);
    CHECK(turned.width == expected.width);
    CHECK(turned.height == expected.height);
    CHECK(turned.pixels == expected.pixels);
    // The same for one channel.
    const Image gray = decode(bytes, ColorMode::grayscale);
    const Image gray_stored = decode(bytes, options_for(ColorMode::grayscale, AlphaMode::drop, false));
    Image gray_expected = gray_stored;
    if (orientation >= 5) gray_expected = transpose(gray_expected);
    if (orientation == 2 || orientation == 3 || orientation == 6 || orientation == 7)
      gray_expected = flip_left_right(gray_expected);
    if (orientation == 3 || orientation == 4 || orientation == 7 || orientation == 8)
      gray_expected = flip_top_bottom(gray_expected);
    CHECK(gray.pixels == gray_expected.pixels);
    CHECK(gray.width == gray_expected.width);
  }
}

TEST_CASE("EXIF blocks: the orientation is read from either byte order, and anything malformed means 'as stored'") {
  const auto orientation = [](const std::vector<uint8_t>& block) {
    return detail::exif_orientation(block.data(), block.size());
  };
  CHECK(orientation(tiff({{0x0112, 3, 1, 6}})) == 6);
  CHECK(orientation(tiff({{0x0112, 3, 1, 8}}, true)) == 8);
  CHECK(orientation(tiff({{0x010F, 2, 4, 0}, {0x0110, 2, 4, 0}, {0x0112, 3, 1, 3}})) == 3);  // after other tags
  CHECK(orientation(tiff({{0x0112, 4, 1, 5}})) == 5);                                        // as a LONG
  CHECK(orientation(tiff({{0x0112, 3, 1, 0}})) == 1);                                        // out of range
  CHECK(orientation(tiff({{0x0112, 3, 1, 9}})) == 1);
  CHECK(orientation(tiff({{0x0112, 3, 2, 6}})) == 1);  // not a single value
  CHECK(orientation(tiff({{0x0112, 2, 1, 6}})) == 1);  // ASCII
  CHECK(orientation(tiff({})) == 1);
  std::vector<uint8_t> block = tiff({{0x0112, 3, 1, 6}});
  // Cut anywhere, the directory entry is no longer whole: as stored, and nothing read past the end.
  for (size_t n = 0; n <= block.size(); ++n) {
    CAPTURE(n);
    const std::vector<uint8_t> cut(block.begin(), block.begin() + static_cast<std::ptrdiff_t>(n));
    CHECK(orientation(cut) == (n >= 22 ? 6 : 1));
  }
  // A directory offset or entry count that points past the block.
  std::vector<uint8_t> far = block;
  far[4] = 0xF0;
  CHECK(orientation(far) == 1);
  std::vector<uint8_t> many = tiff({{0x010F, 2, 4, 0}});  // 65535 entries announced, one present
  many[8] = 0xFF;
  many[9] = 0xFF;
  CHECK(orientation(many) == 1);
  std::vector<uint8_t> wrong_magic = block;
  wrong_magic[2] = 43;
  CHECK(orientation(wrong_magic) == 1);
  wrong_magic = block;
  wrong_magic[0] = 'X';
  CHECK(orientation(wrong_magic) == 1);
}

TEST_CASE("read_image_size reports the size decode_image produces, upright") {
  TempDir dir;
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(images_dir)) {
    const std::string path = entry.path().string();
    for (bool exif : {true, false}) {
      CAPTURE(path);
      CAPTURE(exif);
      DecodeOptions options = options_for(ColorMode::rgb, AlphaMode::drop, exif);
      int width = 0, height = 0;
      std::string error;
      REQUIRE_MESSAGE(read_image_size(path, options, width, height, error), error);
      const Image image = decode(read_bytes(path), options);
      if (exif && entry.path().filename() == "rgb8_exif8_after.png") {
        // Documented: an eXIf chunk after the image data is seen only by decoding.
        CHECK(width == image.height);
        CHECK(height == image.width);
      } else {
        CHECK(width == image.width);
        CHECK(height == image.height);
      }
      ++checked;
    }
  }
  CHECK(checked >= 100);
  int width = 0, height = 0;
  std::string error;
  CHECK(read_image_size(images_dir + "exif6.jpg", width, height, error));
  CHECK(width == 7);
  CHECK(height == 13);
  CHECK_FALSE(read_image_size((dir.path / "missing.jpg").string(), width, height, error));
  CHECK(contains(error, "cannot open file"));
}

TEST_CASE("reduced-size JPEG decoding picks the strongest of 1/2, 1/4, 1/8 that keeps the minimum size") {
  const std::vector<uint8_t> large = read_bytes(images_dir + "large.jpg");  // 109x75
  struct Case {
    int min_width, min_height, width, height;
  };
  const std::vector<Case> cases = {
      {0, 0, 109, 75},   {110, 10, 109, 75}, {55, 38, 55, 38}, {56, 38, 109, 75}, {55, 39, 109, 75},
      {28, 19, 28, 19},  {29, 19, 55, 38},   {1, 1, 14, 10},   {14, 10, 14, 10},  {15, 10, 28, 19},
      {0, 38, 55, 38},   {55, 0, 55, 38},    {1000, 1000, 109, 75},
  };
  for (const Case& c : cases) {
    CAPTURE(c.min_width);
    CAPTURE(c.min_height);
    for (ColorMode color : {ColorMode::rgb, ColorMode::grayscale}) {
      DecodeOptions options = options_for(color);
      options.min_width = c.min_width;
      options.min_height = c.min_height;
      const Image image = decode(large, options);
      CHECK(image.width == c.width);
      CHECK(image.height == c.height);
    }
  }
  // Other formats decode at full size whatever the minimum.
  DecodeOptions small;
  small.min_width = small.min_height = 1;
  CHECK(decode(read_bytes(images_dir + "rgb8.png"), small).width == 23);
  CHECK(decode(read_bytes(images_dir + "rgb.bmp"), small).width == 23);
  // The reduced decode is the full decode averaged down (1/8 scale: the DC coefficient is the
  // 8x8 block mean): each pixel within rounding (of the 64 outputs and of the DC term, and the
  // integer IDCT's own error) of the mean of its block.
  const Image full = decode(large, ColorMode::grayscale);
  DecodeOptions eighth = options_for(ColorMode::grayscale);
  eighth.min_width = eighth.min_height = 1;
  const Image reduced = decode(large, eighth);
  int worst = 0;
  for (int by = 0; by < reduced.height - 1; ++by) {
    for (int bx = 0; bx < reduced.width - 1; ++bx) {
      int sum = 0;
      for (int y = 0; y < 8; ++y)
        for (int x = 0; x < 8; ++x) sum += full.at(by * 8 + y, bx * 8 + x, 0);
      worst = std::max(worst, std::abs(reduced.at(by, bx, 0) - (sum + 32) / 64));
    }
  }
  MESSAGE("1/8-scale JPEG decode against 8x8 block means of the full decode: largest difference ", worst);
  CHECK(worst <= 2);
}

TEST_CASE("truncated, corrupt and hostile files are refused with a reason, never half decoded") {
  const std::vector<uint8_t> jpeg = read_bytes(images_dir + "rgb_420.jpg");
  const Image original = decode(jpeg);

  SUBCASE("every truncation of every fixture is refused or decodes; cut JPEG and PNG data is refused") {
    for (const auto& entry : fs::directory_iterator(images_dir)) {
      const std::vector<uint8_t> bytes = read_bytes(entry.path().string());
      const std::string name = entry.path().filename().string();
      for (size_t n = 1; n < bytes.size(); n += 1 + bytes.size() / 150) {
        CAPTURE(name);
        CAPTURE(n);
        const std::string error = refusal(std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n)));
        if (n <= bytes.size() / 2) CHECK(!error.empty());  // half a file is always refused
      }
    }
    // A BMP is refused as soon as pixel data is missing (stb_image would decode it as black), but
    // not for the padding after its last row.
    const std::vector<uint8_t> bmp = read_bytes(images_dir + "rgb.bmp");  // 23x15, 24 bits: rows of 69 + 3 bytes
    const Image whole = decode(bmp);
    CHECK(decode(std::vector<uint8_t>(bmp.begin(), bmp.end() - 3)).pixels == whole.pixels);
    CHECK(refusal(std::vector<uint8_t>(bmp.begin(), bmp.end() - 4)) ==
          "truncated BMP: 23x15 pixels of 24 bits need " + std::to_string(bmp.size() - 3) + " bytes, the file has " +
              std::to_string(bmp.size() - 4));
    const std::vector<uint8_t> half(jpeg.begin(), jpeg.begin() + static_cast<std::ptrdiff_t>(jpeg.size() / 2));
    CHECK(contains(refusal(half), "corrupt or unsupported JPEG (libjpeg-turbo: Premature end of JPEG file)"));
    const std::vector<uint8_t> png = read_bytes(images_dir + "rgb8_interlaced.png");
    const std::vector<uint8_t> half_png(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(png.size() / 2));
    CHECK(contains(refusal(half_png), "corrupt or unsupported PNG (libpng: "));
  }

  SUBCASE("a JPEG with bytes after its EOI marker or between segments decodes; one without EOI is refused") {
    std::vector<uint8_t> trailing = jpeg;
    trailing.insert(trailing.end(), {'j', 'u', 'n', 'k', 0, 1, 2});
    CHECK(decode(trailing).pixels == original.pixels);
    // Stray bytes before a marker: libjpeg warns ("extraneous bytes") and decodes everything.
    std::vector<uint8_t> stray = jpeg;
    const size_t dqt = jpeg_marker(jpeg, 0xDB);
    stray.insert(stray.begin() + static_cast<std::ptrdiff_t>(dqt), {0x12, 0x34});
    CHECK(decode(stray).pixels == original.pixels);
    // Without EOI the decoder cannot tell the end of the data from a cut (a progressive file cut
    // between two scans decodes without a gap, only blurred): refused, as Pillow refuses it.
    REQUIRE(jpeg[jpeg.size() - 2] == 0xFF);
    REQUIRE(jpeg[jpeg.size() - 1] == 0xD9);
    CHECK(contains(refusal(std::vector<uint8_t>(jpeg.begin(), jpeg.end() - 2)), "Premature end of JPEG file"));
    const std::vector<uint8_t> progressive = read_bytes(images_dir + "progressive.jpg");
    CHECK(contains(refusal(std::vector<uint8_t>(progressive.begin(), progressive.end() - 2)),
                   "Premature end of JPEG file"));
  }

  SUBCASE("corrupt entropy-coded data is refused") {
    const size_t sos = jpeg_marker(jpeg, 0xDA);
    const size_t data = sos + 2 + (size_t{jpeg[sos + 2]} << 8 | jpeg[sos + 3]);
    std::vector<uint8_t> marker_inside = jpeg;  // a marker in the middle of the scan
    marker_inside[(data + jpeg.size()) / 2] = 0xFF;
    marker_inside[(data + jpeg.size()) / 2 + 1] = 0xD9;
    CHECK(contains(refusal(marker_inside), "Corrupt JPEG data"));
  }

  SUBCASE("dimensions beyond the limits are refused from the header, before decoding") {
    std::vector<uint8_t> huge = jpeg;  // SOF0: length, precision, height, width
    const size_t sof = jpeg_marker(jpeg, 0xC0);
    huge[sof + 5] = 0x4E;  // 20000
    huge[sof + 6] = 0x20;
    huge[sof + 7] = 0x4E;
    huge[sof + 8] = 0x20;
    CHECK(contains(refusal(huge), "dimensions 20000x20000 exceed the limit of 16384 pixels per side"));
    DecodeOptions tight;
    tight.limits.max_pixels = 100;
    CHECK(contains(refusal(jpeg, tight), "dimensions 23x15 exceed the limit of 100 pixels"));
    CHECK(contains(refusal(read_bytes(images_dir + "rgb8_interlaced.png"), tight), "exceed the limit of 100 pixels"));
    CHECK(contains(refusal(read_bytes(images_dir + "rgb.bmp"), tight), "exceed the limit of 100 pixels"));
    std::vector<uint8_t> png = png_header(100000, 1);
    const std::vector<uint8_t> idat = png_chunk("IDAT", {0x78, 0x9C});
    png.insert(png.end(), idat.begin(), idat.end());
    CHECK(contains(refusal(png), "dimensions 100000x1 exceed the limit of 16384 pixels per side"));
    std::vector<uint8_t> bmp = read_bytes(images_dir + "rgb.bmp");  // BITMAPINFOHEADER width at 18
    bmp[18] = 0x20;
    bmp[19] = 0x4E;
    CHECK(contains(refusal(bmp), "dimensions 20000x15 exceed the limit"));
  }

  SUBCASE("a PNG chunk that claims more bytes than the file holds, or has a bad CRC, is refused") {
    std::vector<uint8_t> png = png_header(7, 5);
    const std::vector<uint8_t> idat = png_chunk("IDAT", {0x78, 0x9C, 0x63, 0x00}, 0x7FFFFF00u);  // claims 2 GB
    png.insert(png.end(), idat.begin(), idat.end());
    CHECK(contains(refusal(png), "corrupt or unsupported PNG (libpng: "));
    std::vector<uint8_t> bad_crc = read_bytes(images_dir + "rgb8.png");
    bad_crc[bad_crc.size() - 20] ^= 0x40;  // inside the last IDAT chunk's data or CRC
    CHECK(contains(refusal(bad_crc), "libpng"));
  }

  SUBCASE("a progressive JPEG may have 500 scans, fewer when large, not more") {
    std::vector<uint8_t> ok, bomb;
    REQUIRE(encode_progressive(500, ok));
    REQUIRE(encode_progressive(501, bomb));
    CHECK(decode(ok, ColorMode::grayscale).width == 32);
    CHECK(contains(refusal(bomb), "progressive JPEG with more than 500 scans, the limit for its 32x32x1 samples"));
    // At most 2^32 samples over all scans.
    jpeg_decompress_struct info{};
    const auto limit = [&](JDIMENSION width, JDIMENSION height, int components) {
      info.image_width = width;
      info.image_height = height;
      info.num_components = components;
      return detail::jpeg_scan_limit(info);
    };
    CHECK(limit(32, 32, 1) == 500);
    CHECK(limit(1024, 1024, 3) == 500);
    CHECK(limit(2048, 2048, 1) == 500);
    CHECK(limit(2048, 2048, 3) == 341);
    CHECK(limit(4032, 3024, 3) == 117);
    CHECK(limit(8192, 8192, 3) == 21);
    CHECK(limit(16384, 16384, 4) == 4);
    CHECK(limit(65500, 65500, 4) == 1);
  }

  SUBCASE("JPEG processes libjpeg-turbo does not decode are named") {
    std::vector<uint8_t> lossless = jpeg;
    lossless[jpeg_marker(jpeg, 0xC0) + 1] = 0xC3;
    CHECK(contains(refusal(lossless), "Unsupported JPEG process: SOF type 0xc3"));
    std::vector<uint8_t> twelve_bit = jpeg;
    twelve_bit[jpeg_marker(jpeg, 0xC0) + 4] = 12;
    CHECK(contains(refusal(twelve_bit), "Unsupported JPEG data precision 12"));
  }

  SUBCASE("other formats are refused with a message naming them and the supported formats") {
    const auto bytes = [](const std::string& text) { return std::vector<uint8_t>(text.begin(), text.end()); };
    const std::string supported = "(supported: JPEG, PNG and BMP)";
    CHECK(refusal(bytes("GIF89a\x01\x00\x01\x00")) == "unsupported image format: a GIF file " + supported);
    CHECK(refusal(bytes(std::string("RIFF\x10\0\0\0WEBPVP8 ", 16))) == "unsupported image format: a WebP file " + supported);
    CHECK(refusal(bytes(std::string("II*\0\x08\0\0\0", 8))) == "unsupported image format: a TIFF file " + supported);
    CHECK(refusal(bytes(std::string("MM\0*\0\0\0\x08", 8))) == "unsupported image format: a TIFF file " + supported);
    CHECK(refusal(bytes("P6\n3 2\n255\nabcdefghijklmnopqr")) ==
          "unsupported image format: a PNM (PBM/PGM/PPM/PAM) file " + supported);
    CHECK(refusal(bytes(std::string("\0\0\0\x18" "ftypheic", 12))) == "unsupported image format: a HEIF/AVIF file " + supported);
    CHECK(refusal(bytes("8BPS\x00\x01")) == "unsupported image format: a Photoshop (PSD) file " + supported);
    CHECK(refusal(bytes("this is not an image\n")) == "not an image file of a supported format " + supported);
    CHECK(refusal(bytes("")) == "empty file (0 bytes)");
    CHECK(refusal({0xFF}) == "not an image file of a supported format " + supported);
    CHECK(contains(refusal({0xFF, 0xD8}), "corrupt or unsupported JPEG (libjpeg-turbo: "));
    CHECK(contains(refusal({'B', 'M'}), "corrupt or unsupported BMP (stb_image: "));
  }
}

TEST_CASE("CMYK JPEGs: YCCK-coded and CMYK-coded files of the same image decode alike") {
  // libjpeg's encoder, at quality 100 without subsampling: the two files differ only in the
  // color transform, so their decodes differ only by its rounding and the JPEG quantization.
  const int width = 24, height = 16;
  std::vector<uint8_t> cmyk(static_cast<size_t>(width * height * 4));
  for (size_t i = 0; i < cmyk.size(); ++i) cmyk[i] = static_cast<uint8_t>(40 + (i * 7) % 170);
  std::vector<std::vector<uint8_t>> files;
  for (J_COLOR_SPACE space : {JCS_CMYK, JCS_YCCK}) {
    jpeg_compress_struct info{};
    JpegEncoderErrors errors{};
    info.err = jpeg_std_error(&errors.base);
    errors.base.error_exit = encoder_failed;
    unsigned char* buffer = nullptr;
    unsigned long size = 0;
    if (setjmp(errors.jump)) FAIL("libjpeg could not encode the CMYK test image");
    jpeg_create_compress(&info);
    jpeg_mem_dest(&info, &buffer, &size);
    info.image_width = width;
    info.image_height = height;
    info.input_components = 4;
    info.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&info);
    jpeg_set_colorspace(&info, space);
    for (int c = 0; c < 4; ++c) info.comp_info[c].h_samp_factor = info.comp_info[c].v_samp_factor = 1;
    jpeg_set_quality(&info, 100, TRUE);
    jpeg_start_compress(&info, TRUE);
    for (JDIMENSION y = 0; y < static_cast<JDIMENSION>(height); ++y) {
      JSAMPROW row = cmyk.data() + y * width * 4;
      jpeg_write_scanlines(&info, &row, 1);
    }
    jpeg_finish_compress(&info);
    jpeg_destroy_compress(&info);
    files.emplace_back(buffer, buffer + size);
    std::free(buffer);
  }
  const Image from_cmyk = decode(files[0]), from_ycck = decode(files[1]);
  // Against the Adobe-convention formula on the pixels that were encoded.
  int worst_cmyk = 0, worst_ycck = 0;
  for (int i = 0; i < width * height; ++i) {
    for (int c = 0; c < 3; ++c) {
      const int expected = detail::adobe_cmyk_channel(cmyk[static_cast<size_t>(i * 4 + c)], cmyk[static_cast<size_t>(i * 4 + 3)]);
      worst_cmyk = std::max(worst_cmyk, std::abs(from_cmyk.pixels[static_cast<size_t>(i * 3 + c)] - expected));
      worst_ycck = std::max(worst_ycck, std::abs(from_ycck.pixels[static_cast<size_t>(i * 3 + c)] - expected));
    }
  }
  MESSAGE("CMYK JPEG (quality 100) against the formula on the encoded values: largest difference ", worst_cmyk,
          " (CMYK-coded), ", worst_ycck, " (YCCK-coded)");
  CHECK(worst_cmyk <= 2);
  CHECK(worst_ycck <= 2);
}

TEST_CASE("image folders turn photos upright, unless told not to") {
  TempDir dir;
  write_bytes(dir.path / "a" / "0.jpg", read_bytes(images_dir + "exif6.jpg"));
  write_bytes(dir.path / "a" / "1.png", read_bytes(images_dir + "rgb8_exif6.png"));
  ImageFolderOptions options;
  options.warnings = false;
  const ImageSet upright = load_image_folder(dir.path.string(), options);
  CHECK(upright.width() == 7);
  CHECK(upright.height() == 13);
  const Image expected = decode(read_bytes(images_dir + "exif6.jpg"));
  CHECK(std::equal(expected.pixels.begin(), expected.pixels.end(), upright.image(0)));
  options.apply_exif_orientation = false;
  const ImageSet stored = load_image_folder(dir.path.string(), options);
  CHECK(stored.width() == 13);
  CHECK(stored.height() == 7);
}

TEST_CASE("decoding is thread-safe: every fixture decoded on all threads at once matches the serial decode") {
  std::vector<std::vector<uint8_t>> files;
  for (const auto& entry : fs::directory_iterator(images_dir)) files.push_back(read_bytes(entry.path().string()));
  std::vector<std::vector<uint8_t>> serial;
  for (const auto& f : files) serial.push_back(decode(f).pixels);
  const int64_t rounds = 8, n = static_cast<int64_t>(files.size());
  std::vector<int> mismatches(static_cast<size_t>(rounds * n), 0);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < rounds * n; ++i) {
    Image image;
    std::string error;
    const auto& f = files[static_cast<size_t>(i % n)];
    const bool ok = decode_image(f.data(), f.size(), DecodeOptions{}, image, error);
    mismatches[static_cast<size_t>(i)] = !ok || image.pixels != serial[static_cast<size_t>(i % n)];
  }
  CHECK(std::count(mismatches.begin(), mismatches.end(), 1) == 0);
}

TEST_CASE("resize_to_floats: resize_image's tent filter straight into floats, without its rounding to 8 bits") {
  // Random pictures resized both ways: stb_image_resize to 8 bits, then mapped to [-1, 1], and
  // resize_to_floats mapping to [-1, 1] itself. The two may differ only by stb's rounding to a
  // whole 8-bit value (half a step: 0.5 / 127.5) and float rounding; a weight at the wrong place
  // or of the wrong size differs by many steps on random pixels.
  uint32_t state = 12345;
  const auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<uint8_t>(state >> 24);
  };
  struct Case {
    int in_h, in_w, out_h, out_w;
  };
  const Case cases[] = {{48, 64, 19, 25},  {61, 97, 25, 40}, {50, 50, 33, 17}, {7, 13, 20, 31},
                        {32, 40, 48, 48},  {20, 20, 20, 20}, {1, 9, 3, 4},     {30, 24, 30, 16}};
  for (const Case& c : cases)
    for (int channels : {1, 3}) {
      CAPTURE(c.in_w);
      CAPTURE(c.in_h);
      CAPTURE(c.out_w);
      CAPTURE(c.out_h);
      CAPTURE(channels);
      // The region is a window of a wider picture (its rows are further apart than its width).
      const int stride_pixels = c.in_w + 5;
      std::vector<uint8_t> picture(static_cast<size_t>(c.in_h) * stride_pixels * channels);
      for (uint8_t& v : picture) v = next();
      std::vector<uint8_t> window(static_cast<size_t>(c.in_h) * c.in_w * channels);
      for (int y = 0; y < c.in_h; ++y)
        std::copy_n(picture.data() + static_cast<size_t>(y) * stride_pixels * channels, c.in_w * channels,
                    window.data() + static_cast<size_t>(y) * c.in_w * channels);
      std::vector<uint8_t> stb(static_cast<size_t>(c.out_h) * c.out_w * channels);
      REQUIRE(resize_image(window.data(), c.in_h, c.in_w, channels, stb.data(), c.out_h, c.out_w));
      // Written into the middle of wider rows: the samples around must stay untouched.
      const int out_stride = (c.out_w + 2) * 3;
      std::vector<float> floats(static_cast<size_t>(c.out_h) * out_stride, 7.0f);
      resize_to_floats(picture.data(), int64_t{stride_pixels} * channels, c.in_h, c.in_w, channels, floats.data() + 3,
                       out_stride, c.out_h, c.out_w, 1.0f / 127.5f, -1.0f);
      double worst = 0;
      for (int y = 0; y < c.out_h; ++y) {
        CHECK(floats[static_cast<size_t>(y) * out_stride] == 7.0f);
        CHECK(floats[static_cast<size_t>(y) * out_stride + 3 * (c.out_w + 1) + 2] == 7.0f);
        for (int x = 0; x < c.out_w; ++x)
          for (int k = 0; k < 3; ++k) {
            const uint8_t expected = stb[(static_cast<size_t>(y) * c.out_w + x) * channels + (channels == 3 ? k : 0)];
            const float got = floats[static_cast<size_t>(y) * out_stride + 3 + 3 * x + k];
            worst = std::max(worst, std::abs(static_cast<double>(got) - (expected / 127.5 - 1.0)));
          }
      }
      CHECK(worst <= 0.5 / 127.5 + 1e-5);
      if (c.in_h == c.out_h && c.in_w == c.out_w) CHECK(worst <= 1e-6);  // the same size is a copy
    }
  // The taps of every output sample sum to 1.
  const TentTaps halve = tent_taps(8, 4);
  for (int j = 0; j < 4; ++j) {
    float total = 0;
    for (int t = 0; t < halve.taps; ++t) total += halve.weight[static_cast<size_t>(j * halve.taps + t)];
    CHECK(total == doctest::Approx(1.0f));
  }
  CHECK_THROWS_WITH_AS(tent_taps(0, 4), doctest::Contains("invalid sizes"), Error);
}
