// Image folders: a dataset laid out as <root>/<class>/<image files>, decoded in parallel into one
// block of 8-bit pixels at a common stored size.
//
// - Class names are the sub-folder names, sorted (byte order), so label ids do not depend on
//   the file system; `classes` keeps a subset, `exclude` drops some (e.g. "neutral"). Naming a
//   class that does not exist is an error, so typos do not pass silently.
// - Files are sorted within each class; hidden entries (names starting with '.') and
//   sub-folders of class folders are ignored. Every other file is tried: files that cannot be
//   read or decoded (empty, truncated, not an image, beyond ImageLimits) are skipped with a
//   warning on stderr naming the file and the reason, and counted (ImageSet::skipped()).
//   Photos are turned upright by their EXIF orientation (apply_exif_orientation).
// - Images are converted to grayscale or RGB (alpha: see AlphaMode) and resized with stb's
//   triangle filter to the stored size: by default the size of the first readable image. Keep
//   the native size in memory (FER-2013: 48x48 grayscale, 2.3 KB per image) and let batch
//   assembly resize to the model's input: that costs far less memory than storing 224x224 RGB.
// - load_image_dataset also detects the layout: with <root>/train and <root>/test it uses them
//   (and <root>/val or <root>/validation when present, otherwise carves a stratified validation
//   set out of train); with only class folders it makes a stratified train/validation/test split.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "image.hpp"
#include "image_set.hpp"
#include "split.hpp"

namespace eigennet {

struct ImageFolderOptions {
  ColorMode color = ColorMode::rgb;
  // Stored size; 0 x 0 = the size of the first readable image (in class, then file order).
  int height = 0;
  int width = 0;
  std::vector<std::string> classes;  // keep only these classes (empty = all)
  std::vector<std::string> exclude;  // drop these classes
  int64_t max_per_class = 0;         // > 0: only the first files (sorted) of each class folder
  AlphaMode alpha = AlphaMode::composite_black;
  ImageLimits limits;
  bool apply_exif_orientation = true;  // turn photos upright (see DecodeOptions)
  bool warnings = true;  // print skipped files and a summary to stderr
  int threads = 0;       // decoding threads (0 = OpenMP's default)
  // When set, makes each decoded picture's stored image (height x width x the color mode's
  // channels) instead of resizing the whole picture, e.g. the face found in a photo
  // (detect/picture_faces.hpp); returning false skips the file with `reason`. Called from one
  // thread at a time: with it, pictures are decoded one after another (a detector is not
  // thread-safe, and runs its own threads).
  std::function<bool(const Image& picture, int height, int width, Image& stored, std::string& reason)> prepare;

