// Frozen-base transfer learning: run the frozen base once per image, keep its features, and train
// only the head on them (the study's method; an epoch then costs a few milliseconds).
//
//   FeatureCache train = cache_features(classifier.base(), train_images, {64, /*mirrored=*/true});
//   FeatureSource source(train, {Order::shuffled, seed, classes, /*flip_probability=*/0.5});
//   fit(classifier.head(), optimizer, loss, source, ...);
//
// Flip augmentation survives caching: with `mirrored`, the features of the mirrored images are
// cached too, and each item of an epoch picks one of the two (draws from (seed, epoch)).
// A base that compile_for_inference knows (a Sequential built with an input shape) runs through
// the net compiled for inference, compiled once per call (`compiled = false`: its own forward).
#pragma once

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "../inference/inference_net.hpp"
#include "../layers/model.hpp"
#include "source.hpp"

namespace eigennet {

struct FeatureCache {
  Tensor features;               // [N, C], item i of the source at row i
  Tensor mirrored;               // [N, C] of the mirrored images, or empty
  std::vector<int32_t> labels;   // [N]
};

struct FeatureCacheOptions {
  int64_t batch_size = 64;
  bool mirrored = false;  // also cache the mirrored images' features (needs a source that mirrors)
  // Called after each batch with (items done, items in all), e.g. for a progress line.
  std::function<void(int64_t, int64_t)> progress;
  bool compiled = true;  // through compile_for_inference where the base supports it
};

namespace detail {
inline Tensor features_of(Model& base, InferenceNet* net, DataSource& images, const FeatureCacheOptions& options,
                          std::vector<int32_t>* labels) {
  const int64_t n = images.size();
  EIGENNET_CHECK(n > 0, "cache_features: no images");
  EIGENNET_CHECK(options.batch_size > 0, "cache_features: batch_size must be positive, got ", options.batch_size);
  images.start_epoch(0);
  Tensor features;
  Batch batch;
  for (int64_t begin = 0; begin < n; begin += options.batch_size) {
    const int64_t count = std::min(options.batch_size, n - begin);
    images.get(begin, count, batch);
    const Tensor& f = net ? net->forward(batch.inputs) : base.forward(batch.inputs, Mode::inference);
    EIGENNET_CHECK(f.rank() == 2 && f.dim(0) == count, "cache_features: the base must output [batch, features], got ",
                   f.shape());
    if (begin == 0) features.resize(Shape{n, f.dim(1)});
    std::memcpy(features.data() + begin * f.dim(1), f.data(), static_cast<size_t>(f.size()) * sizeof(float));
    if (labels) labels->insert(labels->end(), batch.labels.begin(), batch.labels.end());
    if (options.progress) options.progress(begin + count, n);
  }
  return features;
}
}  // namespace detail

// Features of every item of `images` (in its sequential order) under the frozen `base`, in
// inference mode.
inline FeatureCache cache_features(Model& base, DataSource& images, const FeatureCacheOptions& options = {}) {
  FeatureCache cache;
  const std::unique_ptr<InferenceNet> net = options.compiled ? compile_for_inference_if_supported(base) : nullptr;
  cache.features = detail::features_of(base, net.get(), images, options, &cache.labels);
  if (options.mirrored) {
    std::unique_ptr<DataSource> mirrored = images.mirrored();
    EIGENNET_CHECK(mirrored != nullptr, "cache_features: mirrored features need a source that can mirror its images");
    cache.mirrored = detail::features_of(base, net.get(), *mirrored, options, nullptr);
  }
  return cache;
}

// Cached features as a training (or validation) source. The cache is referenced: it must
// outlive the source.
class FeatureSource : public DataSource {
 public:
  struct Options {
    Order order = Order::sequential;
    uint64_t seed = 0;             // order and flip draws of epoch e derive from (seed, e)
    int num_classes = 0;           // for Order::balanced (0: 1 + the largest label)
    float flip_probability = 0;    // chance that an item uses its mirrored features
  };
  explicit FeatureSource(const FeatureCache& cache) : FeatureSource(cache, Options{}) {}
  FeatureSource(const FeatureCache& cache, Options options) : cache_(cache), options_(options) {
    EIGENNET_CHECK(cache.features.rank() == 2 && cache.features.dim(0) == static_cast<int64_t>(cache.labels.size()),
                   "FeatureSource: features ", cache.features.shape(), " for ", cache.labels.size(), " labels");
    EIGENNET_CHECK(!cache.labels.empty(), "FeatureSource: no items");
    EIGENNET_CHECK(cache.mirrored.empty() || cache.mirrored.shape() == cache.features.shape(),
                   "FeatureSource: mirrored features ", cache.mirrored.shape(), " differ from ", cache.features.shape());
    EIGENNET_CHECK(options.flip_probability >= 0 && options.flip_probability <= 1,
                   "FeatureSource: flip_probability must be in [0, 1], got ", options.flip_probability);
    if (options_.num_classes == 0)
      options_.num_classes = 1 + *std::max_element(cache.labels.begin(), cache.labels.end());
    start_epoch(0);
  }

  int64_t size() const override { return static_cast<int64_t>(cache_.labels.size()); }
  void start_epoch(int64_t epoch) override {
    order_ = epoch_order(options_.order, cache_.labels, options_.num_classes, options_.seed, epoch);
    // One draw per position, in epoch order, decided up front so that batches may come in any order.
    flip_.assign(order_.size(), 0);
    if (!cache_.mirrored.empty()) {
      Rng rng(derive_seed(options_.seed, 0xF11B, static_cast<uint64_t>(epoch)));
      for (auto& f : flip_) f = rng.uniform() < options_.flip_probability;
    }
  }
  void get(int64_t begin, int64_t count, Batch& batch) override {
    EIGENNET_CHECK(begin >= 0 && count > 0 && begin + count <= static_cast<int64_t>(order_.size()),
                   "FeatureSource: batch [", begin, ", ", begin + count, ") outside the epoch of ", order_.size(),
                   " items");
    const int64_t c = cache_.features.dim(1);
    batch.inputs.resize(Shape{count, c});
    batch.items.assign(order_.begin() + begin, order_.begin() + begin + count);
    batch.labels.resize(static_cast<size_t>(count));
    batch.clear_mixing();
    for (int64_t i = 0; i < count; ++i) {
      const int64_t item = batch.items[static_cast<size_t>(i)];
      const Tensor& src = flip_[static_cast<size_t>(begin + i)] ? cache_.mirrored : cache_.features;
      std::memcpy(batch.inputs.data() + i * c, src.data() + item * c, static_cast<size_t>(c) * sizeof(float));
      batch.labels[static_cast<size_t>(i)] = cache_.labels[static_cast<size_t>(item)];
    }
  }

 private:
  const FeatureCache& cache_;
  Options options_;
  std::vector<int64_t> order_;
  std::vector<char> flip_;
};

}  // namespace eigennet
