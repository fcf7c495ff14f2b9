// Regression tests for what fuzzing the loaders found (fuzz/README.md) and for the limits that
// keep hostile files harmless: every such input is refused with a reason that names the
// problem (an eigennet::Error, or a decode failure for image loaders that skip bad files),
// before anything large is allocated. Crashing inputs found by the fuzzers are kept in
// tests/fixtures/fuzz/.
#include <doctest/doctest.h>

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <new>
#include <string>
#include <vector>

#include "test_util.hpp"
#include <eigennet/eigennet.hpp>

using namespace eigennet;
namespace fs = std::filesystem;

// ---- Heap accounting: operator new/delete of this test program count live bytes -------------
// (Tensors allocate through Eigen's aligned_malloc, which this does not see; the JSON parse
// tree and strings go through operator new.)
namespace {
std::atomic<int64_t> live_bytes{0};
std::atomic<int64_t> peak_bytes{0};
}  // namespace

void* operator new(size_t size) {
  void* p = std::malloc(size ? size : 1);
  if (!p) throw std::bad_alloc();
  const int64_t now = live_bytes += static_cast<int64_t>(malloc_usable_size(p));
  int64_t peak = peak_bytes.load();
  while (now > peak && !peak_bytes.compare_exchange_weak(peak, now)) {
  }
  return p;
}
void operator delete(void* p) noexcept {
  if (!p) return;
  live_bytes -= static_cast<int64_t>(malloc_usable_size(p));
  std::free(p);
}
void operator delete(void* p, size_t) noexcept { operator delete(p); }

namespace {

// The most heap memory (through operator new) that `body` had in use at once beyond what was in
// use before it.
template <typename Body>
int64_t peak_extra_bytes(Body&& body) {
  const int64_t before = live_bytes.load();
  peak_bytes = before;
  body();
  return peak_bytes.load() - before;
}

const std::string fixtures = std::string(EIGENNET_FIXTURES_DIR) + "/fuzz/";

using testing::contains;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;

// decode_image's verdict on bytes: empty when it decodes, its reason otherwise.
std::string decode_error(const std::vector<uint8_t>& bytes, ColorMode color = ColorMode::rgb) {
  Image image;
  std::string error;
  if (decode_image(bytes.data(), bytes.size(), color, AlphaMode::composite_black, ImageLimits{}, image, error))
    return {};
  CHECK(!error.empty());
  return error;
}

// A small valid baseline JPEG (stb_image_write, compiled in by eigennet/plot).
std::vector<uint8_t> small_jpeg() {
  const int width = 19, height = 11;
  std::vector<uint8_t> pixels(static_cast<size_t>(width * height * 3));
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>((i * 37) % 251);
  std::vector<uint8_t> out;
  const auto append = [](void* context, void* data, int size) {
    auto* bytes = static_cast<std::vector<uint8_t>*>(context);
    bytes->insert(bytes->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  REQUIRE(stbi_write_jpg_to_func(append, &out, width, height, 3, pixels.data(), 90));
  return out;
}

// A marker segment: 0xFF, the marker, a 2-byte length that counts itself, the payload.
std::vector<uint8_t> segment(uint8_t marker, const std::vector<uint8_t>& payload) {
  const size_t length = payload.size() + 2;
  std::vector<uint8_t> s(payload.size() + 4);
  s[0] = 0xFF;
  s[1] = marker;
  s[2] = static_cast<uint8_t>(length >> 8);
  s[3] = static_cast<uint8_t>(length & 0xFF);
  std::copy(payload.begin(), payload.end(), s.begin() + 4);
  return s;
}

// A DHT table (class 0, id 0) whose 16 code counts add up to `codes`, followed by the symbols.
std::vector<uint8_t> dht_payload(int codes) {
  std::vector<uint8_t> payload(17, 0);
  for (int i = 0; i < 16 && codes > 0; ++i) {
    payload[static_cast<size_t>(1 + i)] = static_cast<uint8_t>(std::min(codes, 255));
    codes -= std::min(codes, 255);
  }
  int symbols = 0;
  for (int i = 1; i <= 16; ++i) symbols += payload[static_cast<size_t>(i)];
  payload.resize(payload.size() + static_cast<size_t>(symbols), 0);
  return payload;
}

std::vector<uint8_t> insert_at(std::vector<uint8_t> bytes, size_t at, const std::vector<uint8_t>& part) {
  bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), part.begin(), part.end());
  return bytes;
}

}  // namespace

