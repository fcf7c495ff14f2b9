// The few SIMD operations the hand-blocked kernels need, on Eigen's packet math, so one kernel
// source serves AVX-512 (16 floats), AVX2 (8), SSE / NEON (4) and the scalar fallback (1, with
// EIGEN_DONT_VECTORIZE). Only the partial loads and stores of a row's last columns use
// instruction-set masks where there are any; elsewhere they go through a small stack buffer.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif

namespace eigennet::simd {

using Packet = Eigen::internal::packet_traits<float>::type;
// Floats per packet.
constexpr int width = static_cast<int>(sizeof(Packet) / sizeof(float));
// Vector registers the compiler may use: the register blocking of the kernels is sized by it.
#if (defined(__AVX512F__) && !defined(EIGEN_DONT_VECTORIZE)) || defined(__aarch64__)
constexpr int registers = 32;
#else
constexpr int registers = 16;
#endif

inline Packet zero() { return Eigen::internal::pset1<Packet>(0.0f); }
inline Packet set1(float v) { return Eigen::internal::pset1<Packet>(v); }
inline Packet load(const float* p) { return Eigen::internal::ploadu<Packet>(p); }
inline void store(float* p, const Packet& v) { Eigen::internal::pstoreu(p, v); }
// a * b + c (one fused instruction where the target has FMA).
inline Packet fmadd(const Packet& a, const Packet& b, const Packet& c) { return Eigen::internal::pmadd(a, b, c); }
inline Packet add(const Packet& a, const Packet& b) { return Eigen::internal::padd(a, b); }
inline Packet sub(const Packet& a, const Packet& b) { return Eigen::internal::psub(a, b); }
inline Packet mul(const Packet& a, const Packet& b) { return Eigen::internal::pmul(a, b); }
inline Packet min(const Packet& a, const Packet& b) { return Eigen::internal::pmin(a, b); }
inline Packet max(const Packet& a, const Packet& b) { return Eigen::internal::pmax(a, b); }
inline Packet div(const Packet& a, const Packet& b) { return Eigen::internal::pdiv(a, b); }
// Correctly rounded, as std::sqrt (Eigen's psqrt may use an approximation, EIGEN_FAST_MATH).
inline Packet sqrt(const Packet& a) {
#if defined(EIGEN_VECTORIZE_AVX512)
  return _mm512_sqrt_ps(a);
#elif defined(EIGEN_VECTORIZE_AVX)
  return _mm256_sqrt_ps(a);
#elif defined(EIGEN_VECTORIZE_SSE2)
  return _mm_sqrt_ps(a);
#else
  alignas(64) float lanes[width];
  Eigen::internal::pstoreu(lanes, a);
  for (float& x : lanes) x = std::sqrt(x);
  return Eigen::internal::ploadu<Packet>(lanes);
#endif
}
inline Packet abs(const Packet& a) { return Eigen::internal::pabs(a); }
// Lane masks (all bits set where true) and a select on them.
inline Packet less(const Packet& a, const Packet& b) { return Eigen::internal::pcmp_lt(a, b); }
inline Packet both(const Packet& a, const Packet& b) { return Eigen::internal::pand(a, b); }
inline Packet select(const Packet& mask, const Packet& if_true, const Packet& if_false) {
  return Eigen::internal::pselect(mask, if_true, if_false);
}

// Doubles, for sums that must not round like float ones (batch statistics).
using PacketD = Eigen::internal::packet_traits<double>::type;
constexpr int width_d = static_cast<int>(sizeof(PacketD) / sizeof(double));
constexpr int double_parts = width / width_d;  // double packets per float packet (1 or 2)
static_assert(double_parts * width_d == width, "a float packet must split into whole double packets");
inline PacketD zero_d() { return Eigen::internal::pset1<PacketD>(0.0); }
inline PacketD load_d(const double* p) { return Eigen::internal::ploadu<PacketD>(p); }
inline void store_d(double* p, const PacketD& v) { Eigen::internal::pstoreu(p, v); }
inline PacketD add_d(const PacketD& a, const PacketD& b) { return Eigen::internal::padd(a, b); }
inline PacketD sub_d(const PacketD& a, const PacketD& b) { return Eigen::internal::psub(a, b); }
inline PacketD fmadd_d(const PacketD& a, const PacketD& b, const PacketD& c) { return Eigen::internal::pmadd(a, b, c); }
// The float lanes of x as doubles: out[0] holds lanes [0, width_d), out[1] the next ones.
inline void to_double(const Packet& x, PacketD* out) {
#if defined(__AVX512F__) && !defined(EIGEN_DONT_VECTORIZE)
  out[0] = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
  out[1] = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
#elif defined(__AVX__) && !defined(EIGEN_DONT_VECTORIZE)
  out[0] = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
  out[1] = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
#else
  alignas(64) float lanes[width];
  alignas(64) double wide[width];
  store(lanes, x);
  for (int i = 0; i < width; ++i) wide[i] = lanes[i];
  for (int j = 0; j < double_parts; ++j) out[j] = load_d(wide + j * width_d);
#endif
}

// The first n (0 < n <= width) floats at p; the rest of the packet is zero. Reads nothing past p + n.
inline Packet load_partial(const float* p, int n) {
  if (n >= width) return load(p);
#if defined(__AVX512F__) && !defined(EIGEN_DONT_VECTORIZE)
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p);
#else
  alignas(64) float buffer[width] = {};
  std::memcpy(buffer, p, static_cast<size_t>(n) * sizeof(float));
  return load(buffer);
#endif
}
// Stores the first n (0 < n <= width) floats of v at p; writes nothing past p + n.
inline void store_partial(float* p, const Packet& v, int n) {
  if (n >= width) return store(p, v);
#if defined(__AVX512F__) && !defined(EIGEN_DONT_VECTORIZE)
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), v);
#else
  alignas(64) float buffer[width];
  store(buffer, v);
  std::memcpy(p, buffer, static_cast<size_t>(n) * sizeof(float));
#endif
}

// f(j, lanes) for j = 0, width, 2 width, ... < n: full packets (lanes == width), then one partial
// packet for the last n % width values (for load_partial / store_partial).
template <typename F>
inline void for_each_packet(int64_t n, F&& f) {
  int64_t j = 0;
  for (; j + width <= n; j += width) f(j, width);
  if (j < n) f(j, static_cast<int>(n - j));
}

}  // namespace eigennet::simd
