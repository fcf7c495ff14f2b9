// libFuzzer harness: arbitrary bytes -> the whole image-loading path of a training run:
//   decode_image (libjpeg-turbo for JPEG, libpng for PNG, stb_image for BMP; the project's default
//   ImageLimits, grayscale or RGB, both alpha modes, EXIF orientation on or off, full size or
//   reduced through the JPEG DCT) -> resize_image to a stored size (what load_image_folder does)
//   -> ImageSet -> assemble_batch to a model input size, once plain and once with random
//   augmentation.
//
// The last input byte chooses the pipeline's options (color mode, alpha mode, stored and model
// sizes, model channels, fill mode, test-time flip) and the one before it the decoder's (EXIF
// orientation, minimum size); the decoder still sees every byte. A decode failure must come with
// a reason; a decoded image must have the size its header announced (read without decoding, as
// read_image_size does), reduced no further than asked; everything that decodes must flow
// through the pipeline without a crash, sanitizer report, other exception type, hang or
// oversized allocation, and produce finite values inside the normalization's range (checked,
// aborts).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include <eigennet/data/batch.hpp>
#include <eigennet/data/image.hpp>
#include <eigennet/data/image_folder.hpp>

namespace {

[[noreturn]] void violated(const char* what) {
  std::fprintf(stderr, "fuzz_image: %s\n", what);
  std::abort();
}

struct Size {
  int height, width;
};

// Stored size: the image's own when small, as load_image_folder keeps FER-2013 at 48x48, or
// an odd shape, or a single pixel.
Size stored_size(int choice, const eigennet::Image& image) {
  switch (choice) {
    case 0: return {std::min(image.height, 256), std::min(image.width, 256)};
    case 1: return {48, 48};
    case 2: return {7, 5};
    default: return {1, 1};
  }
}

Size model_size(int choice) {
  switch (choice) {
    case 0: return {48, 48};
    case 1: return {9, 13};
    case 2: return {1, 1};
    default: return {224, 224};  // MobileNetV2's input
  }
}

void check_batch(const eigennet::Tensor& images, const std::vector<int32_t>& labels, int64_t count, Size size,
                 int channels) {
  if (images.shape() != eigennet::Shape{count, size.height, size.width, channels}) violated("wrong batch shape");
  if (labels.size() != static_cast<size_t>(count)) violated("wrong label count");
  for (int64_t i = 0; i < count; ++i)
    if (labels[static_cast<size_t>(i)] != static_cast<int32_t>(i % 2)) violated("wrong label");
  // MobileNetV2 normalization maps [0, 255] to [-1, 1]; the output is clamped to that range.
  for (int64_t i = 0; i < images.size(); ++i) {
    const float v = images[i];
    if (!(v >= -1.0f && v <= 1.0f)) violated("batch value not finite or outside [-1, 1]");
  }
}

// The minimum size of a reduced decode: none, a model's input, a single pixel, or a wide one.
Size minimum_size(int choice) {
  switch (choice) {
    case 0: return {0, 0};
    case 1: return {48, 48};
    case 2: return {1, 1};
    default: return {160, 224};
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t options = data[size - 1];
  const uint8_t decoder_options = size >= 2 ? data[size - 2] : 0;
  eigennet::DecodeOptions decode;  // the default ImageLimits, which every loader uses
  decode.color = (options & 1) ? eigennet::ColorMode::rgb : eigennet::ColorMode::grayscale;
  decode.alpha = (options & 2) ? eigennet::AlphaMode::drop : eigennet::AlphaMode::composite_black;
  decode.apply_exif_orientation = (decoder_options & 1) == 0;
  const Size minimum = minimum_size((decoder_options >> 1) & 3);
  decode.min_height = minimum.height;
  decode.min_width = minimum.width;

  eigennet::Image image;
  std::string error;
  if (!eigennet::decode_image(data, size, decode, image, error)) {
    if (error.empty()) violated("decode failed without a reason");
    return 0;
  }
  if (!eigennet::check_image_limits(image.width, image.height, decode.limits).empty())
    violated("decoded an image beyond the limits");
  if (image.channels != eigennet::channels_of(decode.color) || image.pixels.size() != static_cast<size_t>(image.bytes()))
    violated("decoded image has the wrong channel count or pixel count");
  // The header alone (read_image_size's path) must announce the decoded size: equal at full
  // size, at least the minimum (or the full size when that is smaller) when reduced. A PNG's
  // eXIf chunk after the image data is seen only by decoding: its sides may be swapped.
  eigennet::Image header;
  if (!eigennet::detail::decode_any(data, size, decode, true, header, error)) violated("decodes, but its header does not");
  const bool png = size >= 8 && data[0] == 0x89 && data[1] == 'P';
  if (png && header.width == image.height && header.height == image.width) std::swap(header.width, header.height);
  if (minimum.width == 0 ? (image.width != header.width || image.height != header.height)
                         : (image.width > header.width || image.height > header.height ||
                            image.width < std::min(minimum.width, header.width) ||
                            image.height < std::min(minimum.height, header.height)))
    violated("decoded size differs from the size the header announces");

  try {
    const Size stored = stored_size((options >> 2) & 3, image);
    const eigennet::Image resized = eigennet::resize_image(image, stored.height, stored.width);
    eigennet::ImageSet set(stored.height, stored.width, image.channels, {"first", "second"});
    set.add(resized.pixels.data(), 0, "fuzz-input");
    set.add(resized.pixels.data(), 1, "fuzz-input");

    eigennet::BatchOptions batch;
    const Size model = model_size((options >> 4) & 3);
    batch.height = model.height;
    batch.width = model.width;
    batch.channels = (options & 64) ? 3 : 1;
    eigennet::Tensor images;
    std::vector<int32_t> labels;
    const std::vector<int64_t> order = {0, 1};
    eigennet::assemble_batch(set, order, 0, 2, /*epoch=*/0, batch, images, labels);
    check_batch(images, labels, 2, model, batch.channels);

    batch.augment = true;
    batch.augmentation.fill = (options & 128) ? eigennet::FillMode::constant : eigennet::FillMode::edge;
    batch.augmentation.fill_value = 255;
    batch.augmentation.max_rotation_degrees = 180;
    batch.augmentation.max_scale = 0.5f;
    batch.augmentation.max_shift = 1;
    batch.seed = size;
    batch.flip = (options & 2) != 0;
    eigennet::assemble_batch(set, order, 0, 2, /*epoch=*/static_cast<int64_t>(size % 7), batch, images, labels);
    check_batch(images, labels, 2, model, batch.channels);
  } catch (const eigennet::Error& e) {
    // Every size used above is valid: an Error here means a decoded image the pipeline cannot use.
    std::fprintf(stderr, "fuzz_image: %s\n", e.what());
    violated("a decoded image was rejected after decoding");
  }
  return 0;
}
