// The 1x1-convolution engine: register-blocked matrix products for NHWC activations, where one
// operand is tall (rows = batch x pixels, read in place, never packed) and the other is a
// weight matrix packed once into column panels.
//
// Forward / input gradient:  out[m, :] = epilogue(A[m, :] B)     A: [M, K] rows in place
//   B is packed in panels of `panel_width` columns: panel p holds B[:, p*w .. p*w + w) as K
//   consecutive rows of w floats (zero past the last column), so the micro-kernel reads one
//   cache line pair per k. A micro-tile is `tile_rows` rows x one panel: its sums stay in
//   registers for the whole K loop (each k: `tile_rows` broadcasts of A, two packet loads of B,
//   2 x tile_rows FMAs), then the epilogue adds the bias, the residual, clamps (ReLU / ReLU6),
//   optionally accumulates the output's per-channel statistics, and stores: one write of the
//   output, no separate passes.
// Weight gradient:  C[K, N] (+)= A^T B  with A [M, K] and B [M, N] both tall: the same
//   micro-kernel with A's roles of rows and k exchanged (a tile is `tile_rows` input channels
//   x one panel of output channels, summed over pixels), rows split into chunks
//   (parallel_chunks), and the per-chunk partial sums added in chunk order (deterministic, and
//   the same on 1 to 4 threads).
//
// Sizes that are not multiples of the blocking: the last tile of rows overlaps the previous
// one (recomputed, stored once) when there are at least `tile_rows` rows, and otherwise runs on
// a zero-padded copy; in a weight gradient the last tile of input channels shrinks to a third
// or two thirds of a tile where that holds the rest. The last panel stores only its valid
// columns, and a panel of at most one packet of them (16 output channels, the last half panel of
// 144) runs a one-packet micro-kernel: half the FMAs. Every value is summed in the same order
// whichever tile computes it, so none of this changes a result.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "../core/parallel.hpp"
#include "simd.hpp"

namespace eigennet::kernels::pointwise {

using simd::Packet;

constexpr int vectors = 2;                                  // packets per panel row
constexpr int panel_width = vectors * simd::width;          // output columns per panel
constexpr int tile_rows = simd::registers >= 32 ? 12 : 6;   // rows per micro-tile

inline int64_t panel_count(int64_t n) { return (n + panel_width - 1) / panel_width; }
// Floats of a packed [k, n] matrix.
inline int64_t packed_size(int64_t k, int64_t n) { return panel_count(n) * panel_width * k; }

// Packs B [k, n] into panels (see the top of this file). B is stored row-major [k, n], or, when
// transposed, as its transpose [n, k] (e.g. W [in, out] packed as W^T for the input gradient).
inline void pack_panels(float* packed, const float* b, int64_t k, int64_t n, bool transposed) {
  const int64_t panels = panel_count(n);
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t n0 = p * panel_width, valid = std::min<int64_t>(panel_width, n - n0);
    float* dst = packed + p * k * panel_width;
    for (int64_t kk = 0; kk < k; ++kk, dst += panel_width) {
      if (transposed) {
        for (int64_t j = 0; j < valid; ++j) dst[j] = b[(n0 + j) * k + kk];
      } else {
        std::memcpy(dst, b + kk * n + n0, static_cast<size_t>(valid) * sizeof(float));
      }
      for (int64_t j = valid; j < panel_width; ++j) dst[j] = 0.0f;
    }
  }
}

// A packed matrix as the kernels see it.
struct Packed {
  const float* data = nullptr;
  int64_t k = 0, n = 0;
  const float* panel(int64_t p) const { return data + p * k * panel_width; }
};

// What happens to a tile of products before it is stored: out = clamp(sum + bias + residual).
// With a mask (the backward of a ReLU6: mask = its output), out = 0 where mask is not in (0, 6).
struct Epilogue {
  const float* bias = nullptr;      // [n], or null
  const float* residual = nullptr;  // [rows, ld_residual], added after the bias; may alias out
  int64_t ld_residual = 0;
  float lo = -std::numeric_limits<float>::infinity();  // clamp: ReLU lo = 0, ReLU6 lo = 0, hi = 6
  float hi = std::numeric_limits<float>::infinity();
  const float* relu6_mask = nullptr;  // [rows, ld_mask], applied last
  int64_t ld_mask = 0;
  // With these ([n] each), relu6_mask holds the ReLU6's input v instead of its output, as a
  // BatchNorm + ReLU6 forward saw it: kept where 0 < v * mask_scale + mask_shift < 6, computed
  // as detail::affine_act_rows computes it, so the mask is the one its output would give (and
  // that output need not be read again).
  const float* mask_scale = nullptr;
  const float* mask_shift = nullptr;

  static Epilogue relu6(const float* bias) {
    Epilogue e;
    e.bias = bias;
    e.lo = 0.0f;
    e.hi = 6.0f;
    return e;
  }
  bool clamps() const { return lo > -std::numeric_limits<float>::infinity() || hi < std::numeric_limits<float>::infinity(); }
};

