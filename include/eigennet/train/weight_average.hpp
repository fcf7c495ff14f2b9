// Weight averaging: one network whose weights are the element-wise mean of several networks of
// the same architecture ("model soup", Wortsman et al. 2022; the averaging step of SWA). Networks
// fine-tuned from the same start often lie in one basin of the loss, where the mean of their
// weights can beat each of them at the cost of one network.
//
//   average_parameters(soup, {&a, &b});           // soup = (a + b) / 2, weights and statistics
//   reestimate_batch_norm(soup, train_source, 64); // moving statistics measured again
//
// The mean of several networks' BatchNorm moving statistics describes none of them: the
// activations of the averaged network have their own. reestimate_batch_norm measures them
// again over a data source (training images, no augmentation), as a cumulative mean of batch
// statistics over the whole source, which is what SWA does (Izmailov et al. 2018).
#pragma once

#include <algorithm>
#include <vector>

#include "../core/error.hpp"
#include "../data/source.hpp"
#include "../layers/batch_norm.hpp"
#include "../layers/model.hpp"

namespace eigennet {

// into = the mean of `models` (into's own values are overwritten, and into may be one of them).
// Every parameter, weights and BatchNorm statistics, matched by position, name and shape.
inline void average_parameters(Model& into, const std::vector<Model*>& models) {
  EIGENNET_CHECK(!models.empty(), "average_parameters: no model given");
  const ParameterList target = into.parameters();
  std::vector<ParameterList> sources;
  for (Model* m : models) {
    EIGENNET_CHECK(m != nullptr, "average_parameters: a model is null");
    sources.push_back(m->parameters());
    const ParameterList& s = sources.back();
    EIGENNET_CHECK(s.size() == target.size(), "average_parameters: a model has ", s.size(), " parameters, expected ",
                   target.size());
    for (size_t i = 0; i < s.size(); ++i)
      EIGENNET_CHECK(s[i]->name == target[i]->name && s[i]->value.shape() == target[i]->value.shape(),
                     "average_parameters: parameter ", i, " is '", s[i]->name, "' ", s[i]->value.shape(),
                     " in one model and '", target[i]->name, "' ", target[i]->value.shape(), " in another");
  }
  const float scale = 1.0f / static_cast<float>(models.size());
  std::vector<float> sum;
  for (size_t i = 0; i < target.size(); ++i) {
    const int64_t n = target[i]->value.size();
    sum.assign(static_cast<size_t>(n), 0.0f);
    for (const ParameterList& s : sources) {
      const float* v = s[i]->value.data();
      for (int64_t k = 0; k < n; ++k) sum[static_cast<size_t>(k)] += v[k];
    }
    float* out = target[i]->value.data();  // written last: `into` may be one of the sources
    for (int64_t k = 0; k < n; ++k) out[k] = sum[static_cast<size_t>(k)] * scale;
  }
}

// Replaces every BatchNorm layer's moving statistics by the mean of its batch statistics over
// `source`, one training-mode forward per batch of `batch_size` (the source's epoch 0 order).
// Dropout runs in training mode too; it acts after the base and does not reach any BatchNorm of
// MobileNetV2. Weights are not changed; gradients are not computed. The source must sample the
// data the network will see: a training split cut short after its first indices, which are
// often sorted by class, measures one class (average_weights spaces its images evenly).
inline void reestimate_batch_norm(Model& model, DataSource& source, int64_t batch_size) {
  EIGENNET_CHECK(batch_size > 1, "reestimate_batch_norm: batch_size must be at least 2, got ", batch_size);
  const int64_t n = source.size();
  EIGENNET_CHECK(n > 0, "reestimate_batch_norm: the source is empty");
  std::vector<BatchNorm*> layers;
  model.for_each_layer([&](Layer& l) {
    if (auto* bn = dynamic_cast<BatchNorm*>(&l)) layers.push_back(bn);
  });
  EIGENNET_CHECK(!layers.empty(), "reestimate_batch_norm: the model has no BatchNorm layer");
  for (BatchNorm* bn : layers) bn->set_reestimating(true);
  source.start_epoch(0);
  Batch batch;
  try {
    // A last batch of one image has no variance to measure: it joins the batch before it.
    for (int64_t begin = 0; begin < n;) {
      int64_t count = std::min(batch_size, n - begin);
      if (n - begin - count == 1) count += 1;
      source.get(begin, count, batch);
      model.forward(batch.inputs, Mode::train);
      begin += count;
    }
  } catch (...) {
    for (BatchNorm* bn : layers) bn->set_reestimating(false);
    throw;
  }
  for (BatchNorm* bn : layers) bn->set_reestimating(false);
}

}  // namespace eigennet
