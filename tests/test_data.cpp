// The data pipeline: decoding image folders, splits, augmentation, batch assembly, sampling.
// Every test writes its own small images (PNG, BMP, JPEG via stb_image_write) into a temporary
// folder; one test reads a slice of the real FER-2013 when it is present.
#include <doctest/doctest.h>

#include <eigennet/eigennet.hpp>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#ifndef INCLUDE_STB_IMAGE_WRITE_H
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#undef STB_IMAGE_WRITE_IMPLEMENTATION
#undef STB_IMAGE_WRITE_STATIC
#endif
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>
#include <zlib.h>

using namespace eigennet;
namespace fs = std::filesystem;

namespace {

// A fresh temporary directory, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("eigennet_test_data_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  fs::path operator/(const std::string& name) const { return path_ / name; }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

// Redirects std::cerr into a string for the lifetime of the object.
class CaptureStderr {
 public:
  CaptureStderr() : old_(std::cerr.rdbuf(buffer_.rdbuf())) {}
  ~CaptureStderr() { std::cerr.rdbuf(old_); }
  std::string text() const { return buffer_.str(); }

 private:
  std::ostringstream buffer_;
  std::streambuf* old_;
};

struct Pixels {
  int width, height, channels;
  std::vector<uint8_t> data;
  uint8_t& at(int y, int x, int c) { return data[static_cast<size_t>((y * width + x) * channels + c)]; }
};

Pixels constant_image(int width, int height, int channels, std::vector<uint8_t> value) {
  Pixels p{width, height, channels, std::vector<uint8_t>(static_cast<size_t>(width * height * channels))};
  for (size_t i = 0; i < p.data.size(); ++i) p.data[i] = value[i % static_cast<size_t>(channels)];
  return p;
}

Pixels random_image(int width, int height, int channels, uint64_t seed, int lo = 0, int hi = 255) {
  Rng rng(seed);
  Pixels p{width, height, channels, std::vector<uint8_t>(static_cast<size_t>(width * height * channels))};
  for (auto& v : p.data) v = static_cast<uint8_t>(lo + static_cast<int>(rng.below(static_cast<uint64_t>(hi - lo + 1))));
  return p;
}

void make_dirs(const fs::path& path) { fs::create_directories(path); }

void write_png(const fs::path& path, const Pixels& p) {
  make_dirs(path.parent_path());
  REQUIRE(stbi_write_png(path.string().c_str(), p.width, p.height, p.channels, p.data.data(), p.width * p.channels));
}
void write_bmp(const fs::path& path, const Pixels& p) {
  make_dirs(path.parent_path());
  REQUIRE(stbi_write_bmp(path.string().c_str(), p.width, p.height, p.channels, p.data.data()));
}
void write_jpg(const fs::path& path, const Pixels& p, int quality = 100) {
  make_dirs(path.parent_path());
  REQUIRE(stbi_write_jpg(path.string().c_str(), p.width, p.height, p.channels, p.data.data(), quality));
}
void write_bytes(const fs::path& path, const std::vector<uint8_t>& bytes) {
  make_dirs(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}
std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

ImageFolderOptions quiet_options(ColorMode color = ColorMode::rgb) {
  ImageFolderOptions o;
  o.color = color;
  o.warnings = false;
  return o;
}

// The stored pixel (y, x, c) of image i.
int stored(const ImageSet& set, int64_t i, int y, int x, int c) {
  return set.image(i)[(y * set.width() + x) * set.channels() + c];
}

// Renders image i of `set` with `params` at the given size and raw pixel values (no normalization).
std::vector<float> render_raw(const uint8_t* src, int h, int w, int c, const AugmentParams& params, int out_h,
                              int out_w, int out_c = 3, AugmentConfig fill = AugmentConfig::none(),
                              bool mirror = false) {
  std::vector<float> out(static_cast<size_t>(out_h * out_w * out_c));
  render_image(src, h, w, c, params, fill, Normalization::none(), mirror, out_h, out_w, out_c, out.data());
  return out;
}

double mean_of(const float* p, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i];
  return s / static_cast<double>(n);
}

// doctest::Contains copies the text, so a temporary std::string is fine.
doctest::Contains contains(const std::string& text) { return doctest::Contains(text.c_str()); }

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), static_cast<size_t>(a.size()) * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("every format and channel count loads with the right pixels") {
  TempDir dir;
  // 6x5 images with distinct known contents: PNG is lossless, BMP too, JPEG approximately.
  Pixels gray = random_image(6, 5, 1, 1);
  Pixels gray_alpha = random_image(6, 5, 2, 2);
  Pixels rgb = random_image(6, 5, 3, 3);
  Pixels rgba = random_image(6, 5, 4, 4);
  write_png(dir / "a/0_gray.png", gray);
  write_png(dir / "a/1_gray_alpha.png", gray_alpha);
  write_png(dir / "a/2_rgb.png", rgb);
  write_png(dir / "a/3_rgba.png", rgba);
  write_bmp(dir / "b/0_rgb.bmp", rgb);
  write_bmp(dir / "b/1_rgba.bmp", rgba);
  write_jpg(dir / "c/0_gray.jpg", constant_image(6, 5, 1, {90}));
  write_jpg(dir / "c/1_rgb.jpg", constant_image(6, 5, 3, {200, 40, 120}));

  const ImageSet set = load_image_folder(dir.str(), quiet_options(ColorMode::rgb));
  REQUIRE(set.size() == 8);
  CHECK(set.skipped_count() == 0);
  CHECK(set.class_names() == std::vector<std::string>{"a", "b", "c"});
  CHECK(set.labels() == std::vector<int32_t>{0, 0, 0, 0, 1, 1, 2, 2});
  CHECK(set.height() == 5);
  CHECK(set.width() == 6);
  CHECK(set.channels() == 3);
  // Composite on black, rounded: value * alpha / 255.
  const auto composite = [](int v, int a) { return (v * a + 127) / 255; };
  for (int y = 0; y < 5; ++y) {
    for (int x = 0; x < 6; ++x) {
      for (int c = 0; c < 3; ++c) {
        CHECK(stored(set, 0, y, x, c) == gray.at(y, x, 0));
        CHECK(stored(set, 1, y, x, c) == composite(gray_alpha.at(y, x, 0), gray_alpha.at(y, x, 1)));
        CHECK(stored(set, 2, y, x, c) == rgb.at(y, x, c));
        CHECK(stored(set, 3, y, x, c) == composite(rgba.at(y, x, c), rgba.at(y, x, 3)));
        CHECK(stored(set, 4, y, x, c) == rgb.at(y, x, c));
        CHECK(stored(set, 5, y, x, c) == composite(rgba.at(y, x, c), rgba.at(y, x, 3)));
        CHECK(std::abs(stored(set, 6, y, x, c) - 90) <= 2);
        CHECK(std::abs(stored(set, 7, y, x, c) - std::vector<int>{200, 40, 120}[static_cast<size_t>(c)]) <= 3);
      }
    }
  }

  // Dropping alpha keeps the stored colors.
  ImageFolderOptions drop = quiet_options(ColorMode::rgb);
  drop.alpha = AlphaMode::drop;
  drop.classes = {"a"};
  const ImageSet dropped = load_image_folder(dir.str(), drop);
  CHECK(stored(dropped, 3, 2, 3, 1) == rgba.at(2, 3, 1));
  CHECK(stored(dropped, 1, 4, 5, 0) == gray_alpha.at(4, 5, 0));

  // Grayscale: one channel, BT.601 luma of RGB with stb's integer weights, rounded.
  const ImageSet g = load_image_folder(dir.str(), quiet_options(ColorMode::grayscale));
  REQUIRE(g.size() == 8);
  CHECK(g.channels() == 1);
  for (int y = 0; y < 5; ++y) {
    for (int x = 0; x < 6; ++x) {
      CHECK(stored(g, 0, y, x, 0) == gray.at(y, x, 0));
      const int luma = (77 * rgb.at(y, x, 0) + 150 * rgb.at(y, x, 1) + 29 * rgb.at(y, x, 2) + 128) >> 8;
      CHECK(stored(g, 2, y, x, 0) == luma);
      CHECK(stored(g, 4, y, x, 0) == luma);
      CHECK(std::abs(stored(g, 7, y, x, 0) - ((77 * 200 + 150 * 40 + 29 * 120 + 128) >> 8)) <= 3);
    }
  }
}