// Per-thread sums of the stored outputs v per column, in double, value by value (so that the
// result does not depend on how rows are split into tiles, chunks and threads beyond double
// rounding: the same statistics as a separate pass, see channel_statistics). Each tile sums its
// rows in double registers (TileSums) and adds them to these totals. Without `other`:
// sum (v - shift) and sum (v - shift)^2 (BatchNorm statistics around a shift); with `other`
// [rows, ld_other]: sum v and sum v * (other - shift) (the sums of a BatchNorm backward: v = the
// gradient at its output, other = its input, shift = its mean).
struct ColumnSums {
  const float* shift = nullptr;  // [n]
  const float* other = nullptr;
  int64_t ld_other = 0;
  double* total = nullptr;  // [n]
  double* total_squares = nullptr;
};

namespace detail {

// One run of a tile's sum: k terms from a and b (see multiply_segments).
struct Segment {
  const float* a;
  const float* b;
  int64_t k;
};

// acc[i][v] += sum over the segments, over kk < k, of A(i, kk) * b[kk * ldb + v * width], with
//   A(i, kk) = a[i * lda + kk]   (rows of the tall operand in place), or, when transposed,
//   A(i, kk) = a[kk * lda + i]   (the weight gradient: i runs over input channels, kk over pixels).
// Several segments (a convolution's kernel rows) share one pass of the sums through registers.
// Out of line: the tile's sums then own the vector registers, whatever the caller keeps live.
// c[i][v] += sum over kk < k of A(i, kk) * b[kk * ldb + v * width]: the micro-kernel's loop,
// inlined into its callers so that c stays in registers.
// With V = 1 only the panel's first packet of columns is computed (c[i][1] is left as it is): a
// panel with at most simd::width valid columns (an output of 16 channels, the last half panel
// of 144) then costs half the FMAs, each column summed exactly as with V = 2.
template <bool transposed, int V = vectors, int R = tile_rows>
__attribute__((always_inline)) inline void multiply_loop(Packet (&c)[tile_rows][vectors], const float* __restrict a,
                                                         int64_t lda, const float* __restrict b, int64_t ldb,
                                                         int64_t k) {
  static_assert(vectors == 2, "the micro-kernel is written for two packets per panel row");
  static_assert(V == 1 || V == 2, "one or both packets of a panel row");
  static_assert(R >= 1 && R <= tile_rows, "at most tile_rows rows");
  for (int64_t kk = 0; kk < k; ++kk) {
    const Packet b0 = simd::load(b), b1 = V == 2 ? simd::load(b + simd::width) : b0;
    b += ldb;
    for (int i = 0; i < R; ++i) {
      const Packet ai = simd::set1(transposed ? a[kk * lda + i] : a[i * lda + kk]);
      c[i][0] = simd::fmadd(ai, b0, c[i][0]);
      if (V == 2) c[i][1] = simd::fmadd(ai, b1, c[i][1]);
    }
  }
}

template <bool transposed, int V = vectors, int R = tile_rows>
__attribute__((noinline)) void multiply_segments(Packet (&acc)[tile_rows][vectors], const Segment* segments,
                                                 int count, int64_t lda, int64_t ldb) {
  Packet c[tile_rows][vectors];
  for (int i = 0; i < R; ++i) {
    c[i][0] = acc[i][0];
    c[i][1] = acc[i][1];
  }
  for (int s = 0; s < count; ++s)
    multiply_loop<transposed, V, R>(c, segments[s].a, lda, segments[s].b, ldb, segments[s].k);
  for (int i = 0; i < R; ++i) {
    acc[i][0] = c[i][0];
    acc[i][1] = c[i][1];
  }
}

template <bool transposed, int V = vectors, int R = tile_rows>
inline void multiply_tile(Packet (&acc)[tile_rows][vectors], const float* a, int64_t lda, const float* b, int64_t ldb,
                          int64_t k) {
  const Segment segment{a, b, k};
  multiply_segments<transposed, V, R>(acc, &segment, 1, lda, ldb);
}

// Terms summed in one run of registers: longer sums are split into blocks of this many terms
// whose (zero-started) partial sums are then added, so that float rounding grows with the block
// length plus the number of blocks instead of with k (Eigen's GEMM blocks its depth the same way).
constexpr int64_t sum_block = 128;
// Weight gradients of at most this many rows are split between threads by blocks of the result
// (every thread sums all rows), longer ones by rows (partial results added in order). Measured on
// the MobileNetV2 shapes (AMD Zen 5, 2 threads): by blocks 1.3x faster at 4,608 rows and 1.8-2x
// at 1,152, by rows 1.3-2.9x faster at 18,432 and 73,728. The choice depends on the shape only,
// not on the thread count, so neither does the result.
constexpr int64_t by_blocks_max_rows = 8192;

// acc += sum over kk < k of A(i, kk) * B(kk, :) (see multiply_tile), summed in blocks of
// sum_block terms. With acc_is_zero the first block accumulates straight into acc.
template <bool transposed, int V = vectors, int R = tile_rows>
inline void accumulate_tile(Packet (&acc)[tile_rows][vectors], const float* a, int64_t lda, const float* b,
                            int64_t ldb, int64_t k, bool acc_is_zero) {
  for (int64_t k0 = 0; k0 < k; k0 += sum_block) {
    const int64_t len = std::min(sum_block, k - k0);
    const float* ak = transposed ? a + k0 * lda : a + k0;
    const float* bk = b + k0 * ldb;
    if (k0 == 0 && acc_is_zero) {
      multiply_tile<transposed, V, R>(acc, ak, lda, bk, ldb, len);
      continue;
    }
    Packet part[tile_rows][vectors];
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < vectors; ++v) part[i][v] = simd::zero();
    multiply_tile<transposed, V, R>(part, ak, lda, bk, ldb, len);
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < vectors; ++v) acc[i][v] = simd::add(acc[i][v], part[i][v]);
  }
}

