// train_emotions: the facial-emotion experiment end to end.
//
//   image folders -> stratified split -> MobileNetV2 (ImageNet weights) + classifier head
//   -> training (frozen base on cached features, or fine-tuning) -> best checkpoint by
//   validation accuracy -> test report, confusion matrix, training curves, metrics.json.
//
// The loop, checkpoints, resume, logs and reports are the library's (train/fit.hpp and its
// callbacks); this program is flags, recipes and file names. Built with MPI, it trains
// data-parallel when started by mpirun (`mpirun -np 4 train_emotions ...`: each process reads and
// trains on its part of every batch, rank 0 writes the files); started alone it is one process.
// `--recipe study` is the study's protocol (frozen base, GlobalMaxPooling -> Dense 128 ReLU ->
// Dropout 0.4 -> Dense N, Adam); `--recipe best` is this project's best fine-tuning recipe.
// Explicit flags override the recipe. Run with --help for every flag.
// `--teacher A.safetensors[,B...]` distills trained classifiers (an ensemble, each member at its
// own input size) into the network trained here (loss/distillation.hpp); `--ema-decay` validates
// and saves an exponential moving average of its weights (train/ema.hpp); `--mixup`/`--cutmix`
// blend the training images of each batch and their targets (data/mixing.hpp).
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <eigennet/eigennet.hpp>

#include "common/cli.hpp"
#include "common/paths.hpp"
#include "common/processes.hpp"

namespace fs = std::filesystem;
using namespace eigennet;
using distributed::Communicator;
using distributed::run_together;