TEST_CASE("images of any size are resized to the stored size") {
  TempDir dir;
  write_png(dir / "a/0.png", constant_image(13, 9, 3, {77, 150, 3}));
  write_png(dir / "a/1.png", constant_image(40, 40, 1, {200}));
  write_png(dir / "a/2.png", constant_image(3, 17, 3, {0, 255, 128}));
  // A 2-pixel-wide horizontal gradient.
  Pixels ramp = constant_image(2, 2, 1, {0});
  ramp.at(0, 0, 0) = ramp.at(1, 0, 0) = 10;
  ramp.at(0, 1, 0) = ramp.at(1, 1, 0) = 200;
  write_png(dir / "a/3.png", ramp);

  ImageFolderOptions o = quiet_options(ColorMode::rgb);
  o.height = 8;
  o.width = 9;
  const ImageSet set = load_image_folder(dir.str(), o);
  REQUIRE(set.size() == 4);
  CHECK(set.height() == 8);
  CHECK(set.width() == 9);
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 9; ++x) {
      CHECK(stored(set, 0, y, x, 0) == 77);
      CHECK(stored(set, 0, y, x, 1) == 150);
      CHECK(stored(set, 0, y, x, 2) == 3);
      CHECK(stored(set, 1, y, x, 2) == 200);
      CHECK(stored(set, 2, y, x, 1) == 255);
      CHECK(stored(set, 2, y, x, 2) == 128);
    }
  }
  for (int y = 0; y < 8; ++y) {
    for (int x = 1; x < 9; ++x) CHECK(stored(set, 3, y, x, 0) >= stored(set, 3, y, x - 1, 0));
    CHECK(stored(set, 3, y, 0, 0) < stored(set, 3, y, 8, 0));
  }

  // Default stored size: the first image's (class order, then file order).
  const ImageSet native = load_image_folder(dir.str(), quiet_options());
  CHECK(native.height() == 9);
  CHECK(native.width() == 13);

  // Batch assembly resizes again, to the model input: constants stay constant, order is kept.
  BatchOptions b;
  b.height = 20;
  b.width = 23;
  Tensor images;
  std::vector<int32_t> labels;
  const std::vector<int64_t> order{0, 3};
  assemble_batch(set, order, 0, 2, 0, b, images, labels);
  REQUIRE(images.shape() == Shape{2, 20, 23, 3});
  const auto at = [&](int n, int y, int x, int c) { return images[((n * 20 + y) * 23 + x) * 3 + c]; };
  for (int y = 0; y < 20; ++y) {
    for (int x = 0; x < 23; ++x) {
      CHECK(at(0, y, x, 0) == doctest::Approx(77 / 127.5 - 1).epsilon(1e-6));
      CHECK(at(0, y, x, 2) == doctest::Approx(3 / 127.5 - 1).epsilon(1e-6));
      if (x > 0) CHECK(at(1, y, x, 0) >= at(1, y, x - 1, 0));
    }
    CHECK(at(1, y, 0, 0) < at(1, y, 22, 0));
  }
}

TEST_CASE("enlarging in batch assembly matches stb_image_resize's triangle filter") {
  const Pixels src = random_image(7, 5, 3, 11);
  const std::vector<float> ours = render_raw(src.data.data(), 5, 7, 3, AugmentParams{}, 13, 23);
  std::vector<float> src_float(src.data.begin(), src.data.end());
  std::vector<float> reference(ours.size());
  REQUIRE(stbir_resize_float_generic(src_float.data(), 7, 5, 0, reference.data(), 23, 13, 0, 3,
                                     STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, STBIR_FILTER_TRIANGLE,
                                     STBIR_COLORSPACE_LINEAR, nullptr));
  float worst = 0;
  for (size_t i = 0; i < ours.size(); ++i) worst = std::max(worst, std::abs(ours[i] - reference[i]));
  CHECK(worst < 1e-3f);

  // Same size without augmentation is an exact copy.
  const std::vector<float> copy = render_raw(src.data.data(), 5, 7, 3, AugmentParams{}, 5, 7);
  for (size_t i = 0; i < copy.size(); ++i) CHECK(copy[i] == static_cast<float>(src.data[i]));
}

