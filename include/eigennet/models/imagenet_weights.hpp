// Loading Keras' ImageNet MobileNetV2 weights (safetensors with Keras names and shapes).
//
// Two kinds of file:
//   - separate BatchNorm: kernels plus gamma/beta/moving_mean/moving_variance, loaded by name;
//   - BatchNorm folded into the convolutions (metadata batchnorm = folded_into_bias): every
//     convolution has a bias and there are no BatchNorm tensors. For a frozen base each bias
//     becomes its BatchNorm's beta with gamma 1, mean 0 and variance 1 - eps, which is exact:
//     (x - 0) / sqrt(1 - eps + eps) * 1 + bias = x + bias. To fine-tune with batch statistics,
//     call recalibrate_batch_norm on a batch of real images afterwards.
#pragma once

#include <set>
#include <string>

#include "../io/model_io.hpp"
#include "../layers/batch_norm.hpp"
#include "../layers/sequential.hpp"

namespace eigennet {

// Keras' name of the BatchNorm that follows convolution `conv`.
inline std::string batch_norm_name_for(const std::string& conv) {
  if (conv == "Conv1") return "bn_Conv1";
  if (conv == "Conv_1") return "Conv_1_bn";
  return conv + "_BN";
}

struct WeightsLoadReport {
  bool folded_batch_norm = false;
  int64_t tensors_loaded = 0;
};

// Loads ImageNet weights into `base` (a MobileNetV2 from make_mobilenet_v2, with or without
// pooling; parameters outside the base, such as a top or head, are left alone and reported by
// name only if the file has them). Throws Error naming the file and tensor on any mismatch,
// including a file made for another alpha.
inline WeightsLoadReport load_imagenet_weights(Sequential& base, const std::string& path) {
  const SafetensorsFile file = read_safetensors(path);
  WeightsLoadReport report;
  auto folded = file.metadata.find("batchnorm");
  report.folded_batch_norm = folded != file.metadata.end() && folded->second == "folded_into_bias";

  // Everything but the classifier top must come from the file.
  ParameterList params;
  for (Parameter* p : base.parameters())
    if (p->name.rfind("predictions/", 0) != 0) params.push_back(p);

  if (!report.folded_batch_norm) {
    report.tensors_loaded = static_cast<int64_t>(load_parameters(params, file).loaded.size());
    return report;
  }

  // Folded: kernels by name; each "<conv>/bias" becomes the following BatchNorm's beta.
  std::map<std::string, BatchNorm*> batch_norms;
  base.for_each_layer([&](Layer& l) {
    if (auto* bn = dynamic_cast<BatchNorm*>(&l)) batch_norms[bn->name()] = bn;
  });
  SafetensorsFile kernels_only;
  kernels_only.path = file.path;
  std::vector<std::pair<BatchNorm*, const Tensor*>> biases;
  for (const NamedTensor& t : file.tensors) {
    const auto slash = t.name.rfind('/');
    const std::string layer = t.name.substr(0, slash), leaf = slash == std::string::npos ? "" : t.name.substr(slash + 1);
    if (leaf != "bias") {
      kernels_only.tensors.push_back({t.name, Tensor(), t.dtype});
      kernels_only.tensors.back().tensor.copy_from(t.tensor);
      continue;
    }
    auto it = batch_norms.find(batch_norm_name_for(layer));
    EIGENNET_CHECK(it != batch_norms.end(), "'", path, "': bias '", t.name, "' has no BatchNorm '",
                   batch_norm_name_for(layer), "' to fold into in this model");
    EIGENNET_CHECK(it->second->beta().value.shape() == t.tensor.shape(), "'", path, "': tensor '", t.name,
                   "' has shape ", t.tensor.shape(), " but BatchNorm '", it->first, "' has ",
                   it->second->beta().value.shape(), " channels");
    biases.emplace_back(it->second, &t.tensor);
  }
  // Every BatchNorm needs a bias. Checked before anything is modified, naming the first one without.
  std::set<const BatchNorm*> with_bias;
  for (const auto& b : biases) with_bias.insert(b.first);
  for (const auto& [name, bn] : batch_norms)
    EIGENNET_CHECK(with_bias.count(bn), "'", path, "': no folded bias in the file for BatchNorm '", name, "' (",
                   biases.size(), " biases for ", batch_norms.size(), " BatchNorm layers in the model)");
  ParameterList kernel_params;
  for (Parameter* p : params) {
    const std::string leaf = p->name.substr(p->name.rfind('/') + 1);
    if (leaf == "kernel" || leaf == "depthwise_kernel") kernel_params.push_back(p);
  }
  report.tensors_loaded = static_cast<int64_t>(load_parameters(kernel_params, kernels_only).loaded.size());
  for (auto& [bn, bias] : biases) {
    bn->gamma().value.fill(1.0f);
    bn->beta().value.copy_from(*bias);
    bn->moving_mean().value.fill(0.0f);
    bn->moving_variance().value.fill(1.0f - bn->epsilon());
  }
  report.tensors_loaded += static_cast<int64_t>(biases.size());
  return report;
}

// Re-estimates every BatchNorm of `net` from a calibration batch (see
// BatchNorm::recalibrate_on_next_forward): afterwards the network computes the same function as
// before in inference mode, and the same function in training mode on this batch.
inline void recalibrate_batch_norm(Sequential& net, const Tensor& calibration_batch) {
  // Twice: statistics are accumulated around the current moving mean, which the first pass
  // moves to the batch mean, so the second pass measures the variance without cancellation.
  for (int pass = 0; pass < 2; ++pass) {
    net.for_each_layer([](Layer& l) {
      if (auto* bn = dynamic_cast<BatchNorm*>(&l)) bn->recalibrate_on_next_forward();
    });
    net.forward(calibration_batch, Mode::inference);
  }
}

}  // namespace eigennet