namespace {

struct Config {
  std::string data, out = "runs/emotions", classes, exclude, recipe = "study";
  std::string weights = "auto", mode = "frozen", finetune_from, optimizer = "adam", schedule = "constant";
  std::string pooling = "max", class_weights = "none", sampler = "shuffle", color = "gray", keep = "best";
  std::string teacher, init_from;
  double distill_temperature = 2.0, distill_weight = 0.5, ema_decay = 0.0;
  double mixup = 0.0, cutmix = 0.0, mix_probability = 1.0;
  double alpha = 1.0, lr = 1e-3, momentum = 0.9, weight_decay = 0.0, label_smoothing = 0.0, dropout = 0.4;
  double val_fraction = 0.1, clip_norm = 0.0, warmup_epochs = 0.0, min_lr = 0.0;
  double augment_flip = 0.0, augment_shift = 0.0, augment_rotate = 0.0, augment_scale = 0.0;
  double augment_brightness = 0.0, augment_contrast = 0.0;
  int64_t size = 96, epochs = 30, batch_size = 32, hidden = 128, seed = 42, threads = 0, patience = 0;
  int64_t max_per_class = 0, eval_batch_size = 64, split_seed = -1;
  bool resume = false, tta_flip = false, quiet = false, sync_bn = false;
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
  p.option("init-from", c.init_from,
           "start from this trained classifier's weights instead of the ImageNet ones (same alpha, pooling and hidden "
           "layer; any input size; it must predict this run's classes, and may predict more), e.g. to distill an "
           "ensemble into one of its members",
           "FILE");
  p.option("teacher", c.teacher,
           "distill these trained classifiers (comma-separated: an ensemble, each at its own input size) into this "
           "network: they run in inference mode on the same augmented batches",
           "FILES");
  p.option("distill-temperature", c.distill_temperature, "with --teacher: temperature of the soft targets", 0.05, 100.0);
  p.option("distill-weight", c.distill_weight,
           "with --teacher: weight of the soft-target term (the hard-label cross-entropy gets 1 - this)", 0.0, 1.0);
  p.option("mixup", c.mixup,
           "mixup: blend each training image with another of its batch, lam ~ Beta(X, X), and the targets alike "
           "(0 = off; with --teacher the teachers see the blended images)",
           0.0, 100.0);
  p.option("cutmix", c.cutmix,
           "cutmix: paste a box of another image of the batch, of area 1 - lam, lam ~ Beta(X, X), the targets mixed by "
           "area (0 = off; with --mixup each mixed batch picks one at even odds)",
           0.0, 100.0);
  p.option("mix-probability", c.mix_probability, "with --mixup/--cutmix: the fraction of batches that are mixed", 0.0,
           1.0);
  p.option("ema-decay", c.ema_decay,
           "exponential moving average of the weights with this decay per step (e.g. 0.999; 0 = off): it is what "
           "validation measures and the saved model holds",
           0.0, 0.999999);
  p.choice("keep", c.keep, {"best", "last"},
           "which epoch's model is saved and tested: the best by validation accuracy, or the last (a schedule fixed "
           "in advance, e.g. a final run on nearly all of train/ with a small --val-fraction)");
  p.flag("tta-flip", c.tta_flip, "average predictions with the mirrored image at evaluation");
  p.option("patience", c.patience, "early stopping: epochs without validation improvement (0 = off)", 0, 100000);
  p.option("seed", c.seed, "seed for the split, initialization, order, augmentation and dropout", 0, INT64_MAX);
  p.option("split-seed", c.split_seed,
           "seed for the split only (-1 = --seed); ensemble members share a split and differ in --seed", -1, INT64_MAX);
  p.option("threads", c.threads, "OpenMP threads (0 = all cores, shared by the processes on a machine)", 0, 1024);
  p.flag("sync-bn", c.sync_bn, "under mpirun: BatchNorm statistics of the whole batch, not of each process's part");
  p.option("eval-batch-size", c.eval_batch_size, "batch size for feature extraction and evaluation", 1, 4096);
  p.flag("resume", c.resume, "continue from OUT/checkpoint.safetensors");
  p.flag("quiet", c.quiet, "no progress line");
  return p;
}

std::string resolve_weights(const Config& c) {
  if (c.weights == "none") return {};
  if (c.weights != "auto") return c.weights;
  std::ostringstream alpha;
  alpha << c.alpha;
  const std::string name = std::fabs(c.alpha - 1.0) < 1e-6    ? "mobilenetv2_1.0_224_imagenet_notop_bnfolded.safetensors"
                           : std::fabs(c.alpha - 0.35) < 1e-6 ? "mobilenetv2_0.35_224_imagenet_notop.safetensors"
                                                              : "";
  if (name.empty())
    throw cli::UsageError("--weights auto: no ImageNet file for alpha " + alpha.str() +
                          " in ../shared/weights (available: 1.0, 0.35); pass --weights FILE or --weights none");
  const std::vector<std::string> folders = examples::shared_weights_folders();
  for (const std::string& dir : folders)
    if (fs::exists(dir + "/" + name)) return dir + "/" + name;
  throw cli::UsageError("--weights auto: '" + name + "' not found (looked in " + examples::join(folders, ", ") +
                        "); pass --weights FILE");
}

// FNV-1a 64 of a file's bytes, in hex: identifies a teacher's contents in the run settings.
std::string file_fingerprint(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) fail("cannot read '", path, "': ", std::strerror(errno));
  uint64_t h = 0xcbf29ce484222325ull;
  std::vector<unsigned char> buffer(1 << 16);
  for (size_t n; (n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0;)
    for (size_t i = 0; i < n; ++i) h = (h ^ buffer[i]) * 0x100000001b3ull;
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) fail("error reading '", path, "'");
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

// Prints the teachers' share of every epoch (stdout, after the epoch line's callbacks) and keeps
// their total time, so that the student's own training time can be reported apart.
class TeacherCost : public Callback {
 public:
  explicit TeacherCost(const ModelTeacher& teacher) : teacher_(teacher) {}
  CallbackRole role() const override { return CallbackRole::reporter; }
  void on_epoch_begin(FitContext&) override {
    seconds_at_start_ = teacher_.seconds();
    calls_at_start_ = teacher_.calls();
  }
  void on_epoch_end(FitContext& ctx) override {
    const double seconds = teacher_.seconds() - seconds_at_start_;
    const int64_t calls = teacher_.calls() - calls_at_start_;
    const double epoch = ctx.state.history.back().seconds;
    std::printf("  teachers: %.1f ms per step (%lld steps), %.1f s of the epoch's %.1f s (%.0f%%)\n",
                calls ? 1000 * seconds / static_cast<double>(calls) : 0.0, static_cast<long long>(calls), seconds, epoch,
                epoch > 0 ? 100 * seconds / epoch : 0.0);
    std::fflush(stdout);
  }

