// The record of a training run: one EpochRecord per completed epoch. It is what log.csv, the
// curves, the checkpoint and the callbacks that pick a best epoch or stop early all read, so a
// resumed run (which restores the history) decides exactly as an uninterrupted one.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../io/json.hpp"

namespace eigennet {

struct EpochRecord {
  double train_loss = NAN, train_accuracy = NAN;  // means over the epoch's batches, as trained
  double val_loss = NAN, val_accuracy = NAN;      // NaN without a validation source
  double learning_rate = NAN;                     // at the epoch's last step
  double seconds = NAN;                           // wall time, validation included

  static const std::vector<std::string>& metric_names() {
    static const std::vector<std::string> names = {"train_loss", "train_accuracy", "val_loss",
                                                   "val_accuracy", "learning_rate", "seconds"};
    return names;
  }
  // A metric by name (one of metric_names()).
  double metric(const std::string& name) const {
    const double values[] = {train_loss, train_accuracy, val_loss, val_accuracy, learning_rate, seconds};
    const auto& names = metric_names();
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) return values[i];
    fail("unknown training metric '", name, "' (known: train_loss, train_accuracy, val_loss, val_accuracy, "
         "learning_rate, seconds)");
  }
  void set_metric(const std::string& name, double value) {
    double* fields[] = {&train_loss, &train_accuracy, &val_loss, &val_accuracy, &learning_rate, &seconds};
    const auto& names = metric_names();
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) {
        *fields[i] = value;
        return;
      }
    fail("unknown training metric '", name, "'");
  }
};

using History = std::vector<EpochRecord>;

// Which epoch is best: by a metric, larger or smaller is better, and the first of equal values
// wins (a later epoch must be strictly better to replace it). `last_epoch()` names the last
// epoch whatever the metric says: for a schedule fixed in advance, run without a validation
// split worth choosing by (the metric is still reported).
struct Monitor {
  std::string metric = "val_accuracy";
  bool maximize = true;
  bool latest = false;

  static Monitor max(std::string metric) { return {std::move(metric), true}; }
  static Monitor min(std::string metric) { return {std::move(metric), false}; }
  static Monitor last_epoch(std::string reported = "val_accuracy") { return {std::move(reported), true, true}; }

  bool better(double candidate, double best) const {
    if (std::isnan(candidate)) return false;
    if (std::isnan(best)) return true;
    return maximize ? candidate > best : candidate < best;
  }
  // Index of the best epoch of `history` (the last one for last_epoch()), or -1 when no epoch
  // has a value.
  int64_t best_epoch(const History& history) const {
    if (latest) return static_cast<int64_t>(history.size()) - 1;
    int64_t best = -1;
    for (size_t i = 0; i < history.size(); ++i)
      if (better(history[i].metric(metric), best < 0 ? NAN : history[static_cast<size_t>(best)].metric(metric)))
        best = static_cast<int64_t>(i);
    return best;
  }
  // True when the last epoch of `history` is its best.
  bool last_is_best(const History& history) const {
    return !history.empty() && best_epoch(history) == static_cast<int64_t>(history.size()) - 1;
  }
};

// History as JSON (one object per epoch; NaN as null) and back, exactly: doubles are written in
// their shortest round-trip form.
inline Json history_to_json(const History& history) {
  Json rows = Json::array();
  for (const EpochRecord& r : history) {
    Json row = Json::object();
    for (const std::string& name : EpochRecord::metric_names()) row[name] = r.metric(name);
    rows.push_back(std::move(row));
  }
  return rows;
}

inline History history_from_json(const Json& rows, const std::string& source) {
  EIGENNET_CHECK(rows.is_array(), source, ": the training history must be a JSON array, got ", rows.type_name());
  History history;
  for (const Json& row : rows.elements()) {
    EIGENNET_CHECK(row.is_object(), source, ": a training history entry must be an object, got ", row.type_name());
    EpochRecord r;
    for (const std::string& name : EpochRecord::metric_names()) {
      const Json* v = row.find(name);
      EIGENNET_CHECK(v != nullptr, source, ": training history entry ", history.size() + 1, " has no '", name, "'");
      EIGENNET_CHECK(v->is_null() || v->is_number(), source, ": training history '", name, "' of epoch ",
                     history.size() + 1, " is ", v->type_name(), ", not a number");
      r.set_metric(name, v->is_null() ? NAN : v->as_double());
    }
    history.push_back(r);
  }
  return history;
}

// log.csv: a header line, then one line per epoch (epoch numbers from 1).
inline std::string history_csv(const History& history) {
  std::string text = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,learning_rate,seconds\n";
  char line[256];
  for (size_t i = 0; i < history.size(); ++i) {
    const EpochRecord& r = history[i];
    std::snprintf(line, sizeof line, "%zu,%.6f,%.6f,%.6f,%.6f,%.8g,%.2f\n", i + 1, r.train_loss, r.train_accuracy,
                  r.val_loss, r.val_accuracy, r.learning_rate, r.seconds);
    text += line;
  }
  return text;
}

}  // namespace eigennet