TEST_CASE("unreadable files are skipped with a warning and counted") {
  TempDir dir;
  const Pixels good = random_image(32, 32, 3, 5);
  write_png(dir / "cls/good1.png", good);
  write_jpg(dir / "cls/good2.jpg", good, 90);
  write_png(dir / "cls/.hidden.png", good);          // ignored, not counted
  write_png(dir / "cls/subfolder/inner.png", good);  // not a file of the class: ignored
  write_bytes(dir / "cls/zero.png", {});
  Rng rng(9);
  std::vector<uint8_t> noise(1000);
  for (auto& v : noise) v = static_cast<uint8_t>(rng.below(256));
  noise[0] = 0;  // no format's magic number starts with 0
  write_bytes(dir / "cls/random.png", noise);
  const std::vector<uint8_t> jpg = read_bytes(dir / "cls/good2.jpg");
  write_bytes(dir / "cls/truncated.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 2));
  const std::vector<uint8_t> png = read_bytes(dir / "cls/good1.png");
  write_bytes(dir / "cls/truncated.png", std::vector<uint8_t>(png.begin(), png.begin() + png.size() * 6 / 10));
  const std::string text = "this is not an image\n";
  write_bytes(dir / "cls/notes.jpg", std::vector<uint8_t>(text.begin(), text.end()));
  // A grayscale PNG header claiming 20000 x 20000 pixels (libpng's own limit is 1,000,000 per
  // side), then the start of the image data: refused once libpng has read the chunks before the
  // image data, never decoded.
  std::vector<uint8_t> huge{0x89, 'P',  'N',  'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R', 0,
                            0,    0x4E, 0x20, 0,   0,    0x4E, 0x20, 8,    0, 0, 0, 0,  0,   0,   0,   0,
                            0,    0,    0,    0,   'I',  'D',  'A',  'T'};
  const uLong crc = crc32(crc32(0, nullptr, 0), huge.data() + 12, 17);  // over the chunk type and data
  for (int i = 0; i < 4; ++i) huge[static_cast<size_t>(29 + i)] = static_cast<uint8_t>(crc >> (24 - 8 * i));
  write_bytes(dir / "cls/huge.png", huge);

  ImageFolderOptions o;
  o.color = ColorMode::rgb;
  CaptureStderr capture;
  const ImageSet set = load_image_folder(dir.str(), o);
  const std::string log = capture.text();
  CHECK(set.size() == 2);
  CHECK(set.skipped_count() == 6);
  std::set<std::string> skipped_names;
  for (const auto& s : set.skipped()) {
    skipped_names.insert(fs::path(s.path).filename().string());
    CHECK(!s.reason.empty());
    CHECK(log.find(s.path) != std::string::npos);    // the warning names the file ...
    CHECK(log.find(s.reason) != std::string::npos);  // ... and the reason
  }
  CHECK(skipped_names ==
        std::set<std::string>{"huge.png", "notes.jpg", "random.png", "truncated.jpg", "truncated.png", "zero.png"});
  for (const auto& s : set.skipped()) {
    const std::string name = fs::path(s.path).filename().string();
    if (name == "huge.png")
      CHECK_MESSAGE(s.reason.find("20000x20000 exceed the limit of 16384") != std::string::npos, s.reason);
    if (name == "zero.png") CHECK(s.reason.find("empty") != std::string::npos);
    if (name == "notes.jpg") CHECK_MESSAGE(s.reason.find("not an image file of a supported format") != std::string::npos, s.reason);
    if (name == "truncated.jpg") CHECK_MESSAGE(s.reason.find("libjpeg-turbo: Premature end of JPEG file") != std::string::npos, s.reason);
    if (name == "truncated.png") CHECK_MESSAGE(s.reason.find("libpng") != std::string::npos, s.reason);
  }
  CHECK(log.find("skipped 6 of 8 files") != std::string::npos);
  for (int64_t i = 0; i < set.size(); ++i) CHECK(set.path(i).find(".hidden") == std::string::npos);

  // The pixel limit: a 20x20 image is refused when only 100 pixels are allowed.
  ImageFolderOptions small = quiet_options();
  small.height = 8;
  small.width = 8;
  small.limits.max_pixels = 100;
  TempDir dir2;
  write_png(dir2 / "a/big.png", random_image(20, 20, 1, 3));
  write_png(dir2 / "a/ok.png", random_image(10, 10, 1, 3));
  const ImageSet limited = load_image_folder(dir2.str(), small);
  CHECK(limited.size() == 1);
  REQUIRE(limited.skipped_count() == 1);
  CHECK(limited.skipped()[0].reason.find("exceed the limit of 100 pixels") != std::string::npos);
}

TEST_CASE("missing, empty and malformed folders are errors that name the path") {
  TempDir dir;
  const std::string missing = (dir / "nowhere").string();
  CHECK_THROWS_WITH_AS(load_image_folder(missing, quiet_options()), contains(missing + "' does not exist"), Error);
  CHECK_THROWS_WITH_AS(load_image_dataset(missing, quiet_options()), contains(missing), Error);

  // A root with files but no class folders.
  write_png(dir / "flat/0.png", random_image(4, 4, 3, 1));
  CHECK_THROWS_WITH_AS(load_image_folder((dir / "flat").string(), quiet_options()),
                       doctest::Contains("no class sub-folders"), Error);
  // An empty root.
  make_dirs(dir / "empty");
  CHECK_THROWS_WITH_AS(load_image_folder((dir / "empty").string(), quiet_options()), contains((dir / "empty").string()),
                       Error);
  // An empty class folder (hidden files do not count).
  write_png(dir / "root/a/0.png", random_image(4, 4, 3, 1));
  make_dirs(dir / "root/b");
  write_bytes(dir / "root/b/.DS_Store", {1, 2, 3});
  CHECK_THROWS_WITH_AS(load_image_folder((dir / "root").string(), quiet_options()),
                       contains((dir / "root/b").string() + "' is empty"), Error);
  // A class whose files are all unreadable: an empty class, hence an error.
  write_bytes(dir / "root/b/broken.png", {1, 2, 3});
  CHECK_THROWS_WITH_AS(load_image_folder((dir / "root").string(), quiet_options()),
                       contains((dir / "root/b").string() + "' has no readable images"), Error);
  // No readable image at all: nothing to take the stored size from.
  write_bytes(dir / "bad/a/0.png", {1, 2, 3});
  CHECK_THROWS_WITH_AS(load_image_folder((dir / "bad").string(), quiet_options()),
                       doctest::Contains("none of the 1 files is a readable image"), Error);
  // Unknown classes and an empty selection.
  ImageFolderOptions o = quiet_options();
  o.classes = {"a", "zebra"};
  CHECK_THROWS_WITH_AS(load_image_folder((dir / "root").string(), o), doctest::Contains("'zebra'"), Error);
  o.classes = {};
  o.exclude = {"a", "b"};
  CHECK_THROWS_WITH_AS(load_image_folder((dir / "root").string(), o), doctest::Contains("no classes left"), Error);
  o.exclude = {"b"};
  CHECK(load_image_folder((dir / "root").string(), o).size() == 1);
}

TEST_CASE("class subset, exclusion and a cap per class") {
  TempDir dir;
  const std::vector<std::string> names{"angry", "happy", "neutral"};
  for (size_t c = 0; c < names.size(); ++c)
    for (int i = 0; i < 3; ++i)
      write_png(dir / (names[c] + "/" + std::to_string(i) + ".png"),
                constant_image(4, 4, 1, {static_cast<uint8_t>(10 * c + i)}));
  ImageFolderOptions o = quiet_options(ColorMode::grayscale);
  o.classes = {"neutral", "angry"};  // kept in sorted order whatever order they are named in
  ImageSet set = load_image_folder(dir.str(), o);
  CHECK(set.class_names() == std::vector<std::string>{"angry", "neutral"});
  CHECK(set.labels() == std::vector<int32_t>{0, 0, 0, 1, 1, 1});
  CHECK(stored(set, 3, 0, 0, 0) == 20);
  CHECK(stored(set, 5, 2, 2, 0) == 22);

  o.classes = {};
  o.exclude = {"neutral"};
  set = load_image_folder(dir.str(), o);
  CHECK(set.class_names() == std::vector<std::string>{"angry", "happy"});
  CHECK(set.size() == 6);
  CHECK(stored(set, 4, 0, 0, 0) == 11);

  o.exclude = {};
  o.max_per_class = 2;  // the first files in sorted order
  set = load_image_folder(dir.str(), o);
  CHECK(set.size() == 6);
  CHECK(set.class_counts() == std::vector<int64_t>{2, 2, 2});
  CHECK(fs::path(set.path(3)).filename() == "1.png");
  CHECK(stored(set, 5, 0, 0, 0) == 21);
}

TEST_CASE("stratified counts follow the rounding rule") {
  const SplitFractions f{0.8, 0.1, 0.1};
  const auto counts = [&](int64_t n) {
    const SplitCounts c = stratified_counts(n, f);
    return std::vector<int64_t>{c.train, c.validation, c.test};
  };
  CHECK(counts(100) == std::vector<int64_t>{80, 10, 10});
  CHECK(counts(15) == std::vector<int64_t>{11, 2, 2});  // 1.5 rounds to 2
  CHECK(counts(7) == std::vector<int64_t>{5, 1, 1});
  CHECK(counts(4) == std::vector<int64_t>{2, 1, 1});  // 0.4 rounds to 0, raised to 1
  CHECK(counts(3) == std::vector<int64_t>{1, 1, 1});
  CHECK(counts(2) == std::vector<int64_t>{2, 0, 0});  // fewer than 3: train first
  CHECK(counts(1) == std::vector<int64_t>{1, 0, 0});
  CHECK(counts(0) == std::vector<int64_t>{0, 0, 0});
  const SplitCounts no_test = stratified_counts(3, SplitFractions{0.7, 0.3, 0.0});
  CHECK(no_test.train == 2);
  CHECK(no_test.validation == 1);
  CHECK(no_test.test == 0);
  const SplitCounts halves = stratified_counts(3, SplitFractions{0.0, 0.5, 0.5});
  CHECK(halves.train == 0);
  CHECK(halves.validation + halves.test == 3);
  CHECK_THROWS_WITH_AS(stratified_counts(10, SplitFractions{0.8, 0.1, 0.2}), doctest::Contains("sum to 1"), Error);
  CHECK_THROWS_AS(stratified_counts(10, SplitFractions{1.2, -0.1, -0.1}), Error);
}

TEST_CASE("stratified split: per-class counts, coverage, determinism") {
  // Classes of 100, 7, 3, 2 and 1 images, interleaved.
  const std::vector<int> sizes{100, 7, 3, 2, 1};
  std::vector<int32_t> labels;
  for (int round = 0; round < 100; ++round)
    for (int c = 0; c < 5; ++c)
      if (round < sizes[static_cast<size_t>(c)]) labels.push_back(c);
  const DatasetSplit split = stratified_split(labels, 5, SplitFractions{}, 42);

  const std::vector<std::vector<int64_t>> expected{{80, 10, 10}, {5, 1, 1}, {1, 1, 1}, {2, 0, 0}, {1, 0, 0}};
  const auto train = count_per_class(labels, split.train, 5);
  const auto validation = count_per_class(labels, split.validation, 5);
  const auto test = count_per_class(labels, split.test, 5);
  for (size_t c = 0; c < 5; ++c) CHECK(std::vector<int64_t>{train[c], validation[c], test[c]} == expected[c]);

  std::vector<int64_t> all;
  for (const auto* part : {&split.train, &split.validation, &split.test}) {
    CHECK(std::is_sorted(part->begin(), part->end()));
    all.insert(all.end(), part->begin(), part->end());
  }
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == labels.size());  // no overlap and full coverage: all is exactly 0..n-1
  for (size_t i = 0; i < all.size(); ++i) CHECK(all[i] == static_cast<int64_t>(i));

  const DatasetSplit again = stratified_split(labels, 5, SplitFractions{}, 42);
  CHECK(again.train == split.train);
  CHECK(again.validation == split.validation);
  CHECK(again.test == split.test);
  const DatasetSplit other = stratified_split(labels, 5, SplitFractions{}, 43);
  CHECK(other.validation != split.validation);
  CHECK(count_per_class(labels, other.validation, 5) == validation);

  // The table.
  std::ostringstream table;
  print_split_counts(table, {"big", "seven", "three", "two", "one"}, labels, split);
  CHECK(table.str().find("seven       5       1       1       7") != std::string::npos);
  CHECK(table.str().find("total      89      12      12     113") != std::string::npos);
}