// ---- Images -------------------------------------------------------------------------------------
// The first three findings were bugs of Debian 12's stb_image 2.27, once guarded by hand-written
// pre-parsers in front of it. JPEG and PNG are now decoded by libjpeg-turbo and libpng, and
// stb_image's JPEG, PNG and PNM decoders are compiled out of eigennet's copy (data/stb.hpp).

TEST_CASE("stb_image's JPEG, PNG and PNM decoders are compiled out of eigennet's copy") {
  // stbi_info would recognize these if the decoders were there (data/stb.hpp defines STBI_NO_*).
  const std::vector<uint8_t> jpeg = small_jpeg();
  int w = 0, h = 0, c = 0;
  CHECK(stbi_info_from_memory(jpeg.data(), static_cast<int>(jpeg.size()), &w, &h, &c) == 0);
  const std::vector<uint8_t> png = read_bytes(std::string(EIGENNET_FIXTURES_DIR) + "/images/rgb8.png");
  CHECK(stbi_info_from_memory(png.data(), static_cast<int>(png.size()), &w, &h, &c) == 0);
  const std::string ppm = "P6 1 1 255 abc";
  CHECK(stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(ppm.data()), static_cast<int>(ppm.size()), &w, &h, &c) ==
        0);
  // ... and decode_image still reads the first two.
  CHECK(decode_error(jpeg).empty());
  CHECK(decode_error(png).empty());
}

TEST_CASE("fuzz finding (stb_image 2.27): a JPEG Huffman table with more than 256 codes is refused") {
  // stb_image 2.27 overflowed its Huffman arrays on this file (UBSan: index 257 out of bounds
  // for 'stbi_uc[257]'), already inside stbi_info. libjpeg-turbo checks the table.
  const std::string path = fixtures + "jpeg_dht_too_many_codes.jpg";
  const std::vector<uint8_t> bytes = read_bytes(path);
  CHECK(contains(decode_error(bytes), "corrupt or unsupported JPEG (libjpeg-turbo: Bogus Huffman table definition)"));
  CHECK(contains(decode_error(bytes, ColorMode::grayscale), "Bogus Huffman table definition"));

  int width = 0, height = 0;
  std::string error;
  CHECK_FALSE(read_image_size(path, width, height, error));
  CHECK(contains(error, "Bogus Huffman table definition"));

  try {
    load_image(path);
    FAIL("load_image accepted the file");
  } catch (const Error& e) {
    CHECK(contains(e.what(), path));
    CHECK(contains(e.what(), "Bogus Huffman table definition"));
  }

  // An image folder skips it, also as its first file (which sets the stored size).
  TempDir dir;
  write_bytes(dir.path / "happy" / "a_bad.jpg", bytes);
  write_bytes(dir.path / "happy" / "b_good.jpg", small_jpeg());
  ImageFolderOptions options;
  options.warnings = false;
  const ImageSet set = load_image_folder(dir.path.string(), options);
  CHECK(set.size() == 1);
  CHECK(set.width() == 19);
  REQUIRE(set.skipped_count() == 1);
  CHECK(contains(set.skipped()[0].reason, "Bogus Huffman table definition"));

  // The same table as a real segment of a valid file is refused wherever it stands; inside an
  // APP1 payload (as in EXIF data) the same bytes are no table, and the file decodes unchanged.
  const std::vector<uint8_t> jpeg = small_jpeg();
  Image original;
  REQUIRE(decode_image(jpeg.data(), jpeg.size(), ColorMode::rgb, AlphaMode::drop, ImageLimits{}, original, error));
  CHECK(contains(decode_error(insert_at(jpeg, 2, segment(0xC4, dht_payload(257)))), "Bogus Huffman table"));
  CHECK(decode_error(insert_at(jpeg, 2, segment(0xC4, dht_payload(256)))).empty());  // 256 codes are allowed
  std::vector<uint8_t> app1 = {'E', 'x', 'i', 'f', 0, 0};
  const std::vector<uint8_t> disguised = segment(0xC4, dht_payload(257));
  app1.insert(app1.end(), disguised.begin(), disguised.end());
  const std::vector<uint8_t> with_app1 = insert_at(jpeg, 2, segment(0xE1, app1));
  Image decoded;
  REQUIRE(decode_image(with_app1.data(), with_app1.size(), ColorMode::rgb, AlphaMode::drop, ImageLimits{}, decoded,
                       error));
  CHECK(decoded.pixels == original.pixels);
}

