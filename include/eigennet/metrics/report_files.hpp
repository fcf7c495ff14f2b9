// An evaluation's files: report.txt (scikit-learn's report and the confusion matrix as a table),
// metrics.json (to which the caller may add fields) and confusion_matrix.png, each written
// atomically. Needs stb (PNG output).
#pragma once

#include <cstdio>
#include <functional>
#include <string>

#include "../io/atomic_file.hpp"
#include "../io/json.hpp"
#include "../plot/confusion_matrix_png.hpp"
#include "report.hpp"

namespace eigennet {

// The report and the confusion matrix as text (report.txt holds the title, a blank line and this).
inline std::string evaluation_text(const ClassificationMetrics& metrics) {
  return classification_report(metrics, 4) + "\nconfusion matrix (rows: true, columns: predicted)\n" +
         confusion_matrix_table(metrics);
}

// Writes the three files into out_dir (which must exist); returns evaluation_text(metrics).
inline std::string save_evaluation(const std::string& out_dir, const ClassificationMetrics& metrics,
                                   const std::string& title, const std::function<void(Json&)>& add_fields = nullptr) {
  const std::string report = evaluation_text(metrics);
  write_file_atomically(out_dir + "/report.txt", title + "\n\n" + report);
  Json json = metrics_to_json(metrics);
  if (add_fields) add_fields(json);
  save_json(out_dir + "/metrics.json", json);
  save_confusion_matrix_png(out_dir + "/confusion_matrix.png", metrics, title);
  return report;
}

}  // namespace eigennet