TEST_CASE("layout detection: class folders, train/test, train/val/test") {
  TempDir dir;
  for (const std::string c : {"a", "b"})
    for (int i = 0; i < 10; ++i)
      write_png(dir / ("flat/" + c + "/" + std::to_string(i) + ".png"), random_image(4, 4, 1, 7));
  ImageFolderOptions o = quiet_options(ColorMode::grayscale);
  o.seed = 3;
  const ImageDataset flat = load_image_dataset((dir / "flat").string(), o);
  CHECK(flat.layout == FolderLayout::class_folders);
  CHECK(count_per_class(flat.images.labels(), flat.split.train, 2) == std::vector<int64_t>{8, 8});
  CHECK(count_per_class(flat.images.labels(), flat.split.validation, 2) == std::vector<int64_t>{1, 1});
  CHECK(count_per_class(flat.images.labels(), flat.split.test, 2) == std::vector<int64_t>{1, 1});

  for (const std::string c : {"a", "b"}) {
    for (int i = 0; i < 8; ++i)
      write_png(dir / ("tt/train/" + c + "/" + std::to_string(i) + ".png"), random_image(6, 6, 3, 1));
    for (int i = 0; i < 3; ++i)
      write_png(dir / ("tt/test/" + c + "/" + std::to_string(i) + ".png"), random_image(9, 9, 3, 2));
  }
  o.validation_fraction = 0.25;
  const ImageDataset tt = load_image_dataset((dir / "tt").string(), o);
  CHECK(tt.layout == FolderLayout::train_test);
  CHECK(tt.images.size() == 22);
  CHECK(tt.images.height() == 6);  // the test images are stored at the train images' size
  CHECK(count_per_class(tt.images.labels(), tt.split.train, 2) == std::vector<int64_t>{6, 6});
  CHECK(count_per_class(tt.images.labels(), tt.split.validation, 2) == std::vector<int64_t>{2, 2});
  CHECK(count_per_class(tt.images.labels(), tt.split.test, 2) == std::vector<int64_t>{3, 3});
  for (int64_t i : tt.split.train) CHECK(tt.images.path(i).find("/train/") != std::string::npos);
  for (int64_t i : tt.split.validation) CHECK(tt.images.path(i).find("/train/") != std::string::npos);
  for (int64_t i : tt.split.test) CHECK(tt.images.path(i).find("/test/") != std::string::npos);
  std::ostringstream table;
  print_split_counts(table, tt);
  CHECK(table.str().find("total      12       4       6      22") != std::string::npos);

  // A val/ folder is used as the validation set.
  for (const std::string c : {"a", "b"}) write_png(dir / ("tt/val/" + c + "/0.png"), random_image(6, 6, 3, 4));
  const ImageDataset tvt = load_image_dataset((dir / "tt").string(), o);
  CHECK(tvt.split.train.size() == 16);
  CHECK(tvt.split.validation.size() == 2);
  CHECK(tvt.split.test.size() == 6);
  for (int64_t i : tvt.split.validation) CHECK(tvt.images.path(i).find("/val/") != std::string::npos);

  // Test classes must match train classes.
  write_png(dir / "tt/test/c/0.png", random_image(6, 6, 3, 4));
  CHECK_THROWS_WITH_AS(load_image_dataset((dir / "tt").string(), o), doctest::Contains("differ"), Error);
}

