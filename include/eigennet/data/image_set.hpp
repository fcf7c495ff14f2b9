// ImageSet: labeled 8-bit images of one size in one block of memory (what image folders load
// into, and what batch assembly reads). Needs no image library.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"

namespace eigennet {

struct SkippedFile {
  std::string path;
  std::string reason;
};

// Labeled 8-bit images of one size, stored contiguously: image i is
// pixels[i * height * width * channels ...], rows top to bottom, channels interleaved.
class ImageSet {
 public:
  ImageSet() = default;
  ImageSet(int height, int width, int channels, std::vector<std::string> class_names)
      : height_(height), width_(width), channels_(channels), class_names_(std::move(class_names)) {
    EIGENNET_CHECK(height > 0 && width > 0, "ImageSet: invalid image size ", width, "x", height);
    EIGENNET_CHECK(channels == 1 || channels == 3, "ImageSet: channels must be 1 or 3, got ", channels);
    EIGENNET_CHECK(!class_names_.empty(), "ImageSet: needs at least one class name");
  }
  // Takes over decoded images: pixels holds labels.size() images of height x width x channels.
  ImageSet(int height, int width, int channels, std::vector<std::string> class_names, std::vector<uint8_t> pixels,
           std::vector<int32_t> labels, std::vector<std::string> paths, std::vector<SkippedFile> skipped = {})
      : ImageSet(height, width, channels, std::move(class_names)) {
    EIGENNET_CHECK(static_cast<int64_t>(pixels.size()) == static_cast<int64_t>(labels.size()) * image_bytes(),
                   "ImageSet: ", pixels.size(), " pixel bytes do not hold ", labels.size(), " images of ", width, "x",
                   height, "x", channels);
    EIGENNET_CHECK(paths.size() == labels.size(), "ImageSet: ", paths.size(), " paths for ", labels.size(), " images");
    for (int32_t label : labels)
      EIGENNET_CHECK(label >= 0 && label < num_classes(), "ImageSet: label ", label, " is outside [0, ", num_classes(),
                     ")");
    pixels_ = std::move(pixels);
    labels_ = std::move(labels);
    paths_ = std::move(paths);
    skipped_ = std::move(skipped);
  }

  int height() const { return height_; }
  int width() const { return width_; }
  int channels() const { return channels_; }
  int64_t image_bytes() const { return int64_t{height_} * width_ * channels_; }
  int64_t size() const { return static_cast<int64_t>(labels_.size()); }
  bool empty() const { return labels_.empty(); }
  int num_classes() const { return static_cast<int>(class_names_.size()); }
  const std::vector<std::string>& class_names() const { return class_names_; }
  const std::vector<int32_t>& labels() const { return labels_; }
  int32_t label(int64_t i) const { return labels_[checked(i)]; }
  // The file image i came from (empty for images added from memory).
  const std::string& path(int64_t i) const { return paths_[checked(i)]; }
  const uint8_t* image(int64_t i) const { return pixels_.data() + static_cast<int64_t>(checked(i)) * image_bytes(); }
  const std::vector<uint8_t>& pixels() const { return pixels_; }
  // Files found but not loaded, with the reason.
  const std::vector<SkippedFile>& skipped() const { return skipped_; }
  int64_t skipped_count() const { return static_cast<int64_t>(skipped_.size()); }
  std::vector<int64_t> class_counts() const {
    std::vector<int64_t> counts(class_names_.size(), 0);
    for (int32_t label : labels_) ++counts[static_cast<size_t>(label)];
    return counts;
  }

  // Adds one image of this set's size and channels.
  void add(const uint8_t* pixels, int32_t label, std::string path = {}) {
    EIGENNET_CHECK(label >= 0 && label < num_classes(), "ImageSet::add: label ", label, " is outside [0, ",
                   num_classes(), ")");
    pixels_.insert(pixels_.end(), pixels, pixels + image_bytes());
    labels_.push_back(label);
    paths_.push_back(std::move(path));
  }
  // Appends another set with the same image size, channels and classes (e.g. test after train).
  void append(const ImageSet& other) {
    EIGENNET_CHECK(other.height_ == height_ && other.width_ == width_ && other.channels_ == channels_,
                   "ImageSet::append: image size ", other.width_, "x", other.height_, "x", other.channels_,
                   " differs from ", width_, "x", height_, "x", channels_);
    EIGENNET_CHECK(other.class_names_ == class_names_, "ImageSet::append: the class names differ");
    pixels_.insert(pixels_.end(), other.pixels_.begin(), other.pixels_.end());
    labels_.insert(labels_.end(), other.labels_.begin(), other.labels_.end());
    paths_.insert(paths_.end(), other.paths_.begin(), other.paths_.end());
    skipped_.insert(skipped_.end(), other.skipped_.begin(), other.skipped_.end());
  }

 private:
  size_t checked(int64_t i) const {
    EIGENNET_CHECK(i >= 0 && i < size(), "ImageSet: image index ", i, " out of range for ", size(), " images");
    return static_cast<size_t>(i);
  }

  int height_ = 0, width_ = 0, channels_ = 0;
  std::vector<std::string> class_names_;
  std::vector<uint8_t> pixels_;
  std::vector<int32_t> labels_;
  std::vector<std::string> paths_;
  std::vector<SkippedFile> skipped_;
};

}  // namespace eigennet
