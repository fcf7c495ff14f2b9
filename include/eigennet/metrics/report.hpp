// Classification metrics as text and JSON: scikit-learn's classification_report, the confusion
// matrix as a table, and metrics_to_json (metrics/report_files.hpp writes them to files, with the
// confusion-matrix PNG).
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "../io/json.hpp"
#include "classification.hpp"

namespace eigennet {

// ---- Text -------------------------------------------------------------------------------------

// scikit-learn's classification_report layout, character for character (checked against
// scikit-learn 1.2.1 with labels = range(K)). One difference: when a class
// occurs neither as a label nor as a prediction, scikit-learn names the accuracy line "micro avg"
// (and repeats the value under precision and recall); here it is always "accuracy". With digits = 4:
//
//                 precision    recall  f1-score   support
//
//          angry     0.4500    0.3800    0.4100       467
//   ...
//       accuracy                         0.5193      3589
//      macro avg     0.4900    0.4700    0.4700      3589
//   weighted avg     0.5100    0.5193    0.5100      3589
inline std::string classification_report(const ClassificationMetrics& m, int digits = 4) {
  EIGENNET_CHECK(digits >= 0 && digits <= 17, "classification_report: digits must be in [0, 17], got ", digits);
  int width = static_cast<int>(std::string("weighted avg").size());
  for (const std::string& name : m.class_names) width = std::max(width, static_cast<int>(name.size()));
  width = std::max(width, digits);

  std::string report;
  char line[512];
  auto scores_line = [&](const std::string& name, const ClassScores& s) {
    std::snprintf(line, sizeof line, "%*s  %9.*f %9.*f %9.*f %9lld\n", width, name.c_str(), digits, s.precision,
                  digits, s.recall, digits, s.f1, static_cast<long long>(s.support));
    report += line;
  };
  std::snprintf(line, sizeof line, "%*s  %9s %9s %9s %9s\n\n", width, "", "precision", "recall", "f1-score", "support");
  report += line;
  for (size_t c = 0; c < m.per_class.size(); ++c) scores_line(m.class_names[c], m.per_class[c]);
  report += "\n";
  std::snprintf(line, sizeof line, "%*s  %9s %9s %9.*f %9lld\n", width, "accuracy", "", "", digits, m.accuracy,
                static_cast<long long>(m.num_samples()));
  report += line;
  scores_line("macro avg", m.macro_avg);
  scores_line("weighted avg", m.weighted_avg);
  return report;
}

// The confusion matrix as an aligned table with class names (rows = true, columns = predicted).
inline std::string confusion_matrix_table(const ConfusionMatrix& confusion, const std::vector<std::string>& names) {
  const int k = confusion.num_classes();
  EIGENNET_CHECK(static_cast<int>(names.size()) == k, "confusion_matrix_table: ", names.size(), " class names for ",
                 k, " classes");
  const std::string corner = "true \\ predicted";
  size_t first_width = corner.size();
  for (const std::string& name : names) first_width = std::max(first_width, name.size());
  std::vector<size_t> widths(static_cast<size_t>(k));
  for (int p = 0; p < k; ++p) {
    widths[static_cast<size_t>(p)] = names[static_cast<size_t>(p)].size();
    for (int t = 0; t < k; ++t)
      widths[static_cast<size_t>(p)] = std::max(widths[static_cast<size_t>(p)], std::to_string(confusion(t, p)).size());
  }
  auto pad_left = [](const std::string& text, size_t width) {
    return std::string(width > text.size() ? width - text.size() : 0, ' ') + text;
  };
  std::string table = pad_left(corner, first_width);
  for (int p = 0; p < k; ++p) table += "  " + pad_left(names[static_cast<size_t>(p)], widths[static_cast<size_t>(p)]);
  table += "\n";
  for (int t = 0; t < k; ++t) {
    table += pad_left(names[static_cast<size_t>(t)], first_width);
    for (int p = 0; p < k; ++p)
      table += "  " + pad_left(std::to_string(confusion(t, p)), widths[static_cast<size_t>(p)]);
    table += "\n";
  }
  return table;
}

inline std::string confusion_matrix_table(const ClassificationMetrics& m) {
  return confusion_matrix_table(m.confusion, m.class_names);
}

// ---- JSON -------------------------------------------------------------------------------------

// The metrics as a JSON object. Callers add their own fields before saving:
//   Json j = metrics_to_json(m);  j["train_seconds"] = 812.5;  save_json(path, j);
inline Json metrics_to_json(const ClassificationMetrics& m) {
  auto scores_object = [](const ClassScores& s) {
    Json o = Json::object();
    o["precision"] = s.precision;
    o["recall"] = s.recall;
    o["f1"] = s.f1;
    o["support"] = s.support;
    return o;
  };
  Json j = Json::object();
  j["num_samples"] = m.num_samples();
  j["accuracy"] = m.accuracy;
  j["macro_precision"] = m.macro_avg.precision;
  j["macro_recall"] = m.macro_avg.recall;
  j["macro_f1"] = m.macro_avg.f1;
  j["weighted_precision"] = m.weighted_avg.precision;
  j["weighted_recall"] = m.weighted_avg.recall;
  j["weighted_f1"] = m.weighted_avg.f1;
  if (!m.top_k_accuracy.empty()) {
    Json top_k = Json::object();
    for (const auto& [k, accuracy] : m.top_k_accuracy) top_k[std::to_string(k)] = accuracy;
    j["top_k_accuracy"] = std::move(top_k);
  }
  j["classes"] = m.class_names;
  // Built aside and then inserted: a reference into `j` would dangle when `j` grows.
  Json precision = Json::array(), recall = Json::array(), f1 = Json::array(), support = Json::array();
  Json per_class = Json::object();
  for (size_t c = 0; c < m.per_class.size(); ++c) {
    const ClassScores& s = m.per_class[c];
    precision.push_back(s.precision);
    recall.push_back(s.recall);
    f1.push_back(s.f1);
    support.push_back(s.support);
    per_class[m.class_names[c]] = scores_object(s);
  }
  j["precision"] = std::move(precision);
  j["recall"] = std::move(recall);
  j["f1"] = std::move(f1);
  j["support"] = std::move(support);
  j["per_class"] = std::move(per_class);
  j["macro_avg"] = scores_object(m.macro_avg);
  j["weighted_avg"] = scores_object(m.weighted_avg);
  j["confusion_matrix"] = m.confusion.rows();
  return j;
}

}  // namespace eigennet
