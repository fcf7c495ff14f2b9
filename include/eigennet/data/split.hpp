// Stratified splits: train / validation / test index lists drawn per class, so every split keeps
// the class proportions of the whole (FER-2013's "disgust" is 1.5% of the images; a plain random
// split can leave a small validation set with almost none of it).
//
// Rounding rule, per class with n images: validation = round(n * f_validation), test =
// round(n * f_test), train = the rest. A class with at least 3 images gets at least one image in
// every split whose fraction is positive (taken from the largest split). Within a class the
// images are shuffled by a generator seeded from (seed, class), so the split is deterministic for
// a seed, and the index lists are returned sorted.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <ostream>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"

namespace eigennet {

struct SplitFractions {
  double train = 0.8;
  double validation = 0.1;
  double test = 0.1;
};

// Indices into a dataset.
struct DatasetSplit {
  std::vector<int64_t> train;
  std::vector<int64_t> validation;
  std::vector<int64_t> test;
};

struct SplitCounts {
  int64_t train = 0;
  int64_t validation = 0;
  int64_t test = 0;
};

inline void check_split_fractions(const SplitFractions& f) {
  EIGENNET_CHECK(f.train >= 0 && f.validation >= 0 && f.test >= 0, "SplitFractions: fractions must be >= 0, got ",
                 f.train, "/", f.validation, "/", f.test);
  EIGENNET_CHECK(std::abs(f.train + f.validation + f.test - 1.0) < 1e-6,
                 "SplitFractions: fractions must sum to 1, got ", f.train, " + ", f.validation, " + ", f.test);
}

// How many of a class's n images go to each split (the rounding rule above).
inline SplitCounts stratified_counts(int64_t n, const SplitFractions& f) {
  check_split_fractions(f);
  SplitCounts c;
  c.validation = std::llround(static_cast<double>(n) * f.validation);
  c.test = std::llround(static_cast<double>(n) * f.test);
  // Rounding both up can overshoot when train's fraction is small.
  while (c.validation + c.test > n) (c.test >= c.validation ? c.test : c.validation) -= 1;
  if (n >= 3) {
    if (f.validation > 0 && c.validation == 0) c.validation = 1;
    if (f.test > 0 && c.test == 0) c.test = 1;
    // Make room in train when it has a positive fraction, and undo overshoot from the bumps
    // above, taking from whichever of validation and test is larger.
    const int64_t train_minimum = f.train > 0 ? 1 : 0;
    while (n - c.validation - c.test < train_minimum) (c.test >= c.validation ? c.test : c.validation) -= 1;
  }
  c.train = n - c.validation - c.test;
  return c;
}

// The images `indices` grouped by their label in [0, num_classes), each group sorted, so that what
// is drawn from a group does not depend on the order `indices` came in. `who` names the caller in
// the error for an index or label out of range.
inline std::vector<std::vector<int64_t>> group_by_label(const std::vector<int32_t>& labels,
                                                        const std::vector<int64_t>& indices, int num_classes,
                                                        const char* who) {
  EIGENNET_CHECK(num_classes > 0, who, ": num_classes must be positive, got ", num_classes);
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(num_classes));
  for (int64_t index : indices) {
    EIGENNET_CHECK(index >= 0 && index < static_cast<int64_t>(labels.size()), who, ": index ", index,
                   " out of range for ", labels.size(), " labels");
    const int32_t label = labels[static_cast<size_t>(index)];
    EIGENNET_CHECK(label >= 0 && label < num_classes, who, ": label ", label, " of image ", index,
                   " is outside [0, ", num_classes, ")");
    members[static_cast<size_t>(label)].push_back(index);
  }
  for (auto& m : members) std::sort(m.begin(), m.end());
  return members;
}

