// Resampling 8-bit pixels straight into a network's float input, with the tent filter of
// resize_image (data/image.hpp): bilinear when enlarging, a tent as wide as the scale when
// shrinking (an area average that avoids aliasing), edges clamped. The same weights as
// stb_image_resize's triangle filter, without its rounding back to 8 bits and several times
// faster (its generic per-channel path cost the face detector 3 ms per 640x480 picture).
//
//   resize_to_floats(pixels, width * 3, height, width, 3, input, 256 * 3, 192, 256, 1 / 127.5f, -1);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"

namespace eigennet {

// Along one axis, the input samples each output sample is made of and their weights.
struct TentTaps {
  int taps = 0;               // per output sample (the widest; narrower ones are padded with weight 0)
  std::vector<int> index;     // [out * taps], input positions, clamped into [0, in)
  std::vector<float> weight;  // [out * taps], each output's summing to 1
};

// Output sample j is centred at u = (j + 0.5) * in / out in input coordinates; input sample i
// (centred at i + 0.5) weighs max(0, 1 - r * |i + 0.5 - u|), r = min(1, out / in), normalised.
inline TentTaps tent_taps(int in, int out) {
  EIGENNET_CHECK(in > 0 && out > 0, "tent_taps: invalid sizes ", in, " -> ", out);
  const double scale = static_cast<double>(out) / in, r = std::min(1.0, scale), radius = 1.0 / r;
  TentTaps t;
  t.taps = static_cast<int>(std::ceil(2 * radius)) + 1;
  t.index.assign(static_cast<size_t>(out) * t.taps, 0);
  t.weight.assign(static_cast<size_t>(out) * t.taps, 0.0f);
  std::vector<double> w(static_cast<size_t>(t.taps));
  for (int j = 0; j < out; ++j) {
    const double u = (j + 0.5) / scale;
    const int first = static_cast<int>(std::floor(u - 0.5 - radius));
    double total = 0;
    int n = 0;
    for (int i = first; n < t.taps && i + 0.5 < u + radius; ++i) {
      const double weight = 1.0 - r * std::abs(i + 0.5 - u);
      if (weight <= 0) continue;
      w[static_cast<size_t>(n)] = weight;
      t.index[static_cast<size_t>(j) * t.taps + n] = std::clamp(i, 0, in - 1);
      total += weight;
      ++n;
    }
    for (int k = 0; k < n; ++k) t.weight[static_cast<size_t>(j) * t.taps + k] = static_cast<float>(w[static_cast<size_t>(k)] / total);
    for (int k = n; k < t.taps; ++k)  // padding: weight 0 on a sample that exists
      t.index[static_cast<size_t>(j) * t.taps + k] = t.index[static_cast<size_t>(j) * t.taps + std::max(n - 1, 0)];
  }
  return t;
}

// Resizes in_height x in_width pixels of 1 or 3 channels (rows in_stride bytes apart) to
// out_height x out_width and writes every sample as value * scale + offset into RGB float rows
// out_stride floats apart (a gray sample into all three channels). Allocates only its taps
// and one row of floats (reused by the calling thread).
inline void resize_to_floats(const uint8_t* in, int64_t in_stride, int in_height, int in_width, int channels,
                             float* out, int64_t out_stride, int out_height, int out_width, float scale, float offset) {
  EIGENNET_CHECK(channels == 1 || channels == 3, "resize_to_floats: 1 or 3 channels, got ", channels);
  EIGENNET_CHECK(in_height > 0 && in_width > 0 && out_height > 0 && out_width > 0 && in_stride >= int64_t{in_width} * channels &&
                     out_stride >= int64_t{out_width} * 3,
                 "resize_to_floats: invalid sizes ", in_width, "x", in_height, " -> ", out_width, "x", out_height);
  const TentTaps rows = tent_taps(in_height, out_height), cols = tent_taps(in_width, out_width);
  const int64_t line_floats = int64_t{in_width} * channels;
  thread_local std::vector<float> line;
  if (static_cast<int64_t>(line.size()) < line_floats) line.resize(static_cast<size_t>(line_floats));
  float* l = line.data();
  for (int y = 0; y < out_height; ++y) {
    // Vertically: the input rows of this output row, weighted, into one row of floats.
    const int* ry = rows.index.data() + static_cast<size_t>(y) * rows.taps;
    const float* wy = rows.weight.data() + static_cast<size_t>(y) * rows.taps;
    {
      const uint8_t* p = in + ry[0] * in_stride;
      const float w = wy[0];
      for (int64_t i = 0; i < line_floats; ++i) l[i] = w * static_cast<float>(p[i]);
    }
    for (int t = 1; t < rows.taps; ++t) {
      const float w = wy[t];
      if (w == 0.0f) continue;
      const uint8_t* p = in + ry[t] * in_stride;
      for (int64_t i = 0; i < line_floats; ++i) l[i] += w * static_cast<float>(p[i]);
    }
    // Horizontally: each output pixel from its input columns of that row.
    float* o = out + y * out_stride;
    for (int x = 0; x < out_width; ++x) {
      const int* cx = cols.index.data() + static_cast<size_t>(x) * cols.taps;
      const float* wx = cols.weight.data() + static_cast<size_t>(x) * cols.taps;
      if (channels == 1) {
        float v = 0;
        for (int t = 0; t < cols.taps; ++t) v += wx[t] * l[cx[t]];
        o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = v * scale + offset;
      } else {
        float r = 0, g = 0, b = 0;
        for (int t = 0; t < cols.taps; ++t) {
          const float* p = l + 3 * int64_t{cx[t]};
          r += wx[t] * p[0];
          g += wx[t] * p[1];
          b += wx[t] * p[2];
        }
        o[3 * x] = r * scale + offset;
        o[3 * x + 1] = g * scale + offset;
        o[3 * x + 2] = b * scale + offset;
      }
    }
  }
}

}  // namespace eigennet
