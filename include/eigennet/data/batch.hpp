// Batch assembly: stored 8-bit images -> the model's float32 input [N, H, W, C] (NHWC) and labels.
//
// One pass per image does everything: the resize from the stored size to the model input, the
// geometric augmentation (one inverse affine map, bilinear sampling), brightness and contrast,
// clamping to [0, 255] and the model's normalization ((x - mean) / std per channel; the default
// x / 127.5 - 1 is MobileNetV2's). Grayscale images are replicated into 3 channels. Images are
// processed in parallel over the batch; the output tensor and label vector are reused, so once
// they have capacity nothing is allocated.
//
// Sampling: bilinear, with pixel centers aligned as in stb_image_resize (half-pixel offsets), so
// enlarging matches stb's triangle filter. Shrinking by more than 2x aliases (point sampling, no
// area average): store images near the model's input size or smaller.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"
#include "augment.hpp"
#include "image_set.hpp"

namespace eigennet {

// Per-channel normalization applied to pixel values in [0, 255]: (x - mean) / std.
struct Normalization {
  std::array<float, 3> mean{127.5f, 127.5f, 127.5f};
  std::array<float, 3> stddev{127.5f, 127.5f, 127.5f};

  // x / 127.5 - 1, in [-1, 1]: Keras MobileNetV2 (ImageNet weights) preprocessing.
  static Normalization mobilenet_v2() { return {}; }
  // x / 255 - ImageNet mean, divided by the ImageNet std (torchvision models).
  static Normalization imagenet() {
    return {{0.485f * 255, 0.456f * 255, 0.406f * 255}, {0.229f * 255, 0.224f * 255, 0.225f * 255}};
  }
  // x / 255, in [0, 1].
  static Normalization unit_range() { return {{0, 0, 0}, {255, 255, 255}}; }
  // Raw pixel values in [0, 255].
  static Normalization none() { return {{0, 0, 0}, {1, 1, 1}}; }
};

struct BatchOptions {
  int height = 224;  // model input
  int width = 224;
  int channels = 3;  // 3, or 1 for a grayscale model (RGB images are converted to luma)
  Normalization normalization;
  bool augment = false;  // training: random augmentation drawn from `augmentation`
  AugmentConfig augmentation;
  uint64_t seed = 0;  // augmentation seed (with the epoch and each image's index)
  bool flip = false;  // test-time augmentation: mirror every image horizontally
};

namespace detail {

struct RenderSettings {
  AffineMap map;
  bool mirror = false;
  bool constant_fill = false;
  float fill_value = 0;
  // Per output channel: brightness, contrast and normalization folded into one affine map
  // v * scale + offset, clamped to what [0, 255] maps to.
  std::array<float, 3> scale{}, offset{}, lo{}, hi{};
};

// The per-channel output transform, copied into locals so the compiler can keep it in registers
// (through a reference it must assume every output store may change it).
struct OutputTransform {
  float scale[3], offset[3], lo[3], hi[3];
  explicit OutputTransform(const RenderSettings& r) {
    for (size_t c = 0; c < 3; ++c) {
      scale[c] = r.scale[c];
      offset[c] = r.offset[c];
      lo[c] = r.lo[c];
      hi[c] = r.hi[c];
    }
  }
};

template <int SrcChannels, int DstChannels>
inline void write_pixel(float* out, const float* v, const OutputTransform& t) {
  float gray = v[0];
  if (SrcChannels == 3 && DstChannels == 1) gray = 0.299f * v[0] + 0.587f * v[1] + 0.114f * v[SrcChannels - 1];
  for (int c = 0; c < DstChannels; ++c) {
    const float value = DstChannels == 1 ? gray : v[SrcChannels == 1 ? 0 : c];
    out[c] = std::min(std::max(value * t.scale[c] + t.offset[c], t.lo[c]), t.hi[c]);
  }
}

// Bilinear tap along one axis: the two neighbours (as element offsets) and the weight of the second.
struct Tap {
  int32_t first = 0, second = 0;
  float weight = 0;
  bool inside = true;  // within the image's extent [-0.5, size - 0.5]
};

inline Tap make_tap(float position, int size, int stride) {
  Tap t;
  t.inside = position >= -0.5f && position <= static_cast<float>(size) - 0.5f;
  const float clamped = std::min(std::max(position, 0.0f), static_cast<float>(size - 1));
  const int i = static_cast<int>(clamped);
  t.first = i * stride;
  t.second = std::min(i + 1, size - 1) * stride;
  t.weight = clamped - static_cast<float>(i);
  return t;
}

// Any affine map (rotation): a source position per output pixel. Each output row is done in two
// passes: positions, clamping and weights for the whole row (vectorizable), then the gathers.
template <int SrcChannels, int DstChannels>
void render_general(const uint8_t* src, int src_height, int src_width, const RenderSettings& r, int dst_height,
                    int dst_width, float* dst) {
  thread_local std::vector<float> weights;    // per pixel of a row: x weight, y weight
  thread_local std::vector<int32_t> offsets;  // top-left neighbour, step right, step down, inside
  weights.resize(static_cast<size_t>(2 * dst_width));
  offsets.resize(static_cast<size_t>(4 * dst_width));
  float* wx = weights.data();
  float* wy = wx + dst_width;
  int32_t* base = offsets.data();
  int32_t* step_x = base + dst_width;
  int32_t* step_y = step_x + dst_width;
  int32_t* inside = step_y + dst_width;
  const OutputTransform transform(r);
  const int32_t stride = src_width * SrcChannels;
  const float max_x = static_cast<float>(src_width - 1), max_y = static_cast<float>(src_height - 1);
  const float edge_x = static_cast<float>(src_width) - 0.5f, edge_y = static_cast<float>(src_height) - 0.5f;
  const float xx = static_cast<float>(r.map.xx), yx = static_cast<float>(r.map.yx);
  // Mirroring reads the source position of the opposite column, so a flip is exactly a mirror.
  const float first_column = r.mirror ? static_cast<float>(dst_width - 1) : 0.0f;
  const float column_step = r.mirror ? -1.0f : 1.0f;
  const bool constant_fill = r.constant_fill;
  const float fill_value = r.fill_value;
  for (int y = 0; y < dst_height; ++y) {
    const float row_x = static_cast<float>(r.map.xy * y + r.map.x0);
    const float row_y = static_cast<float>(r.map.yy * y + r.map.y0);
#pragma omp simd
    for (int x = 0; x < dst_width; ++x) {
      const float column = first_column + column_step * static_cast<float>(x);
      const float sx = xx * column + row_x, sy = yx * column + row_y;
      // Bitwise & rather than &&: no branches, so the loop vectorizes.
      inside[x] = static_cast<int32_t>(sx >= -0.5f) & static_cast<int32_t>(sx <= edge_x) &
                  static_cast<int32_t>(sy >= -0.5f) & static_cast<int32_t>(sy <= edge_y);
      const float cx = std::min(std::max(sx, 0.0f), max_x), cy = std::min(std::max(sy, 0.0f), max_y);
      const int ix = static_cast<int>(cx), iy = static_cast<int>(cy);
      wx[x] = cx - static_cast<float>(ix);
      wy[x] = cy - static_cast<float>(iy);
      base[x] = iy * stride + ix * SrcChannels;
      step_x[x] = (std::min(ix + 1, src_width - 1) - ix) * SrcChannels;
      step_y[x] = (std::min(iy + 1, src_height - 1) - iy) * stride;
    }
    float* out = dst + static_cast<int64_t>(y) * dst_width * DstChannels;
    float v[SrcChannels];
    for (int x = 0; x < dst_width; ++x, out += DstChannels) {
      if (constant_fill && !inside[x]) {
        for (int c = 0; c < SrcChannels; ++c) v[c] = fill_value;
      } else {
        const uint8_t* p0 = src + base[x];
        const uint8_t* p1 = p0 + step_y[x];
        const int dx = step_x[x];
        for (int c = 0; c < SrcChannels; ++c) {
          // a + t (b - a): exact at t = 0 and for equal neighbours (constant images stay constant).
          const float top = p0[c] + wx[x] * (static_cast<float>(p0[dx + c]) - p0[c]);
          const float bottom = p1[c] + wx[x] * (static_cast<float>(p1[dx + c]) - p1[c]);
          v[c] = top + wy[x] * (bottom - top);
        }
      }
      write_pixel<SrcChannels, DstChannels>(out, v, transform);
    }
  }
}

// Axis-aligned maps (resize, shift, scale, flip): horizontal interpolation once per source row
// that is used, then a vertical interpolation per output row over contiguous buffers. The same
// interpolation as render_general, with the work per output pixel cut several times.
template <int SrcChannels, int DstChannels>
void render_separable(const uint8_t* src, int src_height, int src_width, const RenderSettings& r, int dst_height,
                      int dst_width, float* dst) {
  thread_local std::vector<Tap> columns;
  thread_local std::vector<float> rows;  // src_height x dst_width x SrcChannels, filled on demand
  thread_local std::vector<uint8_t> row_ready;
  columns.resize(static_cast<size_t>(dst_width));
  rows.resize(static_cast<size_t>(src_height) * dst_width * SrcChannels);
  row_ready.assign(static_cast<size_t>(src_height), 0);
  const OutputTransform transform(r);
  for (int x = 0; x < dst_width; ++x) {
    const int column = r.mirror ? dst_width - 1 - x : x;
    columns[static_cast<size_t>(x)] =
        make_tap(static_cast<float>(r.map.xx * column + r.map.x0), src_width, SrcChannels);
  }
  const int64_t row_floats = int64_t{dst_width} * SrcChannels;
  const auto horizontal = [&](int32_t offset) -> const float* {
    const int source_row = offset / (src_width * SrcChannels);
    float* h = rows.data() + source_row * row_floats;
    if (!row_ready[static_cast<size_t>(source_row)]) {
      const uint8_t* line = src + offset;
      for (int x = 0; x < dst_width; ++x) {
        const Tap& t = columns[static_cast<size_t>(x)];
        for (int c = 0; c < SrcChannels; ++c) {
          h[x * SrcChannels + c] =
              (r.constant_fill && !t.inside)
                  ? r.fill_value
                  : line[t.first + c] + t.weight * (static_cast<float>(line[t.second + c]) - line[t.first + c]);
        }
      }
      row_ready[static_cast<size_t>(source_row)] = 1;
    }
    return h;
  };
  float v[SrcChannels];
  for (int y = 0; y < dst_height; ++y) {
    const Tap ty = make_tap(static_cast<float>(r.map.yy * y + r.map.y0), src_height, src_width * SrcChannels);
    float* out = dst + static_cast<int64_t>(y) * dst_width * DstChannels;
    if (r.constant_fill && !ty.inside) {
      for (int c = 0; c < SrcChannels; ++c) v[c] = r.fill_value;
      for (int x = 0; x < dst_width; ++x) write_pixel<SrcChannels, DstChannels>(out + x * DstChannels, v, transform);
      continue;
    }
    const float* top = horizontal(ty.first);
    const float* bottom = horizontal(ty.second);
    for (int x = 0; x < dst_width; ++x) {
      for (int c = 0; c < SrcChannels; ++c) {
        const int i = x * SrcChannels + c;
        v[c] = top[i] + ty.weight * (bottom[i] - top[i]);
      }
      write_pixel<SrcChannels, DstChannels>(out + x * DstChannels, v, transform);
    }
  }
}

template <int SrcChannels, int DstChannels>
void render_image_kernel(const uint8_t* src, int src_height, int src_width, const RenderSettings& r, int dst_height,
                         int dst_width, float* dst) {
  if (r.map.xy == 0 && r.map.yx == 0)
    render_separable<SrcChannels, DstChannels>(src, src_height, src_width, r, dst_height, dst_width, dst);
  else
    render_general<SrcChannels, DstChannels>(src, src_height, src_width, r, dst_height, dst_width, dst);
}

inline double mean_pixel(const uint8_t* src, int64_t count) {
  int64_t sum = 0;
  for (int64_t i = 0; i < count; ++i) sum += src[i];
  return count ? static_cast<double>(sum) / static_cast<double>(count) : 0.0;
}

}  // namespace detail

// Renders one stored image (src_channels 1 or 3) into dst [dst_height, dst_width, dst_channels]
// floats (dst_channels 1 or 3) with the given augmentation (identity = plain resize).
// `mirror` flips horizontally on top of params.flip (test-time flip).
inline void render_image(const uint8_t* src, int src_height, int src_width, int src_channels,
                         const AugmentParams& params, const AugmentConfig& fill, const Normalization& normalization,
                         bool mirror, int dst_height, int dst_width, int dst_channels, float* dst) {
  EIGENNET_CHECK(src_channels == 1 || src_channels == 3, "render_image: source channels must be 1 or 3, got ",
                 src_channels);
  EIGENNET_CHECK(dst_channels == 1 || dst_channels == 3, "render_image: output channels must be 1 or 3, got ",
                 dst_channels);
  for (int c = 0; c < dst_channels; ++c)
    EIGENNET_CHECK(normalization.stddev[static_cast<size_t>(c)] != 0, "render_image: normalization std of channel ", c,
                   " is zero");
  detail::RenderSettings r;
  r.map = inverse_affine_map(params, src_height, src_width, dst_height, dst_width);
  r.mirror = mirror != params.flip;
  r.constant_fill = fill.fill == FillMode::constant;
  r.fill_value = fill.fill_value;
  // Contrast about the source image's mean: gain x + (1 - gain) mean, plus brightness; then
  // (x - mean_c) / std_c, all folded into x * scale_c + offset_c.
  const double mean =
      params.contrast != 1 ? detail::mean_pixel(src, int64_t{src_height} * src_width * src_channels) : 0;
  const double gain = params.contrast;
  const double bias = mean * (1.0 - params.contrast) + 255.0 * params.brightness;
  for (size_t c = 0; c < 3; ++c) {
    const double m = normalization.mean[c], s = normalization.stddev[c];
    r.scale[c] = static_cast<float>(gain / s);
    r.offset[c] = static_cast<float>((bias - m) / s);
    // The ends of [0, 255] after normalization, computed as (x - mean) / std so that the
    // default gives exactly -1 and 1.
    const float a = (0.0f - normalization.mean[c]) / normalization.stddev[c];
    const float b = (255.0f - normalization.mean[c]) / normalization.stddev[c];
    r.lo[c] = std::min(a, b);
    r.hi[c] = std::max(a, b);
  }
  if (src_channels == 1 && dst_channels == 1)
    detail::render_image_kernel<1, 1>(src, src_height, src_width, r, dst_height, dst_width, dst);
  else if (src_channels == 1)
    detail::render_image_kernel<1, 3>(src, src_height, src_width, r, dst_height, dst_width, dst);
  else if (dst_channels == 1)
    detail::render_image_kernel<3, 1>(src, src_height, src_width, r, dst_height, dst_width, dst);
  else
    detail::render_image_kernel<3, 3>(src, src_height, src_width, r, dst_height, dst_width, dst);
}

// The augmentation batch assembly applies to image `index` in `epoch`: one Rng per sample.
inline AugmentParams augment_params_for(const AugmentConfig& config, uint64_t seed, int64_t epoch, int64_t index) {
  Rng rng(derive_seed(seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(index)));
  return sample_augment(config, rng);
}

// Fills `images` [count, H, W, C] and `labels` [count] with the images `indices[0 .. count)` of
// `set`, preprocessed for the model (see the top of this file). `epoch` selects the augmentation
// draws (with options.seed and each image's index).
inline void assemble_batch(const ImageSet& set, const int64_t* indices, int64_t count, int64_t epoch,
                           const BatchOptions& options, Tensor& images, std::vector<int32_t>& labels) {
  EIGENNET_CHECK(count > 0, "assemble_batch: empty batch");
  EIGENNET_CHECK(options.height > 0 && options.width > 0, "assemble_batch: invalid model input size ", options.width,
                 "x", options.height);
  EIGENNET_CHECK(options.channels == 1 || options.channels == 3, "assemble_batch: channels must be 1 or 3, got ",
                 options.channels);
  if (options.augment) options.augmentation.validate();
  for (int c = 0; c < options.channels; ++c)
    EIGENNET_CHECK(options.normalization.stddev[static_cast<size_t>(c)] != 0,
                   "assemble_batch: normalization std of channel ", c, " is zero");
  for (int64_t i = 0; i < count; ++i)
    EIGENNET_CHECK(indices[i] >= 0 && indices[i] < set.size(), "assemble_batch: image index ", indices[i],
                   " out of range for ", set.size(), " images");
  images.resize(Shape{count, options.height, options.width, options.channels});
  labels.resize(static_cast<size_t>(count));
  const int64_t per_image = int64_t{options.height} * options.width * options.channels;
  float* out = images.data();
  const int threads = count > 1 ? std::min<int64_t>(max_threads(), count) : 1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t i = 0; i < count; ++i) {
    const int64_t index = indices[i];
    const AugmentParams params =
        options.augment ? augment_params_for(options.augmentation, options.seed, epoch, index) : AugmentParams{};
    render_image(set.image(index), set.height(), set.width(), set.channels(), params, options.augmentation,
                 options.normalization, options.flip, options.height, options.width, options.channels,
                 out + i * per_image);
    labels[static_cast<size_t>(i)] = set.label(index);
  }
}

inline void assemble_batch(const ImageSet& set, const std::vector<int64_t>& order, int64_t begin, int64_t count,
                           int64_t epoch, const BatchOptions& options, Tensor& images, std::vector<int32_t>& labels) {
  EIGENNET_CHECK(begin >= 0 && count >= 0 && begin + count <= static_cast<int64_t>(order.size()),
                 "assemble_batch: batch [", begin, ", ", begin + count, ") is outside the order of ", order.size(),
                 " images");
  assemble_batch(set, order.data() + begin, count, epoch, options, images, labels);
}

}  // namespace eigennet
