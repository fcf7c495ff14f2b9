// Saving and loading a model's parameters by name (safetensors, Keras names), with strict
// checks: every name and shape must match unless the caller explicitly allows a partial load
// (transfer learning loads a base into a model that also has a head).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "../core/parameter.hpp"
#include "safetensors.hpp"

namespace eigennet {

struct LoadOptions {
  bool allow_missing = false;     // model parameters absent from the file keep their values
  bool allow_unexpected = false;  // file tensors the model does not have are ignored
};

struct LoadReport {
  std::vector<std::string> loaded, missing, unexpected;
};

// A model as its file holds it: the parameters (by name) and the metadata that describe it. What
// the best-model and checkpoint callbacks write (the model a run saves can be more than the part
// it trains: a classifier whose head trains on cached features of its frozen base).
struct SavedModel {
  SavedModel(ParameterList params, std::map<std::string, std::string> meta = {})
      : parameters(std::move(params)), metadata(std::move(meta)) {}
  ParameterList parameters;
  std::map<std::string, std::string> metadata;
};

namespace detail {

// Checks `file` against the parameters (see load_parameters) and returns, per parameter to
// load, the index of its tensor in the file. Throws before anything is modified.
inline std::vector<std::pair<Parameter*, size_t>> plan_load(const ParameterList& params, const SafetensorsFile& file,
                                                            const LoadOptions& options, LoadReport& report) {
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < file.tensors.size(); ++i) by_name[file.tensors[i].name] = i;
  std::set<std::string> model_names;
  std::vector<std::pair<Parameter*, size_t>> plan;
  for (Parameter* p : params) {
    model_names.insert(p->name);
    auto it = by_name.find(p->name);
    if (it == by_name.end()) {
      report.missing.push_back(p->name);
      continue;
    }
    const Tensor& t = file.tensors[it->second].tensor;
    EIGENNET_CHECK(t.shape() == p->value.shape(), "'", file.path, "': tensor '", p->name, "' has shape ", t.shape(),
                   " but the model expects ", p->value.shape());
    plan.emplace_back(p, it->second);
  }
  for (const NamedTensor& t : file.tensors)
    if (!model_names.count(t.name)) report.unexpected.push_back(t.name);
  if (!options.allow_missing && !report.missing.empty())
    fail("'", file.path, "': ", report.missing.size(), " model parameter(s) missing from the file, first '",
         report.missing.front(), "' (load with allow_missing for a partial load)");
  if (!options.allow_unexpected && !report.unexpected.empty())
    fail("'", file.path, "': ", report.unexpected.size(), " tensor(s) the model does not have, first '",
         report.unexpected.front(), "' (load with allow_unexpected to ignore them)");
  return plan;
}

}  // namespace detail

// Copies tensors from `file` into the parameters with the same names. Throws Error naming the
// file and tensor on a shape mismatch, on missing names (unless allow_missing) and on
// unexpected names (unless allow_unexpected). Nothing is modified when it throws.
inline LoadReport load_parameters(const ParameterList& params, const SafetensorsFile& file,
                                  const LoadOptions& options = {}) {
  LoadReport report;
  for (auto& [p, i] : detail::plan_load(params, file, options, report)) {
    p->value.copy_from(file.tensors[i].tensor);
    report.loaded.push_back(p->name);
  }
  return report;
}

// The same, but the file's tensors are moved into the parameters instead of copied (the file
// is left with empty tensors where they were loaded): no second pass over the weights.
inline LoadReport load_parameters(const ParameterList& params, SafetensorsFile&& file, const LoadOptions& options = {}) {
  LoadReport report;
  for (auto& [p, i] : detail::plan_load(params, file, options, report)) {
    p->value = std::move(file.tensors[i].tensor);
    report.loaded.push_back(p->name);
  }
  return report;
}

inline LoadReport load_parameters(const ParameterList& params, const std::string& path, const LoadOptions& options = {}) {
  return load_parameters(params, read_safetensors(path), options);
}

// Writes the parameters (values, not gradients) plus `extra` tensors (optimizer state, ...)
// atomically.
inline void save_parameters(const std::string& path, const ParameterList& params,
                            const std::map<std::string, std::string>& metadata = {},
                            const std::vector<TensorRef>& extra = {}) {
  std::vector<TensorRef> refs;
  refs.reserve(params.size() + extra.size());
  for (const Parameter* p : params) refs.push_back({p->name, &p->value});
  refs.insert(refs.end(), extra.begin(), extra.end());
  write_safetensors(path, refs, metadata);
}

// Writes a SavedModel, with `extra` metadata added (or replacing keys), atomically.
inline void save_model(const std::string& path, const SavedModel& model,
                       const std::map<std::string, std::string>& extra = {}) {
  std::map<std::string, std::string> metadata = model.metadata;
  for (const auto& [key, value] : extra) metadata[key] = value;
  save_parameters(path, model.parameters, metadata);
}

}  // namespace eigennet
