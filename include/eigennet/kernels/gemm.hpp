// Matrix products on raw row-major buffers through Eigen (OpenMP-parallel inside Eigen).
#pragma once

#include <algorithm>

#include "../core/parallel.hpp"
#include "../core/tensor.hpp"

namespace eigennet::kernels {

// C[m,n] (+)= op(A) * op(B), where op(A) is [m,k] and op(B) is [k,n]; A is stored [m,k] or,
// when transpose_a, [k,m] (likewise B). accumulate=false overwrites C.
inline void gemm(float* c, const float* a, const float* b, int64_t m, int64_t n, int64_t k, bool transpose_a,
                 bool transpose_b, bool accumulate) {
  MatrixMap C(c, m, n);
  if (k == 0) {
    if (!accumulate) C.setZero();
    return;
  }
  const ConstMatrixMap A(a, transpose_a ? k : m, transpose_a ? m : k);
  const ConstMatrixMap B(b, transpose_b ? n : k, transpose_b ? k : n);
  if (!transpose_a && !transpose_b) {
    if (accumulate) C.noalias() += A * B; else C.noalias() = A * B;
  } else if (transpose_a && !transpose_b) {
    if (accumulate) C.noalias() += A.transpose() * B; else C.noalias() = A.transpose() * B;
  } else if (!transpose_a && transpose_b) {
    if (accumulate) C.noalias() += A * B.transpose(); else C.noalias() = A * B.transpose();
  } else {
    if (accumulate) C.noalias() += A.transpose() * B.transpose(); else C.noalias() = A.transpose() * B.transpose();
  }
}

// out[m, :] += bias for every row.
inline void add_row_bias(float* out, const float* bias, int64_t rows, int64_t cols) {
  MatrixMap(out, rows, cols).rowwise() += ConstVectorMap(bias, cols).transpose();
}

// dbias += column sums of dout[rows, cols], summed in per-thread blocks then in thread order.
inline void accumulate_column_sums(float* dbias, const float* dout, int64_t rows, int64_t cols) {
  const int blocks = blocks_for(rows, cols);
  double* partial = scratch<double>(static_cast<size_t>(blocks * cols));
  std::fill_n(partial, blocks * cols, 0.0);
  parallel_blocks(rows, cols, [&](int64_t begin, int64_t end, int t) {
    double* p = partial + t * cols;
    for (int64_t r = begin; r < end; ++r) {
      const float* row = dout + r * cols;
      for (int64_t j = 0; j < cols; ++j) p[j] += row[j];
    }
  });
  for (int b = 0; b < blocks; ++b)
    for (int64_t j = 0; j < cols; ++j) dbias[j] += static_cast<float>(partial[b * cols + j]);
}

}  // namespace eigennet::kernels
