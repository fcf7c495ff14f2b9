// robustness_tool: the helper program of the shell tests in tests/robustness/. It writes small
// image datasets and single images, and checks and compares the safetensors files the example
// programs write, so that the tests need nothing but a POSIX shell.
//
//   robustness_tool dataset DIR CLASSES PER_CLASS SIZE [SEED]
//       DIR/<class>/img_NNN.png for each class of the comma-separated CLASSES: SIZExSIZE grayscale
//       images whose pattern (a bright bar at a class-specific angle, plus noise) depends on the
//       class, so that a tiny model can learn something.
//   robustness_tool image FILE WIDTH HEIGHT [GRAY]
//       one PNG (or BMP when FILE ends in .bmp): flat GRAY (0-255) when given, else a pattern.
//   robustness_tool weights FILE ALPHA
//       a randomly initialized MobileNetV2 base (no top) saved like the ImageNet files (Keras
//       names, separate BatchNorm), as --weights for extract_features and train_emotions.
//   robustness_tool check FILE
//       loads FILE as a classifier (rebuilding the model from its metadata), requires every tensor
//       to be finite and, for a training checkpoint, consistent state; prints "ok epochs_done=K".
//   robustness_tool compare A B (--exact | --tolerance X) [--skip NAME]...
//       --exact: metadata and every tensor bit for bit. --tolerance: tensors only, each within
//       X * (1 + max |a|) of the other (max |a| of that tensor). Prints the largest differences.
//       --skip leaves out a tensor or metadata key (a checkpoint's "history" holds epoch times).
//
// Exit status: 0 ok, 1 check or comparison failed, 2 usage error.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <eigennet/eigennet.hpp>

namespace fs = std::filesystem;
using namespace eigennet;

namespace {

int usage() {
  std::fputs(
      "usage: robustness_tool dataset DIR CLASSES PER_CLASS SIZE [SEED]\n"
      "       robustness_tool image FILE WIDTH HEIGHT [GRAY]\n"
      "       robustness_tool photo OUT.png FACE X Y SIDE [FACE X Y SIDE]...\n"
      "       robustness_tool weights FILE ALPHA\n"
      "       robustness_tool check FILE\n"
      "       robustness_tool compare A B (--exact | --tolerance X) [--skip NAME]...\n",
      stderr);
  return 2;
}

long parse_long(const char* text, const char* what) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  EIGENNET_CHECK(*text != '\0' && *end == '\0', "robustness_tool: ", what, " '", text, "' is not an integer");
  return v;
}

void write_image(const std::string& path, int width, int height, int channels, const std::vector<uint8_t>& pixels) {
  const bool bmp = path.size() > 4 && path.compare(path.size() - 4, 4, ".bmp") == 0;
  const int ok = bmp ? stbi_write_bmp(path.c_str(), width, height, channels, pixels.data())
                     : stbi_write_png(path.c_str(), width, height, channels, pixels.data(), width * channels);
  EIGENNET_CHECK(ok != 0, "robustness_tool: cannot write '", path, "'");
}

// A bright bar through the center at an angle set by the class, on a noisy background.
std::vector<uint8_t> pattern_image(int width, int height, int class_index, int class_count, Rng& rng) {
  const double angle = 3.14159265358979 * class_index / std::max(class_count, 1) + 0.2 * (rng.uniform() - 0.5);
  const double c = std::cos(angle), s = std::sin(angle);
  std::vector<uint8_t> pixels(static_cast<size_t>(width) * static_cast<size_t>(height));
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      const double dx = (x + 0.5) / width - 0.5, dy = (y + 0.5) / height - 0.5;
      const double distance = std::fabs(-s * dx + c * dy);
      const double value = (distance < 0.12 ? 200.0 : 50.0) + 40.0 * (rng.uniform() - 0.5);
      pixels[static_cast<size_t>(y) * width + x] = static_cast<uint8_t>(std::clamp(value, 0.0, 255.0));
    }
  return pixels;
}

int make_dataset(int argc, char** argv) {
  if (argc < 6 || argc > 7) return usage();
  const std::string dir = argv[2];
  std::vector<std::string> classes;
  for (std::string rest = argv[3]; !rest.empty();) {
    const size_t comma = rest.find(',');
    classes.push_back(rest.substr(0, comma));
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
  }
  const long per_class = parse_long(argv[4], "PER_CLASS"), size = parse_long(argv[5], "SIZE");
  const long seed = argc == 7 ? parse_long(argv[6], "SEED") : 1;
  EIGENNET_CHECK(per_class >= 0 && size >= 1 && size <= 4096, "robustness_tool dataset: bad PER_CLASS or SIZE");
  Rng rng(static_cast<uint64_t>(seed));
  for (size_t k = 0; k < classes.size(); ++k) {
    fs::create_directories(fs::path(dir) / classes[k]);
    for (long i = 0; i < per_class; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "img_%03ld.png", i);
      write_image((fs::path(dir) / classes[k] / name).string(), static_cast<int>(size), static_cast<int>(size), 1,
                  pattern_image(static_cast<int>(size), static_cast<int>(size), static_cast<int>(k),
                                static_cast<int>(classes.size()), rng));
    }
  }
  return 0;
}