TEST_CASE("augmentation: geometry of shift, rotation, scale and fill") {
  // 16x16 grayscale: a bright column at x = 4 on black.
  Pixels column = constant_image(16, 16, 1, {0});
  for (int y = 0; y < 16; ++y) column.at(y, 4, 0) = 255;
  AugmentParams shift;
  shift.shift_x = 2.0f / 16;  // two pixels to the right
  const std::vector<float> moved = render_raw(column.data.data(), 16, 16, 1, shift, 16, 16, 1);
  for (int y = 0; y < 16; ++y)
    for (int x = 0; x < 16; ++x) CHECK(moved[static_cast<size_t>(y * 16 + x)] == (x == 6 ? 255.0f : 0.0f));

  // Rotating by 90 degrees clockwise: output (x, y) = source (y, N - 1 - x).
  const Pixels src = random_image(8, 8, 3, 21);
  AugmentParams quarter;
  quarter.rotation_degrees = 90;
  const std::vector<float> turned = render_raw(src.data.data(), 8, 8, 3, quarter, 8, 8);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x)
      for (int c = 0; c < 3; ++c)
        CHECK(turned[static_cast<size_t>((y * 8 + x) * 3 + c)] ==
              doctest::Approx(src.data[static_cast<size_t>(((7 - x) * 8 + y) * 3 + c)]).epsilon(1e-4));

  // Zooming in by 2 about the center of a linear ramp v = 10 x: output x samples 3.5 + (x - 3.5) / 2.
  Pixels ramp = constant_image(8, 8, 1, {0});
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x) ramp.at(y, x, 0) = static_cast<uint8_t>(10 * x);
  AugmentParams zoom;
  zoom.scale = 2;
  const std::vector<float> zoomed = render_raw(ramp.data.data(), 8, 8, 1, zoom, 8, 8, 1);
  for (int x = 0; x < 8; ++x) CHECK(zoomed[static_cast<size_t>(8 + x)] == doctest::Approx(10 * (3.5 + (x - 3.5) / 2)));

  // Shifting half the width right: constant fill brings in fill_value, edge fill the first column.
  const Pixels flat = random_image(8, 8, 1, 5, 50, 200);
  AugmentParams half;
  half.shift_x = 0.5f;
  AugmentConfig fill = AugmentConfig::none();
  fill.fill = FillMode::constant;
  fill.fill_value = 7;
  const std::vector<float> constant = render_raw(flat.data.data(), 8, 8, 1, half, 8, 8, 1, fill);
  fill.fill = FillMode::edge;
  const std::vector<float> edge = render_raw(flat.data.data(), 8, 8, 1, half, 8, 8, 1, fill);
  for (int y = 0; y < 8; ++y) {
    for (int x = 0; x < 8; ++x) {
      const size_t i = static_cast<size_t>(y * 8 + x);
      const float expected_inside = flat.data[static_cast<size_t>(y * 8 + std::max(x - 4, 0))];
      CHECK(constant[i] == (x < 4 ? 7.0f : expected_inside));
      CHECK(edge[i] == expected_inside);
    }
  }
}

TEST_CASE("the axis-aligned fast path and the general (rotating) path agree") {
  // A rotation of 1e-6 degrees moves no sample by more than ~1e-6 pixels but takes the general
  // path; without rotation the separable path runs. Both must compute the same image. (The
  // parameters avoid samples that land exactly on the image border, where constant fill
  // switches: there the two paths' last-bit differences may fall on either side.)
  for (int channels : {1, 3}) {
    const Pixels src = random_image(11, 9, channels, 31 + static_cast<uint64_t>(channels));
    for (const auto& [out_h, out_w] : std::vector<std::pair<int, int>>{{20, 25}, {7, 6}, {9, 11}}) {
      for (int variant = 0; variant < 4; ++variant) {
        AugmentParams p;
        p.shift_x = variant == 1 ? 0.23f : -0.07f;
        p.shift_y = variant == 2 ? -0.31f : 0.11f;
        p.scale = variant == 3 ? 0.71f : 1.3f;
        p.flip = variant % 2 == 1;
        p.brightness = 0.05f;
        p.contrast = 1.2f;
        AugmentConfig fill = AugmentConfig::none();
        fill.fill = variant >= 2 ? FillMode::constant : FillMode::edge;
        fill.fill_value = 33;
        const auto straight = render_raw(src.data.data(), 9, 11, channels, p, out_h, out_w, 3, fill);
        p.rotation_degrees = 1e-6f;
        const auto tilted = render_raw(src.data.data(), 9, 11, channels, p, out_h, out_w, 3, fill);
        float worst = 0;
        for (size_t i = 0; i < straight.size(); ++i) worst = std::max(worst, std::abs(straight[i] - tilted[i]));
        CHECK(worst < 0.01f);
      }
    }
  }
}

