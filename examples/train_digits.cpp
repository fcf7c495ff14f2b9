// train_digits: a network the library never saw, trained through fit(): a small
// depthwise-separable CNN on the 1,797 8x8 handwritten digits that scikit-learn ships
// (Debian's python3-sklearn: sklearn/datasets/data/digits.csv.gz; 64 pixel values 0-16 and the
// digit per line). Best model by validation accuracy, early stopping, a checkpoint every epoch and
// --resume; the report is on a held-out test split, and the exit status is non-zero unless its
// accuracy reaches 95%. Built with MPI and started by mpirun, it trains data-parallel (each
// process on its part of every batch; rank 0 writes the files).
//
//   train_digits [--data digits.csv.gz] [--out runs/digits] [--epochs 60] [--resume]
//   mpirun -np 2 train_digits ...
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <zlib.h>

#include <eigennet/nn.hpp>

#include "common/cli.hpp"
#include "common/processes.hpp"

using namespace eigennet;

namespace {

const char* default_digits = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";

// The digits as images [N, 8, 8, 1] in [0, 1] and labels; gzip-compressed or plain CSV.
void load_digits(const std::string& path, Tensor& images, std::vector<int32_t>& labels) {
  gzFile file = gzopen(path.c_str(), "rb");
  EIGENNET_CHECK(file != nullptr, "cannot open '", path, "'");
  std::vector<float> pixels;
  char line[4096];
  for (int64_t row = 1; gzgets(file, line, sizeof line) != nullptr; ++row) {
    std::vector<long> values;
    for (char* p = line; *p && *p != '\n' && *p != '\r';) {
      char* end = nullptr;
      values.push_back(std::strtol(p, &end, 10));
      if (end == p || (*end != ',' && *end != '\n' && *end != '\r' && *end != '\0')) {
        gzclose(file);
        fail("'", path, "' line ", row, ": not a comma-separated list of integers");
      }
      p = *end == ',' ? end + 1 : end;
    }
    if (values.empty()) continue;
    bool valid = values.size() == 65 && values[64] >= 0 && values[64] <= 9;
    for (int i = 0; i < 64 && valid; ++i) valid = values[static_cast<size_t>(i)] >= 0 && values[static_cast<size_t>(i)] <= 16;
    if (!valid) {
      gzclose(file);
      fail("'", path, "' line ", row, ": expected 64 pixel values in [0, 16] and a digit, got ", values.size(), " values");
    }
    for (int i = 0; i < 64; ++i) pixels.push_back(static_cast<float>(values[static_cast<size_t>(i)]) / 16.0f);
    labels.push_back(static_cast<int32_t>(values[64]));
  }
  const bool read_error = !gzeof(file);
  gzclose(file);
  EIGENNET_CHECK(!read_error, "'", path, "': read error (damaged gzip data?)");
  EIGENNET_CHECK(!labels.empty(), "'", path, "' holds no digits");
  images = Tensor(Shape{static_cast<int64_t>(labels.size()), 8, 8, 1});
  std::copy(pixels.begin(), pixels.end(), images.data());
}

// Rows `rows` of images and labels.
void subset(const Tensor& images, const std::vector<int32_t>& labels, const std::vector<int64_t>& rows, Tensor& x,
            std::vector<int32_t>& y) {
  gather_rows(images, rows.data(), static_cast<int64_t>(rows.size()), x);
  for (int64_t r : rows) y.push_back(labels[static_cast<size_t>(r)]);
}

// A depthwise-separable block as in MobileNet: depthwise 3x3 -> BatchNorm -> ReLU6 -> pointwise
// 1x1 -> BatchNorm -> ReLU6.
void add_separable(Sequential& net, const std::string& name, int64_t filters, int64_t stride) {
  net.add<DepthwiseConv2D>(name + "_depthwise", 3, stride);
  net.add<BatchNorm>(name + "_depthwise_bn");
  net.add<ReLU6>(name + "_depthwise_relu");
  net.add<Conv2D>(name + "_project", filters, 1);
  net.add<BatchNorm>(name + "_project_bn");
  net.add<ReLU6>(name + "_project_relu");
}

int run(int argc, char** argv, distributed::Communicator& world) {
  std::string data = default_digits, out = "runs/digits";
  int64_t epochs = 60, threads = 0;
  bool resume = false;
  cli::Parser p("train_digits", "Trains a small depthwise-separable CNN on scikit-learn's 8x8 digits with fit().");
  p.option("data", data, "the digits CSV (gzip or plain): 64 pixels (0-16) and the digit per line", "FILE");
  p.option("out", out, "output directory: model.safetensors, checkpoint.safetensors, log.csv", "DIR");
  p.option("epochs", epochs, "training epochs (early stopping may end sooner)", 1, 100000);
  p.option("threads", threads, "OpenMP threads (0 = all cores)", 0, 1024);
  p.flag("resume", resume, "continue from OUT/checkpoint.safetensors");
  if (!p.parse(argc, argv)) return 0;
  if (threads > 0) set_threads(static_cast<int>(threads));
  else if (world.local_size() > 1) set_threads(std::max(1, max_threads() / world.local_size()));  // shared cores
  const bool lead = world.rank() == 0;  // writes the files and reports
  if (lead) std::filesystem::create_directories(out);

  Tensor images, train_x, val_x, test_x;
  std::vector<int32_t> labels, train_y, val_y, test_y;
  distributed::run_together(world, [&] { load_digits(data, images, labels); });  // an error anywhere stops all
  const DatasetSplit split = stratified_split(labels, 10, SplitFractions{0.8, 0.1, 0.1}, /*seed=*/42);
  subset(images, labels, split.train, train_x, train_y);
  subset(images, labels, split.validation, val_x, val_y);
  subset(images, labels, split.test, test_x, test_y);
  if (lead) std::printf("digits: %zu training, %zu validation, %zu test images\n", train_y.size(), val_y.size(), test_y.size());

  // ---- The README's "Training your own model" ------------------------------------------------
  Sequential net("digits", Shape{8, 8, 1}, /*seed=*/1);
  net.add<Conv2D>("stem", 16, 3);                  // 3x3, stride 1, same padding
  net.add<BatchNorm>("stem_bn");
  net.add<ReLU6>("stem_relu");
  add_separable(net, "block_1", 32, /*stride=*/2); // 4x4
  add_separable(net, "block_2", 64, /*stride=*/2); // 2x2
  net.add<GlobalAvgPool>("pool");
  net.add<Dropout>("dropout", 0.2f);
  net.add<Dense>("logits", 10);

  Adam adam(net.parameters(), {/*learning_rate=*/3e-3f});
  SoftmaxCrossEntropy loss;
  TensorSource train(train_x, train_y, {Order::shuffled, /*seed=*/1}), validation(val_x, val_y);
  RunSettings settings;                            // a resumed run must have the same
  settings.add("data", data).add("lr", 3e-3).add("seed", 1);
  ProgressLogger progress({/*batches=*/false});
  BestModel best(out + "/model.safetensors", {net.parameters()});
  EarlyStopping early(/*patience=*/15);
  Checkpoint checkpoint(out + "/checkpoint.safetensors", {net.parameters()}, settings, resume);
  FitOptions options;
  options.epochs = epochs;
  options.seed = 1;                                // dropout
  // One process, or several under mpirun (each trains on its part of every batch): callbacks that
  // decide run everywhere, those that write or print on rank 0.
  distributed::fit(world, net, adam, loss, train, &validation, options, {&early}, {&progress, &best, &checkpoint});

  distributed::load_parameters(world, net.parameters(), out + "/model.safetensors");  // the best epoch
  TensorSource test(test_x, test_y);
  const ClassificationMetrics m = distributed::evaluate(world, net, test, {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"});
  if (lead) std::printf("%s\ntest accuracy %.4f\n", classification_report(m).c_str(), m.accuracy);
  // --------------------------------------------------------------------------------------------
  if (m.accuracy < 0.95) {
    if (lead) std::fprintf(stderr, "train_digits: test accuracy %.4f is below 0.95\n", m.accuracy);
    world.set_failed_together();  // every process alike: the run ends in order
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  examples::Processes processes(argc, argv);
  return processes.finish(cli::run("train_digits", [&] { return run(argc, argv, processes.world()); }));
}
