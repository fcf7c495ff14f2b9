// Conv2D on NHWC tensors by im2col + matrix product (the pointwise engine). Weight layout is
// Keras' [kh, kw, in_c, out_c], which flattened is exactly the [kh*kw*in_c, out_c] matrix the
// product needs. The forward builds the im2col rows a chunk of output pixels at a time, in
// per-thread scratch that stays in cache, and runs the engine on each chunk with its epilogue.
#pragma once

#include <algorithm>
#include <cstring>

#include "../core/parallel.hpp"
#include "gemm.hpp"
#include "geometry.hpp"
#include "pointwise_engine.hpp"

namespace eigennet::kernels {

inline int64_t conv2d_patch_size(const WindowGeometry& g) { return g.kernel_h * g.kernel_w * g.in_c; }
inline int64_t conv2d_workspace_size(const WindowGeometry& g) { return g.out_pixels() * conv2d_patch_size(g); }

namespace detail {
// The patch of output pixel (n, oh, ow): dst[(kh, kw, c)], zero outside the input.
inline void im2col_pixel(float* dst, const float* in, const WindowGeometry& g, int64_t n, int64_t oh, int64_t ow) {
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t ih = oh * g.stride_h - g.pad_top + kh;
    for (int64_t kw = 0; kw < g.kernel_w; ++kw, dst += g.in_c) {
      const int64_t iw = ow * g.stride_w - g.pad_left + kw;
      if (ih < 0 || ih >= g.in_h || iw < 0 || iw >= g.in_w) {
        std::memset(dst, 0, static_cast<size_t>(g.in_c) * sizeof(float));
      } else {
        std::memcpy(dst, in + ((n * g.in_h + ih) * g.in_w + iw) * g.in_c, static_cast<size_t>(g.in_c) * sizeof(float));
      }
    }
  }
}
}  // namespace detail

// col[p, (kh, kw, c)] = in[n, oh*s - pad + kh, ow*s - pad + kw, c], zero outside the input.
inline void im2col(float* col, const float* in, const WindowGeometry& g) {
  const int64_t patch = conv2d_patch_size(g);
  const int64_t rows = g.batch * g.out_h;
  parallel_for(rows, rows * g.out_w * patch, [&](int64_t r) {
    const int64_t n = r / g.out_h, oh = r % g.out_h;
    for (int64_t ow = 0; ow < g.out_w; ++ow) detail::im2col_pixel(col + (r * g.out_w + ow) * patch, in, g, n, oh, ow);
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

// out = epilogue(conv(in, w)) with w packed as the [kh*kw*in_c, out_c] matrix: im2col rows a
// chunk of output pixels at a time (per-thread scratch), each chunk through the pointwise engine.
inline void conv2d_forward_packed(float* out, const float* in, const pointwise::Packed& w, const WindowGeometry& g,
                                  const pointwise::Epilogue& epilogue) {
  namespace pw = pointwise;
  const int64_t patch = conv2d_patch_size(g), pixels = g.out_pixels();
  const int64_t chunk = std::clamp<int64_t>((32 * 1024) / std::max<int64_t>(patch, 1) / pw::tile_rows, 1, 16) *
                        pw::tile_rows;
  const int64_t chunks = (pixels + chunk - 1) / chunk, image = g.out_h * g.out_w;
  parallel_blocks(chunks, chunk * patch * g.out_c, [&](int64_t c0, int64_t c1, int) {
    float* col = aligned_scratch<32>(static_cast<size_t>(chunk * patch));
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t p0 = c * chunk, count = std::min(chunk, pixels - p0);
      for (int64_t p = p0; p < p0 + count; ++p) {
        const int64_t n = p / image, oh = p % image / g.out_w, ow = p % g.out_w;
        detail::im2col_pixel(col + (p - p0) * patch, in, g, n, oh, ow);
      }
      pw::Epilogue e = epilogue;
      if (e.residual) e.residual += p0 * e.ld_residual;
      pw::multiply_rows(out + p0 * g.out_c, g.out_c, col, patch, count, 0, count, w, 0, pw::panel_count(g.out_c), e);
    }
  });
}

// out[n, oh, ow, :] = sum over the window of in * weight (+ bias). bias may be null.
// workspace: conv2d_workspace_size(g) floats (used by the backward; the forward works in chunks).
inline void conv2d_forward(float* out, const float* in, const float* weight, const float* bias, const WindowGeometry& g,
                           float* workspace) {
  (void)workspace;
  const pointwise::Packed packed = pointwise::pack_to_scratch<28>(weight, conv2d_patch_size(g), g.out_c, false);
  pointwise::Epilogue epilogue;
  epilogue.bias = bias;
  conv2d_forward_packed(out, in, packed, g, epilogue);
}

// Gradients of conv2d_forward. Accumulates into dweight and dbias; overwrites din. Any of din,
// dweight, dbias may be null to skip that work.
inline void conv2d_backward(float* din, float* dweight, float* dbias, const float* dout, const float* in,
                            const float* weight, const WindowGeometry& g, float* workspace) {
  const int64_t m = g.out_pixels(), patch = conv2d_patch_size(g);
  if (dbias) accumulate_column_sums(dbias, dout, m, g.out_c);
  if (dweight) {
    im2col(workspace, in, g);
    pointwise::multiply_transposed(dweight, workspace, patch, dout, g.out_c, m, patch, g.out_c, true);
  }
  if (din) {
    // dcol = dout W^T, then every input pixel gathers its patch entries.
    const pointwise::Packed packed = pointwise::pack_to_scratch<29>(weight, g.out_c, patch, true);
    pointwise::multiply(workspace, patch, dout, g.out_c, m, packed);
    col2im(din, workspace, g);
  }
}

// The same through Eigen's GEMM on a whole im2col matrix: the reference for the tests.
inline void conv2d_forward_reference(float* out, const float* in, const float* weight, const float* bias,
                                     const WindowGeometry& g, float* workspace) {
  im2col(workspace, in, g);
  gemm(out, workspace, weight, g.out_pixels(), g.out_c, conv2d_patch_size(g), false, false, false);
  if (bias) add_row_bias(out, bias, g.out_pixels(), g.out_c);
}

}  // namespace eigennet::kernels
