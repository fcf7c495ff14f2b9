// Evaluation and feature caching shared by the processes of a run: each computes its contiguous
// part of the items (ItemShard) and every process receives the whole result, identical to what
// one process computes alone.
//
//   Predictions p = distributed::predict(world, model, test, {64, /*tta_flip=*/true});
//   FeatureCache c = distributed::cache_features(world, classifier.base(), train_images, {64, true});
#pragma once

#include <vector>

#include "../data/feature_cache.hpp"
#include "../train/predict.hpp"
#include "communicator.hpp"
#include "sharding.hpp"

namespace eigennet::distributed {

namespace detail {

// rows[r] = rows of `count` items that process r computed (part_of), `width` values per row:
// every process's rows into `all` (count x width), in item order.
template <typename T>
void gather_rows(Communicator& comm, int64_t count, int64_t width, const T* mine, T* all) {
  for (int r = 0; r < comm.size(); ++r) {
    const Part part = part_of(count, r, comm.size());
    T* dst = all + part.begin * width;
    if (r == comm.rank() && part.size() > 0 && dst != mine)
      std::copy(mine, mine + part.size() * width, dst);
    if (part.size() > 0) comm.broadcast(dst, part.size() * width * static_cast<int64_t>(sizeof(T)), r);
  }
}

// The width of rows that only some processes computed: the last process always has items.
inline int64_t shared_width(Communicator& comm, int64_t mine) {
  comm.broadcast(&mine, sizeof mine, comm.size() - 1);
  return mine;
}

}  // namespace detail

inline Predictions predict(Communicator& comm, Model& model, DataSource& source, const PredictOptions& options = {}) {
  if (comm.size() == 1) return eigennet::predict(model, source, options);
  const int64_t n = source.size();
  EIGENNET_CHECK(n > 0, "predict: the source is empty");
  ItemShard shard(source, comm);
  Predictions mine;
  if (shard.size() > 0) mine = run_together(comm, [&] { return eigennet::predict(model, shard, options); });
  else run_together(comm, [] {});
  const int64_t k = detail::shared_width(comm, mine.probabilities.rank() == 2 ? mine.probabilities.dim(1) : 0);
  Predictions all;
  all.probabilities.resize(Shape{n, k});
  all.labels.resize(static_cast<size_t>(n));
  detail::gather_rows(comm, n, k, mine.probabilities.data(), all.probabilities.data());
  detail::gather_rows(comm, n, 1, mine.labels.data(), all.labels.data());
  return all;
}

// Accuracy, per-class precision/recall/F1 and the confusion matrix (train/predict.hpp: evaluate)
// with the predictions computed by all processes.
inline ClassificationMetrics evaluate(Communicator& comm, Model& model, DataSource& source,
                                      std::vector<std::string> class_names = {}, const PredictOptions& options = {}) {
  const Predictions p = predict(comm, model, source, options);
  return evaluate_classifier(p.probabilities, p.labels, std::move(class_names), {2});
}

inline FeatureCache cache_features(Communicator& comm, Model& base, DataSource& images,
                                   const FeatureCacheOptions& options = {}) {
  if (comm.size() == 1) return eigennet::cache_features(base, images, options);
  const int64_t n = images.size();
  EIGENNET_CHECK(n > 0, "cache_features: no images");
  ItemShard shard(images, comm);
  FeatureCache mine;
  if (shard.size() > 0) mine = run_together(comm, [&] { return eigennet::cache_features(base, shard, options); });
  else run_together(comm, [] {});
  const int64_t c = detail::shared_width(comm, mine.features.rank() == 2 ? mine.features.dim(1) : 0);
  FeatureCache all;
  all.features.resize(Shape{n, c});
  detail::gather_rows(comm, n, c, mine.features.data(), all.features.data());
  if (options.mirrored) {
    all.mirrored.resize(Shape{n, c});
    detail::gather_rows(comm, n, c, mine.mirrored.data(), all.mirrored.data());
  }
  all.labels.resize(static_cast<size_t>(n));
  detail::gather_rows(comm, n, 1, mine.labels.data(), all.labels.data());
  return all;
}

}  // namespace eigennet::distributed