// A tile's share of ColumnSums, in double registers: one pair of sums per double packet of
// the panel's columns, added to the thread's totals once per tile.
struct TileSums {
  static constexpr int parts = vectors * simd::double_parts;
  simd::PacketD shift[parts], s[parts], ss[parts];

  void start(const ColumnSums& sums, int64_t n0, const int (&count)[vectors]) {
    for (int v = 0; v < vectors; ++v) {
      const Packet sh = count[v] ? simd::load_partial(sums.shift + n0 + v * simd::width, count[v]) : simd::zero();
      simd::to_double(sh, shift + v * simd::double_parts);
    }
    for (int q = 0; q < parts; ++q) s[q] = ss[q] = simd::zero_d();
  }
  // v: the stored packet of vector `vi`; other: the BatchNorm input's packet (backward sums) or null.
  void add(int vi, const Packet& v, const Packet* other) {
    simd::PacketD x[simd::double_parts], o[simd::double_parts];
    simd::to_double(v, x);
    if (other) simd::to_double(*other, o);
    for (int j = 0; j < simd::double_parts; ++j) {
      const int q = vi * simd::double_parts + j;
      if (other) {
        s[q] = simd::add_d(s[q], x[j]);
        ss[q] = simd::fmadd_d(x[j], simd::sub_d(o[j], shift[q]), ss[q]);
      } else {
        const simd::PacketD d = simd::sub_d(x[j], shift[q]);
        s[q] = simd::add_d(s[q], d);
        ss[q] = simd::fmadd_d(d, d, ss[q]);
      }
    }
  }
  // Adds the valid columns to the thread's totals: a whole panel packet by packet, a partial one
  // value by value (the same additions either way).
  void finish(const ColumnSums& sums, int64_t n0, int columns) const {
    if (columns == panel_width) {
      for (int q = 0; q < parts; ++q) {
        double* t = sums.total + n0 + q * simd::width_d;
        double* tt = sums.total_squares + n0 + q * simd::width_d;
        simd::store_d(t, simd::add_d(simd::load_d(t), s[q]));
        simd::store_d(tt, simd::add_d(simd::load_d(tt), ss[q]));
      }
      return;
    }
    alignas(64) double a[parts * simd::width_d], b[parts * simd::width_d];
    for (int q = 0; q < parts; ++q) {
      simd::store_d(a + q * simd::width_d, s[q]);
      simd::store_d(b + q * simd::width_d, ss[q]);
    }
    for (int j = 0; j < columns; ++j) {
      sums.total[n0 + j] += a[j];
      sums.total_squares[n0 + j] += b[j];
    }
  }
};

// The epilogues of a training step's BatchNorms, each compiled with its tests decided; `general`
// tests at run time and takes every Epilogue. On the products with 16-32 input channels the
// run-time tests were about a third of the epilogue's instructions; the statistics kind takes
// 32% off such a forward's instructions (callgrind, AVX2 build). The plain and clamped epilogues
// (bias, ReLU, ReLU6) stay general: so specialized, the tight store loop made the product whose
// 28 MB output goes to DRAM (73,728 x 16 -> 96) 1.4x slower on a Zen 4, for 0-8% elsewhere.
enum class EpilogueKind {
  general,
  statistics,   // ColumnSums of the stored values (a BatchNorm's forward statistics)
  masked_sums,  // a ReLU6 mask through the BatchNorm's coefficients, and a BatchNorm backward's sums
};

inline EpilogueKind epilogue_kind(const Epilogue& e, const ColumnSums* sums) {
  if (e.residual || e.clamps() || !sums) return EpilogueKind::general;
  if (!e.relu6_mask && !sums->other) return EpilogueKind::statistics;
  if (e.relu6_mask && e.mask_scale && sums->other) return EpilogueKind::masked_sums;
  return EpilogueKind::general;
}