TEST_CASE("fuzz finding (stb_image 2.27, issue 19): a JPEG whose data ends in a marker mid-code is refused") {
  // stb_image 2.27: "stb_image.h:2065:27: runtime error: shift exponent 32 is too large for 32-bit
  // type 'unsigned int'" in stbi__grow_buffer_unsafe <- stbi__jpeg_decode_block (a marker where a
  // coefficient's bits should be drives its bit count to -8). Found again for this test by
  // decoding gray.jpg cut inside its scan, followed by random bytes and EOI, with the old
  // decoder under UBSan (60,000 candidates). libjpeg-turbo reports the missing data.
  const std::vector<uint8_t> bytes = read_bytes(fixtures + "jpeg_stb_shift_by_32.jpg");
  CHECK(contains(decode_error(bytes), "corrupt or unsupported JPEG (libjpeg-turbo: Corrupt JPEG data: premature end of data segment)"));
  CHECK(contains(decode_error(bytes, ColorMode::grayscale), "premature end of data segment"));
  DecodeOptions reduced;
  reduced.min_width = reduced.min_height = 1;
  Image image;
  std::string error;
  CHECK_FALSE(decode_image(bytes.data(), bytes.size(), reduced, image, error));
  CHECK(contains(error, "premature end of data segment"));
}

