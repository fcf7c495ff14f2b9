// Shape: the dimensions of a tensor, stored inline (no heap) so that shape arithmetic in the
// training step never allocates.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>

#include "error.hpp"

namespace eigennet {

class Shape {
 public:
  static constexpr int max_rank = 6;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) {
    EIGENNET_CHECK(static_cast<int>(dims.size()) <= max_rank, "Shape: rank ", dims.size(),
                   " exceeds the maximum of ", max_rank);
    for (int64_t d : dims) push_back(d);
  }

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[static_cast<size_t>(i)]; }
  int64_t& operator[](int i) { return dims_[static_cast<size_t>(i)]; }
  int64_t back() const { return dims_[static_cast<size_t>(rank_ - 1)]; }

  void push_back(int64_t d) {
    EIGENNET_CHECK(rank_ < max_rank, "Shape: rank exceeds the maximum of ", max_rank);
    EIGENNET_CHECK(d >= 0, "Shape: negative dimension ", d);
    dims_[static_cast<size_t>(rank_++)] = d;
  }

  // Number of elements (1 for rank 0). Throws when the count would overflow.
  int64_t elements() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) {
      const int64_t d = dims_[static_cast<size_t>(i)];
      EIGENNET_CHECK(d == 0 || n <= INT64_MAX / d, "Shape ", to_string(), ": element count overflows");
      n *= d;
    }
    return n;
  }

  // This shape with `batch` prepended: per-sample shape -> batch shape.
  Shape with_batch(int64_t batch) const {
    Shape s;
    s.push_back(batch);
    for (int i = 0; i < rank_; ++i) s.push_back(dims_[static_cast<size_t>(i)]);
    return s;
  }
  // This shape without its first dimension: batch shape -> per-sample shape.
  Shape without_batch() const {
    Shape s;
    for (int i = 1; i < rank_; ++i) s.push_back(dims_[static_cast<size_t>(i)]);
    return s;
  }

  bool operator==(const Shape& other) const {
    if (rank_ != other.rank_) return false;
    for (int i = 0; i < rank_; ++i)
      if (dims_[static_cast<size_t>(i)] != other.dims_[static_cast<size_t>(i)]) return false;
    return true;
  }
  bool operator!=(const Shape& other) const { return !(*this == other); }

  std::string to_string() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) {
      if (i) s += ", ";
      s += std::to_string(dims_[static_cast<size_t>(i)]);
    }
    return s + "]";
  }

 private:
  std::array<int64_t, max_rank> dims_{};
  int rank_ = 0;
};

inline std::ostream& operator<<(std::ostream& out, const Shape& shape) { return out << shape.to_string(); }

}  // namespace eigennet