 private:
  const ModelTeacher& teacher_;
  double seconds_at_start_ = 0;
  int64_t calls_at_start_ = 0;
};

// Everything that must match for --resume to continue a run rather than start a different one,
// named by its flag.
RunSettings run_settings(const Config& c, const std::string& data) {
  RunSettings s;
  s.add("--data", data).add("--classes", c.classes).add("--exclude", c.exclude).add("--max-per-class", c.max_per_class);
  s.add("--val-fraction", c.val_fraction).add("--alpha", c.alpha).add("--size", c.size).add("--weights", c.weights);
  s.add("--mode", c.mode).add("--finetune-from", c.finetune_from).add("--pooling", c.pooling);
  s.add("--hidden", c.hidden).add("--dropout", c.dropout).add("--epochs", c.epochs).add("--batch-size", c.batch_size);
  s.add("--optimizer", c.optimizer).add("--lr", c.lr).add("--momentum", c.momentum);
  s.add("--weight-decay", c.weight_decay).add("--schedule", c.schedule).add("--warmup-epochs", c.warmup_epochs);
  s.add("--min-lr", c.min_lr).add("--label-smoothing", c.label_smoothing).add("--class-weights", c.class_weights);
  s.add("--sampler", c.sampler).add("--clip-norm", c.clip_norm).add("--augment-flip", c.augment_flip);
  s.add("--augment-shift", c.augment_shift).add("--augment-rotate", c.augment_rotate);
  s.add("--augment-scale", c.augment_scale).add("--augment-brightness", c.augment_brightness);
  s.add("--augment-contrast", c.augment_contrast).add("--seed", c.seed).add("--color", c.color);
  s.add("--split-seed", c.split_seed);
  // Added only when used, so that runs without them resume as before.
  if (!c.teacher.empty()) {
    std::string teachers;  // each file with a hash of its contents: a changed teacher is refused too
    for (const std::string& path : cli::split_list(c.teacher))
      teachers += (teachers.empty() ? "" : ",") + path + " (fnv1a64 " + file_fingerprint(path) + ")";
    s.add("--teacher", teachers).add("--distill-temperature", c.distill_temperature);
    s.add("--distill-weight", c.distill_weight);
  }
  if (c.ema_decay > 0) s.add("--ema-decay", c.ema_decay);
  if (c.mixup > 0 || c.cutmix > 0)
    s.add("--mixup", c.mixup).add("--cutmix", c.cutmix).add("--mix-probability", c.mix_probability);
  if (!c.init_from.empty()) s.add("--init-from", c.init_from + " (fnv1a64 " + file_fingerprint(c.init_from) + ")");
  if (c.sync_bn) s.add("--sync-bn", true);  // (absent in checkpoints written before the flag existed)
  if (c.keep != "best") s.add("--keep", c.keep);  // (likewise)
  return s;
}

std::unique_ptr<Optimizer> make_optimizer(const Config& c, ParameterList params) {
  if (c.optimizer == "sgd")
    return std::make_unique<SGD>(std::move(params), SGD::Options{static_cast<float>(c.lr), static_cast<float>(c.momentum),
                                                                 false, static_cast<float>(c.weight_decay)});
  Adam::Options o;
  o.learning_rate = static_cast<float>(c.lr);
  o.weight_decay = c.optimizer == "adamw" ? static_cast<float>(c.weight_decay) : 0.0f;
  return std::make_unique<Adam>(std::move(params), o);
}

// Base features of a split, cached once (frozen mode), with a progress line on stderr.
FeatureCache cache_split(Communicator& world, Classifier& model, const ImageSet& images, const std::vector<int64_t>& indices,
                         const BatchOptions& options, bool mirrored, int64_t batch_size, const char* what, bool quiet) {
  ImageSource source(images, indices, options);
  const auto start = std::chrono::steady_clock::now();
  const bool interactive = ::isatty(::fileno(stderr)) != 0;
  int pass = 0;
  FeatureCacheOptions o;
  o.batch_size = batch_size;
  o.mirrored = mirrored;
  o.progress = [&](int64_t done, int64_t total) {
    const bool last = done == total;
    if (quiet || !(interactive || last)) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "%sfeatures (%s%s): %lld/%lld images, %.0f img/s%s", interactive ? "\r\033[K" : "", what,
                 pass == 1 ? ", mirrored" : "", static_cast<long long>(done), static_cast<long long>(total),
                 static_cast<double>(done + pass * total) / std::max(s, 1e-9), last ? "\n" : "");
    if (last) ++pass;
  };
  return distributed::cache_features(world, model.base(), source, o);  // each process its part
}

