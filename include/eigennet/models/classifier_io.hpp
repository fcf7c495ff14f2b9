// A trained MobileNetV2 classifier as one self-describing safetensors file: all parameters
// (base, BatchNorm statistics, head) plus metadata with everything needed to rebuild and use it
// (architecture, alpha, input size, pooling, head, class names, preprocessing), so evaluation and
// prediction need no other flags.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "../io/model_io.hpp"
#include "classifier.hpp"
#include "mobilenet_v2.hpp"

namespace eigennet {

// Bounds on what a classifier file's metadata may ask for (input side in pixels; hidden units
// and classes). Loading also checks the head's kernels in the file before building the model, so
// that a small file cannot make the loader allocate a large one. (The layers check the rest.)
constexpr int64_t classifier_max_input_side = 16384;
constexpr int64_t classifier_max_units = int64_t{1} << 20;

struct ClassifierSpec {
  MobileNetV2Config base;  // pooling must be avg or max
  HeadConfig head;
  std::vector<std::string> class_names;

  std::map<std::string, std::string> to_metadata() const {
    std::map<std::string, std::string> m;
    std::ostringstream alpha;
    alpha << base.alpha;
    m["format"] = "eigennet-classifier";
    m["architecture"] = "MobileNetV2";
    m["alpha"] = alpha.str();
    m["input_height"] = std::to_string(base.height);
    m["input_width"] = std::to_string(base.width);
    m["input_channels"] = "3";
    m["pooling"] = base.pooling == GlobalPooling::max ? "max" : "avg";
    m["batchnorm_epsilon"] = std::to_string(base.bn_epsilon);
    m["head_hidden_units"] = std::to_string(head.hidden_units);
    m["head_dropout"] = std::to_string(head.dropout);
    m["num_classes"] = std::to_string(class_names.size());
    std::string names;
    for (const auto& n : class_names) names += (names.empty() ? "" : "\n") + n;
    m["classes"] = names;  // one name per line
    m["preprocessing"] = "rgb_div127.5_minus1";
    m["grayscale"] = "replicated_to_rgb";
    m["layout"] = "NHWC, Keras names and kernel layouts";
    return m;
  }

