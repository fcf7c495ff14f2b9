// train_emotions: the facial-emotion experiment end to end.
//
//   image folders -> stratified split -> MobileNetV2 (ImageNet weights) + classifier head
//   -> training (frozen base on cached features, or fine-tuning) -> best checkpoint by
//   validation accuracy -> test report, confusion matrix, training curves, metrics.json.
//
// `--recipe study` is the study's protocol (frozen base, GlobalMaxPooling -> Dense 128 ReLU ->
// Dropout 0.4 -> Dense N, Adam); `--recipe best` is this project's best fine-tuning recipe.
// Explicit flags override the recipe. Run with --help for every flag.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <signal.h>
#include <unistd.h>

#include <eigennet/eigennet.hpp>
#include <eigennet/io/model_io.hpp>
#include <eigennet/models/classifier_io.hpp>
#include <eigennet/models/imagenet_weights.hpp>

#include "common/cli.hpp"
#include "common/evaluation.hpp"

namespace fs = std::filesystem;
using namespace eigennet;

namespace {

struct Config {
  std::string data, out = "runs/emotions", classes, exclude, recipe = "study";
  std::string weights = "auto", mode = "frozen", finetune_from, optimizer = "adam", schedule = "constant";
  std::string pooling = "max", class_weights = "none", sampler = "shuffle", color = "gray";
  double alpha = 1.0, lr = 1e-3, momentum = 0.9, weight_decay = 0.0, label_smoothing = 0.0, dropout = 0.4;
  double val_fraction = 0.1, clip_norm = 0.0, warmup_epochs = 0.0, min_lr = 0.0;
  double augment_flip = 0.0, augment_shift = 0.0, augment_rotate = 0.0, augment_scale = 0.0;
  double augment_brightness = 0.0, augment_contrast = 0.0;
  int64_t size = 96, epochs = 30, batch_size = 32, hidden = 128, seed = 42, threads = 0, patience = 0;
  int64_t max_per_class = 0, eval_batch_size = 64, split_seed = -1;
  bool resume = false, tta_flip = false, quiet = false;
};

// The recipes set defaults; flags given on the command line win.
void apply_recipe(Config& c, const std::string& recipe) {
  if (recipe == "study") {
    // Frozen ImageNet base, cached features, the study's head, Adam with Keras' defaults.
    c.mode = "frozen";
    c.alpha = 1.0;
    c.size = 96;
    c.pooling = "max";
    c.hidden = 128;
    c.dropout = 0.4;
    c.optimizer = "adam";
    c.lr = 1e-3;
    c.epochs = 30;
    c.batch_size = 32;
    c.patience = 0;
  } else if (recipe == "best") {
    // Fine-tune the whole network with augmentation, label smoothing, AdamW and a cosine
    // schedule, BatchNorm re-estimated from the folded ImageNet weights; test-time flip.
    c.mode = "finetune";
    c.alpha = 1.0;
    c.size = 96;
    c.pooling = "avg";
    c.hidden = 0;
    c.dropout = 0.2;
    c.optimizer = "adamw";
    c.lr = 5e-4;
    c.weight_decay = 0.05;
    c.schedule = "cosine";
    c.warmup_epochs = 1;
    c.epochs = 20;
    c.batch_size = 32;
    c.label_smoothing = 0.1;
    c.augment_flip = 0.5;
    c.augment_shift = 0.1;
    c.augment_rotate = 10;
    c.augment_scale = 0.1;
    c.augment_brightness = 0.15;
    c.augment_contrast = 0.2;
    c.tta_flip = true;
    c.patience = 0;
  }
}

cli::Parser make_parser(Config& c) {
  cli::Parser p("train_emotions",
                "Trains a MobileNetV2 emotion classifier on an image folder (<root>/<class>/* or <root>/{train,test}/<class>/*)\n"
                "and reports accuracy, per-class precision/recall/F1 and the confusion matrix on the test split.");
  p.choice("recipe", c.recipe, {"study", "best", "none"}, "preset flag values (applied before the other flags)");
  p.option("data", c.data, "dataset root (default: data/fer2013, then ../shared/data/fer2013)", "DIR");
  p.option("out", c.out, "output directory: checkpoint, model, log.csv, report, metrics.json, PNGs", "DIR");
  p.option("classes", c.classes, "comma-separated subset of class folders to use", "LIST");
  p.option("exclude", c.exclude, "comma-separated class folders to leave out (e.g. neutral)", "LIST");
  p.choice("color", c.color, {"gray", "rgb"}, "how images are stored in memory (gray is replicated to RGB)");
  p.option("max-per-class", c.max_per_class, "use at most N images per class folder (0 = all)", 0, 1 << 30);
  p.option("val-fraction", c.val_fraction, "validation fraction carved from train/ (train/test layout)", 0.01, 0.5);
  p.option("alpha", c.alpha, "MobileNetV2 width multiplier (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)", 0.35, 1.4);
  p.option("size", c.size, "model input height and width", 32, 512);
  p.option("weights", c.weights,
           "ImageNet weights (safetensors, Keras names); 'auto' = the file for --alpha in ../shared/weights; 'none'",
           "FILE");
  p.choice("mode", c.mode, {"frozen", "finetune"}, "frozen: cached base features + head; finetune: train the network");
  p.option("finetune-from", c.finetune_from, "with --mode finetune: freeze every layer below this block (e.g. block_10)",
           "BLOCK");
  p.choice("pooling", c.pooling, {"max", "avg"}, "global pooling after the base");
  p.option("hidden", c.hidden, "units of the head's hidden Dense+ReLU layer (0 = none)", 0, 1 << 16);
  p.option("dropout", c.dropout, "dropout rate before the last Dense", 0.0, 0.95);
  p.option("epochs", c.epochs, "training epochs", 1, 100000);
  p.option("batch-size", c.batch_size, "training batch size", 1, 4096);
  p.choice("optimizer", c.optimizer, {"adam", "adamw", "sgd"}, "optimizer");
  p.option("lr", c.lr, "learning rate", 0.0, 10.0);
  p.option("momentum", c.momentum, "SGD momentum", 0.0, 0.999);
  p.option("weight-decay", c.weight_decay, "decoupled weight decay (adamw, sgd)", 0.0, 1.0);
  p.choice("schedule", c.schedule, {"constant", "cosine"}, "learning-rate schedule");
  p.option("warmup-epochs", c.warmup_epochs, "linear warmup length in epochs", 0.0, 1000.0);
  p.option("min-lr", c.min_lr, "final learning rate of the cosine schedule", 0.0, 10.0);
  p.option("label-smoothing", c.label_smoothing, "label smoothing of the cross-entropy", 0.0, 0.9);
  p.choice("class-weights", c.class_weights, {"none", "balanced"}, "weight the loss by inverse class frequency");
  p.choice("sampler", c.sampler, {"shuffle", "balanced"}, "epoch order: shuffled, or class-balanced sampling");
  p.option("clip-norm", c.clip_norm, "clip gradients to this global norm (0 = off)", 0.0, 1e6);
  p.option("augment-flip", c.augment_flip, "probability of a horizontal flip", 0.0, 1.0);
  p.option("augment-shift", c.augment_shift, "max shift as a fraction of the size", 0.0, 0.5);
  p.option("augment-rotate", c.augment_rotate, "max rotation in degrees", 0.0, 90.0);
  p.option("augment-scale", c.augment_scale, "max zoom in/out fraction", 0.0, 0.5);
  p.option("augment-brightness", c.augment_brightness, "max brightness change (fraction of 255)", 0.0, 1.0);
  p.option("augment-contrast", c.augment_contrast, "max contrast change (fraction)", 0.0, 1.0);
  p.flag("tta-flip", c.tta_flip, "average predictions with the mirrored image at evaluation");
  p.option("patience", c.patience, "early stopping: epochs without validation improvement (0 = off)", 0, 100000);
  p.option("seed", c.seed, "seed for the split, initialization, order, augmentation and dropout", 0, INT64_MAX);
  p.option("split-seed", c.split_seed,
           "seed for the split only (-1 = --seed); ensemble members share a split and differ in --seed", -1, INT64_MAX);
  p.option("threads", c.threads, "OpenMP threads (0 = all cores)", 0, 1024);
  p.option("eval-batch-size", c.eval_batch_size, "batch size for feature extraction and evaluation", 1, 4096);
  p.flag("resume", c.resume, "continue from OUT/checkpoint.safetensors");
  p.flag("quiet", c.quiet, "no progress line");
  return p;
}

std::string format_double(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// A double as text that reads back as the same value: 6 significant digits when they suffice
// (so fingerprints of existing checkpoints stay as they were), all 17 otherwise. A checkpoint's
// best validation accuracy (e.g. 1/3) must survive the round trip, or a resumed run counts an
// equal accuracy as an improvement and picks a different best epoch.
std::string exact_double(double v) {
  const std::string shortest = format_double(v);
  if (std::strtod(shortest.c_str(), nullptr) == v || v != v) return shortest;
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", v);
  return text;
}

// Everything that must match for --resume to continue a run rather than start a different one.
std::string fingerprint(const Config& c, const std::string& data) {
  const auto x = exact_double;
  std::ostringstream s;
  s << "data=" << data << ";classes=" << c.classes << ";exclude=" << c.exclude << ";max=" << c.max_per_class
    << ";val=" << x(c.val_fraction) << ";alpha=" << x(c.alpha) << ";size=" << c.size << ";weights=" << c.weights
    << ";mode=" << c.mode << ";from=" << c.finetune_from << ";pool=" << c.pooling << ";hidden=" << c.hidden
    << ";dropout=" << x(c.dropout) << ";epochs=" << c.epochs << ";bs=" << c.batch_size << ";opt=" << c.optimizer
    << ";lr=" << x(c.lr) << ";mom=" << x(c.momentum) << ";wd=" << x(c.weight_decay) << ";sched=" << c.schedule
    << ";warm=" << x(c.warmup_epochs) << ";minlr=" << x(c.min_lr) << ";ls=" << x(c.label_smoothing)
    << ";cw=" << c.class_weights << ";sampler=" << c.sampler << ";clip=" << x(c.clip_norm)
    << ";aug=" << x(c.augment_flip) << "," << x(c.augment_shift) << "," << x(c.augment_rotate) << ","
    << x(c.augment_scale) << "," << x(c.augment_brightness) << "," << x(c.augment_contrast) << ";seed=" << c.seed
    << ";color=" << c.color;
  if (c.split_seed >= 0) s << ";split_seed=" << c.split_seed;
  return s.str();
}

// "lr: 0.001 in the checkpoint, 0.002 now; ..." for the fields of two fingerprints that differ.
std::string fingerprint_differences(const std::string& saved, const std::string& current) {
  const auto fields = [](const std::string& fp) {
    std::map<std::string, std::string> m;
    std::istringstream in(fp);
    for (std::string field; std::getline(in, field, ';');) {
      const size_t eq = field.find('=');
      m[field.substr(0, eq)] = eq == std::string::npos ? "" : field.substr(eq + 1);
    }
    return m;
  };
  // The fingerprint's short keys, as flags.
  const std::map<std::string, std::string> flag_of = {
      {"val", "val-fraction"},  {"max", "max-per-class"}, {"from", "finetune-from"}, {"pool", "pooling"},
      {"bs", "batch-size"},     {"opt", "optimizer"},     {"mom", "momentum"},       {"wd", "weight-decay"},
      {"sched", "schedule"},    {"warm", "warmup-epochs"}, {"minlr", "min-lr"},      {"ls", "label-smoothing"},
      {"cw", "class-weights"},  {"clip", "clip-norm"},
      {"aug", "augment-flip,-shift,-rotate,-scale,-brightness,-contrast"}};
  const auto flag = [&](const std::string& key) {
    auto it = flag_of.find(key);
    return "--" + (it == flag_of.end() ? key : it->second);
  };
  const auto quoted = [](const std::string& v) { return v.empty() ? std::string("''") : v; };
  const auto a = fields(saved), b = fields(current);
  std::string out;
  const auto add = [&](const std::string& key, const std::string& then, const std::string& now) {
    out += (out.empty() ? "" : "; ") + flag(key) + ": " + then + " in the checkpoint, " + now + " now";
  };
  for (const auto& [key, value] : b) {
    auto it = a.find(key);
    if (it == a.end()) add(key, "absent", quoted(value));
    else if (it->second != value) add(key, quoted(it->second), quoted(value));
  }
  for (const auto& [key, value] : a)
    if (!b.count(key)) add(key, quoted(value), "absent");
  return out.empty() ? "unknown difference" : out;
}

std::string resolve_weights(const Config& c) {
  if (c.weights == "none") return {};
  if (c.weights != "auto") return c.weights;
  const std::string name = std::fabs(c.alpha - 1.0) < 1e-6    ? "mobilenetv2_1.0_224_imagenet_notop_bnfolded.safetensors"
                           : std::fabs(c.alpha - 0.35) < 1e-6 ? "mobilenetv2_0.35_224_imagenet_notop.safetensors"
                                                              : "";
  if (name.empty())
    throw cli::UsageError("--weights auto: no ImageNet file for alpha " + format_double(c.alpha) +
                          " in ../shared/weights (available: 1.0, 0.35); pass --weights FILE or --weights none");
  for (std::string dir : {std::string("../shared/weights"),
#ifdef EIGENNET_SOURCE_DIR
                          std::string(EIGENNET_SOURCE_DIR) + "/../shared/weights"
#endif
       }) {
    if (fs::exists(dir + "/" + name)) return dir + "/" + name;
  }
  throw cli::UsageError("--weights auto: '" + name + "' not found in ../shared/weights; pass --weights FILE");
}

// Atomic writes go through "<name>.tmp.<pid>.<n>" (io/atomic_file.hpp, io/safetensors.hpp); a
// run killed while writing leaves that file behind. Removes the ones in `dir` whose process is
// gone (a checkpoint's is as large as the checkpoint).
void remove_stale_temporaries(const std::string& dir) {
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const size_t at = name.rfind(".tmp.");
    if (at == std::string::npos) continue;
    const char* digits = name.c_str() + at + 5;
    char* end = nullptr;
    const long pid = std::strtol(digits, &end, 10);
    if (end == digits || *end != '.' || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // still running (or not ours)
    std::error_code remove_ec;
    if (fs::remove(entry.path(), remove_ec))
      std::fprintf(stderr, "removed %s, left behind by an interrupted run\n", entry.path().c_str());
  }
}

// One epoch's numbers, as logged in log.csv and plotted.
struct EpochRecord {
  double train_loss = NAN, train_accuracy = NAN, val_loss = NAN, val_accuracy = NAN, learning_rate = NAN,
         seconds = NAN;
};

// The state saved at the end of each epoch; with the model and optimizer tensors it is enough to
// continue a run exactly where it stopped.
struct TrainingState {
  int64_t epochs_done = 0, step = 0, best_epoch = -1, epochs_without_improvement = 0;
  double best_val_accuracy = -1.0;
  std::vector<EpochRecord> history;
};

constexpr int kHistoryColumns = 6;

Tensor history_tensor(const TrainingState& s) {
  Tensor t(Shape{static_cast<int64_t>(s.history.size()), kHistoryColumns});
  for (size_t i = 0; i < s.history.size(); ++i) {
    const EpochRecord& r = s.history[i];
    const double v[kHistoryColumns] = {r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy, r.learning_rate,
                                       r.seconds};
    for (int j = 0; j < kHistoryColumns; ++j) t[static_cast<int64_t>(i) * kHistoryColumns + j] = static_cast<float>(v[j]);
  }
  return t;
}

void write_log_csv(const std::string& path, const TrainingState& s) {
  std::string text = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,learning_rate,seconds\n";
  char line[256];
  for (size_t i = 0; i < s.history.size(); ++i) {
    const EpochRecord& r = s.history[i];
    std::snprintf(line, sizeof line, "%zu,%.6f,%.6f,%.6f,%.6f,%.8g,%.2f\n", i + 1, r.train_loss, r.train_accuracy,
                  r.val_loss, r.val_accuracy, r.learning_rate, r.seconds);
    text += line;
  }
  write_file_atomically(path, text);
}

void save_curves(const std::string& path, const TrainingState& s, const std::string& title) {
  TrainingCurves curves;
  for (const EpochRecord& r : s.history) {
    curves.train_loss.push_back(r.train_loss);
    curves.val_loss.push_back(r.val_loss);
    curves.train_accuracy.push_back(r.train_accuracy);
    curves.val_accuracy.push_back(r.val_accuracy);
  }
  save_training_curves_png(path, curves, title);
}

// The trainable part (head, or whole classifier) plus the optimizer over its parameters.
struct Trainee {
  Classifier* model = nullptr;
  std::unique_ptr<Optimizer> optimizer;
};

std::unique_ptr<Optimizer> make_optimizer(const Config& c, ParameterList params) {
  if (c.optimizer == "sgd")
    return std::make_unique<SGD>(std::move(params), SGD::Options{static_cast<float>(c.lr), static_cast<float>(c.momentum),
                                                                 false, static_cast<float>(c.weight_decay)});
  Adam::Options o;
  o.learning_rate = static_cast<float>(c.lr);
  o.weight_decay = c.optimizer == "adamw" ? static_cast<float>(c.weight_decay) : 0.0f;
  return std::make_unique<Adam>(std::move(params), o);
}

void save_checkpoint(const std::string& path, Classifier& model, const ClassifierSpec& spec, Optimizer& optimizer,
                     const TrainingState& state, const std::string& fp) {
  std::vector<TensorRef> extra;
  for (auto& [name, tensor] : optimizer.state()) extra.push_back({name, tensor});
  const Tensor history = history_tensor(state);
  extra.push_back({"training/history", &history});
  std::map<std::string, std::string> meta = {
      {"checkpoint_fingerprint", fp},
      {"epochs_done", std::to_string(state.epochs_done)},
      {"step", std::to_string(state.step)},
      {"optimizer_steps", std::to_string(optimizer.steps())},
      {"best_epoch", std::to_string(state.best_epoch)},
      {"best_val_accuracy", exact_double(state.best_val_accuracy)},
      {"epochs_without_improvement", std::to_string(state.epochs_without_improvement)},
  };
  save_classifier(path, model, spec, meta, extra);
}

// Restores model, optimizer and state from a checkpoint written by save_checkpoint.
TrainingState load_checkpoint(const std::string& path, Classifier& model, Optimizer& optimizer, const std::string& fp) {
  const SafetensorsFile file = read_safetensors(path);
  EIGENNET_CHECK(file.metadata.count("checkpoint_fingerprint"), "cannot resume from '", path,
                 "': it is not a training checkpoint (no 'checkpoint_fingerprint' metadata)");
  const std::string& saved_fp = file.metadata_at("checkpoint_fingerprint");
  if (saved_fp != fp)
    fail("cannot resume from '", path, "': it was written by a run with different settings (",
         fingerprint_differences(saved_fp, fp), "). Repeat that run's flags, or use another --out.");
  SafetensorsFile params;
  params.path = path;
  for (const NamedTensor& t : file.tensors)
    if (t.name.rfind("optimizer/", 0) != 0 && t.name.rfind("training/", 0) != 0) params.tensors.push_back(t);
  load_parameters(model.parameters(), params);
  for (auto& [name, tensor] : optimizer.state()) {
    const Tensor& saved = file.at(name);
    EIGENNET_CHECK(saved.shape() == tensor->shape(), "'", path, "': optimizer tensor '", name, "' has shape ",
                   saved.shape(), ", expected ", tensor->shape());
    tensor->copy_from(saved);
  }
  auto integer = [&](const char* key) { return static_cast<int64_t>(std::stoll(file.metadata_at(key))); };
  optimizer.set_steps(integer("optimizer_steps"));
  TrainingState s;
  s.epochs_done = integer("epochs_done");
  s.step = integer("step");
  s.best_epoch = integer("best_epoch");
  s.epochs_without_improvement = integer("epochs_without_improvement");
  s.best_val_accuracy = std::stod(file.metadata_at("best_val_accuracy"));
  const Tensor& h = file.at("training/history");
  EIGENNET_CHECK(h.rank() == 2 && h.dim(1) == kHistoryColumns && h.dim(0) == s.epochs_done, "'", path,
                 "': training/history has shape ", h.shape(), ", expected [", s.epochs_done, ", ", kHistoryColumns, "]");
  for (int64_t i = 0; i < h.dim(0); ++i) {
    const float* r = h.data() + i * kHistoryColumns;
    s.history.push_back({r[0], r[1], r[2], r[3], r[4], r[5]});
  }
  return s;
}

// True when every value is finite; integer ops on the exponent bits, so that it vectorizes.
bool all_finite(const Tensor& t) {
  const float* v = t.data();
  uint32_t non_finite = 0;
  for (int64_t i = 0; i < t.size(); ++i) {
    uint32_t bits;
    std::memcpy(&bits, v + i, sizeof bits);
    non_finite |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return non_finite == 0;
}

const char* kDivergedAdvice = "the last good checkpoint is kept. Try a lower --lr or --clip-norm.";

// Stops training with a clear message when the loss or a gradient is not finite. `watched` are
// the parameters training changes (values and BatchNorm statistics), checked after every step,
// so a non-finite loss with finite parameters means an activation overflowed.
void check_finite(double loss, const ParameterList& params, const ParameterList& watched, int64_t step,
                  int64_t epoch) {
  if (!std::isfinite(loss)) {
    for (const Parameter* p : watched)  // BatchNorm statistics change in the forward pass
      if (!all_finite(p->value))
        fail("training diverged: the loss is ", loss, " at step ", step, " (epoch ", epoch + 1, ") and parameter '",
             p->name, "' is not finite; ", kDivergedAdvice);
    const Parameter* largest = nullptr;
    float largest_abs = -1;
    for (const Parameter* p : watched)
      for (int64_t i = 0; i < p->value.size(); ++i)
        if (std::fabs(p->value[i]) > largest_abs) {
          largest_abs = std::fabs(p->value[i]);
          largest = p;
        }
    fail("training diverged: the loss is ", loss, " at step ", step, " (epoch ", epoch + 1,
         ") although every parameter is finite (largest: '", largest ? largest->name : "-", "', |value| ",
         largest_abs, "); ", kDivergedAdvice);
  }
  for (const Parameter* p : params) {
    if (!p->trainable()) continue;
    if (!all_finite(p->grad))
      fail("training diverged: the gradient of '", p->name, "' is not finite at step ", step, " (epoch ", epoch + 1,
           "); ", kDivergedAdvice);
  }
}

// After an optimizer step: a parameter that became non-finite would poison the checkpoint.
void check_parameters_finite(const ParameterList& watched, int64_t step, int64_t epoch) {
  for (const Parameter* p : watched)
    if (!all_finite(p->value))
      fail("training diverged: parameter '", p->name, "' is not finite after step ", step, " (epoch ", epoch + 1,
           "); ", kDivergedAdvice);
}

// Base features [N, C] of the images `indices` (inference mode, through the base compiled for
// inference), optionally mirrored.
Tensor extract_features(Classifier& model, const ImageSet& set, const std::vector<int64_t>& indices,
                        BatchOptions options, bool mirrored, int64_t batch_size, const char* what, bool quiet) {
  InferenceNet base = compile_for_inference(model.base());
  const int64_t n = static_cast<int64_t>(indices.size()), c = model.feature_size();
  Tensor features(Shape{n, c});
  Tensor images;
  std::vector<int32_t> labels;
  options.augment = false;
  options.flip = mirrored;
  const auto start = std::chrono::steady_clock::now();
  const bool interactive = ::isatty(::fileno(stderr)) != 0;
  for (int64_t begin = 0; begin < n; begin += batch_size) {
    const int64_t count = std::min(batch_size, n - begin);
    assemble_batch(set, indices.data() + begin, count, 0, options, images, labels);
    const Tensor& f = base.forward(images);
    std::copy(f.data(), f.data() + count * c, features.data() + begin * c);
    const bool last = begin + count == n;
    if (!quiet && (interactive || last)) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::fprintf(stderr, "%sfeatures (%s%s): %lld/%lld images, %.0f img/s%s", interactive ? "\r\033[K" : "", what,
                   mirrored ? ", mirrored" : "", static_cast<long long>(begin + count), static_cast<long long>(n),
                   static_cast<double>(begin + count) / std::max(s, 1e-9), last ? "\n" : "");
    }
  }
  return features;
}

// Gathers rows `order[begin .. begin+count)` of a feature matrix into `batch`.
void gather_rows(const Tensor& features, const std::vector<int64_t>& order, int64_t begin, int64_t count, Tensor& batch) {
  const int64_t c = features.dim(1);
  batch.resize(Shape{count, c});
  for (int64_t i = 0; i < count; ++i) {
    const float* src = features.data() + order[static_cast<size_t>(begin + i)] * c;
    std::copy(src, src + c, batch.data() + i * c);
  }
}

// Mean loss and accuracy of logits against labels (inference), for validation.
struct LossAccuracy {
  double loss = 0, accuracy = 0;
};

int run(int argc, char** argv) {
  Config c;
  // The recipe is applied first so that explicit flags override it.
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--recipe") c.recipe = argv[i + 1];
    else if (std::string(argv[i]).rfind("--recipe=", 0) == 0) c.recipe = std::string(argv[i]).substr(9);
  apply_recipe(c, c.recipe);
  cli::Parser parser = make_parser(c);
  if (!parser.parse(argc, argv)) return 0;
  if (c.mode == "frozen" && !c.finetune_from.empty())
    throw cli::UsageError("--finetune-from needs --mode finetune");
  if (c.threads > 0) set_threads(static_cast<int>(c.threads));

  if (c.data.empty()) {
    c.data = examples::find_default_dataset();
    if (c.data.empty()) {
      std::fputs(examples::dataset_help, stderr);
      return 2;
    }
  }
  if (!fs::is_directory(c.data)) throw cli::UsageError("--data: '" + c.data + "' is not a directory");
  const std::string weights = resolve_weights(c);
  if (!weights.empty() && !fs::is_regular_file(weights))
    throw cli::UsageError("--weights: '" + weights + "' is not a file");
  if (fs::exists(c.out) && !fs::is_directory(c.out))
    throw cli::UsageError("--out: '" + c.out + "' exists and is not a directory");
  fs::create_directories(c.out);
  // Fail now rather than at the end of the first epoch.
  if (::access(c.out.c_str(), W_OK) != 0)
    fail("cannot write to the output directory '", c.out, "': ", std::strerror(errno));
  remove_stale_temporaries(c.out);
  const std::string checkpoint_path = c.out + "/checkpoint.safetensors", model_path = c.out + "/model.safetensors";
  const auto run_start = std::chrono::steady_clock::now();

  // ---- Data ---------------------------------------------------------------------------------
  ImageFolderOptions folder;
  folder.color = c.color == "gray" ? ColorMode::grayscale : ColorMode::rgb;
  folder.classes = cli::split_list(c.classes);
  folder.exclude = cli::split_list(c.exclude);
  folder.max_per_class = c.max_per_class;
  folder.validation_fraction = c.val_fraction;
  folder.seed = static_cast<uint64_t>(c.split_seed >= 0 ? c.split_seed : c.seed);
  std::fprintf(stderr, "loading images from %s ...\n", c.data.c_str());
  const auto load_start = std::chrono::steady_clock::now();
  ImageDataset dataset = load_image_dataset(c.data, folder);
  const ImageSet& images = dataset.images;
  std::fprintf(stderr, "loaded %lld images (%dx%d, %s) in %.1f s; %lld files skipped\n",
               static_cast<long long>(images.size()), images.width(), images.height(),
               images.channels() == 1 ? "grayscale" : "RGB",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count(),
               static_cast<long long>(images.skipped_count()));
  std::printf("dataset: %s (%s)\n", c.data.c_str(), to_string(dataset.layout));
  print_split_counts(std::cout, dataset);
  std::cout.flush();
  EIGENNET_CHECK(!dataset.split.train.empty() && !dataset.split.validation.empty() && !dataset.split.test.empty(),
                 "dataset '", c.data, "': the train, validation and test splits must all be non-empty (got ",
                 dataset.split.train.size(), ", ", dataset.split.validation.size(), ", ", dataset.split.test.size(), ")");
  const std::vector<std::string>& class_names = images.class_names();
  const int num_classes = images.num_classes();

  // ---- Model --------------------------------------------------------------------------------
  ClassifierSpec spec;
  spec.base.alpha = static_cast<float>(c.alpha);
  spec.base.height = spec.base.width = c.size;
  spec.base.pooling = c.pooling == "max" ? GlobalPooling::max : GlobalPooling::avg;
  spec.head.hidden_units = c.hidden;
  spec.head.dropout = static_cast<float>(c.dropout);
  spec.head.classes = num_classes;
  spec.class_names = class_names;
  std::unique_ptr<Classifier> model = make_classifier(spec, static_cast<uint64_t>(c.seed));
  bool folded = false;
  if (!weights.empty()) {
    folded = load_imagenet_weights(model->base(), weights).folded_batch_norm;
    std::fprintf(stderr, "ImageNet weights: %s%s\n", weights.c_str(), folded ? " (BatchNorm folded)" : "");
  }

  BatchOptions batch_options;
  batch_options.height = batch_options.width = static_cast<int>(c.size);
  batch_options.seed = static_cast<uint64_t>(c.seed);
  AugmentConfig augment = AugmentConfig::none();
  augment.flip_probability = static_cast<float>(c.augment_flip);
  augment.max_shift = static_cast<float>(c.augment_shift);
  augment.max_rotation_degrees = static_cast<float>(c.augment_rotate);
  augment.max_scale = static_cast<float>(c.augment_scale);
  augment.max_brightness = static_cast<float>(c.augment_brightness);
  augment.max_contrast = static_cast<float>(c.augment_contrast);
  batch_options.augmentation = augment;

  const bool frozen = c.mode == "frozen";
  if (frozen) {
    model->freeze_base();
  } else {
    if (folded) {
      // Turn the folded biases into real BatchNorm statistics so batch-statistics training
      // starts from the same function (see docs: DESIGN "Transfer learning").
      std::vector<int64_t> calibration(dataset.split.train.begin(),
                                       dataset.split.train.begin() +
                                           std::min<size_t>(dataset.split.train.size(), 256));
      Tensor batch;
      std::vector<int32_t> labels;
      assemble_batch(images, calibration.data(), static_cast<int64_t>(calibration.size()), 0, batch_options, batch,
                     labels);
      recalibrate_batch_norm(model->base(), batch);
      std::fprintf(stderr, "BatchNorm re-estimated on %zu training images\n", calibration.size());
    }
    if (!c.finetune_from.empty()) model->freeze_below(c.finetune_from);
  }
  ParameterList trainable = frozen ? model->head().parameters() : model->parameters();
  std::unique_ptr<Optimizer> optimizer = make_optimizer(c, trainable);
  ParameterList all_params = model->parameters();
  // What training changes: checked for non-finite values after every step.
  const ParameterList watched = frozen ? model->head().parameters() : all_params;

  // Loss: optional class weights from the training split.
  SoftmaxCrossEntropy::Options loss_options;
  loss_options.label_smoothing = static_cast<float>(c.label_smoothing);
  if (c.class_weights == "balanced") loss_options.class_weights = balanced_class_weights(images.labels(), dataset.split.train, num_classes);
  SoftmaxCrossEntropy loss(loss_options);
  SoftmaxCrossEntropy plain_loss;  // validation loss: unweighted, unsmoothed

  const std::string fp = fingerprint(c, fs::weakly_canonical(c.data).string());
  TrainingState state;
  if (c.resume && fs::exists(checkpoint_path)) {
    state = load_checkpoint(checkpoint_path, *model, *optimizer, fp);
    // The checkpoint is the record: a crash between it and log.csv left the log one epoch short.
    write_log_csv(c.out + "/log.csv", state);
    std::fprintf(stderr, "resumed from %s after epoch %lld (best validation accuracy %.4f)\n", checkpoint_path.c_str(),
                 static_cast<long long>(state.epochs_done), state.best_val_accuracy);
  } else if (c.resume) {
    std::fprintf(stderr, "--resume: no checkpoint at %s, starting from scratch\n", checkpoint_path.c_str());
  }

  // ---- Frozen base: features once -------------------------------------------------------------
  Tensor train_features, train_features_mirrored, val_features;
  if (frozen) {
    const auto t0 = std::chrono::steady_clock::now();
    train_features = extract_features(*model, images, dataset.split.train, batch_options, false, c.eval_batch_size,
                                      "train", c.quiet);
    if (c.augment_flip > 0)
      train_features_mirrored = extract_features(*model, images, dataset.split.train, batch_options, true,
                                                 c.eval_batch_size, "train", c.quiet);
    val_features = extract_features(*model, images, dataset.split.validation, batch_options, false, c.eval_batch_size,
                                    "validation", c.quiet);
    std::fprintf(stderr, "cached base features in %.1f s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }

  // ---- Training -------------------------------------------------------------------------------
  const int64_t n_train = static_cast<int64_t>(dataset.split.train.size());
  std::vector<int32_t> train_labels_all = images.labels();
  const int64_t batches_per_epoch = (n_train + c.batch_size - 1) / c.batch_size;
  LearningRateSchedule schedule;
  schedule.kind = parse_schedule_kind(c.schedule);
  schedule.base = static_cast<float>(c.lr);
  schedule.min_lr = static_cast<float>(c.min_lr);
  schedule.warmup_steps = static_cast<int64_t>(c.warmup_epochs * static_cast<double>(batches_per_epoch));
  schedule.total_steps = c.epochs * batches_per_epoch;
  ProgressLine progress;
  Tensor batch_images, batch_features;
  std::vector<int32_t> batch_labels;

  auto evaluate_validation = [&]() -> LossAccuracy {
    LossAccuracy r;
    const std::vector<int64_t>& val = dataset.split.validation;
    const int64_t n = static_cast<int64_t>(val.size());
    int64_t correct = 0;
    for (int64_t begin = 0; begin < n; begin += c.eval_batch_size) {
      const int64_t count = std::min(c.eval_batch_size, n - begin);
      const Tensor* logits;
      if (frozen) {
        std::vector<int64_t> rows(static_cast<size_t>(count));
        for (int64_t i = 0; i < count; ++i) rows[static_cast<size_t>(i)] = begin + i;
        gather_rows(val_features, rows, 0, count, batch_features);
        model->head().forward(batch_features, Mode::inference);
        logits = &model->head().output();
        batch_labels.resize(static_cast<size_t>(count));
        for (int64_t i = 0; i < count; ++i) batch_labels[static_cast<size_t>(i)] = images.label(val[static_cast<size_t>(begin + i)]);
      } else {
        BatchOptions o = batch_options;
        o.augment = false;
        assemble_batch(images, val.data() + begin, count, 0, o, batch_images, batch_labels);
        logits = &model->forward(batch_images, Mode::inference);
      }
      r.loss += plain_loss.forward(*logits, batch_labels) * static_cast<double>(count);
      const std::vector<int32_t> predicted = argmax_predictions(*logits);
      for (int64_t i = 0; i < count; ++i) correct += predicted[static_cast<size_t>(i)] == batch_labels[static_cast<size_t>(i)];
    }
    r.loss /= static_cast<double>(n);
    r.accuracy = static_cast<double>(correct) / static_cast<double>(n);
    return r;
  };

  std::printf("training: mode %s, %lld epochs of %lld batches of %lld, optimizer %s, lr %g (%s)\n", c.mode.c_str(),
              static_cast<long long>(c.epochs), static_cast<long long>(batches_per_epoch),
              static_cast<long long>(c.batch_size), c.optimizer.c_str(), c.lr, c.schedule.c_str());
  std::fflush(stdout);
  bool stopped_early = false;
  for (int64_t epoch = state.epochs_done; epoch < c.epochs; ++epoch) {
    if (c.patience > 0 && state.epochs_without_improvement >= c.patience) {
      stopped_early = true;
      break;
    }
    const auto epoch_start = std::chrono::steady_clock::now();
    // Every random choice of this epoch derives from (seed, epoch): a resumed run repeats it.
    model->head().reseed(derive_seed(static_cast<uint64_t>(c.seed), 0xE90C, static_cast<uint64_t>(epoch)));
    model->base().reseed(derive_seed(static_cast<uint64_t>(c.seed), 0xBA5E, static_cast<uint64_t>(epoch)));
    std::vector<int64_t> order;
    if (frozen) {
      std::vector<int64_t> positions(static_cast<size_t>(n_train));
      for (int64_t i = 0; i < n_train; ++i) positions[static_cast<size_t>(i)] = i;
      std::vector<int32_t> position_labels(static_cast<size_t>(n_train));
      for (int64_t i = 0; i < n_train; ++i) position_labels[static_cast<size_t>(i)] = images.label(dataset.split.train[static_cast<size_t>(i)]);
      order = c.sampler == "balanced" ? balanced_order(position_labels, positions, num_classes, static_cast<uint64_t>(c.seed), epoch)
                                      : shuffled_order(positions, static_cast<uint64_t>(c.seed), epoch);
    } else {
      order = c.sampler == "balanced"
                  ? balanced_order(train_labels_all, dataset.split.train, num_classes, static_cast<uint64_t>(c.seed), epoch)
                  : shuffled_order(dataset.split.train, static_cast<uint64_t>(c.seed), epoch);
    }
    Rng flip_rng(derive_seed(static_cast<uint64_t>(c.seed), 0xF11B, static_cast<uint64_t>(epoch)));
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    if (!c.quiet) progress.start_epoch(epoch, c.epochs, batches_per_epoch);
    BatchOptions train_options = batch_options;
    train_options.augment = true;
    for (int64_t b = 0; b < batches_per_epoch; ++b) {
      const int64_t begin = b * c.batch_size, count = std::min(c.batch_size, n_train - begin);
      optimizer->set_learning_rate(schedule.at(state.step));
      optimizer->zero_grad();
      const Tensor* logits;
      if (frozen) {
        // Cached features; a flip picks the mirrored image's features.
        batch_features.resize(Shape{count, train_features.dim(1)});
        const int64_t fc = train_features.dim(1);
        batch_labels.resize(static_cast<size_t>(count));
        for (int64_t i = 0; i < count; ++i) {
          const int64_t pos = order[static_cast<size_t>(begin + i)];
          const bool mirror = train_features_mirrored.size() > 0 && flip_rng.uniform() < c.augment_flip;
          const Tensor& src = mirror ? train_features_mirrored : train_features;
          std::copy(src.data() + pos * fc, src.data() + (pos + 1) * fc, batch_features.data() + i * fc);
          batch_labels[static_cast<size_t>(i)] = images.label(dataset.split.train[static_cast<size_t>(pos)]);
        }
        model->head().forward(batch_features, Mode::train);
        logits = &model->head().output();
        const double l = loss.forward(*logits, batch_labels);
        model->head().backward(loss.gradient());
        loss_sum += l * static_cast<double>(count);
      } else {
        assemble_batch(images, order, begin, count, epoch, train_options, batch_images, batch_labels);
        logits = &model->forward(batch_images, Mode::train);
        const double l = loss.forward(*logits, batch_labels);
        model->backward(loss.gradient());
        loss_sum += l * static_cast<double>(count);
      }
      check_finite(loss_sum, trainable, watched, state.step, epoch);
      if (c.clip_norm > 0) clip_grad_norm(trainable, c.clip_norm);
      optimizer->step();
      check_parameters_finite(watched, state.step, epoch);
      ++state.step;
      const std::vector<int32_t> predicted = argmax_predictions(*logits);
      for (int64_t i = 0; i < count; ++i) correct += predicted[static_cast<size_t>(i)] == batch_labels[static_cast<size_t>(i)];
      seen += count;
      if (!c.quiet) progress.update(b, count, loss_sum / static_cast<double>(seen), static_cast<double>(correct) / static_cast<double>(seen));
    }
    const LossAccuracy val = evaluate_validation();
    EpochRecord record;
    record.train_loss = loss_sum / static_cast<double>(seen);
    record.train_accuracy = static_cast<double>(correct) / static_cast<double>(seen);
    record.val_loss = val.loss;
    record.val_accuracy = val.accuracy;
    record.learning_rate = optimizer->learning_rate();
    record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    state.history.push_back(record);
    state.epochs_done = epoch + 1;
    const bool improved = val.accuracy > state.best_val_accuracy;
    if (improved) {
      state.best_val_accuracy = val.accuracy;
      state.best_epoch = epoch;
      state.epochs_without_improvement = 0;
      save_classifier(model_path, *model, spec,
                      {{"best_epoch", std::to_string(epoch + 1)}, {"val_accuracy", format_double(val.accuracy)},
                       {"recipe", c.recipe}, {"trained_with", "examples/train_emotions"}});
    } else {
      ++state.epochs_without_improvement;
    }
    // The model file first, then the checkpoint that refers to it: a crash in between resumes
    // this epoch's end state from the previous checkpoint and redoes the epoch.
    save_checkpoint(checkpoint_path, *model, spec, *optimizer, state, fp);
    write_log_csv(c.out + "/log.csv", state);
    std::printf("epoch %lld/%lld  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  lr %.3g  %.1fs%s\n",
                static_cast<long long>(epoch + 1), static_cast<long long>(c.epochs), record.train_loss,
                record.train_accuracy, record.val_loss, record.val_accuracy, record.learning_rate, record.seconds,
                improved ? "  (best)" : "");
    std::fflush(stdout);
  }
  if (stopped_early)
    std::printf("early stopping: no validation improvement for %lld epochs\n", static_cast<long long>(c.patience));
  double training_seconds = 0;
  for (const EpochRecord& r : state.history) training_seconds += r.seconds;

  // ---- Test report with the best model ----------------------------------------------------------
  LoadedClassifier best = load_classifier(model_path);
  BatchOptions eval_options = batch_options;
  eval_options.augment = false;
  const Tensor probabilities = examples::predict_probabilities(*best.model, images, dataset.split.test, eval_options,
                                                               c.tta_flip, c.eval_batch_size);
  std::vector<int32_t> test_labels;
  for (int64_t i : dataset.split.test) test_labels.push_back(images.label(i));
  const ClassificationMetrics metrics = evaluate_classifier(probabilities, test_labels, class_names, {2});
  const double total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  char title[256];
  std::snprintf(title, sizeof title, "MobileNetV2 %.2f %lldx%lld, %s, %d classes: test accuracy %.4f", c.alpha,
                static_cast<long long>(c.size), static_cast<long long>(c.size), c.mode.c_str(), num_classes,
                metrics.accuracy);
  examples::write_evaluation(c.out, metrics, title, [&](Json& j) {
    j["split"] = "test";
    j["recipe"] = c.recipe;
    j["mode"] = c.mode;
    j["alpha"] = c.alpha;
    j["input_size"] = c.size;
    j["epochs_trained"] = state.epochs_done;
    j["best_epoch"] = state.best_epoch + 1;
    j["best_val_accuracy"] = state.best_val_accuracy;
    j["tta_flip"] = c.tta_flip;
    j["training_seconds"] = training_seconds;
    j["total_seconds"] = total_seconds;
    j["threads"] = max_threads();
    j["data"] = c.data;
    j["train_images"] = static_cast<int64_t>(dataset.split.train.size());
    j["validation_images"] = static_cast<int64_t>(dataset.split.validation.size());
    j["test_images"] = static_cast<int64_t>(dataset.split.test.size());
    j["skipped_files"] = images.skipped_count();
    j["model"] = model_path;
  });
  save_curves(c.out + "/training_curves.png", state, std::string("Training curves: ") + c.mode + ", " +
                                                           std::to_string(num_classes) + " classes");
  std::printf("training time %.1f min (total %.1f min); outputs in %s\n", training_seconds / 60, total_seconds / 60,
              c.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return cli::run("train_emotions", [&] { return run(argc, argv); }); }