// Stratified split of the images `indices` (into `labels`), whose labels are in [0, num_classes).
inline DatasetSplit stratified_split(const std::vector<int32_t>& labels, const std::vector<int64_t>& indices,
                                     int num_classes, const SplitFractions& fractions, uint64_t seed) {
  check_split_fractions(fractions);
  EIGENNET_CHECK(num_classes > 0, "stratified_split: num_classes must be positive, got ", num_classes);
  std::vector<std::vector<int64_t>> members = group_by_label(labels, indices, num_classes, "stratified_split");
  DatasetSplit split;
  for (int c = 0; c < num_classes; ++c) {
    auto& m = members[static_cast<size_t>(c)];
    Rng rng(derive_seed(seed, static_cast<uint64_t>(c)));
    for (size_t i = m.size(); i > 1; --i) std::swap(m[i - 1], m[static_cast<size_t>(rng.below(i))]);
    const SplitCounts counts = stratified_counts(static_cast<int64_t>(m.size()), fractions);
    const auto train_end = m.begin() + counts.train;
    const auto validation_end = train_end + counts.validation;
    split.train.insert(split.train.end(), m.begin(), train_end);
    split.validation.insert(split.validation.end(), train_end, validation_end);
    split.test.insert(split.test.end(), validation_end, m.end());
  }
  std::sort(split.train.begin(), split.train.end());
  std::sort(split.validation.begin(), split.validation.end());
  std::sort(split.test.begin(), split.test.end());
  return split;
}

inline DatasetSplit stratified_split(const std::vector<int32_t>& labels, int num_classes,
                                     const SplitFractions& fractions, uint64_t seed) {
  std::vector<int64_t> all(labels.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
  return stratified_split(labels, all, num_classes, fractions, seed);
}

// Images per class in `indices`.
inline std::vector<int64_t> count_per_class(const std::vector<int32_t>& labels, const std::vector<int64_t>& indices,
                                            int num_classes) {
  std::vector<int64_t> counts(static_cast<size_t>(num_classes), 0);
  for (int64_t index : indices) {
    EIGENNET_CHECK(index >= 0 && index < static_cast<int64_t>(labels.size()), "count_per_class: index ", index,
                   " out of range for ", labels.size(), " labels");
    const int32_t label = labels[static_cast<size_t>(index)];
    EIGENNET_CHECK(label >= 0 && label < num_classes, "count_per_class: label ", label, " of image ", index,
                   " is outside [0, ", num_classes, ")");
    ++counts[static_cast<size_t>(label)];
  }
  return counts;
}

// Prints the images per class in each split as a table:
//   class      train    val   test  total
//   angry       3196    399    467   4062
//   ...
inline void print_split_counts(std::ostream& out, const std::vector<std::string>& class_names,
                               const std::vector<int32_t>& labels, const DatasetSplit& split) {
  const int num_classes = static_cast<int>(class_names.size());
  const auto train = count_per_class(labels, split.train, num_classes);
  const auto validation = count_per_class(labels, split.validation, num_classes);
  const auto test = count_per_class(labels, split.test, num_classes);
  int name_width = 5;
  for (const auto& name : class_names) name_width = std::max(name_width, static_cast<int>(name.size()));
  const auto row = [&](const std::string& name, int64_t a, int64_t b, int64_t c) {
    out << std::left << std::setw(name_width) << name << std::right << std::setw(8) << a << std::setw(8) << b
        << std::setw(8) << c << std::setw(8) << a + b + c << '\n';
  };
  out << std::left << std::setw(name_width) << "class" << std::right << std::setw(8) << "train" << std::setw(8) << "val"
      << std::setw(8) << "test" << std::setw(8) << "total" << '\n';
  for (int c = 0; c < num_classes; ++c) {
    const auto i = static_cast<size_t>(c);
    row(class_names[i], train[i], validation[i], test[i]);
  }
  row("total", static_cast<int64_t>(split.train.size()), static_cast<int64_t>(split.validation.size()),
      static_cast<int64_t>(split.test.size()));
}

}  // namespace eigennet
