// Conv2D on NHWC tensors by im2col + GEMM. Weight layout is Keras' [kh, kw, in_c, out_c],
// which flattened is exactly the [kh*kw*in_c, out_c] matrix the GEMM needs.
#pragma once

#include <cstring>

#include "../core/parallel.hpp"
#include "gemm.hpp"
#include "../core/geometry.hpp"

namespace eigennet::kernels {

inline int64_t conv2d_patch_size(const WindowGeometry& g) { return g.kernel_h * g.kernel_w * g.in_c; }
inline int64_t conv2d_workspace_size(const WindowGeometry& g) { return g.out_pixels() * conv2d_patch_size(g); }

// col[p, (kh, kw, c)] = in[n, oh*s - pad + kh, ow*s - pad + kw, c], zero outside the input.
inline void im2col(float* col, const float* in, const WindowGeometry& g) {
  const int64_t patch = conv2d_patch_size(g);
  const int64_t rows = g.batch * g.out_h;
  parallel_for(rows, rows * g.out_w * patch, [&](int64_t r) {
    const int64_t n = r / g.out_h, oh = r % g.out_h;
    for (int64_t ow = 0; ow < g.out_w; ++ow) {
      float* dst = col + (r * g.out_w + ow) * patch;
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        const int64_t ih = oh * g.stride_h - g.pad_top + kh;
        for (int64_t kw = 0; kw < g.kernel_w; ++kw, dst += g.in_c) {
          const int64_t iw = ow * g.stride_w - g.pad_left + kw;
          if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) {
            std::memset(dst, 0, static_cast<size_t>(g.in_c) * sizeof(float));
          } else {
            std::memcpy(dst, in + ((n * g.in_h + ih) * g.in_w + iw) * g.in_c,
                        static_cast<size_t>(g.in_c) * sizeof(float));
          }
        }
      }
    }
  });
}

// din = col2im(dcol): every input pixel sums the patch entries that read it. Gathers per input
// row so threads never write the same memory.
inline void col2im(float* din, const float* dcol, const WindowGeometry& g) {
  const int64_t patch = conv2d_patch_size(g);
  const int64_t rows = g.batch * g.in_h;
  parallel_for(rows, rows * g.in_w * patch, [&](int64_t r) {
    const int64_t n = r / g.in_h, ih = r % g.in_h;
    float* drow = din + r * g.in_w * g.in_c;
    std::memset(drow, 0, static_cast<size_t>(g.in_w * g.in_c) * sizeof(float));
    for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
      const int64_t oh_s = ih + g.pad_top - kh;  // = oh * stride_h
      if (oh_s < 0 || oh_s % g.stride_h) continue;
      const int64_t oh = oh_s / g.stride_h;
      if (oh >= g.out_h) continue;
      for (int64_t iw = 0; iw < g.in_w; ++iw) {
        float* d = drow + iw * g.in_c;
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          const int64_t ow_s = iw + g.pad_left - kw;
          if (ow_s < 0 || ow_s % g.stride_w) continue;
          const int64_t ow = ow_s / g.stride_w;
          if (ow >= g.out_w) continue;
          const float* s = dcol + ((n * g.out_h + oh) * g.out_w + ow) * patch + (kh * g.kernel_w + kw) * g.in_c;
          for (int64_t c = 0; c < g.in_c; ++c) d[c] += s[c];
        }
      }
    }
  });
}

// out[n, oh, ow, :] = sum over the window of in * weight (+ bias). bias may be null.
// workspace: conv2d_workspace_size(g) floats.
inline void conv2d_forward(float* out, const float* in, const float* weight, const float* bias, const WindowGeometry& g,
                           float* workspace) {
  im2col(workspace, in, g);
  gemm(out, workspace, weight, g.out_pixels(), g.out_c, conv2d_patch_size(g), false, false, false);
  if (bias) add_row_bias(out, bias, g.out_pixels(), g.out_c);
}

// Gradients of conv2d_forward. Accumulates into dweight and dbias; overwrites din. Any of din,
// dweight, dbias may be null to skip that work.
inline void conv2d_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in,
                            const float* weight, const WindowGeometry& g, float* workspace) {
  const int64_t m = g.out_pixels(), patch = conv2d_patch_size(g);
  if (dbias) accumulate_column_sums(dbias, dout, m, g.out_c);
  if (dweight) {
    im2col(workspace, in, g);
    gemm(dweight, workspace, dout, patch, g.out_c, m, true, false, true);
  }
  if (din) {
    gemm(workspace, dout, weight, m, patch, g.out_c, false, true, false);
    col2im(din, workspace, g);
  }
}

}  // namespace eigennet::kernels