// Applies the epilogue to tile rows [first, last) (tile row i is output row `row + i`) and
// stores them; `columns` valid columns from n0. Full: columns == panel_width, so that every
// load and store is a whole packet and no lane needs a test (most tiles). Kind: what e and sums
// hold (epilogue_kind), or general. Out of line: inlined, the kinds would double the size of
// product_tile, the micro-kernel's function.
template <bool Full, EpilogueKind Kind>
__attribute__((noinline)) void finish_tile_as(Packet (&acc)[tile_rows][vectors], int first, int last, float* out,
                                              int64_t ldo, int64_t row, int64_t n0, int columns, const Epilogue& e,
                                              ColumnSums* sums) {
  constexpr bool general = Kind == EpilogueKind::general;
  const bool has_residual = general && e.residual;
  const bool clamps = general && e.clamps();
  const bool has_mask = general ? e.relu6_mask != nullptr : Kind == EpilogueKind::masked_sums;
  const bool affine_mask = general ? e.mask_scale != nullptr : Kind == EpilogueKind::masked_sums;
  const bool has_sums =
      general ? sums != nullptr : Kind == EpilogueKind::statistics || Kind == EpilogueKind::masked_sums;
  const bool has_other = general ? sums && sums->other : Kind == EpilogueKind::masked_sums;
  int count[vectors];
  for (int v = 0; v < vectors; ++v)
    count[v] = Full ? simd::width : std::max(0, std::min(simd::width, columns - v * simd::width));
  Packet bias[vectors];
  for (int v = 0; v < vectors; ++v)
    bias[v] = e.bias && count[v] ? simd::load_partial(e.bias + n0 + v * simd::width, count[v]) : simd::zero();
  const Packet lo = simd::set1(e.lo), hi = simd::set1(e.hi);
  const Packet zero = simd::zero(), six = simd::set1(6.0f);
  Packet mask_scale[vectors], mask_shift[vectors];
  for (int v = 0; v < vectors; ++v) {
    const bool affine = affine_mask && count[v];
    mask_scale[v] = affine ? simd::load_partial(e.mask_scale + n0 + v * simd::width, count[v]) : simd::zero();
    mask_shift[v] = affine ? simd::load_partial(e.mask_shift + n0 + v * simd::width, count[v]) : simd::zero();
  }
  TileSums tile_sums;
  if (has_sums) tile_sums.start(*sums, n0, count);
  for (int i = first; i < last; ++i) {
    float* o = out + (row + i) * ldo + n0;
    const float* r = has_residual ? e.residual + (row + i) * e.ld_residual + n0 : nullptr;
    const float* mk = has_mask ? e.relu6_mask + (row + i) * e.ld_mask + n0 : nullptr;
    const float* ot = has_other ? sums->other + (row + i) * sums->ld_other + n0 : nullptr;
    for (int v = 0; v < vectors; ++v) {
      if (!count[v]) continue;
      Packet x = simd::add(acc[i][v], bias[v]);
      if (has_residual) x = simd::add(x, simd::load_partial(r + v * simd::width, count[v]));
      if (clamps) x = simd::min(simd::max(x, lo), hi);
      if (has_mask) {
        // Keep x where 0 < mask < 6.
        Packet y = simd::load_partial(mk + v * simd::width, count[v]);
        if (affine_mask) y = simd::fmadd(y, mask_scale[v], mask_shift[v]);
        x = simd::select(simd::both(simd::less(zero, y), simd::less(y, six)), x, zero);
      }
      simd::store_partial(o + v * simd::width, x, count[v]);
      if (has_sums) {
        // Lanes past the last column may hold anything; finish() does not add them.
        if (has_other) {
          const Packet other = simd::load_partial(ot + v * simd::width, count[v]);
          tile_sums.add(v, x, &other);
        } else {
          tile_sums.add(v, x, nullptr);
        }
      }
    }
  }
  if (has_sums) tile_sums.finish(*sums, n0, columns);
}

// finish_tile_as for this tile's columns and epilogue.
inline void finish_tile(Packet (&acc)[tile_rows][vectors], int first, int last, float* out, int64_t ldo, int64_t row,
                        int64_t n0, int columns, const Epilogue& e, ColumnSums* sums) {
  if (columns != panel_width)
    return finish_tile_as<false, EpilogueKind::general>(acc, first, last, out, ldo, row, n0, columns, e, sums);
  switch (epilogue_kind(e, sums)) {
    case EpilogueKind::statistics:
      return finish_tile_as<true, EpilogueKind::statistics>(acc, first, last, out, ldo, row, n0, columns, e, sums);
    case EpilogueKind::masked_sums:
      return finish_tile_as<true, EpilogueKind::masked_sums>(acc, first, last, out, ldo, row, n0, columns, e, sums);
    default:
      return finish_tile_as<true, EpilogueKind::general>(acc, first, last, out, ldo, row, n0, columns, e, sums);
  }
}

inline void zero_tile(Packet (&acc)[tile_rows][vectors]) {
  for (int i = 0; i < tile_rows; ++i)
    for (int v = 0; v < vectors; ++v) acc[i][v] = simd::zero();
}

// A whole forward tile in one out-of-line function: rows a[0 .. tile_rows) x one panel, summed
// in blocks of sum_block terms, then finish_tile: the sums go from registers to the epilogue
// without a round trip through memory (for k <= sum_block).
// V = 1 (see multiply_loop) when the panel has at most simd::width valid columns.
template <int V>
__attribute__((noinline)) void product_tile(const float* a, int64_t lda, const float* b, int64_t k, int first, int last,
                                            float* out, int64_t ldo, int64_t row, int64_t n0, int columns,
                                            const Epilogue& e, ColumnSums* sums) {
  Packet acc[tile_rows][vectors];
  zero_tile(acc);
  multiply_loop<false, V>(acc, a, lda, b, panel_width, std::min(k, sum_block));
  for (int64_t k0 = sum_block; k0 < k; k0 += sum_block) {
    Packet part[tile_rows][vectors];
    zero_tile(part);
    multiply_loop<false, V>(part, a + k0, lda, b + k0 * panel_width, panel_width, std::min(sum_block, k - k0));
    for (int i = 0; i < tile_rows; ++i)
      for (int v = 0; v < vectors; ++v) acc[i][v] = simd::add(acc[i][v], part[i][v]);
  }
  finish_tile(acc, first, last, out, ldo, row, n0, columns, e, sums);
}

