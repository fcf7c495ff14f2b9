// Epoch orders and class imbalance.
//
// - shuffled_order: a plain random permutation of the training indices for one epoch.
// - balanced_order: an epoch in which every class appears (almost) equally often: minority
//   classes are repeated, majority classes subsampled. Within a class, images are drawn without
//   replacement in successive shuffled rounds, so no image repeats before all of its class has
//   been used.
// - balanced_class_weights: n_samples / (n_classes * count_c), scikit-learn's "balanced" weights,
//   for a weighted loss instead of resampling.
// All are deterministic for a given (seed, epoch).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "split.hpp"

namespace eigennet {

namespace detail {
template <typename T>
void shuffle_in_place(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(rng.below(i))]);
}
}  // namespace detail

// Class weights n / (k * count_c) over the images `indices`, where n is their number and k the
// number of classes that occur among them. Classes that do not occur get weight 0 (scikit-learn
// refuses them); with k counted this way sum_c count_c * weight_c = n still holds.
inline std::vector<float> balanced_class_weights(const std::vector<int32_t>& labels,
                                                 const std::vector<int64_t>& indices, int num_classes) {
  const std::vector<int64_t> counts = count_per_class(labels, indices, num_classes);
  const int64_t present = std::count_if(counts.begin(), counts.end(), [](int64_t c) { return c > 0; });
  EIGENNET_CHECK(present > 0, "balanced_class_weights: no images");
  std::vector<float> weights(counts.size(), 0.0f);
  for (size_t c = 0; c < counts.size(); ++c)
    if (counts[c] > 0)
      weights[c] = static_cast<float>(static_cast<double>(indices.size()) / (static_cast<double>(present) * counts[c]));
  return weights;
}

inline std::vector<float> balanced_class_weights(const std::vector<int32_t>& labels, int num_classes) {
  std::vector<int64_t> all(labels.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  return balanced_class_weights(labels, all, num_classes);
}

// A random permutation of `indices` for `epoch`.
inline std::vector<int64_t> shuffled_order(const std::vector<int64_t>& indices, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order = indices;
  Rng rng(derive_seed(seed, static_cast<uint64_t>(epoch)));
  detail::shuffle_in_place(order, rng);
  return order;
}

// An epoch of `length` images (default: as many as `indices`) drawn from `indices` with equal
// class frequencies: each class that occurs gets length / k draws (k classes), the remainder going
// one each to randomly chosen classes, and the result is shuffled.
inline std::vector<int64_t> balanced_order(const std::vector<int32_t>& labels, const std::vector<int64_t>& indices,
                                           int num_classes, uint64_t seed, int64_t epoch, int64_t length = -1) {
  if (length < 0) length = static_cast<int64_t>(indices.size());
  std::vector<std::vector<int64_t>> members = group_by_label(labels, indices, num_classes, "balanced_order");
  std::vector<int> present;
  for (int c = 0; c < num_classes; ++c) {
    if (!members[static_cast<size_t>(c)].empty()) present.push_back(c);
  }
  EIGENNET_CHECK(!present.empty() || length == 0, "balanced_order: no images to draw from");

  Rng rng(derive_seed(seed, static_cast<uint64_t>(epoch)));
  std::vector<int> lucky = present;  // classes that receive one of the remainder draws come first
  detail::shuffle_in_place(lucky, rng);
  const int64_t k = static_cast<int64_t>(present.size());
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(length));
  for (int64_t rank = 0; rank < k; ++rank) {
    std::vector<int64_t>& pool = members[static_cast<size_t>(lucky[static_cast<size_t>(rank)])];
    const int64_t quota = length / k + (rank < length % k ? 1 : 0);
    for (int64_t drawn = 0; drawn < quota;) {
      detail::shuffle_in_place(pool, rng);  // a new round through the class
      const int64_t take = std::min<int64_t>(quota - drawn, static_cast<int64_t>(pool.size()));
      order.insert(order.end(), pool.begin(), pool.begin() + take);
      drawn += take;
    }
  }
  detail::shuffle_in_place(order, rng);
  return order;
}

}  // namespace eigennet
