// Conv2D on NHWC tensors by im2col + matrix product (the pointwise engine). Weight layout is
// Keras' [kh, kw, in_c, out_c], which flattened is exactly the [kh*kw*in_c, out_c] matrix the
// product needs. The forward builds the im2col rows a chunk of output pixels at a time, in
// per-thread scratch that stays in cache, and runs the engine on each chunk with its epilogue.
#pragma once

#include <algorithm>
#include <cstring>

#include "../core/parallel.hpp"
#include "gemm.hpp"
#include "../core/geometry.hpp"
#include "pointwise_engine.hpp"

namespace eigennet::kernels {

inline int64_t conv2d_patch_size(const WindowGeometry& g) { return g.kernel_h * g.kernel_w * g.in_c; }
inline int64_t conv2d_workspace_size(const WindowGeometry& g) { return g.out_pixels() * conv2d_patch_size(g); }

namespace detail {
// The patch of output pixel (n, oh, ow): dst[(kh, kw, c)], zero outside the input. A kernel row
// whose columns are all inside the input is one contiguous run of kernel_w * in_c floats.
inline void im2col_pixel(float* __restrict dst, const float* __restrict in, const WindowGeometry& g, int64_t n,
                         int64_t oh, int64_t ow) {
  const int64_t run = g.kernel_w * g.in_c, iw0 = ow * g.stride_w - g.pad_left;
  const bool columns_inside = iw0 >= 0 && iw0 + g.kernel_w <= g.in_w;
  for (int64_t kh = 0; kh < g.kernel_h; ++kh, dst += run) {
    const int64_t ih = oh * g.stride_h - g.pad_top + kh;
    if (ih < 0 || ih >= g.in_h) {
      for (int64_t j = 0; j < run; ++j) dst[j] = 0.0f;
      continue;
    }
    const float* row = in + (n * g.in_h + ih) * g.in_w * g.in_c;
    if (columns_inside) {
      const float* src = row + iw0 * g.in_c;
      for (int64_t j = 0; j < run; ++j) dst[j] = src[j];
      continue;
    }
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const int64_t iw = iw0 + kw;
      for (int64_t c = 0; c < g.in_c; ++c) dst[kw * g.in_c + c] = iw >= 0 && iw < g.in_w ? row[iw * g.in_c + c] : 0.0f;
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

// out = epilogue(conv(in, w)) with w packed as the [kh*kw*in_c, out_c] matrix, a row of output
// pixels at a time. Pixels whose windows lie inside the row's columns need no im2col: for a
// kernel row kh, the inputs of `tile_rows` neighbouring pixels are runs of kernel_w * in_c floats
// spaced stride * in_c apart, which the pointwise micro-kernel reads in place (one product per
// kernel row, summed in registers). The few border pixels go through im2col in scratch.
inline void conv2d_forward_packed(float* out, const float* in, const pointwise::Packed& w, const WindowGeometry& g,
                                  const pointwise::Epilogue& epilogue) {
  namespace pw = pointwise;
  using simd::Packet;
  const int64_t patch = conv2d_patch_size(g), run = g.kernel_w * g.in_c, rows = g.batch * g.out_h;
  const int64_t panels = pw::panel_count(g.out_c);
  // Interior columns: ow * stride - pad_left >= 0 and ow * stride - pad_left + kernel_w <= in_w.
  const int64_t first = std::min(g.out_w, (g.pad_left + g.stride_w - 1) / g.stride_w);
  const int64_t last = std::max(
      first, std::min(g.out_w, g.in_w - g.kernel_w + g.pad_left >= 0
                                   ? (g.in_w - g.kernel_w + g.pad_left) / g.stride_w + 1
                                   : int64_t{0}));
  const bool direct = last - first >= pw::tile_rows && first + g.out_w - last <= pw::tile_rows;
  parallel_chunks(rows, g.out_w * patch * g.out_c, [&](int64_t r0, int64_t r1, int) {
    // Zero-initialized once: a border tile reads tile_rows rows, only the first ones are set.
    float* col = aligned_scratch<32>(static_cast<size_t>(std::max<int64_t>(g.out_w, pw::tile_rows) * patch));
    Packet acc[pw::tile_rows][pw::vectors];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / g.out_h, oh = r % g.out_h;
      float* orow = out + r * g.out_w * g.out_c;
      pw::Epilogue e = epilogue;
      if (e.residual) e.residual += r * g.out_w * e.ld_residual;
      if (!direct) {
        for (int64_t ow = 0; ow < g.out_w; ++ow) detail::im2col_pixel(col + ow * patch, in, g, n, oh, ow);
        pw::multiply_rows(orow, g.out_c, col, patch, g.out_w, 0, g.out_w, w, 0, panels, e);
        continue;
      }
      // Border pixels through im2col: [0, first) and [last, out_w).
      const int64_t border = first + g.out_w - last;
      if (border > 0) {
        for (int64_t ow = 0; ow < first; ++ow) detail::im2col_pixel(col + ow * patch, in, g, n, oh, ow);
        for (int64_t ow = last; ow < g.out_w; ++ow)
          detail::im2col_pixel(col + (first + ow - last) * patch, in, g, n, oh, ow);
      }
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t n0 = p * pw::panel_width;
        const int columns = static_cast<int>(std::min<int64_t>(pw::panel_width, g.out_c - n0));
        for (int64_t ow = first; ow < last; ow += pw::tile_rows) {
          const int64_t start = std::min(ow, last - pw::tile_rows);  // overlapping last tile
          pw::detail::zero_tile(acc);
          // One segment per kernel row inside the image (rows of zero padding add nothing).
          pw::detail::Segment segments[8];
          int count = 0;
          for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
            const int64_t ih = oh * g.stride_h - g.pad_top + kh;
            if (ih < 0 || ih >= g.in_h) continue;
            if (count == 8) {
              pw::detail::multiply_segments<false>(acc, segments, count, g.stride_w * g.in_c, pw::panel_width);
              count = 0;
            }
            segments[count++] = {in + ((n * g.in_h + ih) * g.in_w + start * g.stride_w - g.pad_left) * g.in_c,
                                 w.panel(p) + kh * run * pw::panel_width, run};
          }
          pw::detail::multiply_segments<false>(acc, segments, count, g.stride_w * g.in_c, pw::panel_width);
          pw::detail::finish_tile(acc, static_cast<int>(ow - start), pw::tile_rows, orow, g.out_c, start, n0, columns,
                                  e, nullptr);
        }
        // Border pixels: their im2col rows in one tile (fewer border pixels than tile rows).
        if (border > 0) {
          pw::detail::zero_tile(acc);
          pw::detail::accumulate_tile<false>(acc, col, patch, w.panel(p), pw::panel_width, patch, true);
          if (first > 0) pw::detail::finish_tile(acc, 0, static_cast<int>(first), orow, g.out_c, 0, n0, columns, e, nullptr);
          if (last < g.out_w) {
            // Tile row i >= first is output pixel last + (i - first).
            pw::Epilogue right = e;
            if (right.residual) right.residual += (last - first) * right.ld_residual;
            pw::detail::finish_tile(acc, static_cast<int>(first), static_cast<int>(border),
                                    orow + (last - first) * g.out_c, g.out_c, 0, n0, columns, right, nullptr);
          }
        }
      }
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