// product_tile with the micro-kernel that the panel's valid columns need.
inline void product_tile_any(const float* a, int64_t lda, const float* b, int64_t k, int first, int last, float* out,
                             int64_t ldo, int64_t row, int64_t n0, int columns, const Epilogue& e, ColumnSums* sums) {
  if (columns <= simd::width)
    product_tile<1>(a, lda, b, k, first, last, out, ldo, row, n0, columns, e, sums);
  else
    product_tile<2>(a, lda, b, k, first, last, out, ldo, row, n0, columns, e, sums);
}

}  // namespace detail

// Rows per chunk: the chunk's rows of A are reused by every panel, so they should stay in the
// core's L1/L2 while the panels go by.
inline int64_t chunk_rows(int64_t k) {
  const int64_t tiles = std::clamp<int64_t>((96 * 1024) / std::max<int64_t>(1, k * 4 * tile_rows), 2, 8);
  return tiles * tile_rows;
}

// One thread's share of out = epilogue(A B): output rows [row_begin, row_end) and panels
// [panel_begin, panel_end) of an [m, n] product. A: rows in place with leading dimension lda;
// B packed. `sums` (optional) accumulates the statistics of the stored values. Needs no
// scratch unless m < tile_rows.
inline void multiply_rows(float* out, int64_t ldo, const float* a, int64_t lda, int64_t m, int64_t row_begin,
                          int64_t row_end, const Packed& b, int64_t panel_begin, int64_t panel_end,
                          const Epilogue& e, ColumnSums* sums = nullptr) {
  if (row_begin >= row_end || panel_begin >= panel_end) return;
  const int64_t k = b.k;
  if (m < tile_rows) {
    // Fewer rows than a tile: run on a zero-padded copy of A.
    float* padded = aligned_scratch<20>(static_cast<size_t>(tile_rows * std::max<int64_t>(k, 1)));
    std::fill_n(padded, tile_rows * k, 0.0f);
    for (int64_t r = 0; r < m; ++r) std::memcpy(padded + r * k, a + r * lda, static_cast<size_t>(k) * sizeof(float));
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      const int64_t n0 = p * panel_width;
      detail::product_tile_any(padded, k, b.panel(p), k, static_cast<int>(row_begin), static_cast<int>(row_end), out,
                               ldo, 0, n0, static_cast<int>(std::min<int64_t>(panel_width, b.n - n0)), e, sums);
    }
    return;
  }
  const int64_t chunk = chunk_rows(k);
  for (int64_t c0 = row_begin; c0 < row_end; c0 += chunk) {
    const int64_t c1 = std::min(row_end, c0 + chunk);
    for (int64_t p = panel_begin; p < panel_end; ++p) {
      const float* bp = b.panel(p);
      const int64_t n0 = p * panel_width;
      const int columns = static_cast<int>(std::min<int64_t>(panel_width, b.n - n0));
      for (int64_t r = c0; r < c1; r += tile_rows) {
        // The tile starts at r, or earlier when fewer than tile_rows rows are left: it then
        // overlaps rows already stored, which it recomputes but does not store again.
        const int64_t start = std::min(r, m - tile_rows);
        detail::product_tile_any(a + start * lda, lda, bp, k, static_cast<int>(r - start),
                                 static_cast<int>(std::min<int64_t>(c1 - start, tile_rows)), out, ldo, start, n0,
                                 columns, e, sums);
      }
    }
  }
}

namespace detail {
// How the [m, n] output is split: by tiles of rows when there are enough, otherwise by panels
// (a few rows and many columns: a late layer at batch 1), in `chunks` chunks of parallel_chunks.
struct Shares {
  bool by_rows;
  int64_t items, work_per_item;
  int chunks;
};
inline Shares plan_shares(int64_t m, int64_t n, int64_t k) {
  const int64_t panels = panel_count(n), tiles = (m + tile_rows - 1) / tile_rows;
  const bool by_rows = tiles >= chunk_target() || tiles >= panels;
  const int64_t items = by_rows ? tiles : panels;
  const int64_t work = k * panel_width * (by_rows ? panels * tile_rows : m);
  return {by_rows, items, work, chunks_for(items, work)};
}
}  // namespace detail

