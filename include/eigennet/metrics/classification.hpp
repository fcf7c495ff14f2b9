// Classification metrics: the confusion matrix, accuracy, top-k accuracy, per-class precision,
// recall, F1 and support with their macro and weighted averages (the report as text and JSON:
// metrics/report.hpp).
//
// Definitions follow scikit-learn 1.2's classification_report / precision_recall_fscore_support
// called with labels = [0, K) (every class is reported and averaged, even one that never occurs):
//   precision_c = TP_c / (TP_c + FP_c)   (column c of the confusion matrix)
//   recall_c    = TP_c / (TP_c + FN_c)   (row c; its total is the support)
//   f1_c        = 2 precision_c recall_c / (precision_c + recall_c)
//   macro avg   = unweighted mean over the K classes
//   weighted avg = mean weighted by support
// Every 0/0 is 0: a class that is never predicted has precision 0, a class with no support has
// recall 0, and F1 is 0 when precision + recall is 0. This is scikit-learn's default
// zero_division="warn", which gives 0 and prints a warning; here there is no warning. With no
// samples at all, accuracy and both averages are 0 too.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace eigennet {

// Counts of (true class, predicted class) pairs: rows are true classes, columns predictions.
class ConfusionMatrix {
 public:
  ConfusionMatrix() = default;
  explicit ConfusionMatrix(int num_classes) : num_classes_(num_classes) {
    EIGENNET_CHECK(num_classes > 0, "ConfusionMatrix: the number of classes must be positive, got ", num_classes);
    counts_.assign(static_cast<size_t>(num_classes) * static_cast<size_t>(num_classes), 0);
  }
  ConfusionMatrix(int num_classes, const std::vector<int32_t>& labels, const std::vector<int32_t>& predictions)
      : ConfusionMatrix(num_classes) {
    add(labels, predictions);
  }

  int num_classes() const { return num_classes_; }

  void add(int true_class, int predicted_class, int64_t count = 1) {
    check_class(true_class, "true class");
    check_class(predicted_class, "predicted class");
    EIGENNET_CHECK(count >= 0, "ConfusionMatrix: negative count ", count);
    counts_[index(true_class, predicted_class)] += count;
  }
  void add(const std::vector<int32_t>& labels, const std::vector<int32_t>& predictions) {
    EIGENNET_CHECK(labels.size() == predictions.size(), "ConfusionMatrix: ", labels.size(), " labels but ",
                   predictions.size(), " predictions");
    for (size_t i = 0; i < labels.size(); ++i) add(labels[i], predictions[i]);
  }
  // Adds another matrix's counts (e.g. from another shard of the evaluation set).
  void add(const ConfusionMatrix& other) {
    EIGENNET_CHECK(other.num_classes_ == num_classes_, "ConfusionMatrix: cannot add a ", other.num_classes_,
                   "-class matrix to a ", num_classes_, "-class one");
    for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  }
  void reset() { std::fill(counts_.begin(), counts_.end(), 0); }

  int64_t operator()(int true_class, int predicted_class) const {
    check_class(true_class, "true class");
    check_class(predicted_class, "predicted class");
    return counts_[index(true_class, predicted_class)];
  }
  // Samples whose true class is c (the row total).
  int64_t support(int c) const {
    check_class(c, "class");
    int64_t sum = 0;
    for (int p = 0; p < num_classes_; ++p) sum += counts_[index(c, p)];
    return sum;
  }
  // Samples predicted as c (the column total).
  int64_t predicted(int c) const {
    check_class(c, "class");
    int64_t sum = 0;
    for (int t = 0; t < num_classes_; ++t) sum += counts_[index(t, c)];
    return sum;
  }
  int64_t correct() const {
    int64_t sum = 0;
    for (int c = 0; c < num_classes_; ++c) sum += counts_[index(c, c)];
    return sum;
  }
  int64_t total() const {
    int64_t sum = 0;
    for (int64_t v : counts_) sum += v;
    return sum;
  }
  // The counts as rows (true classes) of columns (predictions).
  std::vector<std::vector<int64_t>> rows() const {
    std::vector<std::vector<int64_t>> result(static_cast<size_t>(num_classes_));
    for (int t = 0; t < num_classes_; ++t)
      result[static_cast<size_t>(t)].assign(counts_.begin() + static_cast<std::ptrdiff_t>(index(t, 0)),
                                            counts_.begin() + static_cast<std::ptrdiff_t>(index(t, 0) + num_classes_));
    return result;
  }

