// Window geometry shared by convolutions and pooling: output size and padding under
// TensorFlow's rules.
//   valid: out = floor((in - k) / s) + 1, no padding.
//   same:  out = ceil(in / s), total padding max((out - 1) * s + k - in, 0), of which the
//          top/left side gets floor(total / 2) and the bottom/right side the rest. For stride 2
//          on an even input this pads only the bottom/right, unlike PyTorch's symmetric padding.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "../core/error.hpp"

namespace eigennet {

enum class Padding { same, valid };

inline const char* to_string(Padding p) { return p == Padding::same ? "same" : "valid"; }

struct WindowGeometry {
  int64_t batch = 0;
  int64_t in_h = 0, in_w = 0, in_c = 0;
  int64_t out_h = 0, out_w = 0, out_c = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0;

  int64_t in_pixels() const { return batch * in_h * in_w; }
  int64_t out_pixels() const { return batch * out_h * out_w; }
};

namespace detail {
inline void same_or_valid(int64_t in, int64_t k, int64_t s, Padding padding, int64_t& out, int64_t& pad_before,
                          const char* who, const char* axis) {
  if (padding == Padding::same) {
    out = (in + s - 1) / s;
    const int64_t total = std::max<int64_t>((out - 1) * s + k - in, 0);
    pad_before = total / 2;
  } else {
    EIGENNET_CHECK(in >= k, who, ": input ", axis, " ", in, " is smaller than the kernel ", k,
                   " with padding 'valid'");
    out = (in - k) / s + 1;
    pad_before = 0;
  }
}
}  // namespace detail

// Geometry of a kernel_h x kernel_w window with the given strides over an NHWC input.
inline WindowGeometry make_window_geometry(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                                           int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                                           Padding padding, const char* who = "window") {
  EIGENNET_CHECK(kernel_h > 0 && kernel_w > 0, who, ": kernel size must be positive, got ", kernel_h, "x", kernel_w);
  EIGENNET_CHECK(stride_h > 0 && stride_w > 0, who, ": stride must be positive, got ", stride_h, "x", stride_w);
  EIGENNET_CHECK(in_h > 0 && in_w > 0 && in_c > 0, who, ": input must be non-empty, got ", in_h, "x", in_w, "x", in_c);
  WindowGeometry g;
  g.batch = batch;
  g.in_h = in_h;
  g.in_w = in_w;
  g.in_c = in_c;
  g.out_c = out_c;
  g.kernel_h = kernel_h;
  g.kernel_w = kernel_w;
  g.stride_h = stride_h;
  g.stride_w = stride_w;
  detail::same_or_valid(in_h, kernel_h, stride_h, padding, g.out_h, g.pad_top, who, "height");
  detail::same_or_valid(in_w, kernel_w, stride_w, padding, g.out_w, g.pad_left, who, "width");
  return g;
}

}  // namespace eigennet