TEST_CASE("fuzz finding (stb_image 2.27): a PNG chunk longer than the file is refused without allocating for it") {
  // The IDAT chunk of this 80-byte file claims ~2 GB; stb_image reserved that much before
  // finding the data missing. (Its header's CRC is wrong too, which libpng checks first.)
  const std::vector<uint8_t> bytes = read_bytes(fixtures + "png_idat_past_end.png");
  const size_t idat = static_cast<size_t>(std::search(bytes.begin(), bytes.end(), "IDAT", "IDAT" + 4) - bytes.begin());
  REQUIRE(idat + 4 <= bytes.size());
  const uint32_t claimed = uint32_t{bytes[idat - 4]} << 24 | uint32_t{bytes[idat - 3]} << 16 |
                           uint32_t{bytes[idat - 2]} << 8 | uint32_t{bytes[idat - 1]};
  CHECK(claimed > 1'000'000'000u);
  CHECK(contains(decode_error(bytes), "corrupt or unsupported PNG (libpng: "));

  // Every truncation of a valid PNG is refused with a reason; the whole file decodes.
  std::vector<uint8_t> png;
  const auto append = [](void* context, void* data, int size) {
    auto* out = static_cast<std::vector<uint8_t>*>(context);
    out->insert(out->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  std::vector<uint8_t> pixels(7 * 5 * 4);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 11);
  REQUIRE(stbi_write_png_to_func(append, &png, 7, 5, 4, pixels.data(), 7 * 4));
  CHECK(decode_error(png).empty());
  for (size_t n = 1; n + 12 < png.size(); ++n) {  // the last 12 bytes are IEND, which is not needed
    CAPTURE(n);
    CHECK(!decode_error(std::vector<uint8_t>(png.begin(), png.begin() + static_cast<std::ptrdiff_t>(n))).empty());
  }
}

TEST_CASE("fuzz finding (stb_image 2.27): PNM files, whose header numbers overflowed stb_image, are refused") {
  // stb_image 2.27 overflows an int reading the width of this file (UBSan: signed integer
  // overflow). PNM is not decoded any more: refused by its magic number, with the formats that are.
  const std::string unsupported =
      "unsupported image format: a PNM (PBM/PGM/PPM/PAM) file (supported: JPEG, PNG and BMP)";
  CHECK(decode_error(read_bytes(fixtures + "pnm_width_overflow.ppm")) == unsupported);
  const auto bytes = [](const std::string& text) { return std::vector<uint8_t>(text.begin(), text.end()); };
  CHECK(decode_error(bytes("P5 2147483648 1 255\n")) == unsupported);
  CHECK(decode_error(bytes("P6\n# c 1\n1 99999999999 255\n")) == unsupported);
  CHECK(decode_error(bytes("P5\n3 2\n255\n\x01\x02\x03\x04\x05\x06")) == unsupported);
}

TEST_CASE("fuzz finding (issue 19's campaign): a 261-byte BMP announcing 2304x2055 pixels is refused") {
  // stb_image decoded it, the missing 19 MB of pixel data as black: 10-13 s per input through the
  // fuzzer's pipeline (slow-unit reports); a header could announce 64 megapixels the same way.
  const std::vector<uint8_t> bytes = read_bytes(fixtures + "bmp_short_file_large_image.bmp");
  CHECK(bytes.size() == 261);
  CHECK(decode_error(bytes) == "truncated BMP: 2304x2055 pixels of 32 bits need 18939002 bytes, the file has 261");
  int width = 0, height = 0;
  std::string error;
  CHECK_FALSE(read_image_size(fixtures + "bmp_short_file_large_image.bmp", width, height, error));
  CHECK(contains(error, "truncated BMP"));
}

TEST_CASE("the image fixtures (fuzz seeds of every variant) and real FER-2013 images decode") {
  int seeds = 0;
  for (const auto& entry : fs::directory_iterator(std::string(EIGENNET_FIXTURES_DIR) + "/images")) {
    CAPTURE(entry.path().string());
    CHECK(decode_error(read_bytes(entry.path().string())).empty());
    CHECK(decode_error(read_bytes(entry.path().string()), ColorMode::grayscale).empty());
    ++seeds;
  }
  CHECK(seeds >= 50);
  const fs::path fer = fs::path(EIGENNET_SHARED_DIR) / "data" / "fer2013" / "train" / "happy";
  if (!fs::is_directory(fer)) return;
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(fer)) {
    if (checked == 200) break;
    CAPTURE(entry.path().string());
    CHECK(decode_error(read_bytes(entry.path().string()), ColorMode::grayscale).empty());
    ++checked;
  }
  CHECK(checked == 200);
}

// ---- Safetensors -----------------------------------------------------------------------------

namespace {

std::string safetensors_file(const std::string& header, const std::string& data = {}) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return out + header + data;
}

std::string parse_error(const std::string& bytes) {
  try {
    parse_safetensors(bytes.data(), bytes.size(), "hostile.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("a safetensors header of many tiny JSON values is refused at the value limit, with bounded memory") {
  // 10 million "0," are a 20 MB header, and were ~2 GB of parse tree before the limit.
  std::string zeros;
  zeros.reserve(20'000'010);
  for (int i = 0; i < 10'000'000; ++i) zeros += "0,";
  zeros.back() = ']';
  const std::string array = safetensors_file(R"({"w":{"dtype":"F32","shape":[)" + zeros + "}}");
  std::string error;
  const int64_t peak = peak_extra_bytes([&] { error = parse_error(array); });
  CHECK(contains(error, "hostile.safetensors"));
  CHECK(contains(error, "more than " + std::to_string(safetensors_max_header_values) + " values (header size limit)"));
  MESSAGE("peak parse memory for a 20 MB header of zeros: ", peak / 1'000'000, " MB");
  CHECK(peak < 400'000'000);

  // The same limit holds across many small arrays (it counts values, not array lengths).
  std::string metadata = R"({"__metadata__":{)";
  for (int i = 0; i < 200'000; ++i) metadata += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":[0,0,0,0,0,0,0,0,0,0]";
  CHECK(contains(parse_error(safetensors_file(metadata + "}}")), "values (header size limit)"));

  // A file at the tensor limit stays well inside it: 100,000 entries of 12 values.
  CHECK(safetensors_max_header_values >= 12 * safetensors_max_tensors + 100'000);
}

// ---- Classifier metadata -----------------------------------------------------------------------

namespace {

ClassifierSpec small_spec() {
  ClassifierSpec spec;
  spec.base.alpha = 0.35f;
  spec.base.height = spec.base.width = 32;
  spec.base.pooling = GlobalPooling::max;
  spec.head.hidden_units = 0;
  spec.head.dropout = 0.25f;
  spec.class_names = {"happy", "sad"};
  spec.head.classes = 2;
  return spec;
}

// A parsed classifier file: metadata of `spec` with `changes` applied, and a head kernel of the
// shape the (unchanged) spec needs.
SafetensorsFile classifier_file(const ClassifierSpec& spec, const std::map<std::string, std::string>& changes) {
  SafetensorsFile file;
  file.path = "model.safetensors";
  file.metadata = spec.to_metadata();
  for (const auto& [key, value] : changes) file.metadata[key] = value;
  const int64_t features = mobilenet_v2_feature_channels(spec.base.alpha);
  file.tensors.push_back({"predictions/kernel", Tensor(Shape{features, spec.head.classes}), "F32"});
  return file;
}

std::string load_error(SafetensorsFile file) {
  try {
    load_classifier(std::move(file));
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("classifier metadata: numbers are checked before conversion and the head size against the file") {
  const ClassifierSpec spec = small_spec();
  struct Case {
    std::map<std::string, std::string> changes;
    std::string expected;
  };
  const std::vector<Case> cases = {
      // Each of these was a float -> integer (or double -> float) cast of an out-of-range value.
      {{{"input_height", "1e300"}}, "metadata 'input_height' = '1e300' is outside [32, 16384]"},
      {{{"input_width", "nan"}}, "metadata 'input_width' = 'nan' is not a number"},
      {{{"alpha", "1e39"}}, "metadata 'alpha' = '1e39' is outside"},
      {{{"batchnorm_epsilon", "inf"}}, "'batchnorm_epsilon' = 'inf' is not a number"},
      {{{"head_hidden_units", "-1"}}, "'head_hidden_units' = '-1' is outside [0, 1048576]"},
      {{{"head_hidden_units", "4.5"}}, "'head_hidden_units' = '4.5' is not an integer"},
      {{{"num_classes", "1e20"}}, "'num_classes' = '1e20' is outside [2, 1048576]"},
      {{{"num_classes", "3"}}, "2 class names but num_classes = 3"},
      {{{"head_dropout", "0.5junk"}}, "'head_dropout' = '0.5junk' is not a number"},
      // An embedded NUL used to end the number early ("32" was read).
      {{{"input_height", std::string("32\0junk", 7)}}, "metadata 'input_height'"},
      {{{"format", "other"}}, "metadata format is 'other'"},
      // The head's size must match kernels in the file before the model is built: a 1M-unit
      // hidden layer would be a 5 GB kernel.
      {{{"head_hidden_units", "1048576"}}, "tensor 'head_dense/kernel' is missing"},
      {{{"num_classes", "4"}, {"classes", "a\nb\nc\nd"}},
       "tensor 'predictions/kernel' has shape [1280, 2] but the metadata describes [1280, 4]"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.expected);
    const std::string error = load_error(classifier_file(spec, c.changes));
    CHECK(contains(error, "model.safetensors"));
    CHECK(contains(error, c.expected));
  }
  // Consistent metadata gets past these checks to the model (whose base weights are missing here).
  CHECK(contains(load_error(classifier_file(spec, {})), "model parameter(s) missing from the file"));
}

TEST_CASE("save_classifier / load_classifier round trip (from disk and from memory)") {
  TempDir dir;
  const std::string path = (dir.path / "classifier.safetensors").string();
  ClassifierSpec spec = small_spec();
  spec.head.hidden_units = 8;
  std::unique_ptr<Classifier> model = make_classifier(spec, 5);
  save_classifier(path, *model, spec, {{"note", "test"}});

  const LoadedClassifier from_disk = load_classifier(path);
  CHECK(from_disk.spec.class_names == spec.class_names);
  CHECK(from_disk.spec.head.hidden_units == 8);
  CHECK(from_disk.spec.head.dropout == doctest::Approx(0.25));
  CHECK(from_disk.spec.base.height == 32);
  CHECK(from_disk.metadata.at("note") == "test");
  // The spec from the header alone is the one the whole file gives.
  const ClassifierSpec header_only = read_classifier_spec(path);
  CHECK(header_only.class_names == spec.class_names);
  CHECK(header_only.head.hidden_units == 8);
  CHECK(header_only.base.height == 32);
  CHECK(header_only.base.width == from_disk.spec.base.width);
  CHECK(header_only.base.alpha == from_disk.spec.base.alpha);
  const std::vector<uint8_t> bytes = read_bytes(path);
  const LoadedClassifier from_memory = load_classifier(parse_safetensors(bytes.data(), bytes.size(), path));
  const ParameterList saved = model->parameters(), disk = from_disk.model->parameters(),
                      memory = from_memory.model->parameters();
  REQUIRE(saved.size() == disk.size());
  REQUIRE(saved.size() == memory.size());
  for (size_t i = 0; i < saved.size(); ++i) {
    CAPTURE(saved[i]->name);
    REQUIRE(saved[i]->value.size() == disk[i]->value.size());
    CHECK(std::memcmp(saved[i]->value.data(), disk[i]->value.data(), sizeof(float) * saved[i]->value.size()) == 0);
    CHECK(std::memcmp(saved[i]->value.data(), memory[i]->value.data(), sizeof(float) * saved[i]->value.size()) == 0);
  }
}

TEST_CASE("copy_classifier_weights: a network starts from one that predicts more classes, at another size") {
  ClassifierSpec from_spec = small_spec();
  from_spec.head.hidden_units = 8;
  from_spec.class_names = {"angry", "happy", "sad"};
  from_spec.head.classes = 3;
  std::unique_ptr<Classifier> from = make_classifier(from_spec, 5);
  // Two of its classes, in another order; the same input size, then a larger one.
  ClassifierSpec to_spec = from_spec;
  to_spec.class_names = {"sad", "angry"};
  to_spec.head.classes = 2;
  std::unique_ptr<Classifier> to = make_classifier(to_spec, 9);
  copy_classifier_weights(*to, to_spec, *from, from_spec, "from.safetensors");
  Tensor images(Shape{3, 32, 32, 3});
  for (int64_t i = 0; i < images.size(); ++i) images[i] = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
  const Tensor from_logits = from->forward(images, Mode::inference);
  const Tensor to_logits = to->forward(images, Mode::inference);
  REQUIRE(to_logits.shape() == Shape{3, 2});
  for (int64_t n = 0; n < 3; ++n) {
    CHECK(to_logits[n * 2 + 0] == from_logits[n * 3 + 2]);  // sad
    CHECK(to_logits[n * 2 + 1] == from_logits[n * 3 + 0]);  // angry
  }
  ClassifierSpec larger = to_spec;
  larger.base.height = larger.base.width = 40;
  std::unique_ptr<Classifier> large = make_classifier(larger, 11);
  copy_classifier_weights(*large, larger, *from, from_spec, "from.safetensors");
  const ParameterList a = large->parameters(), b = to->parameters();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i]->value.shape() == b[i]->value.shape());
    CHECK(std::memcmp(a[i]->value.data(), b[i]->value.data(), static_cast<size_t>(a[i]->value.size()) * 4) == 0);
  }

  // A class the source does not predict, and another architecture, are refused by name.
  ClassifierSpec unknown = to_spec;
  unknown.class_names = {"sad", "fear"};
  std::unique_ptr<Classifier> unknown_model = make_classifier(unknown, 3);
  CHECK_THROWS_WITH_AS(copy_classifier_weights(*unknown_model, unknown, *from, from_spec, "from.safetensors"),
                       "'from.safetensors' predicts the classes (angry, happy, sad) but this network predicts (sad, "
                       "fear): 'fear' is not among them",
                       Error);
  ClassifierSpec wider = to_spec;
  wider.head.hidden_units = 16;
  std::unique_ptr<Classifier> wider_model = make_classifier(wider, 3);
  CHECK_THROWS_WITH_AS(copy_classifier_weights(*wider_model, wider, *from, from_spec, "from.safetensors"),
                       doctest::Contains("hidden 8 but this one has alpha 0.35, max pooling, hidden 16"), Error);
}
