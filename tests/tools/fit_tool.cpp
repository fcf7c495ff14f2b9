// fit_tool: the library's fit() with its standard callbacks, as a small program for the shell
// tests in tests/robustness/library_fit.sh (crash and resume, write failures, divergence,
// determinism, refused resumes, early stopping). Nothing here is specific to the emotion
// classifier: the data are generated in memory and the network is a small CNN with dropout, so
// that every source of randomness fit() handles (order, dropout, the schedule) is exercised.
//
//   fit_tool --out DIR [--epochs N] [--lr X] [--optimizer adam|adamw|sgd] [--weight-decay X]
//            [--seed N] [--batch-size N] [--items N] [--patience N] [--clip-norm X]
//            [--threads N] [--resume]
// Writes DIR/model.safetensors (best epoch), DIR/checkpoint.safetensors, DIR/log.csv and, at the
// end, DIR/report.txt (the best model's accuracy on a held-out set).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <eigennet/nn.hpp>

#include "../../examples/common/cli.hpp"

using namespace eigennet;

namespace {

// `n` 8x8 images of three classes: a bright bar at a class-specific angle on noise.
void make_data(int64_t n, uint64_t seed, Tensor& x, std::vector<int32_t>& y) {
  Rng rng(seed);
  x = Tensor(Shape{n, 8, 8, 1});
  y.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int label = static_cast<int>(i % 3);
    const double angle = 3.14159265358979 * label / 3 + 0.3 * (rng.uniform() - 0.5);
    const double c = std::cos(angle), s = std::sin(angle);
    for (int r = 0; r < 8; ++r)
      for (int q = 0; q < 8; ++q) {
        const double dx = (q + 0.5) / 8 - 0.5, dy = (r + 0.5) / 8 - 0.5;
        x[i * 64 + r * 8 + q] = static_cast<float>((std::fabs(-s * dx + c * dy) < 0.15 ? 1.0 : 0.0) +
                                                   0.6 * (rng.uniform() - 0.5));
      }
    y[static_cast<size_t>(i)] = label;
  }
}

int run(int argc, char** argv) {
  std::string out, optimizer_name = "adamw";
  double lr = 3e-3, weight_decay = 1e-4, clip_norm = 0;
  int64_t epochs = 6, seed = 7, batch_size = 16, items = 480, patience = 0, threads = 1;
  bool resume = false;
  cli::Parser p("fit_tool", "Trains a small CNN on generated data with the library's fit() and its callbacks.");
  p.option("out", out, "output directory", "DIR");
  p.option("epochs", epochs, "epochs", 1, 100000);
  p.choice("optimizer", optimizer_name, {"adam", "adamw", "sgd"}, "optimizer");
  p.option("lr", lr, "peak learning rate (cosine schedule, one warmup epoch)", 0.0, 100.0);
  p.option("weight-decay", weight_decay, "decoupled weight decay (adamw, sgd)", 0.0, 10.0);
  p.option("seed", seed, "initialization, order and dropout", 0, INT64_MAX);
  p.option("batch-size", batch_size, "batch size", 1, 4096);
  p.option("items", items, "generated training images", 3, 1 << 20);
  p.option("patience", patience, "early stopping patience (0 = off)", 0, 100000);
  p.option("clip-norm", clip_norm, "gradient clipping (0 = off)", 0.0, 1e6);
  p.option("threads", threads, "OpenMP threads (0 = all cores)", 0, 1024);
  p.flag("resume", resume, "continue from OUT/checkpoint.safetensors");
  if (!p.parse(argc, argv)) return 0;
  if (out.empty()) throw cli::UsageError("--out is required");
  if (threads > 0) set_threads(static_cast<int>(threads));
  std::filesystem::create_directories(out);

  Tensor train_x, val_x;
  std::vector<int32_t> train_y, val_y;
  make_data(items, 1, train_x, train_y);
  make_data(90, 2, val_x, val_y);

  Sequential net("fit_tool", Shape{8, 8, 1}, static_cast<uint64_t>(seed));
  net.add<Conv2D>("conv", 8, 3);
  net.add<BatchNorm>("bn");
  net.add<ReLU6>("relu");
  net.add<DepthwiseConv2D>("dw", 3, 2);
  net.add<BatchNorm>("dw_bn");
  net.add<ReLU6>("dw_relu");
  net.add<GlobalAvgPool>("pool");
  net.add<Dropout>("dropout", 0.3f);
  net.add<Dense>("logits", 3);

  std::unique_ptr<Optimizer> optimizer;
  if (optimizer_name == "sgd")
    optimizer = std::make_unique<SGD>(net.parameters(), SGD::Options{static_cast<float>(lr), 0.9f, false,
                                                                      static_cast<float>(weight_decay)});
  else
    optimizer = std::make_unique<Adam>(
        net.parameters(), Adam::Options{static_cast<float>(lr), 0.9f, 0.999f, 1e-7f,
                                        optimizer_name == "adamw" ? static_cast<float>(weight_decay) : 0.0f});
  SoftmaxCrossEntropy::Options smoothing;
  smoothing.label_smoothing = 0.1f;
  SoftmaxCrossEntropy loss(smoothing), plain;
  TensorSource train(train_x, train_y, {Order::shuffled, static_cast<uint64_t>(seed)}), validation(val_x, val_y);

  const int64_t batches = (items + batch_size - 1) / batch_size;
  LearningRateSchedule schedule;
  schedule.kind = LearningRateSchedule::Kind::cosine;
  schedule.base = static_cast<float>(lr);
  schedule.warmup_steps = batches;
  schedule.total_steps = epochs * batches;
  RunSettings settings;
  settings.add("--epochs", epochs).add("--optimizer", optimizer_name).add("--lr", lr);
  settings.add("--weight-decay", weight_decay).add("--seed", seed).add("--batch-size", batch_size);
  settings.add("--items", items).add("--patience", patience).add("--clip-norm", clip_norm);

  LearningRateScheduler learning_rate(schedule);
  ProgressLogger progress({/*batches=*/false});
  BestModel best(out + "/model.safetensors", {net.parameters(), {{"trained_with", "tests/tools/fit_tool"}}});
  CsvLogger csv(out + "/log.csv");
  Checkpoint checkpoint(out + "/checkpoint.safetensors", {net.parameters()}, settings, resume);
  std::vector<Callback*> callbacks = {&learning_rate, &progress, &best, &csv, &checkpoint};
  std::unique_ptr<EarlyStopping> early;
  if (patience > 0) {
    early = std::make_unique<EarlyStopping>(patience);
    callbacks.push_back(early.get());
  }
  FitOptions options;
  options.epochs = epochs;
  options.batch_size = batch_size;
  options.seed = static_cast<uint64_t>(seed);
  options.validation_loss = &plain;
  options.clip_grad_norm = clip_norm;
  std::printf("training: %lld epochs of %lld batches\n", static_cast<long long>(epochs), static_cast<long long>(batches));
  std::fflush(stdout);
  const FitResult result = fit(net, *optimizer, loss, train, &validation, options, callbacks);
  if (result.stopped) std::printf("%s\n", result.stop_reason.c_str());

  load_parameters(net.parameters(), out + "/model.safetensors");
  const ClassificationMetrics m = evaluate(net, validation, {"a", "b", "c"});
  write_file_atomically(out + "/report.txt", classification_report(m));
  std::printf("best model: accuracy %.4f after %lld epochs\n", m.accuracy,
              static_cast<long long>(result.state.epochs_done));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return cli::run("fit_tool", [&] { return run(argc, argv); }); }
