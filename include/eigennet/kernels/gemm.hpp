// Matrix products on raw row-major buffers, with Eigen's GEBP kernels doing the arithmetic.
//
// Eigen's own product entry point allocates its packing buffers on every call and splits the
// work its own way; here each chunk of parallel_chunks is Eigen's sequential product on its
// share with packing buffers from thread-local scratch, so a training step allocates nothing,
// and the split fits our shapes (one dimension is batch x pixels, far larger than the others):
//   C = A B and C = A B^T: the rows of C are split into chunks;
//   C = A^T B (weight gradients, a sum over pixels): the pixel dimension is split, each chunk
//   is summed into its own partial C, and the partials are added in chunk order
//   (deterministic, and the same on 1 to 4 threads).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstring>

#include "../core/parallel.hpp"
#include "../core/tensor.hpp"

namespace eigennet::kernels {

namespace detail {

// Eigen's blocking sizes for a (column-major) rows x cols x depth product, with packing buffers
// from the calling thread's scratch instead of the heap.
class ReusedBlocking : public Eigen::internal::level3_blocking<float, float> {
 public:
  ReusedBlocking(Eigen::Index rows, Eigen::Index cols, Eigen::Index depth) {
    this->m_mc = rows;
    this->m_nc = cols;
    this->m_kc = depth;
    Eigen::internal::computeProductBlockingSizes<float, float, 1, Eigen::Index>(this->m_kc, this->m_mc, this->m_nc, 1);
    this->m_blockA = aligned_scratch<10>(static_cast<size_t>(this->m_mc * this->m_kc));
    this->m_blockB = aligned_scratch<11>(static_cast<size_t>(this->m_kc * this->m_nc));
  }
};

// C[m, n] += op(A)[m, k] op(B)[k, n] on one thread. C is row-major with leading dimension ldc;
// A is row-major [m, k] (lda) or, transposed, stored [k, m] (lda); likewise B.
template <bool transpose_a, bool transpose_b>
void gemm_serial(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m, int64_t n,
                 int64_t k) {
  if (m == 0 || n == 0 || k == 0) return;
  using Product = Eigen::internal::general_matrix_matrix_product<
      Eigen::Index, float, transpose_a ? Eigen::ColMajor : Eigen::RowMajor, false, float,
      transpose_b ? Eigen::ColMajor : Eigen::RowMajor, false, Eigen::RowMajor, 1>;
  ReusedBlocking blocking(n, m, k);  // Eigen computes the row-major product as its transpose
  Product::run(m, n, k, a, lda, b, ldb, c, 1, ldc, 1.0f, blocking, nullptr);
}

template <bool transpose_a, bool transpose_b>
void gemm_dispatch(float* c, const float* a, const float* b, int64_t m, int64_t n, int64_t k) {
  const int64_t lda = transpose_a ? m : k, ldb = transpose_b ? k : n;
  if constexpr (!transpose_a) {
    // Chunks of rows of C (and of A) to threads.
    parallel_chunks(m, n * k, [&](int64_t begin, int64_t end, int) {
      gemm_serial<false, transpose_b>(c + begin * n, n, a + begin * lda, lda, b, ldb, end - begin, n, k);
    });
  } else {
    // Chunks of the summed dimension k to threads; partial products reduced in chunk order.
    const int blocks = chunks_for(k, m * n);
    if (blocks <= 1) {
      gemm_serial<true, transpose_b>(c, n, a, lda, b, ldb, m, n, k);
      return;
    }
    float* partial = aligned_scratch<12>(static_cast<size_t>(blocks * m * n));
    std::fill_n(partial, blocks * m * n, 0.0f);
    parallel_chunks(k, m * n, [&](int64_t begin, int64_t end, int t) {
      const float* b_part = transpose_b ? b + begin : b + begin * ldb;
      gemm_serial<true, transpose_b>(partial + t * m * n, n, a + begin * lda, lda, b_part, ldb, m, n, end - begin);
    });
    for (int t = 0; t < blocks; ++t) {
      const float* p = partial + t * m * n;
      for (int64_t i = 0; i < m * n; ++i) c[i] += p[i];
    }
  }
}

}  // namespace detail

// C[m,n] (+)= op(A) * op(B), where op(A) is [m,k] and op(B) is [k,n]; A is stored [m,k] or,
// when transpose_a, [k,m] (likewise B). accumulate=false overwrites C.
inline void gemm(float* c, const float* a, const float* b, int64_t m, int64_t n, int64_t k, bool transpose_a,
                 bool transpose_b, bool accumulate) {
  if (!accumulate) {
    parallel_for(m, m * n, [&](int64_t i) { std::memset(c + i * n, 0, static_cast<size_t>(n) * sizeof(float)); });
  }
  if (transpose_a) {
    if (transpose_b)
      detail::gemm_dispatch<true, true>(c, a, b, m, n, k);
    else
      detail::gemm_dispatch<true, false>(c, a, b, m, n, k);
  } else {
    if (transpose_b)
      detail::gemm_dispatch<false, true>(c, a, b, m, n, k);
    else
      detail::gemm_dispatch<false, false>(c, a, b, m, n, k);
  }
}

// out[m, :] += bias for every row.
inline void add_row_bias(float* out, const float* bias, int64_t rows, int64_t cols) {
  parallel_for(rows, rows * cols, [&](int64_t r) {
    for (int64_t j = 0; j < cols; ++j) out[r * cols + j] += bias[j];
  });
}

// dbias += column sums of dout[rows, cols], summed in chunks of rows then in chunk order.
inline void accumulate_column_sums(float* dbias, const float* dout, int64_t rows, int64_t cols) {
  const int blocks = chunks_for(rows, cols);
  double* partial = scratch<double>(static_cast<size_t>(blocks * cols));
  std::fill_n(partial, blocks * cols, 0.0);
  parallel_chunks(rows, cols, [&](int64_t begin, int64_t end, int t) {
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
