// Pooling on NHWC tensors: windowed max and average (TensorFlow's padding rules; padded cells
// never win a max and are not counted in an average), and global max and average over H x W.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../core/parallel.hpp"
#include "../core/geometry.hpp"

namespace eigennet::kernels {

// out = max over each window. argmax (optional) receives, per output element, the flat index
// of the winning input element within its image's H*W*C plane (ties: the first in scan order).
inline void max_pool2d_forward(float* out, int32_t* argmax, const float* in, const WindowGeometry& g) {
  const int64_t C = g.in_c, rows = g.batch * g.out_h;
  parallel_for(rows, rows * g.out_w * C * g.kernel_h * g.kernel_w, [&](int64_t r) {
    const int64_t n = r / g.out_h, oh = r % g.out_h;
    const float* image = in + n * g.in_h * g.in_w * C;
    for (int64_t ow = 0; ow < g.out_w; ++ow) {
      float* o = out + (r * g.out_w + ow) * C;
      int32_t* a = argmax ? argmax + (r * g.out_w + ow) * C : nullptr;
      for (int64_t c = 0; c < C; ++c) o[c] = -std::numeric_limits<float>::infinity();
      if (a)
        for (int64_t c = 0; c < C; ++c) a[c] = -1;
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        const int64_t ih = oh * g.stride_h - g.pad_top + kh;
        if (ih < 0 || ih >= g.in_h) continue;
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          const int64_t iw = ow * g.stride_w - g.pad_left + kw;
          if (iw < 0 || iw >= g.in_w) continue;
          const int64_t base = (ih * g.in_w + iw) * C;
          for (int64_t c = 0; c < C; ++c) {
            const float v = image[base + c];
            if (v > o[c] || (a && a[c] < 0)) {
              o[c] = v;
              if (a) a[c] = static_cast<int32_t>(base + c);
            }
          }
        }
      }
    }
  });
}

// din = 0, then each output's gradient goes to its arg-max input. Serial over images' outputs
// per image (windows of one image may overlap), parallel over the batch.
inline void max_pool2d_backward(float* din, const float* dout, const int32_t* argmax, const WindowGeometry& g) {
  const int64_t C = g.in_c, plane_in = g.in_h * g.in_w * C, plane_out = g.out_h * g.out_w * C;
  parallel_for(g.batch, g.batch * (plane_in + plane_out), [&](int64_t n) {
    float* d = din + n * plane_in;
    std::memset(d, 0, static_cast<size_t>(plane_in) * sizeof(float));
    const float* o = dout + n * plane_out;
    const int32_t* a = argmax + n * plane_out;
    for (int64_t i = 0; i < plane_out; ++i)
      if (a[i] >= 0) d[a[i]] += o[i];
  });
}

// out = mean over the in-bounds cells of each window.
inline void avg_pool2d_forward(float* out, const float* in, const WindowGeometry& g) {
  const int64_t C = g.in_c, rows = g.batch * g.out_h;
  parallel_for(rows, rows * g.out_w * C * g.kernel_h * g.kernel_w, [&](int64_t r) {
    const int64_t n = r / g.out_h, oh = r % g.out_h;
    const float* image = in + n * g.in_h * g.in_w * C;
    for (int64_t ow = 0; ow < g.out_w; ++ow) {
      float* o = out + (r * g.out_w + ow) * C;
      std::memset(o, 0, static_cast<size_t>(C) * sizeof(float));
      int64_t count = 0;
      for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
        const int64_t ih = oh * g.stride_h - g.pad_top + kh;
        if (ih < 0 || ih >= g.in_h) continue;
        for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
          const int64_t iw = ow * g.stride_w - g.pad_left + kw;
          if (iw < 0 || iw >= g.in_w) continue;
          const float* i = image + (ih * g.in_w + iw) * C;
          for (int64_t c = 0; c < C; ++c) o[c] += i[c];
          ++count;
        }
      }
      const float inv = count ? 1.0f / static_cast<float>(count) : 0.0f;
      for (int64_t c = 0; c < C; ++c) o[c] *= inv;
    }
  });
}