// photo OUT.png FACE X Y SIDE [FACE X Y SIDE ...]: a 640x480 RGB picture of smooth colour
// gradients (no face of its own) with each FACE image pasted as a SIDE x SIDE square at X, Y.
int make_photo(int argc, char** argv) {
  if (argc < 3 || (argc - 3) % 4 != 0) return usage();
  const int width = 640, height = 480;
  std::vector<uint8_t> pixels(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      uint8_t* p = &pixels[(static_cast<size_t>(y) * width + x) * 3];
      p[0] = static_cast<uint8_t>(120 + 80 * std::sin(x * 0.013) * std::cos(y * 0.021));
      p[1] = static_cast<uint8_t>(100 + 60 * std::sin((x + y) * 0.009));
      p[2] = static_cast<uint8_t>(140 + 50 * std::cos(x * 0.031 + y * 0.004));
    }
  for (int a = 3; a + 3 < argc; a += 4) {
    const long x0 = parse_long(argv[a + 1], "X"), y0 = parse_long(argv[a + 2], "Y"), side = parse_long(argv[a + 3], "SIDE");
    EIGENNET_CHECK(side > 0 && x0 >= 0 && y0 >= 0 && x0 + side <= width && y0 + side <= height,
                   "robustness_tool photo: the face square does not fit in the picture");
    const Image face = resize_image(load_image(argv[a], ColorMode::rgb), static_cast<int>(side), static_cast<int>(side));
    for (long y = 0; y < side; ++y)
      std::copy_n(&face.pixels[static_cast<size_t>(y * side * 3)], side * 3,
                  &pixels[static_cast<size_t>(((y0 + y) * width + x0) * 3)]);
  }
  write_image(argv[2], width, height, 3, pixels);
  return 0;
}

int make_image(int argc, char** argv) {
  if (argc < 5 || argc > 6) return usage();
  const long width = parse_long(argv[3], "WIDTH"), height = parse_long(argv[4], "HEIGHT");
  EIGENNET_CHECK(width >= 1 && height >= 1 && width * height <= (1L << 26), "robustness_tool image: bad size");
  std::vector<uint8_t> pixels;
  if (argc == 6) {
    pixels.assign(static_cast<size_t>(width * height), static_cast<uint8_t>(parse_long(argv[5], "GRAY")));
  } else {
    Rng rng(7);
    pixels = pattern_image(static_cast<int>(width), static_cast<int>(height), 0, 1, rng);
  }
  write_image(argv[2], static_cast<int>(width), static_cast<int>(height), 1, pixels);
  return 0;
}

int make_weights(int argc, char** argv) {
  if (argc != 4) return usage();
  MobileNetV2Config config;
  config.alpha = static_cast<float>(std::strtod(argv[3], nullptr));
  config.height = config.width = 32;
  auto base = make_mobilenet_v2(config, 11);
  save_parameters(argv[2], base->parameters(), {{"note", "random MobileNetV2 base for tests"}});
  return 0;
}

int check(int argc, char** argv) {
  if (argc != 3) return usage();
  const std::string path = argv[2];
  const SafetensorsFile file = read_safetensors(path);
  for (const NamedTensor& t : file.tensors) {
    const float* v = t.tensor.data();
    for (int64_t i = 0; i < t.tensor.size(); ++i)
      EIGENNET_CHECK(std::isfinite(v[i]), "'", path, "': tensor '", t.name, "' holds a non-finite value at ", i);
  }
  // A classifier must rebuild from the metadata and take every parameter.
  size_t classes = 0;
  const auto format = file.metadata.find("format");
  if (format != file.metadata.end() && format->second == "eigennet-classifier")
    classes = load_classifier(path).spec.class_names.size();
  std::string epochs_done = "none";
  if (file.metadata.count("checkpoint")) {
    const CheckpointInfo info = read_checkpoint_info(file);  // checks history against epochs_done
    epochs_done = std::to_string(info.state.epochs_done);
    bool has_optimizer_state = false;
    for (const NamedTensor& t : file.tensors) has_optimizer_state |= t.name.rfind("optimizer/", 0) == 0;
    EIGENNET_CHECK(has_optimizer_state, "'", path, "': a checkpoint without optimizer state");
    EIGENNET_CHECK(info.optimizer_steps == info.state.step, "'", path, "': optimizer_steps ", info.optimizer_steps,
                   " but step ", info.state.step);
  }
  std::printf("ok epochs_done=%s tensors=%zu classes=%zu\n", epochs_done.c_str(), file.tensors.size(), classes);
  return 0;
}

