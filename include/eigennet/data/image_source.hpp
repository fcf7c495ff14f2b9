// ImageSource: images of an ImageSet as model inputs, for fit(), evaluate() and predict(). Each
// batch is assembled on the fly (data/batch.hpp): resized to the model's input, augmented when
// training (draws from (options.seed, epoch, image index)), normalized, gray replicated to RGB.
//
//   ImageSource train(images, split.train, options_with_augmentation, Order::shuffled, seed);
//   ImageSource validation(images, split.validation, options);      // sequential, no augmentation
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "batch.hpp"
#include "image_set.hpp"
#include "source.hpp"

namespace eigennet {

class ImageSource : public DataSource {
 public:
  // The images `indices` of `set` (referenced: the set must outlive the source). options.augment
  // turns training augmentation on; `seed` drives the order (options.seed the augmentation).
  ImageSource(const ImageSet& set, std::vector<int64_t> indices, BatchOptions options,
              Order order = Order::sequential, uint64_t seed = 0)
      : set_(set), indices_(std::move(indices)), options_(options), order_kind_(order), seed_(seed) {
    EIGENNET_CHECK(!indices_.empty(), "ImageSource: no images");
    labels_.reserve(indices_.size());
    for (int64_t i : indices_) labels_.push_back(set.label(i));  // also checks the index
    start_epoch(0);
  }
  // Every image of `set`, in order.
  ImageSource(const ImageSet& set, BatchOptions options) : ImageSource(set, all_indices(set), options) {}

  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  void start_epoch(int64_t epoch) override {
    epoch_ = epoch;
    order_ = epoch_order(order_kind_, labels_, set_.num_classes(), seed_, epoch);
  }
  void get(int64_t begin, int64_t count, Batch& batch) override {
    EIGENNET_CHECK(begin >= 0 && count > 0 && begin + count <= static_cast<int64_t>(order_.size()),
                   "ImageSource: batch [", begin, ", ", begin + count, ") outside the epoch of ", order_.size(),
                   " images");
    batch.items.assign(order_.begin() + begin, order_.begin() + begin + count);
    images_.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i)
      images_[static_cast<size_t>(i)] = indices_[static_cast<size_t>(batch.items[static_cast<size_t>(i)])];
    assemble_batch(set_, images_.data(), count, epoch_, options_, batch.inputs, batch.labels);
    batch.clear_mixing();
    batch.other_sizes.resize(other_sizes_.size());
    for (size_t s = 0; s < other_sizes_.size(); ++s) {
      BatchOptions options = options_;
      options.height = other_sizes_[s].first;
      options.width = other_sizes_[s].second;
      assemble_batch(set_, images_.data(), count, epoch_, options, batch.other_sizes[s], other_labels_);
    }
  }
  std::unique_ptr<DataSource> mirrored() const override {
    BatchOptions options = options_;
    options.flip = !options.flip;
    auto mirror = std::make_unique<ImageSource>(set_, indices_, options, order_kind_, seed_);
    for (const auto& [height, width] : other_sizes_) mirror->also_render(height, width);
    return mirror;
  }

  // Every batch also holds its images at height x width in Batch::other_sizes, rendered from the
  // stored image with the same augmentation draws (which depend only on the seed, the epoch and
  // the image, not on the output size): the same augmented view, not a resize of the rendered
  // one. For models that read another input size, e.g. distillation teachers. The model's own
  // size, or one already added, adds nothing.
  void also_render(int height, int width) {
    EIGENNET_CHECK(height > 0 && width > 0, "ImageSource::also_render: invalid size ", width, "x", height);
    if (height == options_.height && width == options_.width) return;
    for (const auto& size : other_sizes_)
      if (size.first == height && size.second == width) return;
    other_sizes_.emplace_back(height, width);
  }

  const ImageSet& images() const { return set_; }
  const std::vector<int64_t>& indices() const { return indices_; }
  const BatchOptions& options() const { return options_; }

 private:
  static std::vector<int64_t> all_indices(const ImageSet& set) {
    std::vector<int64_t> all(static_cast<size_t>(set.size()));
    for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int64_t>(i);
    return all;
  }

  const ImageSet& set_;
  std::vector<int64_t> indices_;
  std::vector<int32_t> labels_;
  BatchOptions options_;
  Order order_kind_;
  uint64_t seed_;
  int64_t epoch_ = 0;
  std::vector<int64_t> order_, images_;
  std::vector<std::pair<int, int>> other_sizes_;  // (height, width)
  std::vector<int32_t> other_labels_;
};

}  // namespace eigennet