TEST_CASE("augmentation invariants") {
  const ImageSet set = [] {
    ImageSet s(12, 10, 3, {"x", "y"});
    for (int i = 0; i < 6; ++i)
      s.add(random_image(10, 12, 3, 100 + static_cast<uint64_t>(i), 40, 215).data.data(), i % 2);
    return s;
  }();
  const std::vector<int64_t> all{0, 1, 2, 3, 4, 5};
  BatchOptions plain;
  plain.height = 17;
  plain.width = 19;
  Tensor reference, images;
  std::vector<int32_t> labels;
  assemble_batch(set, all, 0, 6, 0, plain, reference, labels);
  CHECK(labels == std::vector<int32_t>{0, 1, 0, 1, 0, 1});

  SUBCASE("zero augmentation is the plain resize, bit for bit") {
    BatchOptions zero = plain;
    zero.augment = true;
    zero.augmentation = AugmentConfig::none();
    zero.seed = 99;
    assemble_batch(set, all, 0, 6, 5, zero, images, labels);
    CHECK(same_bits(images, reference));
    Rng rng(1);
    CHECK(sample_augment(AugmentConfig::none(), rng).is_identity());
  }

  SUBCASE("a flip is a mirror, and flipping twice is the identity") {
    BatchOptions flip = plain;
    flip.flip = true;
    assemble_batch(set, all, 0, 6, 0, flip, images, labels);
    const int h = 17, w = 19;
    bool all_mirrored = true;
    for (int n = 0; n < 6; ++n)
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          for (int c = 0; c < 3; ++c)
            all_mirrored &= images[((n * h + y) * w + x) * 3 + c] == reference[((n * h + y) * w + (w - 1 - x)) * 3 + c];
    CHECK(all_mirrored);
    // A flipped sample (params.flip) under a test-time flip cancels out.
    AugmentParams flipped;
    flipped.flip = true;
    const auto twice = render_raw(set.image(2), 12, 10, 3, flipped, 17, 19, 3, AugmentConfig::none(), true);
    const auto once = render_raw(set.image(2), 12, 10, 3, AugmentParams{}, 17, 19);
    CHECK(twice == once);
    // Flipping the stored image, storing the result and flipping again gives it back.
    const auto mirrored = render_raw(set.image(2), 12, 10, 3, flipped, 12, 10);
    std::vector<uint8_t> mirrored_bytes(mirrored.begin(), mirrored.end());
    const auto back = render_raw(mirrored_bytes.data(), 12, 10, 3, flipped, 12, 10);
    for (size_t i = 0; i < back.size(); ++i) CHECK(back[i] == static_cast<float>(set.image(2)[i]));
  }

  SUBCASE("brightness and contrast move the statistics the right way") {
    const int64_t n = 17 * 19 * 3;
    const double base = mean_of(reference.data(), n);
    AugmentParams brighter, darker, stronger;
    brighter.brightness = 0.1f;
    darker.brightness = -0.1f;
    stronger.contrast = 1.5f;
    std::vector<float> out(static_cast<size_t>(n));
    render_image(set.image(0), 12, 10, 3, brighter, AugmentConfig::none(), Normalization{}, false, 17, 19, 3,
                 out.data());
    CHECK(mean_of(out.data(), n) > base + 0.15);  // +25.5 pixel values = +0.2 after x / 127.5 - 1
    render_image(set.image(0), 12, 10, 3, darker, AugmentConfig::none(), Normalization{}, false, 17, 19, 3, out.data());
    CHECK(mean_of(out.data(), n) < base - 0.15);
    render_image(set.image(0), 12, 10, 3, stronger, AugmentConfig::none(), Normalization{}, false, 17, 19, 3,
                 out.data());
    const auto spread = [&](const float* p) {
      double m = mean_of(p, n), s = 0;
      for (int64_t i = 0; i < n; ++i) s += (p[i] - m) * (p[i] - m);
      return s;
    };
    CHECK(spread(out.data()) > 1.5 * spread(reference.data()));
  }

  SUBCASE("strong augmentation stays in the preprocessed range [-1, 1]") {
    BatchOptions strong = plain;
    strong.augment = true;
    strong.augmentation.max_shift = 0.3f;
    strong.augmentation.max_rotation_degrees = 40;
    strong.augmentation.max_scale = 0.5f;
    strong.augmentation.max_brightness = 0.8f;
    strong.augmentation.max_contrast = 0.9f;
    float lo = 0, hi = 0;
    for (int epoch = 0; epoch < 20; ++epoch) {
      strong.augmentation.fill = epoch % 2 ? FillMode::edge : FillMode::constant;
      assemble_batch(set, all, 0, 6, epoch, strong, images, labels);
      for (int64_t i = 0; i < images.size(); ++i) {
        lo = std::min(lo, images[i]);
        hi = std::max(hi, images[i]);
      }
    }
    CHECK(lo >= -1.0f);
    CHECK(hi <= 1.0f);
    CHECK(lo == -1.0f);  // strong brightness reaches both ends, so clamping was exercised
    CHECK(hi == 1.0f);
  }

  SUBCASE("same seed, same output, whatever the thread count") {
    BatchOptions train = plain;
    train.augment = true;
    train.seed = 5;
    const int threads = max_threads();
    set_threads(1);
    Tensor one;
    assemble_batch(set, all, 0, 6, 3, train, one, labels);
    set_threads(2);
    Tensor two;
    assemble_batch(set, all, 0, 6, 3, train, two, labels);
    set_threads(threads);
    CHECK(same_bits(one, two));
    CHECK(!same_bits(one, reference));
    // A sample's augmentation depends on its index, not on its batch position or neighbours.
    const std::vector<int64_t> reversed{5, 4, 3, 2, 1, 0};
    assemble_batch(set, reversed, 0, 6, 3, train, images, labels);
    const int64_t per = 17 * 19 * 3;
    CHECK(std::memcmp(images.data(), one.data() + 5 * per, per * sizeof(float)) == 0);
    // Another epoch or seed draws differently.
    assemble_batch(set, all, 0, 6, 4, train, images, labels);
    CHECK(!same_bits(images, one));
    train.seed = 6;
    assemble_batch(set, all, 0, 6, 3, train, images, labels);
    CHECK(!same_bits(images, one));
  }
}

TEST_CASE("batch assembly reuses its buffers and replicates grayscale") {
  ImageSet set(4, 4, 1, {"only"});
  for (int i = 0; i < 4; ++i) set.add(random_image(4, 4, 1, static_cast<uint64_t>(i)).data.data(), 0);
  BatchOptions o;
  o.height = 8;
  o.width = 8;
  Tensor images;
  std::vector<int32_t> labels;
  const std::vector<int64_t> order{3, 2, 1, 0};
  assemble_batch(set, order, 0, 4, 0, o, images, labels);
  const float* data = images.data();
  const int32_t* label_data = labels.data();
  assemble_batch(set, order, 1, 3, 0, o, images, labels);
  CHECK(images.shape() == Shape{3, 8, 8, 3});
  CHECK(images.data() == data);
  CHECK(labels.data() == label_data);
  for (int64_t p = 0; p < images.size() / 3; ++p) {
    CHECK(images[p * 3] == images[p * 3 + 1]);
    CHECK(images[p * 3] == images[p * 3 + 2]);
  }
  // One output channel for a grayscale model; other normalizations.
  o.channels = 1;
  o.normalization = Normalization::unit_range();
  assemble_batch(set, order, 0, 1, 0, o, images, labels);
  CHECK(images.shape() == Shape{1, 8, 8, 1});
  CHECK(images[0] == doctest::Approx(set.image(3)[0] / 255.0));
  CHECK_THROWS_AS(assemble_batch(set, order, 2, 3, 0, o, images, labels), Error);
  const std::vector<int64_t> bad{7};
  CHECK_THROWS_WITH_AS(assemble_batch(set, bad, 0, 1, 0, o, images, labels), doctest::Contains("out of range"), Error);
}

TEST_CASE("balanced class weights") {
  std::vector<int32_t> labels;
  for (int i = 0; i < 6; ++i) labels.push_back(0);
  for (int i = 0; i < 3; ++i) labels.push_back(1);
  labels.push_back(2);
  const std::vector<float> w = balanced_class_weights(labels, 3);
  REQUIRE(w.size() == 3);
  CHECK(w[0] == doctest::Approx(10.0 / 18.0));
  CHECK(w[1] == doctest::Approx(10.0 / 9.0));
  CHECK(w[2] == doctest::Approx(10.0 / 3.0));
  // A class that does not occur gets 0 and does not count in n_classes.
  const std::vector<float> w4 = balanced_class_weights(labels, 4);
  CHECK(w4[0] == doctest::Approx(10.0 / 18.0));
  CHECK(w4[3] == 0.0f);
  // Over a subset of indices: images 0, 1 (class 0) and 6, 7, 8 (class 1): 5 / (2 * count).
  const std::vector<float> ws = balanced_class_weights(labels, {0, 1, 6, 7, 8}, 3);
  CHECK(ws[0] == doctest::Approx(5.0 / 4.0));
  CHECK(ws[1] == doctest::Approx(5.0 / 6.0));
  CHECK(ws[2] == 0.0f);
}

