// An inverted residual block in inference, with every BatchNorm folded into the convolution
// before it (bias per output channel) and the activations as clamps:
//
//   E = clamp(X We + be)          expand 1x1 (absent when the block has no expansion: E = X)
//   D = clamp(depthwise3x3(E) + bd)
//   Y = clamp(D Wp + bp [+ S])    project 1x1, with the skip connection S in the same epilogue
//                                 (S = X, or a shortcut the caller wrote into Y beforehand)
//
// in one sweep over bands of output rows that stay in the core's cache: for each band the
// thread expands just the input rows the band's depthwise windows read (keeping the rows the next
// band of the same image shares), runs the depthwise rows, and projects them straight into Y.
// E and D never exist as whole tensors, so each block reads X once and writes Y once. Images
// whose expanded activation is small are taken several at a time so that the 1x1 products still
// see many rows.
#pragma once

#include <algorithm>
#include <cstring>

#include "../core/parallel.hpp"
#include "depthwise_conv2d.hpp"
#include "../core/geometry.hpp"
#include "pointwise_engine.hpp"

namespace eigennet::kernels {

struct InvertedResidualInference {
  pointwise::Packed expand;           // [in_c, hidden], packed; data == nullptr: no expansion
  const float* expand_bias = nullptr;  // [hidden]
  Clamp expand_clamp;
  const float* depthwise = nullptr;  // [3, 3, hidden] (Keras layout)
  const float* depthwise_bias = nullptr;
  Clamp depthwise_clamp;
  pointwise::Packed project;  // [hidden, out_c], packed
  const float* project_bias = nullptr;
  Clamp project_clamp;
  // The skip connection, added before the project clamp: none; the block's input X (needs stride
  // 1 and in_c == out_c); or whatever Y holds on entry (a shortcut the caller computed into y,
  // such as BlazeFace's max-pooled, zero-padded input), read and overwritten in place.
  enum class Skip { none, input, output };
  Skip skip = Skip::none;
};

namespace detail {

// Work units: `images` whole images at a time, or bands of `rows` output rows of one image.
struct BandPlan {
  int64_t images = 1, rows = 0, bands_per_image = 1, units = 0;
};

// Floats of expanded activation a band may hold: well inside a core's L2 together with the
// band's depthwise output and the block's weights.
constexpr int64_t band_budget_floats = 64 * 1024;

inline BandPlan plan_bands(const WindowGeometry& g, int threads) {
  BandPlan p;
  const int64_t row_floats = g.in_w * g.in_c, image_floats = g.in_h * row_floats;
  if (image_floats <= band_budget_floats) {
    p.rows = g.out_h;
    p.images = std::max<int64_t>(1, std::min(g.batch, band_budget_floats / std::max<int64_t>(1, image_floats)));
    // Leave at least two units per thread when the batch allows it.
    if (g.batch >= 2 * threads) p.images = std::min(p.images, std::max<int64_t>(1, g.batch / (2 * threads)));
    p.units = (g.batch + p.images - 1) / p.images;
  } else {
    const int64_t input_rows = std::max<int64_t>(3, band_budget_floats / row_floats);
    p.rows = std::clamp<int64_t>((input_rows - 3) / g.stride_h + 1, 1, g.out_h);
    p.bands_per_image = (g.out_h + p.rows - 1) / p.rows;
    p.units = g.batch * p.bands_per_image;
  }
  return p;
}

}  // namespace detail

// y [N, out_h, out_w, out_c] = the block applied to x [N, in_h, in_w, in_c]. g is the depthwise
// convolution's geometry (its channels are the hidden width).
inline void inverted_residual_inference(float* y, const float* x, int64_t in_c, const WindowGeometry& g,
                                        const InvertedResidualInference& w) {
  namespace pw = pointwise;
  const int64_t hidden = g.in_c, out_c = w.project.n;
  const bool expands = w.expand.data != nullptr;
  const int64_t in_row = g.in_w * hidden, out_row = g.out_w * hidden;
  const int threads = blocks_for(g.batch * g.out_h, g.out_w * hidden * (2 * in_c + 9 + 2 * out_c));
  const detail::BandPlan plan = detail::plan_bands(g, threads);
  const int64_t flops_per_unit = plan.images * plan.rows * g.out_w * hidden * (in_c + 9 + out_c);
  pw::Epilogue expand_epilogue, project_epilogue;
  expand_epilogue.bias = w.expand_bias;
  expand_epilogue.lo = w.expand_clamp.lo;
  expand_epilogue.hi = w.expand_clamp.hi;
  project_epilogue.bias = w.project_bias;
  project_epilogue.lo = w.project_clamp.lo;
  project_epilogue.hi = w.project_clamp.hi;
  const float* zero = detail::zeros(std::max<int64_t>(g.in_w, 1) * hidden);
  if (threads > 1 && plan.units < threads) {
    // Fewer work units than threads (one small image, a late block at batch 1): three passes,
    // each split between all threads (the 1x1 products by column panels), on whole tensors in
    // scratch, which at these sizes stay in cache.
    const float* expanded = x;
    if (expands) {
      float* e = aligned_scratch<33>(static_cast<size_t>(g.in_pixels() * hidden));
      pw::multiply(e, hidden, x, in_c, g.in_pixels(), w.expand, expand_epilogue);
      expanded = e;
    }
    float* d = aligned_scratch<34>(static_cast<size_t>(g.out_pixels() * hidden));
    depthwise_conv2d_forward(d, expanded, w.depthwise, w.depthwise_bias, g, w.depthwise_clamp);
    pw::Epilogue e = project_epilogue;
    if (w.skip == InvertedResidualInference::Skip::input) {
      e.residual = x;
      e.ld_residual = in_c;
    } else if (w.skip == InvertedResidualInference::Skip::output) {
      e.residual = y;
      e.ld_residual = out_c;
    }
    pw::multiply(y, out_c, d, hidden, g.out_pixels(), w.project, e);
    return;
  }
  parallel_blocks(plan.units, flops_per_unit, [&](int64_t u_begin, int64_t u_end, int) {
    const int64_t max_in_rows = std::min(g.in_h, (plan.rows - 1) * g.stride_h + 3);
    float* expanded = expands ? aligned_scratch<30>(static_cast<size_t>(plan.images * max_in_rows * in_row)) : nullptr;
    float* band = aligned_scratch<31>(static_cast<size_t>(plan.images * plan.rows * out_row));
    int64_t held_image = -1, held_lo = 0, held_hi = 0;  // input rows [lo, hi) of that image in `expanded`
    for (int64_t u = u_begin; u < u_end; ++u) {
      int64_t n0, n1, oh0, oh1;
      if (plan.bands_per_image == 1) {
        n0 = u * plan.images;
        n1 = std::min(g.batch, n0 + plan.images);
        oh0 = 0;
        oh1 = g.out_h;
      } else {
        n0 = u / plan.bands_per_image;
        n1 = n0 + 1;
        oh0 = (u % plan.bands_per_image) * plan.rows;
        oh1 = std::min(g.out_h, oh0 + plan.rows);
      }
      // Input rows the band's windows read, clipped to the image.
      const int64_t lo = std::max<int64_t>(0, oh0 * g.stride_h - g.pad_top);
      const int64_t hi = std::min(g.in_h, (oh1 - 1) * g.stride_h - g.pad_top + 3);
      const float* source;  // expanded rows [lo, hi) of each image, image after image
      int64_t image_stride;
      if (!expands) {
        source = x + (n0 * g.in_h + lo) * in_row;
        image_stride = g.in_h * in_row;
      } else if (n1 - n0 > 1 || (lo == 0 && hi == g.in_h)) {
        // Whole images: one product over all their pixels.
        const int64_t pixels = (n1 - n0) * g.in_h * g.in_w;
        pw::multiply_rows(expanded, hidden, x + n0 * g.in_h * g.in_w * in_c, in_c, pixels, 0, pixels, w.expand, 0,
                          pw::panel_count(hidden), expand_epilogue);
        source = expanded;
        image_stride = g.in_h * in_row;
        held_image = -1;
      } else {
        // A band: keep the rows shared with the previous band of the same image.
        int64_t start = lo;
        if (held_image == n0 && held_lo <= lo && lo < held_hi && held_hi <= hi) {
          std::memmove(expanded, expanded + (lo - held_lo) * in_row,
                       static_cast<size_t>((held_hi - lo) * in_row) * sizeof(float));
          start = held_hi;
        }
        const int64_t pixels = (hi - start) * g.in_w;
        pw::multiply_rows(expanded + (start - lo) * in_row, hidden, x + ((n0 * g.in_h + start) * g.in_w) * in_c, in_c,
                          pixels, 0, pixels, w.expand, 0, pw::panel_count(hidden), expand_epilogue);
        held_image = n0;
        held_lo = lo;
        held_hi = hi;
        source = expanded;
        image_stride = 0;
      }
      // Depthwise rows of the band.
      for (int64_t n = n0; n < n1; ++n) {
        const float* image = source + (n - n0) * image_stride;
        detail::depthwise3x3_output_rows(
            n * g.out_h + oh0, n * g.out_h + oh1,
            [&](int64_t r) { return band + ((n - n0) * (oh1 - oh0) + r - n * g.out_h - oh0) * out_row; },
            [&](int64_t, int64_t ih) { return image + (ih - lo) * in_row; }, zero, w.depthwise, w.depthwise_bias, g,
            w.depthwise_clamp);
      }
      // Project the band into y, with the skip connection.
      const int64_t pixels = (n1 - n0) * (oh1 - oh0) * g.out_w;
      const int64_t first = (n0 * g.out_h + oh0) * g.out_w;  // first output pixel (bands: one image)
      pw::Epilogue e = project_epilogue;
      if (w.skip == InvertedResidualInference::Skip::input) {
        e.residual = x + first * in_c;  // stride 1: output pixel p reads input pixel p
        e.ld_residual = in_c;
      } else if (w.skip == InvertedResidualInference::Skip::output) {
        e.residual = y + first * out_c;
        e.ld_residual = out_c;
      }
      pw::multiply_rows(y + first * out_c, out_c, band, hidden, pixels, 0, pixels, w.project, 0,
                        pw::panel_count(out_c), e);
    }
  });
}

}  // namespace eigennet::kernels
