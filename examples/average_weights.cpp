// average_weights: one classifier whose weights are the mean of several classifiers' ("model
// soup"), with its BatchNorm statistics measured again on training images
// (train/weight_average.hpp). The classifiers must share an architecture and classes, e.g. runs
// of train_emotions from the same ImageNet weights.
//
//   average_weights --model A.safetensors,B.safetensors --data ../shared/data/fer2013 --out soup.safetensors
//
// The average has the first model's input size. Validation accuracy is measured on the split train_emotions draws (--split-seed,
// --val-fraction, the models' classes), without test-time flip, for every input and for the
// average. --greedy builds a greedy soup instead of the uniform one: the models sorted by their
// own validation accuracy, each added if the soup's validation accuracy does not fall.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include <eigennet/eigennet.hpp>

#include "common/cli.hpp"
#include "common/paths.hpp"

namespace fs = std::filesystem;
using namespace eigennet;

namespace {

struct Setup {
  const ImageSet* images = nullptr;
  std::vector<int64_t> calibration, validation;
  BatchOptions inputs;
  int64_t batch_size = 64;
};

// At the classifier's own input size.
double validation_accuracy(LoadedClassifier& model, const Setup& s) {
  BatchOptions inputs = s.inputs;
  inputs.height = static_cast<int>(model.spec.base.height);
  inputs.width = static_cast<int>(model.spec.base.width);
  ImageSource source(*s.images, s.validation, inputs);
  return evaluate(*model.model, source, model.spec.class_names, {s.batch_size, false}).accuracy;
}

// soup = mean of `members`, BatchNorm statistics re-estimated; returns its validation accuracy.
double make_soup(LoadedClassifier& soup, const std::vector<Model*>& members, const Setup& s) {
  average_parameters(*soup.model, members);
  ImageSource calibration(*s.images, s.calibration, s.inputs);
  reestimate_batch_norm(*soup.model, calibration, s.batch_size);
  return validation_accuracy(soup, s);
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run("average_weights", [&] {
    std::string model_list, data, out;
    int64_t split_seed = 42, calibration_images = 2048, batch_size = 64, threads = 0;
    double val_fraction = 0.1;
    bool greedy = false;
    cli::Parser p("average_weights",
                  "Averages the weights of several classifiers of one architecture and measures the average's BatchNorm "
                  "statistics again on training images.");
    p.option("model", model_list, "classifier files (safetensors from train_emotions), at least two", "FILE,FILE[,...]");
    p.option("data", data, "the dataset the models were trained on (as train_emotions --data)", "DIR");
    p.option("out", out, "the averaged classifier's file", "FILE");
    p.option("split-seed", split_seed, "train_emotions' --split-seed of the models", 0, INT64_MAX);
    p.option("val-fraction", val_fraction, "train_emotions' --val-fraction of the models", 0.0, 0.9);
    p.option("calibration", calibration_images, "training images for the BatchNorm statistics (evenly spaced over the split)",
             2, 1 << 30);
    p.flag("greedy", greedy, "greedy soup: add models in order of validation accuracy while it does not fall");
    p.option("batch-size", batch_size, "images per forward pass", 2, 4096);
    p.option("threads", threads, "OpenMP threads (0 = all cores)", 0, 1024);
    if (!p.parse(argc, argv)) return 0;
    const std::vector<std::string> paths = cli::split_list(model_list);
    if (paths.size() < 2) throw cli::UsageError("--model: give at least two classifier files");
    for (const auto& path : paths)
      if (!fs::is_regular_file(path)) throw cli::UsageError("--model: '" + path + "' is not a file");
    if (data.empty()) throw cli::UsageError("--data is required");
    if (out.empty()) throw cli::UsageError("--out is required");
    if (threads > 0) set_threads(static_cast<int>(threads));

    std::vector<LoadedClassifier> loaded;
    for (const auto& path : paths) {
      loaded.push_back(load_classifier(path));
      const ClassifierSpec& a = loaded.front().spec;
      const ClassifierSpec& b = loaded.back().spec;
      if (b.class_names != a.class_names || b.base.alpha != a.base.alpha || b.head.hidden_units != a.head.hidden_units ||
          b.base.pooling != a.base.pooling)
        fail("'", path, "' is a different network from '", paths.front(),
             "' (width, pooling, hidden layer or classes): only networks of one architecture and one set of classes "
             "can be averaged");
    }
    const ClassifierSpec& spec = loaded.front().spec;

    ImageFolderOptions folder;
    folder.color = ColorMode::grayscale;
    folder.classes = spec.class_names;
    folder.validation_fraction = val_fraction;
    folder.seed = static_cast<uint64_t>(split_seed);
    const ImageDataset dataset = load_image_dataset(data, folder);
    EIGENNET_CHECK(dataset.images.class_names() == spec.class_names, "'", data, "' does not hold the models' classes");
    EIGENNET_CHECK(!dataset.split.validation.empty(), "'", data, "': the validation split is empty");
    Setup s;
    s.images = &dataset.images;
    s.validation = dataset.split.validation;
    // Evenly spaced over the training split, whose indices are sorted (class by class): every
    // class in its share, not the first class alone.
    const int64_t train_size = static_cast<int64_t>(dataset.split.train.size());
    const int64_t calibration_count = std::min(calibration_images, train_size);
    for (int64_t i = 0; i < calibration_count; ++i)
      s.calibration.push_back(dataset.split.train[static_cast<size_t>(i * train_size / calibration_count)]);
    s.inputs.height = static_cast<int>(spec.base.height);  // the average runs at the first model's input size
    s.inputs.width = static_cast<int>(spec.base.width);
    s.batch_size = batch_size;
    std::printf("%s: %zu validation images, BatchNorm statistics from %zu training images, input %dx%d\n",
                data.c_str(), s.validation.size(), s.calibration.size(), s.inputs.height, s.inputs.width);

    std::vector<double> accuracy;
    for (size_t i = 0; i < loaded.size(); ++i) {
      accuracy.push_back(validation_accuracy(loaded[i], s));
      std::printf("  %-60s validation %.2f%%\n", paths[i].c_str(), 100 * accuracy.back());
    }
    std::fflush(stdout);
    LoadedClassifier soup = load_classifier(paths.front());
    std::vector<size_t> members;
    double soup_accuracy = 0;
    if (!greedy) {
      members.resize(loaded.size());
      std::iota(members.begin(), members.end(), size_t{0});
      std::vector<Model*> models;
      for (auto& l : loaded) models.push_back(l.model.get());
      soup_accuracy = make_soup(soup, models, s);
      std::printf("uniform soup of %zu: validation %.2f%%\n", models.size(), 100 * soup_accuracy);
    } else {
      std::vector<size_t> order(loaded.size());
      std::iota(order.begin(), order.end(), size_t{0});
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return accuracy[a] > accuracy[b]; });
      members = {order.front()};
      soup_accuracy = accuracy[order.front()];
      std::printf("greedy soup: start from %s (%.2f%%)\n", paths[order.front()].c_str(), 100 * soup_accuracy);
      for (size_t k = 1; k < order.size(); ++k) {
        std::vector<Model*> models;
        for (size_t m : members) models.push_back(loaded[m].model.get());
        models.push_back(loaded[order[k]].model.get());
        const double a = make_soup(soup, models, s);
        const bool keep = a >= soup_accuracy;
        std::printf("  + %-58s validation %.2f%% -> %s\n", paths[order[k]].c_str(), 100 * a, keep ? "kept" : "left out");
        std::fflush(stdout);
        if (keep) {
          members.push_back(order[k]);
          soup_accuracy = a;
        }
      }
      // The soup of the kept members (a single member: that network unchanged).
      std::vector<Model*> models;
      for (size_t m : members) models.push_back(loaded[m].model.get());
      if (models.size() > 1) {
        soup_accuracy = make_soup(soup, models, s);
      } else {
        average_parameters(*soup.model, models);
      }
      std::printf("greedy soup of %zu: validation %.2f%%\n", models.size(), 100 * soup_accuracy);
    }
    std::string averaged;
    for (size_t m : members) averaged += (averaged.empty() ? "" : ",") + paths[m];
    save_classifier(out, *soup.model, spec, {{"averaged_from", averaged}});
    std::printf("wrote %s (the mean of %s)\n", out.c_str(), averaged.c_str());
    return 0;
  });
}
