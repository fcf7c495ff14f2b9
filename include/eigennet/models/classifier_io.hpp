// A trained MobileNetV2 classifier as one self-describing safetensors file: all parameters
// (base, BatchNorm statistics, head) plus metadata with everything needed to rebuild and use it
// (architecture, alpha, input size, pooling, head, class names, preprocessing), so evaluation and
// prediction need no other flags.
#pragma once

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "../io/model_io.hpp"
#include "classifier.hpp"
#include "mobilenet_v2.hpp"

namespace eigennet {

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
    auto number = [&](const std::string& key) {
      const std::string& v = get(key);
      char* end = nullptr;
      const double x = std::strtod(v.c_str(), &end);
      EIGENNET_CHECK(!v.empty() && *end == '\0', "'", file, "': metadata '", key, "' = '", v, "' is not a number");
      return x;
    };
    EIGENNET_CHECK(get("format") == "eigennet-classifier", "'", file, "': metadata format is '", get("format"),
                   "', expected 'eigennet-classifier'");
    EIGENNET_CHECK(get("architecture") == "MobileNetV2", "'", file, "': unsupported architecture '",
                   get("architecture"), "'");
    EIGENNET_CHECK(get("preprocessing") == "rgb_div127.5_minus1", "'", file, "': unsupported preprocessing '",
                   get("preprocessing"), "'");
    ClassifierSpec s;
    s.base.alpha = static_cast<float>(number("alpha"));
    s.base.height = static_cast<int64_t>(number("input_height"));
    s.base.width = static_cast<int64_t>(number("input_width"));
    const std::string& pooling = get("pooling");
    EIGENNET_CHECK(pooling == "max" || pooling == "avg", "'", file, "': unsupported pooling '", pooling, "'");
    s.base.pooling = pooling == "max" ? GlobalPooling::max : GlobalPooling::avg;
    s.base.bn_epsilon = static_cast<float>(number("batchnorm_epsilon"));
    s.head.hidden_units = static_cast<int64_t>(number("head_hidden_units"));
    s.head.dropout = static_cast<float>(number("head_dropout"));
    std::istringstream names(get("classes"));
    for (std::string line; std::getline(names, line);) s.class_names.push_back(line);
    s.head.classes = static_cast<int64_t>(s.class_names.size());
    EIGENNET_CHECK(static_cast<double>(s.class_names.size()) == number("num_classes"), "'", file, "': ",
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

// Rebuilds a classifier from a file written by save_classifier. Extra tensors in the file (such
// as a checkpoint's optimizer state, names starting with "optimizer/" or "training/") are ignored.
inline LoadedClassifier load_classifier(const std::string& path) {
  SafetensorsFile file = read_safetensors(path);
  LoadedClassifier out;
  out.spec = ClassifierSpec::from_metadata(file.metadata, path);
  out.metadata = file.metadata;
  out.model = make_classifier(out.spec);
  SafetensorsFile model_only;
  model_only.path = file.path;
  for (NamedTensor& t : file.tensors)
    if (t.name.rfind("optimizer/", 0) != 0 && t.name.rfind("training/", 0) != 0) model_only.tensors.push_back(std::move(t));
  load_parameters(out.model->parameters(), model_only);
  return out;
}

}  // namespace eigennet
