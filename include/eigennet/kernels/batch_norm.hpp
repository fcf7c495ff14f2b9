// Batch normalization over the rows of an [M, C] buffer (M = batch * height * width for
// NHWC images). Statistics are accumulated in double, in per-thread blocks reduced in thread
// order, so they are accurate and deterministic.
#pragma once

#include <algorithm>
#include <cmath>

#include "../core/parallel.hpp"

namespace eigennet::kernels {

// mean[c] and biased variance[c] of x[:, c].
inline void batch_norm_statistics(float* mean, float* variance, const float* x, int64_t m, int64_t c) {
  const int blocks = blocks_for(m, c);
  double* partial = scratch<double>(static_cast<size_t>(blocks * 2 * c));
  std::fill_n(partial, blocks * 2 * c, 0.0);
  // Shifting by the first row keeps E[x^2] - E[x]^2 well conditioned when |mean| >> std.
  const float* shift = x;
  parallel_blocks(m, c, [&](int64_t begin, int64_t end, int t) {
    double* sum = partial + t * 2 * c;
    double* sum_sq = sum + c;
    for (int64_t r = begin; r < end; ++r) {
      const float* row = x + r * c;
      for (int64_t j = 0; j < c; ++j) {
        const double d = static_cast<double>(row[j]) - shift[j];
        sum[j] += d;
        sum_sq[j] += d * d;
      }
    }
  });
  for (int64_t j = 0; j < c; ++j) {
    double sum = 0, sum_sq = 0;
    for (int b = 0; b < blocks; ++b) {
      sum += partial[b * 2 * c + j];
      sum_sq += partial[b * 2 * c + c + j];
    }
    const double mean_shifted = sum / static_cast<double>(m);
    mean[j] = static_cast<float>(mean_shifted + shift[j]);
    variance[j] = static_cast<float>(std::max(0.0, sum_sq / static_cast<double>(m) - mean_shifted * mean_shifted));
  }
}

// y = x * scale + shift per channel (inference mode, or training mode with
// scale = gamma * inv_std and shift = beta - mean * scale). y may alias x.
inline void scale_shift(float* y, const float* x, const float* scale, const float* shift, int64_t m, int64_t c) {
#pragma omp parallel for schedule(static) if (m * c >= parallel_grain)
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * c;
    float* yr = y + r * c;
    for (int64_t j = 0; j < c; ++j) yr[j] = xr[j] * scale[j] + shift[j];
  }
}

// Training-mode backward through the batch statistics.
//   x_hat = (x - mean) * inv_std, y = gamma * x_hat + beta
//   dbeta = sum dy, dgamma = sum dy * x_hat
//   dx = gamma * inv_std * (dy - dbeta / M - x_hat * dgamma / M)
// Accumulates dgamma and dbeta (either may be null when frozen); overwrites dx (null: skip).
// sums: 2*C floats of workspace that receive sum(dy) and sum(dy * x_hat).
inline void batch_norm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                                const float* gamma, const float* mean, const float* inv_std, int64_t m, int64_t c,
                                float* sums) {
  const int blocks = blocks_for(m, c);
  double* partial = scratch<double>(static_cast<size_t>(blocks * 2 * c));
  std::fill_n(partial, blocks * 2 * c, 0.0);
  parallel_blocks(m, c, [&](int64_t begin, int64_t end, int t) {
    double* s_dy = partial + t * 2 * c;
    double* s_dy_xhat = s_dy + c;
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = x + r * c;
      const float* dyr = dy + r * c;
      for (int64_t j = 0; j < c; ++j) {
        const float xhat = (xr[j] - mean[j]) * inv_std[j];
        s_dy[j] += dyr[j];
        s_dy_xhat[j] += static_cast<double>(dyr[j]) * xhat;
      }
    }
  });
  float* sum_dy = sums;
  float* sum_dy_xhat = sums + c;
  for (int64_t j = 0; j < c; ++j) {
    double a = 0, b = 0;
    for (int k = 0; k < blocks; ++k) {
      a += partial[k * 2 * c + j];
      b += partial[k * 2 * c + c + j];
    }
    sum_dy[j] = static_cast<float>(a);
    sum_dy_xhat[j] = static_cast<float>(b);
    if (dbeta) dbeta[j] += sum_dy[j];
    if (dgamma) dgamma[j] += sum_dy_xhat[j];
  }
  if (!dx) return;
  const float inv_m = 1.0f / static_cast<float>(m);
#pragma omp parallel for schedule(static) if (m * c >= parallel_grain)
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * c;
    const float* dyr = dy + r * c;
    float* dxr = dx + r * c;
    for (int64_t j = 0; j < c; ++j) {
      const float xhat = (xr[j] - mean[j]) * inv_std[j];
      dxr[j] = gamma[j] * inv_std[j] * (dyr[j] - sum_dy[j] * inv_m - xhat * sum_dy_xhat[j] * inv_m);
    }
  }
}

// Inference-mode backward: y = x * scale + shift. dgamma += sum dy * x_hat, dbeta += sum dy,
// dx = dy * scale.
inline void batch_norm_backward_inference(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                                          const float* scale, const float* mean, const float* inv_std, int64_t m,
                                          int64_t c) {
  if (dgamma || dbeta) {
    const int blocks = blocks_for(m, c);
    double* partial = scratch<double>(static_cast<size_t>(blocks * 2 * c));
    std::fill_n(partial, blocks * 2 * c, 0.0);
    parallel_blocks(m, c, [&](int64_t begin, int64_t end, int t) {
      double* s_dy = partial + t * 2 * c;
      double* s_dy_xhat = s_dy + c;
      for (int64_t r = begin; r < end; ++r)
        for (int64_t j = 0; j < c; ++j) {
          const float d = dy[r * c + j];
          s_dy[j] += d;
          s_dy_xhat[j] += static_cast<double>(d) * ((x[r * c + j] - mean[j]) * inv_std[j]);
        }
    });
    for (int64_t j = 0; j < c; ++j) {
      double a = 0, b = 0;
      for (int k = 0; k < blocks; ++k) {
        a += partial[k * 2 * c + j];
        b += partial[k * 2 * c + c + j];
      }
      if (dbeta) dbeta[j] += static_cast<float>(a);
      if (dgamma) dgamma[j] += static_cast<float>(b);
    }
  }
  if (dx) {
#pragma omp parallel for schedule(static) if (m * c >= parallel_grain)
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < c; ++j) dx[r * c + j] = dy[r * c + j] * scale[j];
  }
}

}  // namespace eigennet::kernels