// Calls body(row_begin, row_end, panel_begin, panel_end, chunk) for each chunk of the [m, n]
// output (see plan_shares), on all threads.
template <typename Body>
void for_each_share(int64_t m, int64_t n, int64_t k, Body&& body) {
  const detail::Shares shares = detail::plan_shares(m, n, k);
  const int64_t panels = panel_count(n);
  parallel_chunks(shares.items, shares.work_per_item, [&](int64_t begin, int64_t end, int chunk) {
    if (shares.by_rows)
      body(begin * tile_rows, std::min(m, end * tile_rows), int64_t{0}, panels, chunk);
    else
      body(int64_t{0}, m, begin, end, chunk);
  });
}

namespace detail {
// multiply() on all threads; with `shift`, every chunk accumulates ColumnSums (with `other` if
// given) into totals[2 * n * chunk ...] (n sums, then n sums of squares), which the caller
// reduces in chunk order.
inline void multiply_threads(float* out, int64_t ldo, const float* a, int64_t lda, int64_t m, const Packed& b,
                             const Epilogue& e, const float* shift, const float* other, int64_t ld_other,
                             double* totals) {
  const int64_t n = b.n;
  for_each_share(m, n, b.k, [&](int64_t r0, int64_t r1, int64_t p0, int64_t p1, int t) {
    ColumnSums sums;
    if (shift) {
      sums.shift = shift;
      sums.other = other;
      sums.ld_other = ld_other;
      sums.total = totals + 2 * t * n;
      sums.total_squares = sums.total + n;
    }
    multiply_rows(out, ldo, a, lda, m, r0, r1, b, p0, p1, e, shift ? &sums : nullptr);
  });
}

inline int share_count(int64_t m, const Packed& b) { return plan_shares(m, b.n, b.k).chunks; }
}  // namespace detail

// out [m, n] (ldo) = epilogue(a [m, k] (lda) x b), on all threads. With mean and variance,
// also the per-column mean and biased variance of the stored outputs (for a BatchNorm that
// follows), accumulated in the epilogue around the first output row.
inline void multiply(float* out, int64_t ldo, const float* a, int64_t lda, int64_t m, const Packed& b,
                     const Epilogue& e = {}, float* mean = nullptr, float* variance = nullptr) {
  const int64_t n = b.n;
  if (m <= 0 || n <= 0) return;
  if (!mean) return detail::multiply_threads(out, ldo, a, lda, m, b, e, nullptr, nullptr, 0, nullptr);
  // The first output row, computed on its own: the shift that keeps E[d^2] - E[d]^2 accurate.
  const int64_t width = panel_count(n) * panel_width;
  float* shift = aligned_scratch<21>(static_cast<size_t>(width));
  std::fill_n(shift, width, 0.0f);
  multiply_rows(shift, 0, a, lda, 1, 0, 1, b, 0, panel_count(n), e, nullptr);
  const int blocks = detail::share_count(m, b);
  double* totals = scratch<double, 22>(static_cast<size_t>(2 * blocks * n));
  std::fill_n(totals, 2 * blocks * n, 0.0);
  detail::multiply_threads(out, ldo, a, lda, m, b, e, shift, nullptr, 0, totals);
  for (int64_t j = 0; j < n; ++j) {
    double s = 0, ss = 0;
    for (int t = 0; t < blocks; ++t) {
      s += totals[2 * t * n + j];
      ss += totals[2 * t * n + n + j];
    }
    const double mu = s / static_cast<double>(m);
    mean[j] = static_cast<float>(mu + shift[j]);
    variance[j] = static_cast<float>(std::max(0.0, ss / static_cast<double>(m) - mu * mu));
  }
}

// out = epilogue(a x b) as multiply(), and the sums a BatchNorm backward needs of the stored
// values v (the gradient at the BatchNorm's output, after any mask): s1[j] = sum v,
// s2[j] = inv_std[j] * sum v * (x - mean[j]), where x [m, ld_x] is the BatchNorm's input.
inline void multiply_with_batch_norm_sums(float* out, int64_t ldo, const float* a, int64_t lda, int64_t m,
                                          const Packed& b, const Epilogue& e, const float* x, int64_t ld_x,
                                          const float* mean, const float* inv_std, double* s1, double* s2) {
  const int64_t n = b.n;
  if (m <= 0 || n <= 0) return;
  const int64_t width = panel_count(n) * panel_width;
  float* shift = aligned_scratch<21>(static_cast<size_t>(width));  // the mean, zero-extended to whole panels
  std::fill_n(shift, width, 0.0f);
  std::copy(mean, mean + n, shift);
  const int blocks = detail::share_count(m, b);
  double* totals = scratch<double, 22>(static_cast<size_t>(2 * blocks * n));
  std::fill_n(totals, 2 * blocks * n, 0.0);
  detail::multiply_threads(out, ldo, a, lda, m, b, e, shift, x, ld_x, totals);
  for (int64_t j = 0; j < n; ++j) {
    double t1 = 0, t2 = 0;
    for (int t = 0; t < blocks; ++t) {
      t1 += totals[2 * t * n + j];
      t2 += totals[2 * t * n + n + j];
    }
    s1[j] = t1;
    s2[j] = t2 * inv_std[j];
  }
}