  static ClassifierSpec from_metadata(const std::map<std::string, std::string>& m, const std::string& file) {
    auto get = [&](const std::string& key) -> const std::string& {
      auto it = m.find(key);
      EIGENNET_CHECK(it != m.end(), "'", file, "' is not an eigennet classifier: metadata key '", key, "' is missing");
      return it->second;
    };
    // The metadata comes from a file: every number is checked to be whole (no trailing text or
    // embedded NUL), finite and in range before it is converted (an out-of-range cast is UB).
    auto finite = [&](const std::string& key) {
      const std::string& v = get(key);
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      EIGENNET_CHECK(!v.empty() && end == v.c_str() + v.size() && std::isfinite(x), "'", file, "': metadata '", key,
                     "' = '", v, "' is not a number");
      return x;
    };
    auto number = [&](const std::string& key, double lo, double hi) {
      const double x = finite(key);
      EIGENNET_CHECK(x >= lo && x <= hi, "'", file, "': metadata '", key, "' = '", get(key), "' is outside [", lo,
                     ", ", hi, "]");
      return x;
    };
    auto integer = [&](const std::string& key, int64_t lo, int64_t hi) {
      const double x = finite(key);
      EIGENNET_CHECK(x >= static_cast<double>(lo) && x <= static_cast<double>(hi), "'", file, "': metadata '", key,
                     "' = '", get(key), "' is outside [", lo, ", ", hi, "]");
      EIGENNET_CHECK(x == std::floor(x), "'", file, "': metadata '", key, "' = '", get(key), "' is not an integer");
      return static_cast<int64_t>(x);
    };
    EIGENNET_CHECK(get("format") == "eigennet-classifier", "'", file, "': metadata format is '", get("format"),
                   "', expected 'eigennet-classifier'");
    EIGENNET_CHECK(get("architecture") == "MobileNetV2", "'", file, "': unsupported architecture '",
                   get("architecture"), "'");
    EIGENNET_CHECK(get("preprocessing") == "rgb_div127.5_minus1", "'", file, "': unsupported preprocessing '",
                   get("preprocessing"), "'");
    ClassifierSpec s;
    s.base.alpha = static_cast<float>(number("alpha", 0.1, 10));
    s.base.height = integer("input_height", 32, classifier_max_input_side);
    s.base.width = integer("input_width", 32, classifier_max_input_side);
    const std::string& pooling = get("pooling");
    EIGENNET_CHECK(pooling == "max" || pooling == "avg", "'", file, "': unsupported pooling '", pooling, "'");
    s.base.pooling = pooling == "max" ? GlobalPooling::max : GlobalPooling::avg;
    s.base.bn_epsilon = static_cast<float>(number("batchnorm_epsilon", 0, 1));
    s.head.hidden_units = integer("head_hidden_units", 0, classifier_max_units);
    s.head.dropout = static_cast<float>(number("head_dropout", 0, 1));
    std::istringstream names(get("classes"));
    for (std::string line; std::getline(names, line);) {
      EIGENNET_CHECK(static_cast<int64_t>(s.class_names.size()) < classifier_max_units, "'", file, "': more than ",
                     classifier_max_units, " class names");
      s.class_names.push_back(line);
    }
    s.head.classes = static_cast<int64_t>(s.class_names.size());
    EIGENNET_CHECK(s.head.classes == integer("num_classes", 2, classifier_max_units), "'", file, "': ",
                   s.class_names.size(), " class names but num_classes = ", get("num_classes"));
    return s;
  }
};

inline std::unique_ptr<Classifier> make_classifier(const ClassifierSpec& spec, uint64_t seed = 0) {
  EIGENNET_CHECK(spec.base.pooling != GlobalPooling::none && !spec.base.include_top,
                 "make_classifier: the base needs global pooling and no top");
  EIGENNET_CHECK(static_cast<int64_t>(spec.class_names.size()) == spec.head.classes, "make_classifier: ",
                 spec.class_names.size(), " class names for ", spec.head.classes, " classes");
  for (const auto& name : spec.class_names)
    EIGENNET_CHECK(!name.empty() && name.find('\n') == std::string::npos, "make_classifier: invalid class name '",
                   name, "'");
  return std::make_unique<Classifier>(make_mobilenet_v2(spec.base, seed), spec.head, seed + 1);
}

// A classifier as its file holds it (for BestModel and Checkpoint): every parameter and the spec's
// metadata with `extra` added.
inline SavedModel saved_classifier(Classifier& model, const ClassifierSpec& spec,
                                   const std::map<std::string, std::string>& extra = {}) {
  SavedModel saved{model.parameters(), spec.to_metadata()};
  for (const auto& [k, v] : extra) saved.metadata[k] = v;
  return saved;
}

inline void save_classifier(const std::string& path, Classifier& model, const ClassifierSpec& spec,
                            const std::map<std::string, std::string>& extra_metadata = {},
                            const std::vector<TensorRef>& extra_tensors = {}) {
  std::map<std::string, std::string> metadata = spec.to_metadata();
  for (const auto& [k, v] : extra_metadata) metadata[k] = v;
  save_parameters(path, model.parameters(), metadata, extra_tensors);
}

struct LoadedClassifier {
  ClassifierSpec spec;
  std::unique_ptr<Classifier> model;
  std::map<std::string, std::string> metadata;
};

// Rebuilds a classifier from a file written by save_classifier, already read (or parsed from
// memory with parse_safetensors). A training checkpoint (train/checkpoint.hpp) loads too: its
// optimizer and callback state (tensors named "optimizer/..." and "callback/...") is ignored.
inline LoadedClassifier load_classifier(SafetensorsFile file) {
  const std::string& path = file.path;
  LoadedClassifier out;
  out.spec = ClassifierSpec::from_metadata(file.metadata, path);
  // The head's size comes from the metadata alone: before allocating it, check that the file
  // holds kernels of that size (then a hostile file pays for the memory it makes us use).
  const int64_t features = mobilenet_v2_feature_channels(out.spec.base.alpha);
  const auto check_kernel = [&](const std::string& name, const Shape& expected) {
    const Tensor* t = file.find(name);
    EIGENNET_CHECK(t != nullptr, "'", path, "': tensor '", name, "' is missing");
    EIGENNET_CHECK(t->shape() == expected, "'", path, "': tensor '", name, "' has shape ", t->shape(),
                   " but the metadata describes ", expected);
  };
  if (out.spec.head.hidden_units > 0) check_kernel("head_dense/kernel", Shape{features, out.spec.head.hidden_units});
  check_kernel("predictions/kernel",
               Shape{out.spec.head.hidden_units > 0 ? out.spec.head.hidden_units : features, out.spec.head.classes});
  out.metadata = file.metadata;
  {
    SkipWeightInitialization loaded_next;  // every weight comes from the file below
    out.model = make_classifier(out.spec);
  }
  SafetensorsFile model_only;
  model_only.path = file.path;
  for (NamedTensor& t : file.tensors)
    if (t.name.rfind("optimizer/", 0) != 0 && t.name.rfind("callback/", 0) != 0) model_only.tensors.push_back(std::move(t));
  load_parameters(out.model->parameters(), std::move(model_only));
  return out;
}

// The spec of a classifier file (input size, classes, head, ...) from its header alone, without
// reading its weights.
inline ClassifierSpec read_classifier_spec(const std::string& path) {
  return ClassifierSpec::from_metadata(read_safetensors_metadata(path), path);
}

// Reads and rebuilds a classifier file (see above).
inline LoadedClassifier load_classifier(const std::string& path) { return load_classifier(read_safetensors(path)); }

namespace detail {
// "a, b, c": class names in error messages.
inline std::string join_class_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}
}  // namespace detail