TEST_CASE("epoch orders: shuffled and class-balanced") {
  std::vector<int32_t> labels;
  std::vector<int64_t> indices;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < std::vector<int>{60, 30, 10}[static_cast<size_t>(c)]; ++i) {
      indices.push_back(static_cast<int64_t>(labels.size()));
      labels.push_back(c);
    }
  const std::vector<int64_t> shuffled = shuffled_order(indices, 1, 0);
  std::vector<int64_t> sorted = shuffled;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == indices);
  CHECK(shuffled != indices);
  CHECK(shuffled_order(indices, 1, 0) == shuffled);
  CHECK(shuffled_order(indices, 1, 1) != shuffled);

  const std::vector<int64_t> balanced = balanced_order(labels, indices, 3, 1, 0);
  REQUIRE(balanced.size() == 100);
  const std::vector<int64_t> counts = count_per_class(labels, balanced, 3);
  for (int64_t c : counts) CHECK((c == 33 || c == 34));
  std::map<int64_t, int> uses;
  for (int64_t i : balanced) ++uses[i];
  // Draws within a class go round the class: the majority class has no repeats, the minority
  // class's 10 images are each used 3 or 4 times.
  for (const auto& [index, n] : uses) {
    if (labels[static_cast<size_t>(index)] == 0) CHECK(n == 1);
    if (labels[static_cast<size_t>(index)] == 2) CHECK((n == 3 || n == 4));
  }
  CHECK(balanced_order(labels, indices, 3, 1, 0) == balanced);
  CHECK(balanced_order(labels, indices, 3, 1, 1) != balanced);
  // A longer epoch, and a subset without class 1.
  const std::vector<int64_t> longer = balanced_order(labels, indices, 3, 2, 0, 300);
  CHECK(count_per_class(labels, longer, 3) == std::vector<int64_t>{100, 100, 100});
  std::vector<int64_t> no_middle;
  for (int64_t i : indices)
    if (labels[static_cast<size_t>(i)] != 1) no_middle.push_back(i);
  CHECK(count_per_class(labels, balanced_order(labels, no_middle, 3, 1, 0), 3) == std::vector<int64_t>{35, 0, 35});
}

// ---- Mixup and cutmix (data/mixing.hpp) ----------------------------------------------------------

namespace {

// A source of n distinct images [n, h, w, c] (every value unique: item * 1000 + offset) with
// labels i % classes, and the same images at a second size, as a teacher would read them.
struct DistinctImages : DataSource {
  int64_t n, h, w, c, h2, w2;
  int64_t epochs_started = 0;
  DistinctImages(int64_t n_, int64_t h_, int64_t w_, int64_t c_, int64_t h2_, int64_t w2_)
      : n(n_), h(h_), w(w_), c(c_), h2(h2_), w2(w2_) {}
  int64_t size() const override { return n; }
  void start_epoch(int64_t) override { ++epochs_started; }
  static void fill(Tensor& t, int64_t begin, int64_t count, int64_t hh, int64_t ww, int64_t cc) {
    t.resize(Shape{count, hh, ww, cc});
    const int64_t per = hh * ww * cc;
    for (int64_t i = 0; i < count; ++i)
      for (int64_t k = 0; k < per; ++k) t[i * per + k] = static_cast<float>((begin + i) * 1000 + k);
  }
  void get(int64_t begin, int64_t count, Batch& batch) override {
    fill(batch.inputs, begin, count, h, w, c);
    batch.other_sizes.resize(1);
    fill(batch.other_sizes[0], begin, count, h2, w2, c);
    batch.labels.resize(static_cast<size_t>(count));
    batch.items.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
      batch.labels[static_cast<size_t>(i)] = static_cast<int32_t>((begin + i) % 3);
      batch.items[static_cast<size_t>(i)] = begin + i;
    }
    batch.clear_mixing();
  }
};

}  // namespace

TEST_CASE("mixup blends each image with its partner's, and the labels by the same weight") {
  DistinctImages images(10, 4, 5, 3, 8, 10);
  MixingSource mixed(images, {/*mixup_alpha=*/0.4f, /*cutmix_alpha=*/0, /*probability=*/1, /*seed=*/5});
  Batch plain, batch;
  std::vector<float> weights;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    mixed.start_epoch(epoch);
    for (const int64_t begin : {int64_t{0}, int64_t{2}}) {
      images.get(begin, 8, plain);
      mixed.get(begin, 8, batch);
      const MixDraw& d = mixed.last_draw();
      REQUIRE(d.kind == MixDraw::Kind::mixup);
      REQUIRE(batch.mixed());
      CHECK(batch.mix_weight == d.weight);
      CHECK(d.weight >= 0.0f);
      CHECK(d.weight <= 1.0f);
      weights.push_back(d.weight);
      std::vector<int64_t> sorted = d.partner;
      std::sort(sorted.begin(), sorted.end());
      for (int64_t i = 0; i < 8; ++i) CHECK(sorted[static_cast<size_t>(i)] == i);  // a permutation
      for (int64_t i = 0; i < 8; ++i) {
        const int64_t j = d.partner[static_cast<size_t>(i)];
        CHECK(batch.labels[static_cast<size_t>(i)] == plain.labels[static_cast<size_t>(i)]);
        CHECK(batch.mixed_labels[static_cast<size_t>(i)] == plain.labels[static_cast<size_t>(j)]);
        for (const auto& [mixed_t, plain_t] : {std::pair<const Tensor*, const Tensor*>{&batch.inputs, &plain.inputs},
                                               {&batch.other_sizes[0], &plain.other_sizes[0]}}) {
          const int64_t per = mixed_t->size() / 8;
          for (int64_t k = 0; k < per; ++k) {
            const double expected = static_cast<double>(d.weight) * (*plain_t)[i * per + k] +
                                    (1.0 - d.weight) * (*plain_t)[j * per + k];
            REQUIRE(std::fabs((*mixed_t)[i * per + k] - expected) <= 1e-6 * std::fabs(expected) + 1e-3);
          }
        }
      }
      // The same (epoch, batch) draws the same: a resumed run mixes as the uninterrupted one.
      MixingSource again(images, {0.4f, 0, 1, 5});
      again.start_epoch(epoch);
      Batch repeat;
      again.get(begin, 8, repeat);
      CHECK(again.last_draw().partner == d.partner);
      CHECK(again.last_draw().weight == d.weight);
      CHECK(std::memcmp(repeat.inputs.data(), batch.inputs.data(), sizeof(float) * batch.inputs.size()) == 0);
    }
  }
  // Different batches and epochs draw differently.
  std::sort(weights.begin(), weights.end());
  CHECK(std::unique(weights.begin(), weights.end()) == weights.end());
}