namespace detail {
// One panel's share of a weight gradient over a chunk of rows: rows [i_begin, i_end) of
// c [k, panel] (ldc; its first row is row c_row0 of the product) += a^T b for rows of a [rows, k] (lda) and of b's panel (ldb, `valid` of its
// columns; a partial panel goes through the zero-padded copy `padded`, rows x panel_width), tile
// by tile of k (k >= tile_rows). A tile that would pass k starts earlier (k - tile_rows) and
// stores only its rows from i on.
inline void accumulate_panel_rows(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb,
                                  int64_t rows, int64_t k, int64_t c_row0, int64_t i_begin, int64_t i_end,
                                  int64_t valid, float* padded) {
  // A panel of at most simd::width columns takes the one-packet micro-kernel, which reads only
  // the first packet of each row: exactly simd::width valid columns need no padded copy.
  const bool narrow = valid <= simd::width;
  if (valid < panel_width && valid != simd::width) {
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(padded + r * panel_width, b + r * ldb, static_cast<size_t>(valid) * sizeof(float));
      std::fill(padded + r * panel_width + valid, padded + (r + 1) * panel_width, 0.0f);
    }
    b = padded;
    ldb = panel_width;
  }
  // The last tile, when fewer than tile_rows rows of k are left, is a third, two thirds or all of
  // a tile, whichever is the first to hold them, and ends at row k: it overlaps the tile before
  // by less than a third of a tile (k = 16: a tile of 12 and one of 4 rows, not two of 12).
  constexpr int third = tile_rows / 3;
  static_assert(third >= 1 && 3 * third == tile_rows, "tiles of rows in thirds");
  Packet acc[tile_rows][vectors];
  for (int64_t i = i_begin; i < i_end; i += tile_rows) {
    const int64_t left = k - i;
    const int tile = left >= tile_rows ? tile_rows : left <= third ? third : left <= 2 * third ? 2 * third : tile_rows;
    const int64_t start = std::min(i, k - tile);  // overlapping last tile, as in multiply_rows
    const int stored_end = static_cast<int>(std::min<int64_t>(tile, i_end - start));
    float* ct = c + (start - c_row0) * ldc;
    for (int r = 0; r < tile; ++r)
      for (int v = 0; v < vectors; ++v) acc[r][v] = simd::load(ct + r * ldc + v * simd::width);
    const float* at = a + start;
    if (tile == third)
      narrow ? accumulate_tile<true, 1, third>(acc, at, lda, b, ldb, rows, false)
             : accumulate_tile<true, 2, third>(acc, at, lda, b, ldb, rows, false);
    else if (tile == 2 * third)
      narrow ? accumulate_tile<true, 1, 2 * third>(acc, at, lda, b, ldb, rows, false)
             : accumulate_tile<true, 2, 2 * third>(acc, at, lda, b, ldb, rows, false);
    else
      narrow ? accumulate_tile<true, 1>(acc, at, lda, b, ldb, rows, false)
             : accumulate_tile<true, 2>(acc, at, lda, b, ldb, rows, false);
    for (int r = static_cast<int>(i - start); r < stored_end; ++r)
      for (int v = 0; v < vectors; ++v) simd::store(ct + r * ldc + v * simd::width, acc[r][v]);
  }
}

// The weight gradient's split by blocks of c (see multiply_transposed): each item is a block of
// c's rows (input channels) x one panel of its columns, summed over all m rows (in chunks that
// stay in cache) in a scratch of the thread that runs it, then stored into c. Every value of c
// is summed over the rows in the same order however the blocks are cut.
inline void multiply_transposed_by_blocks(float* c, const float* a, int64_t lda, const float* b, int64_t ldb,
                                          int64_t m, int64_t k, int64_t n, bool accumulate) {
  const int64_t panels = panel_count(n), k_tiles = (k + tile_rows - 1) / tile_rows;
  // Blocks of whole tiles, as few as give every thread several items.
  const int64_t blocks_wanted = (chunk_target() + panels - 1) / panels;
  const int64_t tiles_per_block = (k_tiles + blocks_wanted - 1) / blocks_wanted;
  const int64_t block_rows = tiles_per_block * tile_rows, blocks = (k + block_rows - 1) / block_rows;
  const int64_t chunk = std::clamp<int64_t>((512 * 1024) / (4 * (std::min(k, block_rows) + panel_width)), 16, 1024);
  parallel_for(panels * blocks, m * block_rows * panel_width, [&](int64_t item) {
    const int64_t p = item / blocks, i0 = (item % blocks) * block_rows, i1 = std::min(k, i0 + block_rows);
    const int64_t n0 = p * panel_width, valid = std::min<int64_t>(panel_width, n - n0);
    // The block's tiles may start up to tile_rows - 1 rows before i0 (the last, overlapping tile).
    const int64_t s0 = std::max<int64_t>(0, std::min(i0, k - tile_rows));
    // Sized for the largest block whichever this is, so that a thread's first item sizes it.
    float* cp =
        aligned_scratch<36>(static_cast<size_t>(std::max(std::min(k, block_rows), int64_t{tile_rows}) * panel_width));
    std::fill_n(cp, (i1 - s0) * panel_width, 0.0f);
    float* padded = aligned_scratch<37>(static_cast<size_t>(chunk * panel_width));
    for (int64_t c0 = 0; c0 < m; c0 += chunk)
      accumulate_panel_rows(cp, panel_width, a + c0 * lda, lda, b + c0 * ldb + n0, ldb, std::min(m, c0 + chunk) - c0, k,
                            s0, i0, i1, valid, padded);
    for (int64_t i = i0; i < i1; ++i) {
      float* row = c + i * n + n0;
      const float* sum = cp + (i - s0) * panel_width;
      for (int64_t j = 0; j < valid; ++j) row[j] = (accumulate ? row[j] : 0.0f) + sum[j];
    }
  });
}
}  // namespace detail