// din[cell] = sum over windows containing the cell of dout / window count. Parallel over the
// batch (windows within an image may overlap).
inline void avg_pool2d_backward(float* din, const float* dout, const WindowGeometry& g) {
  const int64_t C = g.in_c, plane_in = g.in_h * g.in_w * C;
  parallel_for(g.batch, g.batch * plane_in * g.kernel_h * g.kernel_w, [&](int64_t n) {
    float* image = din + n * plane_in;
    std::memset(image, 0, static_cast<size_t>(plane_in) * sizeof(float));
    for (int64_t oh = 0; oh < g.out_h; ++oh) {
      const int64_t h0 = std::max<int64_t>(oh * g.stride_h - g.pad_top, 0);
      const int64_t h1 = std::min<int64_t>(oh * g.stride_h - g.pad_top + g.kernel_h, g.in_h);
      for (int64_t ow = 0; ow < g.out_w; ++ow) {
        const int64_t w0 = std::max<int64_t>(ow * g.stride_w - g.pad_left, 0);
        const int64_t w1 = std::min<int64_t>(ow * g.stride_w - g.pad_left + g.kernel_w, g.in_w);
        const int64_t count = (h1 - h0) * (w1 - w0);
        if (count <= 0) continue;
        const float inv = 1.0f / static_cast<float>(count);
        const float* o = dout + ((n * g.out_h + oh) * g.out_w + ow) * C;
        for (int64_t ih = h0; ih < h1; ++ih)
          for (int64_t iw = w0; iw < w1; ++iw) {
            float* d = image + (ih * g.in_w + iw) * C;
            for (int64_t c = 0; c < C; ++c) d[c] += o[c] * inv;
          }
      }
    }
  });
}

// out[n, c] = mean over H*W of in[n, :, :, c].
inline void global_avg_pool_forward(float* out, const float* in, int64_t batch, int64_t pixels, int64_t c) {
  parallel_for(batch, batch * pixels * c, [&](int64_t n) {
    float* o = out + n * c;
    std::memset(o, 0, static_cast<size_t>(c) * sizeof(float));
    const float* image = in + n * pixels * c;
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t j = 0; j < c; ++j) o[j] += image[p * c + j];
    const float inv = 1.0f / static_cast<float>(pixels);
    for (int64_t j = 0; j < c; ++j) o[j] *= inv;
  });
}

inline void global_avg_pool_backward(float* din, const float* dout, int64_t batch, int64_t pixels, int64_t c) {
  const float inv = 1.0f / static_cast<float>(pixels);
  parallel_for(batch, batch * pixels * c, [&](int64_t n) {
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t j = 0; j < c; ++j) din[(n * pixels + p) * c + j] = dout[n * c + j] * inv;
  });
}

// out[n, c] = max over H*W; argmax[n, c] = the winning pixel index (first on ties).
inline void global_max_pool_forward(float* out, int32_t* argmax, const float* in, int64_t batch, int64_t pixels,
                                    int64_t c) {
  parallel_for(batch, batch * pixels * c, [&](int64_t n) {
    float* o = out + n * c;
    int32_t* a = argmax + n * c;
    const float* image = in + n * pixels * c;
    for (int64_t j = 0; j < c; ++j) {
      o[j] = image[j];
      a[j] = 0;
    }
    for (int64_t p = 1; p < pixels; ++p)
      for (int64_t j = 0; j < c; ++j) {
        const float v = image[p * c + j];
        if (v > o[j]) {
          o[j] = v;
          a[j] = static_cast<int32_t>(p);
        }
      }
  });
}

inline void global_max_pool_backward(float* din, const float* dout, const int32_t* argmax, int64_t batch,
                                     int64_t pixels, int64_t c) {
  parallel_for(batch, batch * pixels * c, [&](int64_t n) {
    float* image = din + n * pixels * c;
    std::memset(image, 0, static_cast<size_t>(pixels * c) * sizeof(float));
    for (int64_t j = 0; j < c; ++j) image[argmax[n * c + j] * c + j] = dout[n * c + j];
  });
}

}  // namespace eigennet::kernels