// Starts `to` from the trained classifier `from` (e.g. train_emotions --init-from): every
// parameter is copied, except that the output layer keeps only the columns of the classes `to`
// predicts, found by name among `from`'s. So a 6-class network can start as a 7-class one
// restricted to six of its classes (its logits are then those of the 7-class network without the
// seventh). The input size may differ (the weights do not depend on it); alpha, pooling and the
// head's hidden layer must match. `from_name` names `from` in errors.
inline void copy_classifier_weights(Classifier& to, const ClassifierSpec& to_spec, Classifier& from,
                                    const ClassifierSpec& from_spec, const std::string& from_name) {
  const auto join = detail::join_class_names;
  std::vector<int64_t> columns;  // to's class k is from's class columns[k]
  for (const std::string& name : to_spec.class_names) {
    const auto it = std::find(from_spec.class_names.begin(), from_spec.class_names.end(), name);
    EIGENNET_CHECK(it != from_spec.class_names.end(), "'", from_name, "' predicts the classes (",
                   join(from_spec.class_names), ") but this network predicts (", join(to_spec.class_names), "): '",
                   name, "' is not among them");
    columns.push_back(static_cast<int64_t>(it - from_spec.class_names.begin()));
  }
  const auto describe = [](const ClassifierSpec& s) {
    std::ostringstream o;
    o << "alpha " << s.base.alpha << ", " << (s.base.pooling == GlobalPooling::max ? "max" : "avg")
      << " pooling, hidden " << s.head.hidden_units;
    return o.str();
  };
  EIGENNET_CHECK(describe(to_spec) == describe(from_spec), "'", from_name, "' is a network with ", describe(from_spec),
                 " but this one has ", describe(to_spec));
  const ParameterList to_parameters = to.parameters(), from_parameters = from.parameters();
  EIGENNET_CHECK(to_parameters.size() == from_parameters.size(), "'", from_name, "' has ", from_parameters.size(),
                 " parameters but this network ", to_parameters.size());
  for (size_t i = 0; i < to_parameters.size(); ++i) {
    Tensor& target = to_parameters[i]->value;
    const Tensor& source = from_parameters[i]->value;
    const std::string& name = to_parameters[i]->name;
    EIGENNET_CHECK(name == from_parameters[i]->name, "'", from_name, "': parameter ", i, " is '",
                   from_parameters[i]->name, "' but this network's is '", name, "'");
    if (name == "predictions/kernel" || name == "predictions/bias") {
      // [inputs, classes] or [classes]: pick the columns.
      const int64_t rows = name == "predictions/kernel" ? target.dim(0) : 1;
      const int64_t to_classes = target.dim(target.rank() - 1), from_classes = source.dim(source.rank() - 1);
      EIGENNET_CHECK(source.size() == rows * from_classes, "'", from_name, "': '", name, "' has shape ",
                     source.shape());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k = 0; k < to_classes; ++k)
          target[r * to_classes + k] = source[r * from_classes + columns[static_cast<size_t>(k)]];
    } else {
      EIGENNET_CHECK(target.shape() == source.shape(), "'", from_name, "': '", name, "' has shape ", source.shape(),
                     " but this network's ", target.shape());
      target.copy_from(source);
    }
  }
}

}  // namespace eigennet