 private:
  size_t index(int t, int p) const {
    return static_cast<size_t>(t) * static_cast<size_t>(num_classes_) + static_cast<size_t>(p);
  }
  void check_class(int c, const char* what) const {
    EIGENNET_CHECK(c >= 0 && c < num_classes_, "ConfusionMatrix: ", what, " ", c, " is outside [0, ", num_classes_,
                   ")");
  }

  int num_classes_ = 0;
  std::vector<int64_t> counts_;
};

// Precision, recall, F1 and support of one class or of an average (whose support is the total).
struct ClassScores {
  double precision = 0.0;
  double recall = 0.0;
  double f1 = 0.0;
  int64_t support = 0;
};

struct ClassificationMetrics {
  std::vector<std::string> class_names;
  ConfusionMatrix confusion;
  double accuracy = 0.0;
  std::vector<ClassScores> per_class;
  ClassScores macro_avg;
  ClassScores weighted_avg;
  // (k, top-k accuracy) for each k requested from scores; empty when computed from predictions.
  std::vector<std::pair<int, double>> top_k_accuracy;

  int num_classes() const { return confusion.num_classes(); }
  int64_t num_samples() const { return confusion.total(); }
};

namespace detail {
inline double divide_or_zero(double numerator, double denominator) {
  return denominator == 0.0 ? 0.0 : numerator / denominator;
}
}  // namespace detail

// Every metric of a confusion matrix. `class_names` may be empty (classes are then named "0",
// "1", ...); otherwise it needs one unique name per class.
inline ClassificationMetrics classification_metrics(const ConfusionMatrix& confusion,
                                                    std::vector<std::string> class_names = {}) {
  const int k = confusion.num_classes();
  EIGENNET_CHECK(k > 0, "classification_metrics: the confusion matrix has no classes");
  if (class_names.empty())
    for (int c = 0; c < k; ++c) class_names.push_back(std::to_string(c));
  EIGENNET_CHECK(static_cast<int>(class_names.size()) == k, "classification_metrics: ", class_names.size(),
                 " class names for ", k, " classes");
  EIGENNET_CHECK(std::set<std::string>(class_names.begin(), class_names.end()).size() == class_names.size(),
                 "classification_metrics: class names must be unique");

  ClassificationMetrics m;
  m.class_names = std::move(class_names);
  m.confusion = confusion;
  const int64_t total = confusion.total();
  m.accuracy = detail::divide_or_zero(static_cast<double>(confusion.correct()), static_cast<double>(total));

  m.per_class.resize(static_cast<size_t>(k));
  for (int c = 0; c < k; ++c) {
    ClassScores& s = m.per_class[static_cast<size_t>(c)];
    const double true_positives = static_cast<double>(confusion(c, c));
    s.support = confusion.support(c);
    s.precision = detail::divide_or_zero(true_positives, static_cast<double>(confusion.predicted(c)));
    s.recall = detail::divide_or_zero(true_positives, static_cast<double>(s.support));
    // scikit-learn's expression (not 2TP / (2TP + FP + FN)), so the last digits agree too.
    s.f1 = detail::divide_or_zero(2.0 * s.precision * s.recall, s.precision + s.recall);
  }

  for (const ClassScores& s : m.per_class) {
    m.macro_avg.precision += s.precision;
    m.macro_avg.recall += s.recall;
    m.macro_avg.f1 += s.f1;
    m.weighted_avg.precision += s.precision * static_cast<double>(s.support);
    m.weighted_avg.recall += s.recall * static_cast<double>(s.support);
    m.weighted_avg.f1 += s.f1 * static_cast<double>(s.support);
  }
  m.macro_avg.precision /= k;
  m.macro_avg.recall /= k;
  m.macro_avg.f1 /= k;
  m.weighted_avg.precision = detail::divide_or_zero(m.weighted_avg.precision, static_cast<double>(total));
  m.weighted_avg.recall = detail::divide_or_zero(m.weighted_avg.recall, static_cast<double>(total));
  m.weighted_avg.f1 = detail::divide_or_zero(m.weighted_avg.f1, static_cast<double>(total));
  m.macro_avg.support = total;
  m.weighted_avg.support = total;
  return m;
}