int compare(int argc, char** argv) {
  if (argc < 5) return usage();
  bool exact = false;
  double tolerance = -1;
  std::set<std::string> skip;
  for (int i = 4; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--exact") {
      exact = true;
    } else if (arg == "--tolerance" && i + 1 < argc) {
      tolerance = std::strtod(argv[++i], nullptr);
    } else if (arg == "--skip" && i + 1 < argc) {
      skip.insert(argv[++i]);
    } else {
      return usage();
    }
  }
  if (exact == (tolerance >= 0)) return usage();
  const SafetensorsFile a = read_safetensors(argv[2]), b = read_safetensors(argv[3]);
  int problems = 0;
  std::map<std::string, std::string> meta_a = a.metadata, meta_b = b.metadata;
  for (const std::string& name : skip) meta_a.erase(name), meta_b.erase(name);
  if (exact && meta_a != meta_b) {
    for (const auto& [key, value] : meta_a) {
      auto it = meta_b.find(key);
      if (it == b.metadata.end() || it->second != value)
        std::printf("metadata '%s' differs: '%s' vs '%s'\n", key.c_str(), value.c_str(),
                    it == meta_b.end() ? "(absent)" : it->second.c_str());
    }
    for (const auto& [key, value] : meta_b)
      if (!meta_a.count(key)) std::printf("metadata '%s' only in the second file\n", key.c_str());
    ++problems;
  }
  std::set<std::string> names_a, names_b;
  for (const NamedTensor& t : a.tensors) names_a.insert(t.name);
  for (const NamedTensor& t : b.tensors) names_b.insert(t.name);
  if (names_a != names_b) {
    std::printf("the files hold different tensor names (%zu vs %zu tensors)\n", names_a.size(), names_b.size());
    return 1;
  }
  int64_t compared = 0, bitwise_different = 0;
  double worst_relative = 0;
  std::string worst_name;
  for (const NamedTensor& ta : a.tensors) {
    if (skip.count(ta.name)) continue;
    const Tensor& x = ta.tensor;
    const Tensor& y = b.at(ta.name);
    ++compared;
    if (!(x.shape() == y.shape())) {
      std::printf("tensor '%s': shapes differ\n", ta.name.c_str());
      ++problems;
      continue;
    }
    const bool same_bits = std::memcmp(x.data(), y.data(), static_cast<size_t>(x.size()) * sizeof(float)) == 0;
    bitwise_different += !same_bits;
    if (exact) {
      if (!same_bits) {
        std::printf("tensor '%s' differs bitwise\n", ta.name.c_str());
        ++problems;
      }
      continue;
    }
    double max_abs = 0, max_diff = 0;
    for (int64_t i = 0; i < x.size(); ++i) {
      max_abs = std::max(max_abs, static_cast<double>(std::fabs(x[i])));
      const double d = std::fabs(static_cast<double>(x[i]) - static_cast<double>(y[i]));
      max_diff = std::isnan(d) ? INFINITY : std::max(max_diff, d);
    }
    const double relative = max_diff / (1.0 + max_abs);
    if (relative > worst_relative) {
      worst_relative = relative;
      worst_name = ta.name;
    }
    if (relative > tolerance) {
      std::printf("tensor '%s': max |a-b| = %.3g (max |a| = %.3g) exceeds the tolerance\n", ta.name.c_str(), max_diff,
                  max_abs);
      ++problems;
    }
  }
  std::printf("compared %lld tensors: %lld differ bitwise; largest max|a-b|/(1+max|a|) = %.3g%s%s\n",
              static_cast<long long>(compared), static_cast<long long>(bitwise_different), worst_relative,
              worst_name.empty() ? "" : " in ", worst_name.c_str());
  return problems ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string command = argv[1];
  try {
    if (command == "dataset") return make_dataset(argc, argv);
    if (command == "image") return make_image(argc, argv);
    if (command == "photo") return make_photo(argc, argv);
    if (command == "weights") return make_weights(argc, argv);
    if (command == "check") return check(argc, argv);
    if (command == "compare") return compare(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "robustness_tool %s: %s\n", command.c_str(), e.what());
    return 1;
  }
  return usage();
}
