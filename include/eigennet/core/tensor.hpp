// Tensor: a float32 buffer with a shape, row-major (NHWC for images, batch first).
// It owns 64-byte aligned memory and keeps its capacity when resized to a smaller or equal
// size, so buffers reused across training steps stop allocating once shapes are known. New
// memory comes zero-filled from its allocator (core/zeroed_allocator.hpp) without a pass over it.
// Eigen views (TensorMap, Map) give the math without copies.
#pragma once

#include <Eigen/Core>
#include <unsupported/Eigen/CXX11/Tensor>
#include <algorithm>
#include <cstring>
#include <vector>

#include "error.hpp"
#include "shape.hpp"
#include "zeroed_allocator.hpp"

namespace eigennet {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<RowMatrix, Eigen::Unaligned>;
using ConstMatrixMap = Eigen::Map<const RowMatrix, Eigen::Unaligned>;
using VectorMap = Eigen::Map<Eigen::VectorXf, Eigen::Unaligned>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf, Eigen::Unaligned>;
template <int Rank>
using TensorView = Eigen::TensorMap<Eigen::Tensor<float, Rank, Eigen::RowMajor>>;
template <int Rank>
using ConstTensorView = Eigen::TensorMap<const Eigen::Tensor<float, Rank, Eigen::RowMajor>>;

class Tensor {
 public:
  Tensor() = default;
  Tensor(const Tensor&) = default;
  Tensor& operator=(const Tensor&) = default;
  // A moved-from tensor is empty (size 0, no data), not a shape without memory.
  Tensor(Tensor&& other) noexcept
      : shape_(std::move(other.shape_)), size_(other.size_), data_(std::move(other.data_)) {
    other.shape_ = Shape{};
    other.size_ = 0;
  }
  Tensor& operator=(Tensor&& other) noexcept {
    if (this != &other) {
      shape_ = std::move(other.shape_);
      size_ = other.size_;
      data_ = std::move(other.data_);
      other.shape_ = Shape{};
      other.size_ = 0;
      other.data_.clear();
    }
    return *this;
  }
  // A zero-filled tensor of the given shape (fresh memory is zero: see ZeroedAllocator).
  explicit Tensor(const Shape& shape) { resize(shape); }
  Tensor(const Shape& shape, std::initializer_list<float> values) {
    resize(shape);
    EIGENNET_CHECK(static_cast<int64_t>(values.size()) == size_, "Tensor of shape ", shape, " needs ",
                   size_, " values, got ", values.size());
    std::copy(values.begin(), values.end(), data_.begin());
  }

  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  int64_t dim(int i) const { return shape_[i]; }
  int64_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  float& operator[](int64_t i) { return data_[static_cast<size_t>(i)]; }
  float operator[](int64_t i) const { return data_[static_cast<size_t>(i)]; }

  // Sets the shape. Contents are unspecified afterwards. Allocates only when the new size
  // exceeds every size this tensor has had.
  void resize(const Shape& shape) {
    const int64_t n = shape.elements();
    if (static_cast<size_t>(n) > data_.size()) data_.resize(static_cast<size_t>(n));
    shape_ = shape;
    size_ = n;
  }
  // Changes the shape without touching the data; the element count must stay the same.
  void reshape(const Shape& shape) {
    EIGENNET_CHECK(shape.elements() == size_, "Tensor::reshape: cannot view ", shape_, " as ", shape);
    shape_ = shape;
  }
  void fill(float value) { std::fill_n(data_.data(), size_, value); }
  void zero() { if (size_) std::memset(data_.data(), 0, static_cast<size_t>(size_) * sizeof(float)); }
  void copy_from(const Tensor& other) {
    resize(other.shape_);
    if (size_) std::memcpy(data_.data(), other.data(), static_cast<size_t>(size_) * sizeof(float));
  }

  // Views. `Rank` must equal rank().
  template <int Rank>
  TensorView<Rank> view() {
    check_rank(Rank);
    return TensorView<Rank>(data(), dims<Rank>());
  }
  template <int Rank>
  ConstTensorView<Rank> view() const {
    check_rank(Rank);
    return ConstTensorView<Rank>(data(), dims<Rank>());
  }
  // The tensor as a [size / last_dim, last_dim] row-major matrix (rows = batch * spatial).
  MatrixMap matrix() { return MatrixMap(data(), rows(), cols()); }
  ConstMatrixMap matrix() const { return ConstMatrixMap(data(), rows(), cols()); }
  VectorMap flat() { return VectorMap(data(), size_); }
  ConstVectorMap flat() const { return ConstVectorMap(data(), size_); }

 private:
  int64_t cols() const { return rank() == 0 ? 1 : shape_.back(); }
  int64_t rows() const { return cols() == 0 ? 0 : size_ / cols(); }
  void check_rank(int r) const {
    EIGENNET_CHECK(rank() == r, "Tensor of shape ", shape_, " viewed with rank ", r);
  }
  template <int Rank>
  Eigen::DSizes<Eigen::Index, Rank> dims() const {
    Eigen::DSizes<Eigen::Index, Rank> d;
    for (int i = 0; i < Rank; ++i) d[i] = shape_[i];
    return d;
  }

  Shape shape_;
  int64_t size_ = 0;
  // Never shrinks (resize only grows it), so every element past size_ that was ever allocated
  // is either written by this tensor or still the allocator's zero.
  std::vector<float, ZeroedAllocator<float>> data_;
};

}  // namespace eigennet