int run(int argc, char** argv, Communicator& world) {
  Config c;
  // The recipe is applied first so that explicit flags override it.
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--recipe") c.recipe = argv[i + 1];
    else if (std::string(argv[i]).rfind("--recipe=", 0) == 0) c.recipe = std::string(argv[i]).substr(9);
  apply_recipe(c, c.recipe);
  cli::Parser parser = make_parser(c);
  if (!parser.parse(argc, argv)) return 0;
  if (c.mode == "frozen" && !c.finetune_from.empty()) throw cli::UsageError("--finetune-from needs --mode finetune");
  if (!c.teacher.empty() && c.mode != "finetune")
    throw cli::UsageError("--teacher needs --mode finetune (the teachers see augmented images, not cached features)");
  if (!c.init_from.empty() && c.mode != "finetune") throw cli::UsageError("--init-from needs --mode finetune");
  if (c.cutmix > 0 && c.mode != "finetune")
    throw cli::UsageError("--cutmix needs --mode finetune (frozen mode trains on cached features, not images)");
  if (!c.init_from.empty() && !fs::is_regular_file(c.init_from))
    throw cli::UsageError("--init-from: '" + c.init_from + "' is not a file");
  for (const std::string& path : cli::split_list(c.teacher))
    if (!fs::is_regular_file(path)) throw cli::UsageError("--teacher: '" + path + "' is not a file");
  // Several processes on one machine share its cores.
  if (c.threads > 0) set_threads(static_cast<int>(c.threads));
  else if (world.local_size() > 1) set_threads(std::max(1, max_threads() / world.local_size()));
  // Rank 0 writes the files and reports; every process reads its own inputs, and an error on any
  // of them stops all (run_together), each naming the process and the problem.
  const bool lead = world.rank() == 0;
  if (!lead) c.quiet = true;
  std::FILE* const log = lead ? stderr : nullptr;  // progress messages
  if (world.size() > 1 && (!c.teacher.empty() || !c.init_from.empty() || c.ema_decay > 0))
    throw cli::UsageError("--teacher, --init-from and --ema-decay run in one process only (not under mpirun yet)");
  if (c.data.empty()) {
    c.data = examples::find_default_dataset();
    if (c.data.empty() && world.size() == 1) {
      std::fputs(examples::dataset_help, stderr);
      return 2;
    }
  }
  const std::string weights = run_together(world, [&] {
    if (c.data.empty()) throw cli::UsageError("no dataset found (data/fer2013, ../shared/data/fer2013); pass --data DIR");
    if (!fs::is_directory(c.data)) throw cli::UsageError("--data: '" + c.data + "' is not a directory");
    const std::string w = resolve_weights(c);
    if (!w.empty() && !fs::is_regular_file(w)) throw cli::UsageError("--weights: '" + w + "' is not a file");
    return w;
  });
  run_together(world, [&] {
    if (!lead) return;
    if (fs::exists(c.out) && !fs::is_directory(c.out))
      throw cli::UsageError("--out: '" + c.out + "' exists and is not a directory");
    fs::create_directories(c.out);
    // Fail now rather than at the end of the first epoch.
    if (::access(c.out.c_str(), W_OK) != 0)
      fail("cannot write to the output directory '", c.out, "': ", std::strerror(errno));
  });
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
  if (log) std::fprintf(log, "loading images from %s ...\n", c.data.c_str());
  const auto load_start = std::chrono::steady_clock::now();
  const ImageDataset dataset = run_together(world, [&] {
    ImageDataset d = load_image_dataset(c.data, folder);
    EIGENNET_CHECK(!d.split.train.empty() && !d.split.validation.empty() && !d.split.test.empty(), "dataset '", c.data,
                   "': the train, validation and test splits must all be non-empty (got ", d.split.train.size(), ", ",
                   d.split.validation.size(), ", ", d.split.test.size(), ")");
    return d;
  });
  const ImageSet& images = dataset.images;
  if (log)
    std::fprintf(log, "loaded %lld images (%dx%d, %s) in %.1f s; %lld files skipped\n",
                 static_cast<long long>(images.size()), images.width(), images.height(),
                 images.channels() == 1 ? "grayscale" : "RGB",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count(),
                 static_cast<long long>(images.skipped_count()));
  if (lead) {
    std::printf("dataset: %s (%s)\n", c.data.c_str(), to_string(dataset.layout));
    print_split_counts(std::cout, dataset);
    std::cout.flush();
  }
  const DatasetSplit& split = dataset.split;
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
  if (!c.init_from.empty()) {
    // A trained classifier of the same architecture: all its parameters, its output layer
    // restricted to this run's classes (which it must predict); its input size may differ.
    LoadedClassifier start = load_classifier(c.init_from);
    try {
      copy_classifier_weights(*model, spec, *start.model, start.spec, c.init_from);
    } catch (const Error& e) {
      fail("--init-from: ", e.what());
    }
    if (log) std::fprintf(log, "weights: %s\n", c.init_from.c_str());
  } else if (!weights.empty()) {
    folded = run_together(world, [&] { return load_imagenet_weights(model->base(), weights).folded_batch_norm; });
    if (log) std::fprintf(log, "ImageNet weights: %s%s\n", weights.c_str(), folded ? " (BatchNorm folded)" : "");
  }
  if (world.size() > 1) {
    // Every process must run the same training on the same data and weights (which may lie
    // elsewhere on its machine): the flags, what was loaded, and the weights' bits.
    std::vector<std::string> same;
    const RunSettings settings = run_settings(c, "");
    for (const auto& [name, value] : settings.values())
      if (name != "--data" && name != "--weights") same.push_back(name + " " + value);
    same.push_back("data: " + std::to_string(images.size()) + " images " + std::to_string(images.width()) + "x" +
                   std::to_string(images.height()) + ", classes " + examples::join(images.class_names(), ",") +
                   ", split " + std::to_string(split.train.size()) + "/" + std::to_string(split.validation.size()) + "/" +
                   std::to_string(split.test.size()));
    uint64_t bits = 0;
    for (const Parameter* p : model->parameters()) bits = mix64(bits ^ distributed::fingerprint(p->value.data(), p->value.size()));
    same.push_back("weights: " + std::string(weights.empty() && c.init_from.empty() ? "none" : "loaded") + ", fingerprint " + std::to_string(bits));
    distributed::check_same(world, same, "the settings");
  }

  BatchOptions inputs;  // the model's input: size, MobileNetV2 normalization
  inputs.height = inputs.width = static_cast<int>(c.size);
  inputs.seed = static_cast<uint64_t>(c.seed);
  BatchOptions augmented = inputs;
  augmented.augment = true;
  augmented.augmentation = AugmentConfig::none();
  augmented.augmentation.flip_probability = static_cast<float>(c.augment_flip);
  augmented.augmentation.max_shift = static_cast<float>(c.augment_shift);
  augmented.augmentation.max_rotation_degrees = static_cast<float>(c.augment_rotate);
  augmented.augmentation.max_scale = static_cast<float>(c.augment_scale);
  augmented.augmentation.max_brightness = static_cast<float>(c.augment_brightness);
  augmented.augmentation.max_contrast = static_cast<float>(c.augment_contrast);

  const bool frozen = c.mode == "frozen";
  if (frozen) {
    model->freeze_base();
  } else {
    if (folded) {
      // Turn the folded biases into real BatchNorm statistics so batch-statistics training
      // starts from the same function (models/imagenet_weights.hpp).
      std::vector<int64_t> calibration(split.train.begin(), split.train.begin() + std::min<size_t>(split.train.size(), 256));
      ImageSource source(images, calibration, inputs);
      Batch batch;
      source.get(0, source.size(), batch);
      recalibrate_batch_norm(model->base(), batch.inputs);
      if (log) std::fprintf(log, "BatchNorm re-estimated on %zu training images\n", calibration.size());
    }
    if (!c.finetune_from.empty()) model->freeze_below(c.finetune_from);
  }
  // Frozen: the head trains alone on cached base features; fine-tuning: the whole classifier.
  Model& trained = frozen ? static_cast<Model&>(model->head()) : static_cast<Model&>(*model);
  std::unique_ptr<Optimizer> optimizer = make_optimizer(c, trained.parameters());

  SoftmaxCrossEntropy::Options loss_options;
  loss_options.label_smoothing = static_cast<float>(c.label_smoothing);
  if (c.class_weights == "balanced") loss_options.class_weights = balanced_class_weights(images.labels(), split.train, num_classes);
  SoftmaxCrossEntropy hard_loss(loss_options), plain_loss;  // validation loss: unweighted, unsmoothed

  // ---- Teachers (--teacher) -------------------------------------------------------------------
  Ensemble teachers;
  std::unique_ptr<ModelTeacher> teacher;
  std::unique_ptr<DistillationLoss> distillation;
  if (!c.teacher.empty()) {
    EIGENNET_CHECK(c.class_weights == "none", "--teacher: --class-weights is not supported with distillation");
    teachers = load_ensemble(cli::split_list(c.teacher));
    if (teachers.class_names() != class_names)
      fail("--teacher: '", teachers.paths.front(), "' predicts the classes (", examples::join(teachers.class_names()),
           ") but this run trains (", examples::join(class_names), "): use --classes/--exclude to match them");
    std::vector<ModelTeacher::Member> members;
    for (size_t m = 0; m < teachers.members.size(); ++m) {
      const ClassifierSpec& ts = teachers.members[m].spec;
      members.push_back({teachers.members[m].model.get(), ts.base.height, ts.base.width, teachers.compiled[m].get()});
      std::fprintf(stderr, "teacher %zu: %s (%lldx%lld)\n", m + 1, teachers.paths[m].c_str(),
                   static_cast<long long>(ts.base.width), static_cast<long long>(ts.base.height));
    }
    teacher = std::make_unique<ModelTeacher>(std::move(members));
    distillation = std::make_unique<DistillationLoss>(
        *teacher, DistillationLoss::Options{static_cast<float>(c.distill_temperature), static_cast<float>(c.distill_weight),
                                            static_cast<float>(c.label_smoothing)});
  }
  Loss& loss = distillation ? static_cast<Loss&>(*distillation) : static_cast<Loss&>(hard_loss);

  // ---- Sources ------------------------------------------------------------------------------
  const Order order = c.sampler == "balanced" ? Order::balanced : Order::shuffled;
  FeatureCache train_cache, val_cache;
  std::unique_ptr<DataSource> train, validation;
  if (frozen) {
    const auto t0 = std::chrono::steady_clock::now();
    train_cache = cache_split(world, *model, images, split.train, inputs, c.augment_flip > 0, c.eval_batch_size, "train",
                              c.quiet);
    val_cache = cache_split(world, *model, images, split.validation, inputs, false, c.eval_batch_size, "validation",
                            c.quiet);
    if (log)
      std::fprintf(log, "cached base features in %.1f s\n",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    train = std::make_unique<FeatureSource>(train_cache, FeatureSource::Options{order, static_cast<uint64_t>(c.seed),
                                                                                num_classes, static_cast<float>(c.augment_flip)});
    validation = std::make_unique<FeatureSource>(val_cache);
  } else {
    auto images_source = std::make_unique<ImageSource>(images, split.train, augmented, order, static_cast<uint64_t>(c.seed));
    // Teachers at another input size see the same augmented images rendered at their size.
    for (const LoadedClassifier& member : teachers.members)
      images_source->also_render(static_cast<int>(member.spec.base.height), static_cast<int>(member.spec.base.width));
    train = std::move(images_source);
    validation = std::make_unique<ImageSource>(images, split.validation, inputs);
  }
  // Mixup/cutmix wrap the training source (after the teachers' sizes are added, so their images are mixed too).
  std::unique_ptr<DataSource> unmixed_train;
  if (c.mixup > 0 || c.cutmix > 0) {
    unmixed_train = std::move(train);
    train = std::make_unique<MixingSource>(
        *unmixed_train, MixingSource::Options{static_cast<float>(c.mixup), static_cast<float>(c.cutmix),
                                              static_cast<float>(c.mix_probability), static_cast<uint64_t>(c.seed)});
  }

  // ---- Training -------------------------------------------------------------------------------
  FitOptions options;
  options.epochs = c.epochs;
  options.batch_size = c.batch_size;
  options.validation_batch_size = c.eval_batch_size;
  options.seed = static_cast<uint64_t>(c.seed);
  options.validation_loss = &plain_loss;
  options.clip_grad_norm = c.clip_norm;
  // Several processes: each needs an item of every batch, so a last batch smaller than the run
  // is left out (distributed/sharding.hpp); the schedule counts the steps that happen.
  const int64_t items_per_epoch =
      world.size() > 1 ? distributed::BatchShard(*train, world, c.batch_size).size() : train->size();
  const int64_t batches_per_epoch = (items_per_epoch + c.batch_size - 1) / c.batch_size;
  LearningRateSchedule schedule;
  schedule.kind = parse_schedule_kind(c.schedule);
  schedule.base = static_cast<float>(c.lr);
  schedule.min_lr = static_cast<float>(c.min_lr);
  schedule.warmup_steps = static_cast<int64_t>(c.warmup_epochs * static_cast<double>(batches_per_epoch));
  schedule.total_steps = c.epochs * batches_per_epoch;

  LearningRateScheduler learning_rate(schedule);
  ProgressLogger progress(ProgressLogger::Options{!c.quiet});
  const Monitor kept = c.keep == "last" ? Monitor::last_epoch() : Monitor::max("val_accuracy");
  BestModel best(model_path,
                 saved_classifier(*model, spec, {{"recipe", c.recipe}, {"trained_with", "examples/train_emotions"}}),
                 kept);
  CsvLogger csv(c.out + "/log.csv");
  TrainingCurvesPng curves(c.out + "/training_curves.png",
                           std::string("Training curves: ") + c.mode + ", " + std::to_string(num_classes) + " classes");
  Checkpoint checkpoint(checkpoint_path, saved_classifier(*model, spec),
                        run_settings(c, fs::weakly_canonical(c.data).string()), c.resume);
  // Every process decides the learning rate and when to stop; rank 0 writes and reports.
  std::vector<Callback*> callbacks = {&learning_rate};
  std::unique_ptr<ExponentialMovingAverage> ema;
  if (c.ema_decay > 0) {
    ema = std::make_unique<ExponentialMovingAverage>(trained.parameters(),
                                                     ExponentialMovingAverage::Options{c.ema_decay, true, true});
    checkpoint.add_state(ema->state());
    callbacks.push_back(ema.get());
  }
  std::unique_ptr<TeacherCost> teacher_cost;
  if (teacher) {
    teacher_cost = std::make_unique<TeacherCost>(*teacher);
    callbacks.push_back(teacher_cost.get());
  }
  std::unique_ptr<EarlyStopping> early;
  if (c.patience > 0) {
    early = std::make_unique<EarlyStopping>(c.patience);
    callbacks.push_back(early.get());
  }
  if (lead) {
    std::printf("training: mode %s, %lld epochs of %lld batches of %lld, optimizer %s, lr %g (%s)", c.mode.c_str(),
                static_cast<long long>(c.epochs), static_cast<long long>(batches_per_epoch),
                static_cast<long long>(c.batch_size), c.optimizer.c_str(), c.lr, c.schedule.c_str());
    if (world.size() > 1)
      std::printf(", %d processes (%s BatchNorm statistics)", world.size(), c.sync_bn ? "synchronized" : "per-process");
    std::printf("\n");
    std::fflush(stdout);
  }
  distributed::DataParallel::Options parallel;
  parallel.sync_batch_norm = c.sync_bn;
  const FitResult result = distributed::fit(world, trained, *optimizer, loss, *train, validation.get(), options, callbacks,
                                            {&progress, &best, &csv, &curves, &checkpoint}, parallel);
  if (result.stopped && lead) std::printf("%s\n", result.stop_reason.c_str());
  double training_seconds = 0;
  for (const EpochRecord& r : result.state.history) training_seconds += r.seconds;
  // The teachers' time of the epochs this process ran (a resumed run does not know the others').
  const double teacher_seconds = teacher ? teacher->seconds() : 0.0;
  const int64_t best_epoch = Monitor::max("val_accuracy").best_epoch(result.state.history);
  const int64_t kept_epoch = kept.best_epoch(result.state.history);

  // ---- Test report with the kept model (the best epoch's, or the last's) --------------------------
  ImageSource test(images, split.test, inputs);
  Predictions predictions;
  if (world.size() == 1) {
    LoadedClassifier saved = load_classifier(model_path);
    predictions = predict(*saved.model, test, {c.eval_batch_size, c.tta_flip});
  } else {
    // The best epoch is in rank 0's model file: from there to every process, which predicts its part.
    distributed::load_parameters(world, model->parameters(), model_path);
    predictions = distributed::predict(world, *model, test, {c.eval_batch_size, c.tta_flip});
  }
  if (!lead) return 0;
  const ClassificationMetrics metrics = evaluate_classifier(predictions.probabilities, predictions.labels, class_names, {2});
  const double total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  char title[256];
  std::snprintf(title, sizeof title, "MobileNetV2 %.2f %lldx%lld, %s, %d classes: test accuracy %.4f", c.alpha,
                static_cast<long long>(c.size), static_cast<long long>(c.size), c.mode.c_str(), num_classes,
                metrics.accuracy);
  const std::string report = save_evaluation(c.out, metrics, title, [&](Json& j) {
    j["split"] = "test";
    j["recipe"] = c.recipe;
    j["mode"] = c.mode;
    j["alpha"] = c.alpha;
    j["input_size"] = c.size;
    j["epochs_trained"] = result.state.epochs_done;
    j["best_epoch"] = best_epoch + 1;
    j["best_val_accuracy"] = best_epoch >= 0 ? result.state.history[static_cast<size_t>(best_epoch)].val_accuracy : -1.0;
    j["kept"] = c.keep;
    j["kept_epoch"] = kept_epoch + 1;
    j["tta_flip"] = c.tta_flip;
    j["training_seconds"] = training_seconds;
    if (teacher) {
      j["teachers"] = examples::join(teachers.paths, ",");
      j["distill_temperature"] = c.distill_temperature;
      j["distill_weight"] = c.distill_weight;
      j["teacher_seconds_this_process"] = teacher_seconds;
      j["teacher_steps_this_process"] = teacher->calls();
    }
    if (ema) j["ema_decay"] = c.ema_decay;
    j["total_seconds"] = total_seconds;
    j["threads"] = max_threads();
    j["data"] = c.data;
    j["train_images"] = static_cast<int64_t>(split.train.size());
    j["validation_images"] = static_cast<int64_t>(split.validation.size());
    j["test_images"] = static_cast<int64_t>(split.test.size());
    j["skipped_files"] = images.skipped_count();
    j["model"] = model_path;
  });
  std::printf("%s\n%s\n", title, report.c_str());
  std::printf("training time %.1f min (total %.1f min); outputs in %s\n", training_seconds / 60, total_seconds / 60,
              c.out.c_str());
  if (teacher && teacher->calls() > 0) {
    std::printf("teachers: %.1f min over %lld steps (%.1f ms per step) of the epochs this process ran",
                teacher_seconds / 60, static_cast<long long>(teacher->calls()),
                1000 * teacher_seconds / static_cast<double>(teacher->calls()));
    if (checkpoint.resumed())  // the earlier epochs' teacher time is in their own output
      std::printf(" (resumed: training time without them is not known here)\n");
    else
      std::printf("; training without them %.1f min\n", (training_seconds - teacher_seconds) / 60);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  examples::Processes processes(argc, argv);
  return processes.finish(cli::run("train_emotions", [&] { return run(argc, argv, processes.world()); }));
}
