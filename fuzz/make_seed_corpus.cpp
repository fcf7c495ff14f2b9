// Writes the seed corpora of the fuzzers: small valid inputs that the fuzzers mutate.
//   make_seed_corpus <dir>  ->  <dir>/safetensors/, <dir>/image/, <dir>/classifier_metadata/
// Seeds are made by the project's own writers (write_safetensors, save format of
// ClassifierSpec) and by stb_image_write, so they follow the code when formats change.
// Formats stb_image_write cannot produce (progressive, arithmetic, CMYK and EXIF-rotated JPEG;
// 16-bit, palette and interlaced PNG; ...) are the committed fixtures of the decoding tests,
// tests/fixtures/images/ (made by tests/fixtures/make_image_fixtures.py).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <eigennet/io/safetensors.hpp>
#include <eigennet/models/classifier_io.hpp>

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

namespace fs = std::filesystem;
using namespace eigennet;

namespace {

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out.good()) fail("make_seed_corpus: cannot write '", path.string(), "'");
}

// A safetensors file from a header text and a data section (for dtypes our writer does not produce).
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  return out + header + data;
}

Tensor ramp(const Shape& shape) {
  Tensor t(shape);
  for (int64_t i = 0; i < t.size(); ++i) t[i] = 0.25f * static_cast<float>(i) - 1.0f;
  return t;
}

void safetensors_seeds(const fs::path& dir) {
  const Tensor scalar = ramp(Shape{}), vector = ramp(Shape{5}), matrix = ramp(Shape{2, 3}), empty = ramp(Shape{0, 4});
  const Tensor rank6 = ramp(Shape{1, 2, 1, 2, 1, 2});
  write_safetensors((dir / "empty.safetensors").string(), std::vector<TensorRef>{});
  write_safetensors((dir / "metadata_only.safetensors").string(), std::vector<TensorRef>{},
                    {{"format", "pt"}, {"note", "line\nbreak \"quoted\" \xC3\xA9"}});
  write_safetensors((dir / "one.safetensors").string(), {{"w", &vector}});
  write_safetensors((dir / "several.safetensors").string(),
                    {{"Conv1/kernel", &matrix}, {"bias", &scalar}, {"none", &empty}, {"deep", &rank6}},
                    {{"format", "eigennet"}});
  // F16, BF16 and F64 are converted on reading; U8 is recognized but refused.
  write_bytes(dir / "dtypes.safetensors",
              make_file(R"({"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},)"
                        R"("d":{"dtype":"F64","shape":[1],"data_offsets":[8,16]}})",
                        std::string("\x00\x3c\x00\xfc\x80\x3f\x00\x80\x00\x00\x00\x00\x00\x00\xf0\x3f", 16)));
  write_bytes(dir / "u8.safetensors", make_file(R"({"u":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})", "abc"));
  write_bytes(dir / "escapes.safetensors",
              make_file(R"({"__metadata__":{"k\u00e9y":"\ud83d\ude00\t\/"},"a\"b":{"dtype":"F32","shape":[],)"
                        R"("data_offsets":[0,4]}}   )",
                        std::string(4, '\0')));
}

struct Pixels {
  int width, height, channels;
  std::vector<uint8_t> data;
};

// A smooth pattern with an edge, so that the encoders produce non-trivial data.
Pixels pattern(int width, int height, int channels) {
  Pixels p{width, height, channels, std::vector<uint8_t>(static_cast<size_t>(width * height * channels))};
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < channels; ++c)
        p.data[static_cast<size_t>((y * width + x) * channels + c)] =
            static_cast<uint8_t>((x * 40 + y * 25 + c * 70 + (x > width / 2 ? 100 : 0)) & 0xFF);
  return p;
}

void image_seeds(const fs::path& dir) {
  for (int channels = 1; channels <= 4; ++channels) {
    const Pixels p = pattern(9, 7, channels);
    const std::string base = (dir / ("c" + std::to_string(channels))).string();
    if (!stbi_write_png((base + ".png").c_str(), p.width, p.height, channels, p.data.data(), p.width * channels) ||
        !stbi_write_bmp((base + ".bmp").c_str(), p.width, p.height, channels, p.data.data()) ||
        !stbi_write_jpg((base + ".jpg").c_str(), p.width, p.height, channels, p.data.data(), 75))
      fail("make_seed_corpus: stb_image_write failed for ", base);
  }
  const Pixels big = pattern(17, 16, 3);  // more than one JPEG MCU in each direction
  if (!stbi_write_jpg((dir / "c3_17x16.jpg").string().c_str(), big.width, big.height, 3, big.data.data(), 95))
    fail("make_seed_corpus: stb_image_write failed for c3_17x16.jpg");
}

void classifier_seeds(const fs::path& dir) {
  ClassifierSpec spec;
  spec.base.alpha = 0.35f;
  spec.base.height = spec.base.width = 48;
  spec.base.pooling = GlobalPooling::max;
  spec.class_names = {"happy", "sad"};
  spec.head.classes = 2;
  const int64_t features = mobilenet_v2_feature_channels(spec.base.alpha);
  // Without a hidden layer: the head is one kernel [features, classes] (10 KB).
  spec.head.hidden_units = 0;
  const Tensor predictions = ramp(Shape{features, 2}), bias = ramp(Shape{2});
  write_safetensors((dir / "no_hidden.safetensors").string(),
                    {{"predictions/kernel", &predictions}, {"predictions/bias", &bias}}, spec.to_metadata());
  // Metadata only (fails at the missing head kernel), with a hidden layer and three classes.
  spec.head.hidden_units = 4;
  spec.class_names = {"angry", "happy", "neutral"};
  spec.head.classes = 3;
  write_safetensors((dir / "metadata_only.safetensors").string(), std::vector<TensorRef>{}, spec.to_metadata());
  // A hidden layer of 1 unit: both head kernels, small.
  spec.head.hidden_units = 1;
  const Tensor hidden = ramp(Shape{features, 1}), out = ramp(Shape{1, 3});
  write_safetensors((dir / "hidden.safetensors").string(), {{"head_dense/kernel", &hidden}, {"predictions/kernel", &out}},
                    spec.to_metadata());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seed_corpus <corpus-dir>\n");
    return 2;
  }
  try {
    const fs::path root = argv[1];
    for (const char* name : {"safetensors", "image", "classifier_metadata"}) fs::create_directories(root / name);
    safetensors_seeds(root / "safetensors");
    image_seeds(root / "image");
    classifier_seeds(root / "classifier_metadata");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