  // Used by load_image_dataset only.
  SplitFractions fractions;          // class-folder layout: stratified train/validation/test
  double validation_fraction = 0.1;  // train/test layout: carved out of train
  uint64_t seed = 0;
};

namespace detail {

inline bool is_hidden(const std::filesystem::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

// Sorted names of the non-hidden entries of `dir` that are directories (want_directories) or
// anything else.
inline std::vector<std::string> list_entries(const std::filesystem::path& dir, bool want_directories) {
  namespace fs = std::filesystem;
  std::vector<std::string> names;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  EIGENNET_CHECK(!ec, "image folder: cannot list '", dir.string(), "': ", ec.message());
  for (const fs::directory_entry& entry : it) {
    if (is_hidden(entry.path())) continue;
    std::error_code type_ec;
    const bool is_dir = entry.is_directory(type_ec);
    if (is_dir == want_directories) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

inline bool is_directory(const std::filesystem::path& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec);
}

inline std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace detail

// Loads <root>/<class>/* (see the top of this file).
inline ImageSet load_image_folder(const std::string& root, const ImageFolderOptions& options) {
  namespace fs = std::filesystem;
  const fs::path root_path(root);
  std::error_code ec;
  EIGENNET_CHECK(fs::exists(root_path, ec), "image folder '", root, "' does not exist");
  EIGENNET_CHECK(detail::is_directory(root_path), "image folder '", root, "' is not a directory");
  EIGENNET_CHECK((options.height == 0) == (options.width == 0) && options.height >= 0 && options.width >= 0,
                 "image folder '", root, "': stored size ", options.width, "x", options.height,
                 " must be positive, or 0x0 for the first image's size");

  const std::vector<std::string> all_classes = detail::list_entries(root_path, true);
  EIGENNET_CHECK(!all_classes.empty(), "image folder '", root,
                 "' has no class sub-folders (expected <root>/<class>/<images>)");
  const auto check_known = [&](const std::vector<std::string>& names, const char* option) {
    for (const auto& name : names)
      EIGENNET_CHECK(std::find(all_classes.begin(), all_classes.end(), name) != all_classes.end(), "image folder '",
                     root, "': class '", name, "' in `", option,
                     "` does not exist (classes: ", detail::join(all_classes), ")");
  };
  check_known(options.classes, "classes");
  check_known(options.exclude, "exclude");
  std::vector<std::string> class_names;
  for (const auto& name : all_classes) {
    const bool wanted = options.classes.empty() ||
                        std::find(options.classes.begin(), options.classes.end(), name) != options.classes.end();
    const bool excluded = std::find(options.exclude.begin(), options.exclude.end(), name) != options.exclude.end();
    if (wanted && !excluded) class_names.push_back(name);
  }
  EIGENNET_CHECK(!class_names.empty(), "image folder '", root, "': no classes left after `classes` and `exclude`");

  // The file list, in class order then file order.
  std::vector<std::string> files;
  std::vector<int32_t> file_labels;
  for (size_t c = 0; c < class_names.size(); ++c) {
    const fs::path class_dir = root_path / class_names[c];
    std::vector<std::string> names = detail::list_entries(class_dir, false);
    EIGENNET_CHECK(!names.empty(), "image folder: class folder '", class_dir.string(), "' is empty");
    if (options.max_per_class > 0 && static_cast<int64_t>(names.size()) > options.max_per_class)
      names.resize(static_cast<size_t>(options.max_per_class));
    for (const auto& name : names) {
      files.push_back((class_dir / name).string());
      file_labels.push_back(static_cast<int32_t>(c));
    }
  }
  const int64_t file_count = static_cast<int64_t>(files.size());

  DecodeOptions decode;
  decode.color = options.color;
  decode.alpha = options.alpha;
  decode.limits = options.limits;
  decode.apply_exif_orientation = options.apply_exif_orientation;

  // The stored size.
  int height = options.height, width = options.width;
  for (int64_t i = 0; i < file_count && height == 0; ++i) {
    int w = 0, h = 0;
    std::string error;
    if (read_image_size(files[static_cast<size_t>(i)], decode, w, h, error) &&
        check_image_limits(w, h, options.limits).empty()) {
      height = h;
      width = w;
    }
  }
  EIGENNET_CHECK(height > 0, "image folder '", root, "': none of the ", file_count, " files is a readable image");
  const int channels = channels_of(options.color);
  const int64_t image_bytes = int64_t{height} * width * channels;

  // Decode in parallel straight into the final block; failures are compacted out afterwards.
  std::vector<uint8_t> pixels(static_cast<size_t>(file_count * image_bytes));
  std::vector<std::string> failures(static_cast<size_t>(file_count));
  std::vector<std::pair<int, int>> native_sizes(static_cast<size_t>(file_count));  // width, height
  const int threads = options.prepare ? 1 : options.threads > 0 ? options.threads : max_threads();
#pragma omp parallel num_threads(threads)
  {
    Image decoded;  // per thread, reused
    std::string error;
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < file_count; ++i) {
      const auto f = static_cast<size_t>(i);
      try {
        uint8_t* slot = pixels.data() + i * image_bytes;
        if (!read_image(files[f], decode, decoded, error)) {
          failures[f] = error;
        } else {
          native_sizes[f] = {decoded.width, decoded.height};
          if (options.prepare) {
            Image stored;
            if (!options.prepare(decoded, height, width, stored, error)) {
              failures[f] = error.empty() ? "refused by the folder's prepare function" : error;
            } else {
              EIGENNET_CHECK(stored.height == height && stored.width == width && stored.channels == channels &&
                                 static_cast<int64_t>(stored.pixels.size()) == image_bytes,
                             "image folder: prepare gave a ", stored.width, "x", stored.height, "x", stored.channels,
                             " image for the stored size ", width, "x", height, "x", channels);
              std::memcpy(slot, stored.pixels.data(), static_cast<size_t>(image_bytes));
            }
          } else if (!resize_image(decoded.pixels.data(), decoded.height, decoded.width, channels, slot, height,
                                   width)) {
            failures[f] = "stb_image_resize failed (out of memory?)";
          }
        }
      } catch (const std::exception& e) {  // nothing may leave an OpenMP region
        failures[f] = e.what();
      }
    }
  }

  std::vector<int32_t> labels;
  std::vector<std::string> paths;
  std::vector<SkippedFile> skipped;
  int64_t kept = 0;
  for (int64_t i = 0; i < file_count; ++i) {
    const auto f = static_cast<size_t>(i);
    if (!failures[f].empty()) {
      skipped.push_back({files[f], failures[f]});
      continue;
    }
    if (kept != i)
      std::memmove(pixels.data() + kept * image_bytes, pixels.data() + i * image_bytes,
                   static_cast<size_t>(image_bytes));
    labels.push_back(file_labels[f]);
    paths.push_back(files[f]);
    ++kept;
  }
  pixels.resize(static_cast<size_t>(kept * image_bytes));
  pixels.shrink_to_fit();
  ImageSet set(height, width, channels, class_names, std::move(pixels), std::move(labels), std::move(paths),
               std::move(skipped));

  if (options.warnings && options.height == 0) {
    // The stored size came from the first image: say so when it does not fit the others (a
    // 1x1 thumbnail first would shrink every image to 1x1).
    int64_t other_sizes = 0;
    size_t example = 0;
    for (size_t f = 0; f < native_sizes.size(); ++f)
      if (failures[f].empty() && native_sizes[f] != std::make_pair(width, height) && other_sizes++ == 0) example = f;
    if (other_sizes > 0)
      std::cerr << "eigennet: " << other_sizes << " of " << set.size() << " images in '" << root
                << "' were resized to the stored size " << width << "x" << height
                << " (that of the first image; e.g. '" << files[example] << "' is " << native_sizes[example].first
                << "x" << native_sizes[example].second << ")\n";
  }
  if (options.warnings && set.skipped_count() > 0) {
    for (const auto& s : set.skipped()) std::cerr << "eigennet: skipping '" << s.path << "': " << s.reason << '\n';
    std::cerr << "eigennet: skipped " << set.skipped_count() << " of " << file_count << " files in '" << root << "'\n";
  }
  const std::vector<int64_t> counts = set.class_counts();
  for (size_t c = 0; c < counts.size(); ++c)
    EIGENNET_CHECK(counts[c] > 0, "image folder: class folder '", (root_path / class_names[c]).string(),
                   "' has no readable images (", set.skipped_count(), " files skipped in '", root, "')");
  return set;
}

enum class FolderLayout {
  class_folders,  // <root>/<class>/*: split made here
  train_test,     // <root>/train/<class>/* and <root>/test/<class>/* (and optionally val/)
};

inline const char* to_string(FolderLayout layout) {
  return layout == FolderLayout::class_folders ? "class folders" : "train/test folders";
}

// All images of a dataset in one ImageSet, and the split as index lists into it.
struct ImageDataset {
  ImageSet images;
  DatasetSplit split;
  FolderLayout layout = FolderLayout::class_folders;
};

// Loads a dataset and splits it (see the top of this file). With the train/test layout the images
// are stored train first, then validation (if a folder exists), then test.
inline ImageDataset load_image_dataset(const std::string& root, const ImageFolderOptions& options) {
  namespace fs = std::filesystem;
  const fs::path root_path(root);
  std::error_code ec;
  EIGENNET_CHECK(fs::exists(root_path, ec), "dataset folder '", root, "' does not exist");
  ImageDataset dataset;
  const fs::path train_dir = root_path / "train", test_dir = root_path / "test";
  if (!(detail::is_directory(train_dir) && detail::is_directory(test_dir))) {
    dataset.layout = FolderLayout::class_folders;
    dataset.images = load_image_folder(root, options);
    dataset.split =
        stratified_split(dataset.images.labels(), dataset.images.num_classes(), options.fractions, options.seed);
    return dataset;
  }

  dataset.layout = FolderLayout::train_test;
  EIGENNET_CHECK(options.validation_fraction >= 0 && options.validation_fraction < 1, "dataset folder '", root,
                 "': validation_fraction must be in [0, 1), got ", options.validation_fraction);
  fs::path validation_dir;
  for (const char* name : {"val", "validation"})
    if (validation_dir.empty() && detail::is_directory(root_path / name)) validation_dir = root_path / name;

  dataset.images = load_image_folder(train_dir.string(), options);
  const int64_t train_count = dataset.images.size();
  // Every part is stored at the train images' size, with the same classes.
  ImageFolderOptions rest = options;
  rest.height = dataset.images.height();
  rest.width = dataset.images.width();
  const auto append_part = [&](const fs::path& dir) {
    ImageSet part = load_image_folder(dir.string(), rest);
    EIGENNET_CHECK(part.class_names() == dataset.images.class_names(), "dataset folder '", root, "': the classes of '",
                   dir.string(), "' (", detail::join(part.class_names()), ") differ from those of '",
                   train_dir.string(), "' (", detail::join(dataset.images.class_names()), ")");
    const int64_t begin = dataset.images.size();
    dataset.images.append(part);
    std::vector<int64_t> indices(static_cast<size_t>(part.size()));
    for (size_t i = 0; i < indices.size(); ++i) indices[i] = begin + static_cast<int64_t>(i);
    return indices;
  };

  std::vector<int64_t> train_indices(static_cast<size_t>(train_count));
  for (size_t i = 0; i < train_indices.size(); ++i) train_indices[i] = static_cast<int64_t>(i);
  if (validation_dir.empty()) {
    const SplitFractions carve{1.0 - options.validation_fraction, options.validation_fraction, 0.0};
    DatasetSplit carved =
        stratified_split(dataset.images.labels(), train_indices, dataset.images.num_classes(), carve, options.seed);
    dataset.split.train = std::move(carved.train);
    dataset.split.validation = std::move(carved.validation);
  } else {
    dataset.split.train = std::move(train_indices);
    dataset.split.validation = append_part(validation_dir);
  }
  dataset.split.test = append_part(test_dir);
  return dataset;
}

inline void print_split_counts(std::ostream& out, const ImageDataset& dataset) {
  print_split_counts(out, dataset.images.class_names(), dataset.images.labels(), dataset.split);
}

}  // namespace eigennet
