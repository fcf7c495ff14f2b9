// extract_features: runs the MobileNetV2 base (ImageNet weights and preprocessing, images
// resized to SxS) and writes pooled features as a float32 .npy [N, C], in the order the images
// were given; a folder contributes its image files (recursively) sorted by path. With --detect,
// the features are those of each picture's best face (BlazeFace; pictures larger than 64x64),
// and a picture without a face stops the run (its row would be missing).
#include <algorithm>
#include <optional>
#include <cstdio>
#include <filesystem>

#include <unistd.h>

#include <eigennet/eigennet.hpp>
#include <eigennet/io/npy.hpp>

#include "common/cli.hpp"

namespace fs = std::filesystem;
using namespace eigennet;

int main(int argc, char** argv) {
  return cli::run("extract_features", [&] {
    std::string weights, out, pool = "avg";
    double alpha = 1.0;
    int64_t size = 224, batch_size = 32, threads = 0;
    std::vector<std::string> inputs;
    bool detect = false;
    cli::Parser p("extract_features", "Writes MobileNetV2 ImageNet features of images as a float32 .npy [N, C].");
    p.option("weights", weights, "ImageNet weights (safetensors with Keras names)", "FILE");
    p.option("alpha", alpha, "width multiplier of the weights", 0.35, 1.4);
    p.option("size", size, "input height and width the images are resized to", 32, 1024);
    p.choice("pool", pool, {"avg", "max"}, "global pooling of the last feature map");
    p.option("out", out, "output .npy file", "FEATURES.npy");
    p.option("batch-size", batch_size, "images per forward pass", 1, 4096);
    p.flag("detect", detect, "the features of each picture's best face (pictures larger than 64x64)");
    p.option("threads", threads, "OpenMP threads (0 = all cores)", 0, 1024);
    p.positional(inputs, "IMAGE...|FOLDER", "image files, or folders whose images are used in sorted order");
    if (!p.parse(argc, argv)) return 0;
    if (weights.empty()) throw cli::UsageError("--weights is required");
    if (out.empty()) throw cli::UsageError("--out is required");
    if (inputs.empty()) throw cli::UsageError("no images given (see --help)");
    if (!fs::exists(weights)) throw cli::UsageError("--weights: '" + weights + "' does not exist");
    if (threads > 0) set_threads(static_cast<int>(threads));

    std::vector<std::string> paths;
    for (const auto& in : inputs) {
      if (fs::is_directory(in)) {
        std::vector<std::string> found;
        for (const auto& e : fs::recursive_directory_iterator(in))
          if (e.is_regular_file() && e.path().filename().string()[0] != '.') found.push_back(e.path().string());
        std::sort(found.begin(), found.end());
        EIGENNET_CHECK(!found.empty(), "folder '", in, "' contains no files");
        paths.insert(paths.end(), found.begin(), found.end());
      } else {
        EIGENNET_CHECK(fs::exists(in), "'", in, "' does not exist");
        paths.push_back(in);
      }
    }

    MobileNetV2Config config;
    config.alpha = static_cast<float>(alpha);
    config.height = config.width = size;
    config.pooling = pool == "max" ? GlobalPooling::max : GlobalPooling::avg;
    auto base = make_mobilenet_v2(config);
    load_imagenet_weights(*base, weights);
    InferenceNet net = compile_for_inference(*base);  // BatchNorm folded, blocks fused
    const int s = static_cast<int>(size);
    const int64_t channels = base->model_output_shape()[0], n = static_cast<int64_t>(paths.size());
    Tensor features(Shape{n, channels}), batch;
    std::vector<int32_t> labels;
    BatchOptions options;
    options.height = options.width = s;
    // A large JPEG is decoded straight to a reduced size (at least s x s) through its DCT.
    DecodeOptions decode;
    decode.min_height = decode.min_width = detect ? std::max(s, 640) : s;
    std::optional<FaceDetector> detector;
    const FaceCropOptions crop = calibrated_face_crop(FaceDetectorOptions{}.variant);
    const bool on_terminal = isatty(fileno(stderr)) != 0;
    for (int64_t begin = 0; begin < n; begin += batch_size) {
      const int64_t count = std::min(batch_size, n - begin);
      ImageSet set(s, s, 3, {"image"});
      for (int64_t i = begin; i < begin + count; ++i) {
        // Every image must be readable: a silently missing row would shift all later ones.
        const std::string& path = paths[static_cast<size_t>(i)];
        const Image image = load_image(path, decode);
        if (!detect) {
          set.add(resize_image(image, s, s).pixels.data(), 0, path);
          continue;
        }
        if (!is_face_crop(image) && !detector) detector.emplace();
        const std::vector<PictureFace> faces = picture_faces(image, detector ? &*detector : nullptr, crop);
        EIGENNET_CHECK(!faces.empty(), "'", path, "': no face found (--detect needs one in every picture)");
        set.add(classifier_input(image, faces.front(), s, s, 3, crop).pixels.data(), 0, path);
      }
      std::vector<int64_t> indices(static_cast<size_t>(count));
      for (int64_t i = 0; i < count; ++i) indices[static_cast<size_t>(i)] = i;
      assemble_batch(set, indices.data(), count, 0, options, batch, labels);
      const Tensor& f = net.forward(batch);
      std::copy(f.data(), f.data() + count * channels, features.data() + begin * channels);
      // Redrawn in place on a terminal; in a log file only the final count.
      if (on_terminal || begin + count == n)
        std::fprintf(stderr, "%s%lld/%lld images", on_terminal ? "\r" : "", static_cast<long long>(begin + count),
                     static_cast<long long>(n));
    }
    std::fputc('\n', stderr);
    save_npy(out, features);
    std::printf("wrote %s: [%lld, %lld] float32\n", out.c_str(), static_cast<long long>(n),
                static_cast<long long>(channels));
    return 0;
  });
}
