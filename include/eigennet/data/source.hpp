// Data sources: where fit(), evaluate() and predict() get their batches from, behind one small
// interface. A source holds a fixed list of items; an epoch visits them in an order that is a
// function of (seed, epoch) alone, so that a resumed run repeats an uninterrupted one.
//
//   TensorSource   in-memory inputs [N, ...] with labels (data/source.hpp, this file)
//   ImageSource    8-bit images of an ImageSet with resizing and augmentation (data/image_source.hpp)
//   FeatureSource  cached features of a frozen base (data/feature_cache.hpp)
//
// A user's own source implements size(), start_epoch() and get().
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"
#include "sampling.hpp"

namespace eigennet {

// One batch: inputs (batch first), a class label per item, and which items of the source they
// are (losses that look things up per item, e.g. cached teacher outputs, use `items`).
struct Batch {
  Tensor inputs;
  std::vector<int32_t> labels;
  std::vector<int64_t> items;
  // The same inputs at other sizes, with the same augmentation draws, for models that read the
  // batch at another input size (e.g. distillation teachers; ImageSource::also_render).
  std::vector<Tensor> other_sizes;
  // A mixed batch (data/mixing.hpp: mixup, cutmix): item i is a blend of its own image and that
  // of another item, whose label is mixed_labels[i]; its target is mix_weight of labels[i] and
  // 1 - mix_weight of mixed_labels[i]. Empty: not mixed.
  std::vector<int32_t> mixed_labels;
  float mix_weight = 1;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  // The images [N, height, width, C] of this batch: `inputs` or one of `other_sizes`; null when
  // the batch has none of that size.
  const Tensor* inputs_at(int64_t height, int64_t width) const {
    const auto fits = [&](const Tensor& t) { return t.rank() == 4 && t.dim(1) == height && t.dim(2) == width; };
    if (fits(inputs)) return &inputs;
    for (const Tensor& t : other_sizes)
      if (fits(t)) return &t;
    return nullptr;
  }
  bool mixed() const { return !mixed_labels.empty(); }
  // The label of item i with the larger weight (its own label when the batch is not mixed).
  int32_t main_label(int64_t i) const {
    return mixed() && mix_weight < 0.5f ? mixed_labels[static_cast<size_t>(i)] : labels[static_cast<size_t>(i)];
  }
  // A source filling this batch starts unmixed.
  void clear_mixing() {
    mixed_labels.clear();
    mix_weight = 1;
  }
};

// The order in which an epoch visits the items.
enum class Order {
  sequential,  // 0, 1, 2, ...: evaluation
  shuffled,    // a random permutation per epoch
  balanced,    // every class equally often (data/sampling.hpp: balanced_order)
};

class DataSource {
 public:
  virtual ~DataSource() = default;
  // Items per epoch.
  virtual int64_t size() const = 0;
  // Prepares `epoch`: its order and augmentation draws. Called before the epoch's first get().
  virtual void start_epoch(int64_t epoch) = 0;
  // Fills `batch` with the items at positions [begin, begin + count) of the epoch's order.
  virtual void get(int64_t begin, int64_t count, Batch& batch) = 0;
  // The same items mirrored left-right (test-time flip averaging), or null when this source
  // cannot mirror its inputs.
  virtual std::unique_ptr<DataSource> mirrored() const { return nullptr; }
};

// The visiting order of `size` items with these labels for one epoch (a permutation of 0..size-1,
// or a class-balanced draw of the same length).
inline std::vector<int64_t> epoch_order(Order order, const std::vector<int32_t>& labels, int num_classes,
                                        uint64_t seed, int64_t epoch) {
  std::vector<int64_t> positions(labels.size());
  for (size_t i = 0; i < positions.size(); ++i) positions[i] = static_cast<int64_t>(i);
  switch (order) {
    case Order::sequential: return positions;
    case Order::shuffled: return shuffled_order(positions, seed, epoch);
    case Order::balanced: return balanced_order(labels, positions, num_classes, seed, epoch);
  }
  return positions;
}

// Copies rows `items` of a [N, ...] tensor into `out` [items.size(), ...].
inline void gather_rows(const Tensor& all, const int64_t* items, int64_t count, Tensor& out) {
  EIGENNET_CHECK(all.rank() >= 1, "gather_rows: the source tensor has no batch dimension");
  Shape shape = all.shape();
  const int64_t row = all.dim(0) > 0 ? all.size() / all.dim(0) : 0;
  shape[0] = count;
  out.resize(shape);
  for (int64_t i = 0; i < count; ++i) {
    EIGENNET_CHECK(items[i] >= 0 && items[i] < all.dim(0), "gather_rows: row ", items[i], " out of range for ",
                   all.dim(0), " rows");
    std::memcpy(out.data() + i * row, all.data() + items[i] * row, static_cast<size_t>(row) * sizeof(float));
  }
}

// In-memory inputs [N, ...] and their labels (e.g. a data set that fits in memory, or features).
// The tensors are referenced, not copied: they must outlive the source.
class TensorSource : public DataSource {
 public:
  struct Options {
    Order order = Order::sequential;
    uint64_t seed = 0;    // the order of epoch e derives from (seed, e)
    int num_classes = 0;  // for Order::balanced (0: 1 + the largest label)
  };
  TensorSource(const Tensor& inputs, const std::vector<int32_t>& labels) : TensorSource(inputs, labels, Options{}) {}
  TensorSource(const Tensor& inputs, const std::vector<int32_t>& labels, Options options)
      : inputs_(inputs), labels_(labels), options_(options) {
    EIGENNET_CHECK(inputs.rank() >= 2, "TensorSource: inputs must be [N, ...], got ", inputs.shape());
    EIGENNET_CHECK(inputs.dim(0) == static_cast<int64_t>(labels.size()), "TensorSource: ", inputs.dim(0),
                   " inputs but ", labels.size(), " labels");
    EIGENNET_CHECK(!labels.empty(), "TensorSource: no items");
    if (options_.num_classes == 0) options_.num_classes = 1 + *std::max_element(labels.begin(), labels.end());
    for (int32_t label : labels)
      EIGENNET_CHECK(label >= 0 && label < options_.num_classes, "TensorSource: label ", label, " is outside [0, ",
                     options_.num_classes, ")");
    start_epoch(0);
  }

  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  void start_epoch(int64_t epoch) override {
    order_ = epoch_order(options_.order, labels_, options_.num_classes, options_.seed, epoch);
  }
  void get(int64_t begin, int64_t count, Batch& batch) override {
    EIGENNET_CHECK(begin >= 0 && count > 0 && begin + count <= static_cast<int64_t>(order_.size()),
                   "TensorSource: batch [", begin, ", ", begin + count, ") outside the epoch of ", order_.size(),
                   " items");
    batch.items.assign(order_.begin() + begin, order_.begin() + begin + count);
    gather_rows(inputs_, batch.items.data(), count, batch.inputs);
    batch.other_sizes.clear();
    batch.clear_mixing();
    batch.labels.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) batch.labels[static_cast<size_t>(i)] = labels_[static_cast<size_t>(batch.items[static_cast<size_t>(i)])];
  }

 private:
  const Tensor& inputs_;
  const std::vector<int32_t>& labels_;
  Options options_;
  std::vector<int64_t> order_;
};

}  // namespace eigennet