TEST_CASE("cutmix pastes the same box of the partner at every size, and weighs the labels by area") {
  DistinctImages images(6, 12, 16, 2, 24, 32);
  MixingSource mixed(images, {0, /*cutmix_alpha=*/1.0f, 1, 9});
  Batch plain, batch;
  mixed.start_epoch(3);
  images.get(0, 6, plain);
  mixed.get(0, 6, batch);
  const MixDraw& d = mixed.last_draw();
  REQUIRE(d.kind == MixDraw::Kind::cutmix);
  // The box at each size: rows [top, bottom), columns [left, right).
  for (const auto& [mixed_t, plain_t] : {std::pair<const Tensor*, const Tensor*>{&batch.inputs, &plain.inputs},
                                         {&batch.other_sizes[0], &plain.other_sizes[0]}}) {
    const int64_t h = mixed_t->dim(1), w = mixed_t->dim(2), c = mixed_t->dim(3), per = h * w * c;
    const auto [top, bottom] = box_span(d.box.top, d.box.bottom, h);
    const auto [left, right] = box_span(d.box.left, d.box.right, w);
    int64_t inside_count = 0;
    for (int64_t i = 0; i < 6; ++i) {
      const int64_t j = d.partner[static_cast<size_t>(i)];
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          for (int64_t ch = 0; ch < c; ++ch) {
            const bool inside = y >= top && y < bottom && x >= left && x < right;
            const int64_t k = (y * w + x) * c + ch;
            REQUIRE((*mixed_t)[i * per + k] == (*plain_t)[(inside ? j : i) * per + k]);
            inside_count += inside && i == 0 && ch == 0;
          }
    }
    CAPTURE(h);
    CHECK(inside_count > 0);  // this draw's box is not empty
    // The label weight is the fraction of the own image left at the model's size.
    if (h == 12) CHECK(batch.mix_weight == doctest::Approx(1.0 - inside_count / static_cast<double>(h * w)).epsilon(1e-6));
  }
  // Over many batches, with lam ~ Beta(1, 1) = U(0, 1): a box of side s = sqrt(1 - lam) centred
  // uniformly keeps s - s^2 / 4 of its side on average after clipping to the image, so the mean
  // area is E[u - u^1.5 / 2 + u^2 / 16] = 1/2 - 1/5 + 1/48 over u = 1 - lam, and the weight
  // 1 - that = 0.679 (before rounding the box to pixels). And the box moves about.
  double weight_sum = 0;
  std::set<double> tops;
  for (int64_t epoch = 0; epoch < 400; ++epoch) {
    mixed.start_epoch(epoch);
    mixed.get(0, 6, batch);
    weight_sum += batch.mix_weight;
    tops.insert(mixed.last_draw().box.top);
  }
  CHECK(weight_sum / 400 == doctest::Approx(1 - (0.5 - 0.2 + 1.0 / 48)).epsilon(0.03));
  CHECK(tops.size() > 100);
}

TEST_CASE("mixing: probability, both kinds, the main label, and clear errors") {
  DistinctImages images(8, 4, 4, 1, 4, 4);
  Batch batch;
  // probability 0: never mixed; a later plain batch from the inner source is unmixed again.
  MixingSource never(images, {1.0f, 1.0f, 0.0f, 1});
  never.get(0, 8, batch);
  CHECK_FALSE(batch.mixed());
  CHECK(batch.mix_weight == 1.0f);
  // Both kinds at even odds, half of the batches mixed.
  MixingSource both(images, {0.2f, 1.0f, 0.5f, 2});
  int kinds[3] = {0, 0, 0};
  for (int64_t epoch = 0; epoch < 600; ++epoch) {
    both.start_epoch(epoch);
    both.get(0, 8, batch);
    const MixDraw::Kind kind = both.last_draw().kind;
    ++kinds[static_cast<int>(kind)];
    CHECK(batch.mixed() == (kind != MixDraw::Kind::none));
    if (batch.mixed())
      for (int64_t i = 0; i < 8; ++i)
        CHECK(batch.main_label(i) == (batch.mix_weight < 0.5f ? batch.mixed_labels[static_cast<size_t>(i)]
                                                                : batch.labels[static_cast<size_t>(i)]));
  }
  CHECK(kinds[0] == doctest::Approx(300).epsilon(0.15));
  CHECK(kinds[1] == doctest::Approx(150).epsilon(0.25));
  CHECK(kinds[2] == doctest::Approx(150).epsilon(0.25));
  images.get(0, 8, batch);
  CHECK_FALSE(batch.mixed());
  CHECK(both.mirrored() == nullptr);

  CHECK_THROWS_WITH_AS(MixingSource(images, {-1.0f, 0, 1, 0}), doctest::Contains("mixup_alpha must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(MixingSource(images, {0, NAN, 1, 0}), doctest::Contains("cutmix_alpha must be >= 0"), Error);
  CHECK_THROWS_WITH_AS(MixingSource(images, {1, 0, 1.5f, 0}), doctest::Contains("probability must be in [0, 1]"), Error);
  // Cutmix needs images; features [N, C] are refused by name.
  Tensor features(Shape{8, 5});
  std::vector<int32_t> labels(8, 0);
  TensorSource flat(features, labels);
  MixingSource cut(flat, {0, 1.0f, 1, 0});
  CHECK_THROWS_WITH_AS(cut.get(0, 8, batch), doctest::Contains("cutmix: inputs must be images"), Error);
  MixingSource blend(flat, {1.0f, 0, 1, 0});
  blend.get(0, 8, batch);  // mixup works on any rank
  CHECK(batch.mixed());
}

TEST_CASE("a slice of the real FER-2013") {
  const fs::path root = fs::path(EIGENNET_SHARED_DIR) / "data/fer2013";
  if (!fs::is_directory(root / "test")) {
    MESSAGE("FER-2013 not found under " << root.string() << ": skipped");
    return;
  }
  ImageFolderOptions o = quiet_options(ColorMode::grayscale);
  o.classes = {"disgust", "surprise"};
  o.max_per_class = 16;
  const ImageSet set = load_image_folder((root / "test").string(), o);
  CHECK(set.size() == 32);
  CHECK(set.skipped_count() == 0);
  CHECK(set.height() == 48);
  CHECK(set.width() == 48);
  CHECK(set.channels() == 1);
  CHECK(set.class_names() == std::vector<std::string>{"disgust", "surprise"});

  BatchOptions b;
  b.height = 96;
  b.width = 96;
  b.augment = true;
  Tensor images;
  std::vector<int32_t> labels;
  const std::vector<int64_t> order{0, 31};
  assemble_batch(set, order, 0, 2, 0, b, images, labels);
  CHECK(labels == std::vector<int32_t>{0, 1});
  float lo = 1, hi = -1;
  for (int64_t i = 0; i < images.size(); ++i) {
    lo = std::min(lo, images[i]);
    hi = std::max(hi, images[i]);
  }
  CHECK(lo >= -1.0f);
  CHECK(hi <= 1.0f);
  CHECK(hi - lo > 0.5f);  // a face, not a blank

  // The whole layout, a few images per class.
  o.classes = {};
  o.max_per_class = 10;
  const ImageDataset dataset = load_image_dataset(root.string(), o);
  CHECK(dataset.layout == FolderLayout::train_test);
  CHECK(dataset.images.num_classes() == 7);
  CHECK(dataset.split.test.size() == 70);
  CHECK(dataset.split.train.size() + dataset.split.validation.size() == 70);
  CHECK(dataset.split.validation.size() == 7);
}