// Rows of the float sums accumulate_transposed adds into for a product with k rows: k, or a
// whole tile when k is smaller (the rows past k stay zero).
inline int64_t transposed_rows(int64_t k) { return std::max<int64_t>(k, tile_rows); }

// c [transposed_rows(k), ldc >= whole panels of n] += a^T b over `rows` rows (at most 1,024), a
// [rows, k] (lda) and b [rows, n] (ldb), on the calling thread: one run of a weight gradient's
// rows. Fewer than tile_rows columns of a go through a zero-padded copy, and so does b's last
// panel when partial (the kernel reads whole panels).
inline void accumulate_transposed(float* c, int64_t ldc, const float* a, int64_t lda, const float* b, int64_t ldb,
                                  int64_t rows, int64_t k, int64_t n) {
  const int64_t kp = transposed_rows(k);
  float* padded = aligned_scratch<25>(static_cast<size_t>(rows * panel_width));
  if (k < tile_rows) {
    float* a_padded = aligned_scratch<35>(static_cast<size_t>(rows * tile_rows));
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(a_padded + r * tile_rows, a + r * lda, static_cast<size_t>(k) * sizeof(float));
      std::fill(a_padded + r * tile_rows + k, a_padded + (r + 1) * tile_rows, 0.0f);
    }
    a = a_padded;
    lda = tile_rows;
  }
  for (int64_t p = 0; p < panel_count(n); ++p) {
    const int64_t n0 = p * panel_width, valid = std::min<int64_t>(panel_width, n - n0);
    detail::accumulate_panel_rows(c + n0, ldc, a, lda, b + n0, ldb, rows, kp, 0, 0, kp, valid, padded);
  }
}

// c [k, n] (+)= a^T b, where a is [m, k] (lda) and b is [m, n] (ldb): the weight gradient of a
// 1x1 convolution (a: its input, b: its output gradient). Up to by_blocks_max_rows rows (the
// layers past the first few: 288 to 4,608 pixels at 96x96 batch 32) the result is split into
// blocks of input channels x panels of output channels: each thread sums its blocks over all
// rows, and nothing is reduced. Otherwise rows (pixels) are split into parallel chunks; each is
// summed into its own partial [k, n] in runs of rows that stay in cache, and the partials are
// added in chunk order.
inline void multiply_transposed(float* c, const float* a, int64_t lda, const float* b, int64_t ldb, int64_t m,
                                int64_t k, int64_t n, bool accumulate) {
  if (k <= 0 || n <= 0) return;
  if (m <= 0) {
    if (!accumulate) std::fill_n(c, k * n, 0.0f);
    return;
  }
  // Fewer input channels than a tile's rows go by rows (accumulate_transposed pads them).
  const bool narrow = k < tile_rows;
  if (!narrow && m <= detail::by_blocks_max_rows)
    return detail::multiply_transposed_by_blocks(c, a, lda, b, ldb, m, k, n, accumulate);
  const int64_t kp = transposed_rows(k);
  const int64_t width = panel_count(n) * panel_width;
  const int blocks = chunks_for(m, k * n);
  float* partial = aligned_scratch<24>(static_cast<size_t>(blocks * kp * width));
  // Chunk of rows whose a and b rows stay in L2 while every tile of c passes over them.
  const int64_t chunk = std::clamp<int64_t>((512 * 1024) / (4 * (kp + width)), 16, 1024);
  parallel_chunks(m, k * n, [&](int64_t begin, int64_t end, int t) {
    float* cp = partial + t * kp * width;
    std::fill_n(cp, kp * width, 0.0f);
    for (int64_t c0 = begin; c0 < end; c0 += chunk)
      accumulate_transposed(cp, width, a + c0 * lda, lda, b + c0 * ldb, ldb, std::min(end, c0 + chunk) - c0, k, n);
  });
  parallel_for(k, k * n * blocks, [&](int64_t i) {
    float* row = c + i * n;
    for (int64_t j = 0; j < n; ++j) {
      float s = accumulate ? row[j] : 0.0f;
      for (int t = 0; t < blocks; ++t) s += partial[(t * kp + i) * width + j];
      row[j] = s;
    }
  });
}

// Packs into thread-local scratch `Slot` of the calling thread (valid until its next use there).
template <int Slot>
Packed pack_to_scratch(const float* b, int64_t k, int64_t n, bool transposed) {
  float* data = aligned_scratch<Slot>(static_cast<size_t>(packed_size(k, n)));
  pack_panels(data, b, k, n, transposed);
  return Packed{data, k, n};
}

}  // namespace eigennet::kernels::pointwise