// ---- From scores ------------------------------------------------------------------------------
// Scores are any per-class values whose order ranks the classes: probabilities or logits.
// Ties go to the lower class index (as argmax does); NaN ranks below every number.

namespace detail {
inline void check_scores(const Tensor& scores, const std::vector<int32_t>* labels, const char* who) {
  EIGENNET_CHECK(scores.rank() == 2 && scores.dim(1) > 0, who, ": scores must be [samples, classes], got ",
                 scores.shape());
  if (!labels) return;
  EIGENNET_CHECK(static_cast<int64_t>(labels->size()) == scores.dim(0), who, ": ", labels->size(),
                 " labels for ", scores.dim(0), " rows of scores");
  for (size_t i = 0; i < labels->size(); ++i)
    EIGENNET_CHECK((*labels)[i] >= 0 && (*labels)[i] < scores.dim(1), who, ": label ", (*labels)[i], " of sample ",
                   i, " is outside [0, ", scores.dim(1), ")");
}
// Does class a rank above class b?
inline bool ranks_above(float score_a, int a, float score_b, int b) {
  if (std::isnan(score_b)) return !std::isnan(score_a) || a < b;
  if (std::isnan(score_a)) return false;
  return score_a > score_b || (score_a == score_b && a < b);
}
}  // namespace detail

// The highest-scoring class of each row of scores [N, K].
inline std::vector<int32_t> argmax_predictions(const Tensor& scores) {
  detail::check_scores(scores, nullptr, "argmax_predictions");
  const int64_t n = scores.dim(0), k = scores.dim(1);
  std::vector<int32_t> predictions(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = scores.data() + i * k;
    int best = 0;
    for (int c = 1; c < k; ++c)
      if (detail::ranks_above(row[c], c, row[best], best)) best = c;
    predictions[static_cast<size_t>(i)] = best;
  }
  return predictions;
}

// Fraction of rows whose true class is among the k highest scores (k >= K gives 1). Top-1 equals
// the accuracy of argmax_predictions. With no rows, 0.
inline double top_k_accuracy(const Tensor& scores, const std::vector<int32_t>& labels, int k) {
  detail::check_scores(scores, &labels, "top_k_accuracy");
  EIGENNET_CHECK(k >= 1, "top_k_accuracy: k must be at least 1, got ", k);
  const int64_t n = scores.dim(0), classes = scores.dim(1);
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = scores.data() + i * classes;
    const int label = labels[static_cast<size_t>(i)];
    int above = 0;  // classes ranked above the true one
    for (int c = 0; c < classes && above < k; ++c)
      if (c != label && detail::ranks_above(row[c], c, row[label], label)) ++above;
    hits += above < k;
  }
  return detail::divide_or_zero(static_cast<double>(hits), static_cast<double>(n));
}

// Everything from scores [N, K] (probabilities or logits) and labels: predictions by argmax, the
// confusion matrix and its metrics, and the top-k accuracy for each k in `top_k`.
inline ClassificationMetrics evaluate_classifier(const Tensor& scores, const std::vector<int32_t>& labels,
                                                 std::vector<std::string> class_names = {},
                                                 const std::vector<int>& top_k = {}) {
  detail::check_scores(scores, &labels, "evaluate_classifier");
  const int classes = static_cast<int>(scores.dim(1));
  ClassificationMetrics m =
      classification_metrics(ConfusionMatrix(classes, labels, argmax_predictions(scores)), std::move(class_names));
  for (int k : top_k) m.top_k_accuracy.emplace_back(k, top_k_accuracy(scores, labels, k));
  return m;
}

}  // namespace eigennet
