// Data-parallel training over MPI (include/eigennet/distributed/). Run by ctest under mpirun
// with 2 and 4 processes (oversubscribed on a small machine), and alone as a single process.
// Every process runs every test case, in the same order: the collectives of one case must meet
// the same collectives on the others, so the cases use CHECK (which does not leave the case) for
// anything that could differ between processes.
//
// The central claim: with synchronized BatchNorm, P processes with B/P items of every batch
// train what one process trains with B items, up to the order of floating-point sums.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <eigennet/distributed/mpi.hpp>
#include <eigennet/nn.hpp>

using namespace eigennet;
using namespace eigennet::distributed;

namespace {

Communicator* world_pointer = nullptr;
Communicator& world() { return *world_pointer; }

// ---- Data and models ----------------------------------------------------------------------------
struct Data {
  Tensor x;
  std::vector<int32_t> y;
};
Data random_images(int64_t n, int64_t size, int64_t channels, int classes, uint64_t seed) {
  Data d;
  d.x = Tensor(Shape{n, size, size, channels});
  Rng rng(seed);
  for (int64_t i = 0; i < d.x.size(); ++i) d.x[i] = rng.uniform(-1.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t label = static_cast<int32_t>(i % classes);
    d.y.push_back(label);
    // A little signal, so that the loss moves: the class brightens one corner.
    float* image = d.x.data() + i * size * size * channels;
    for (int64_t p = 0; p < size * size / 4; ++p) image[(p + label * size * size / 4) * channels] += 0.5f;
  }
  return d;
}

std::unique_ptr<Sequential> small_network(uint64_t seed, bool dropout = true, int64_t classes = 4) {
  auto net = std::make_unique<Sequential>("small", Shape{8, 8, 1}, seed);
  net->add<Conv2D>("conv", 8, 3);
  net->add<BatchNorm>("bn", 0.9f);
  net->add<ReLU6>("relu");
  net->add<DepthwiseConv2D>("dw", 3, 2);
  net->add<BatchNorm>("dw_bn", 0.9f);
  net->add<ReLU6>("dw_relu");
  net->add<GlobalAvgPool>("pool");
  if (dropout) net->add<Dropout>("dropout", 0.3f);
  net->add<Dense>("logits", classes);
  return net;
}

std::unique_ptr<Sequential> mobilenet(uint64_t seed) {
  MobileNetV2Config c;
  c.alpha = 0.35f;
  c.height = c.width = 32;
  c.include_top = true;
  c.classes = 4;
  c.bn_momentum = 0.9f;  // the moving statistics move visibly in a few steps
  return make_mobilenet_v2(c, seed);
}

// The largest difference between two models' tensors, relative to the larger magnitude of the
// tensor: max |a - b| / max(max |b|, 1e-3), and the tensor's name.
struct Difference {
  double value = 0;
  std::string tensor;
};
Difference difference(const ParameterList& a, const ParameterList& b) {
  Difference worst;
  REQUIRE(a.size() == b.size());
  for (size_t t = 0; t < a.size(); ++t) {
    double largest = 1e-3, diff = 0;
    for (int64_t i = 0; i < b[t]->value.size(); ++i) {
      largest = std::max(largest, static_cast<double>(std::fabs(b[t]->value[i])));
      diff = std::max(diff, static_cast<double>(std::fabs(a[t]->value[i] - b[t]->value[i])));
    }
    if (diff / largest > worst.value) worst = {diff / largest, a[t]->name};
  }
  return worst;
}

bool same_bits(const ParameterList& a, const ParameterList& b) {
  if (a.size() != b.size()) return false;
  for (size_t t = 0; t < a.size(); ++t)
    if (a[t]->value.size() != b[t]->value.size() ||
        std::memcmp(a[t]->value.data(), b[t]->value.data(), static_cast<size_t>(a[t]->value.size()) * 4) != 0)
      return false;
  return true;
}

// True on every process when every process holds bit-identical parameters.
bool same_on_every_process(const ParameterList& params) {
  std::vector<uint64_t> mine;
  for (const Parameter* p : params) mine.push_back(fingerprint(p->value.data(), p->value.size()));
  std::vector<uint64_t> all(mine.size() * static_cast<size_t>(world().size()));
  world().all_gather(mine.data(), static_cast<int64_t>(mine.size() * 8), all.data());
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i] != mine[i % mine.size()]) return false;
  return true;
}

// fit() of `net` on `data` with SGD + momentum: on one process (comm == null), or data-parallel
// over `comm`.
struct Training {
  FitResult result;
  DataParallel::Stats stats;
};
Training train(Sequential& net, const Data& data, const Data& validation_data, int64_t batch_size, int64_t epochs,
               Communicator* comm, DataParallel::Options options = {}, std::vector<Callback*> extra = {}) {
  SGD sgd(net.parameters(), {0.05f, 0.9f});
  SoftmaxCrossEntropy loss;
  TensorSource all(data.x, data.y, {Order::shuffled, /*seed=*/3});
  TensorSource all_validation(validation_data.x, validation_data.y);
  FitOptions fit_options;
  fit_options.epochs = epochs;
  fit_options.batch_size = batch_size;
  fit_options.seed = 5;
  Training t;
  if (!comm) {
    t.result = fit(net, sgd, loss, all, &all_validation, fit_options, extra);
    return t;
  }
  BatchShard shard(all, *comm, batch_size);
  ItemShard validation(all_validation, *comm);
  DataParallel parallel(*comm, options);
  std::vector<Callback*> callbacks = {&parallel};
  callbacks.insert(callbacks.end(), extra.begin(), extra.end());
  t.result = fit(net, sgd, loss, shard, &validation, fit_options, callbacks);
  t.stats = parallel.stats();
  return t;
}

// A directory that every process sees (rank 0 makes it).
std::filesystem::path shared_directory(const std::string& name) {
  std::string path;
  if (world().rank() == 0) {
    const auto dir = std::filesystem::temp_directory_path() / ("eigennet_distributed_" + name + "_" +
                                                               std::to_string(static_cast<long>(::getpid())));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    path = dir.string();
  }
  return broadcast_string(world(), path);
}

// Runs fn and returns the message of the Error it throws ("" when it does not throw).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Checks a data-parallel run step by step against one process: before each step the reference
// model takes the distributed model's parameters; after backward (the distributed gradient is
// then averaged: DataParallel runs first) the reference computes the gradient of the whole batch
// (and of the same batch in reverse order: the noise floor) and the differences are recorded:
// relative L2 of the gradients, relative loss, and BatchNorm moving statistics after the forward.
class Lockstep : public Callback {
 public:
  Lockstep(Sequential& dist, Sequential& reference, const Data& data)
      : dist_(dist), reference_(reference), source_(data.x, data.y, {Order::shuffled, /*seed=*/3}) {}
  void on_epoch_begin(FitContext& ctx) override { source_.start_epoch(ctx.epoch); }
  void on_batch_begin(FitContext&) override {
    const ParameterList d = dist_.parameters();
    snapshot_.resize(d.size());
    for (size_t i = 0; i < d.size(); ++i) snapshot_[i].copy_from(d[i]->value);
  }
  void on_gradients(FitContext& ctx) override {
    const int64_t begin = ctx.batch_index * ctx.options.batch_size;
    const int64_t count = std::min(ctx.options.batch_size, source_.size() - begin);
    source_.get(begin, count, batch_);
    const ParameterList d = dist_.parameters(), r = reference_.parameters();
    std::vector<Tensor> reference_gradient(r.size());
    for (int pass = 0; pass < 2; ++pass) {  // pass 1: the batch in reverse order
      if (pass == 1) reverse(batch_);
      for (size_t i = 0; i < r.size(); ++i) r[i]->value.copy_from(snapshot_[i]);
      zero_grad(r);
      const Tensor& out = reference_.forward(batch_.inputs, Mode::train);
      const float l = loss_.forward(out, batch_.labels);
      reference_.backward(loss_.gradient());
      double diff = 0, norm = 0;
      for (size_t i = 0; i < r.size(); ++i) {
        if (!r[i]->trainable()) continue;
        const Tensor& other = pass == 0 ? d[i]->grad : reference_gradient[i];
        for (int64_t k = 0; k < r[i]->grad.size(); ++k) {
          const double a = r[i]->grad[k], b = other[k];
          diff += (a - b) * (a - b);
          norm += a * a;
        }
      }
      const double relative = std::sqrt(diff / norm);
      if (pass == 1) {
        floor = std::max(floor, relative);
        continue;
      }
      for (size_t i = 0; i < r.size(); ++i)
        if (r[i]->trainable()) reference_gradient[i].copy_from(r[i]->grad);
      gradient = std::max(gradient, relative);
      closest = std::min(closest, relative);
      loss = std::max(loss, std::fabs(static_cast<double>(ctx.loss) - l) / std::fabs(l));
      // Moving statistics on the scale of the values they summarize: a mean relative to the
      // standard deviation (a mean near 0 is known to the precision of the values it averages),
      // a variance relative to itself.
      for (size_t i = 0; i + 1 < r.size(); ++i) {
        if (r[i]->kind != ParameterKind::statistic || r[i + 1]->kind != ParameterKind::statistic) continue;
        const Tensor &mean = r[i]->value, &variance = r[i + 1]->value;
        for (int64_t k = 0; k < mean.size(); ++k) {
          const double scale = std::sqrt(static_cast<double>(variance[k]));
          statistics = std::max(statistics, std::fabs(static_cast<double>(mean[k]) - d[i]->value[k]) / scale);
          statistics = std::max(statistics, std::fabs(static_cast<double>(variance[k]) - d[i + 1]->value[k]) / variance[k]);
        }
        ++i;
      }
    }
    ++steps;
  }
  double gradient = 0, closest = 1e300, floor = 0, loss = 0, statistics = 0;  // worst (closest: best) over the steps
  int64_t steps = 0;

 private:
  static void reverse(Batch& batch) {
    const int64_t n = batch.size(), row = batch.inputs.size() / n;
    for (int64_t i = 0, j = n - 1; i < j; ++i, --j) {
      std::swap_ranges(batch.inputs.data() + i * row, batch.inputs.data() + (i + 1) * row, batch.inputs.data() + j * row);
      std::swap(batch.labels[static_cast<size_t>(i)], batch.labels[static_cast<size_t>(j)]);
    }
  }
  Sequential &dist_, &reference_;
  TensorSource source_;
  SoftmaxCrossEntropy loss_;
  Batch batch_;
  std::vector<Tensor> snapshot_;
};

}  // namespace

TEST_CASE("Communicator: sums, broadcasts, gathers, and failures shared by every process") {
  Communicator& comm = world();
  const int p = comm.size(), r = comm.rank();
  float f[2] = {1.0f, static_cast<float>(r)};
  double d[1] = {0.5};
  int64_t i[1] = {r + 1};
  comm.sum(f, 2);
  comm.sum(d, 1);
  comm.sum(i, 1);
  CHECK(f[0] == p);
  CHECK(f[1] == p * (p - 1) / 2);
  CHECK(d[0] == 0.5 * p);
  CHECK(i[0] == p * (p + 1) / 2);
  std::vector<float> started(1000, static_cast<float>(r));
  comm.start_sum(started.data(), 1000);
  comm.progress();
  comm.wait_all();
  CHECK(started[999] == p * (p - 1) / 2);
  CHECK(broadcast_string(comm, r == 0 ? "from rank 0" : "") == "from rank 0");
  const std::vector<std::string> all = all_gather_strings(comm, std::string(static_cast<size_t>(r), 'x'));
  REQUIRE(all.size() == static_cast<size_t>(p));
  for (int k = 0; k < p; ++k) CHECK(all[static_cast<size_t>(k)] == std::string(static_cast<size_t>(k), 'x'));

  // The last process fails: every process throws, naming it and its message.
  const std::string failed = error_of([&] {
    run_together(comm, [&] {
      if (r == p - 1) fail("cannot read 'weights.safetensors'");
    });
  });
  CHECK(failed.find("cannot read 'weights.safetensors'") != std::string::npos);
  if (p > 1) CHECK(failed.find(comm.describe(p - 1)) != std::string::npos);
  CHECK(error_of([&] { run_together(comm, [] {}); }).empty());
  CHECK(run_together(comm, [] { return 7; }) == 7);

  // A setting that differs on the last process is named with both values.
  std::vector<std::string> settings = {"--lr 0.001", r == p - 1 && p > 1 ? "--epochs 3" : "--epochs 2"};
  const std::string differ = error_of([&] { check_same(comm, settings, "the settings"); });
  if (p > 1) {
    CHECK(differ.find("the settings differ from rank 0's: --epochs 3 here, --epochs 2 on rank 0") != std::string::npos);
    CHECK(differ.find(comm.describe(p - 1)) != std::string::npos);
  } else {
    CHECK(differ.empty());
  }
}

TEST_CASE("BatchShard and ItemShard: the processes' parts make up every batch, and each item once") {
  Communicator& comm = world();
  const int p = comm.size();
  const Data data = random_images(30, 2, 1, 3, 1);
  TensorSource source(data.x, data.y, {Order::shuffled, 9});
  BatchShard shard(source, comm, /*batch_size=*/8);
  // 30 items in batches of 8: the last batch has 6, kept when every process gets one of them.
  CHECK(shard.size() == (6 >= p ? 30 : 24));
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    shard.start_epoch(epoch);
    source.start_epoch(epoch);
    for (int64_t begin = 0; begin < shard.size(); begin += 8) {
      const int64_t count = std::min<int64_t>(8, shard.size() - begin);
      Batch mine, whole;
      shard.get(begin, count, mine);
      source.get(begin, count, whole);
      // Gather the parts in rank order: they are the batch one process reads.
      std::vector<int64_t> sizes(static_cast<size_t>(p));
      int64_t n = mine.size();
      comm.all_gather(&n, sizeof n, sizes.data());
      std::vector<int64_t> items(static_cast<size_t>(count));
      int64_t at = 0;
      for (int r = 0; r < p; ++r) {
        CHECK(sizes[static_cast<size_t>(r)] >= 1);
        if (r == comm.rank()) std::copy(mine.items.begin(), mine.items.end(), items.begin() + at);
        comm.broadcast(items.data() + at, sizes[static_cast<size_t>(r)] * 8, r);
        at += sizes[static_cast<size_t>(r)];
      }
      CHECK(at == count);
      CHECK(items == whole.items);
    }
  }
  // Evaluation: contiguous parts, every item once, some possibly empty.
  TensorSource small(data.x, data.y);
  ItemShard part(small, comm);
  int64_t total = part.size();
  comm.sum(&total, 1);
  CHECK(total == 30);
  CHECK(part.part().begin == 30 * comm.rank() / p);
  CHECK_THROWS_WITH_AS(BatchShard(source, comm, p - 1 > 0 ? p - 1 : 0), doctest::Contains("is smaller than the"), Error);
}

TEST_CASE("SyncBatchNorm: P processes with 32/P images match one process with 32 (MobileNetV2 0.35)") {
  Communicator& comm = world();
  set_threads(1);
  const Data data = random_images(64, 32, 3, 4, 11), validation = random_images(16, 32, 3, 4, 12);
  // 64 images in batches of 32, 2 epochs: 4 steps, with validation after each epoch. Every
  // process starts from other weights: rank 0's must reach everyone.
  auto synced = mobilenet(1 + static_cast<uint64_t>(comm.rank()) * 100);
  auto reference = mobilenet(1);
  DataParallel::Options options;
  options.sync_batch_norm = true;
  options.bucket_bytes = 16 << 10;  // several buckets even for this small model
  Lockstep check(*synced, *reference, data);
  const Training dist = train(*synced, data, validation, 32, 2, &comm, options, {&check});

  // The same with per-process BatchNorm statistics: another computation, which the tolerances
  // must tell apart.
  auto own = mobilenet(1), own_reference = mobilenet(1);
  options.sync_batch_norm = false;
  Lockstep own_check(*own, *own_reference, data);
  train(*own, data, validation, 32, 2, &comm, options, {&own_check});

  // Tolerances. A float32 sum in another order changes each gradient by rounding: relative
  // ~1e-5 (L2) after 52 BatchNorm layers. But a gradient of a ReLU6 network is not a continuous
  // function of its inputs: a unit whose input lies within rounding of 0 or 6 may switch sides,
  // and in the last blocks (1x1 pixels, 32 rows per BatchNorm) one switch moves the gradient by
  // up to ~1e-2. The noise floor measured alongside (the one-process gradient of the same batch
  // summed in reverse order) shows both: ~5e-6 in most steps, up to 9e-3 in some. A split of the
  // sums across processes is one more such order. Hence: every step within 3e-2, and the closest
  // step (no switch) within 1e-4 (rounding alone); what the forward pass computes (the loss,
  // the BatchNorm statistics) is continuous: within 1e-5. Per-process BatchNorm changes the
  // gradient by 100% or more (checked below).
  const double gradient_tolerance = 3e-2, rounding_tolerance = 1e-4, forward_tolerance = 1e-5;
  MESSAGE(comm.describe(comm.rank()), ": gradient vs one process over 4 steps: worst ", check.gradient, ", closest ",
          check.closest, " (noise floor, one process with reversed batches: worst ", check.floor, "); loss ",
          check.loss, ", BatchNorm statistics ", check.statistics, "; per-process BatchNorm: gradient ",
          own_check.gradient);
  CHECK(check.steps == 4);
  CHECK(check.floor < gradient_tolerance);
  CHECK(check.gradient < gradient_tolerance);
  CHECK(check.closest < rounding_tolerance);
  CHECK(check.loss < forward_tolerance);
  CHECK(check.statistics < forward_tolerance);
  if (comm.size() > 1) CHECK(own_check.gradient > 10 * gradient_tolerance);
  CHECK(same_on_every_process(synced->parameters()));

  // Validation over every process's part equals one process's evaluation of the final model.
  SoftmaxCrossEntropy loss;
  TensorSource all_validation(validation.x, validation.y);
  const LossAccuracy alone = evaluate_loss_accuracy(*synced, loss, all_validation, 64);
  CHECK(dist.result.state.history.back().val_loss == doctest::Approx(alone.loss).epsilon(1e-6));
  CHECK(dist.result.state.history.back().val_accuracy == doctest::Approx(alone.accuracy));
  CHECK(dist.result.state.step == 4);
  if (comm.size() > 1) {
    CHECK(dist.stats.steps == 4);
    CHECK(dist.stats.buckets > 3);
    CHECK(dist.stats.buckets_started_early == 4 * dist.stats.buckets);  // the backward hook started every bucket
  }
}

TEST_CASE("DataParallel: gradient buckets started during backward give the same bits as sums after it") {
  Communicator& comm = world();
  set_threads(1);
  const Data data = random_images(48, 8, 1, 4, 21), validation = random_images(8, 8, 1, 4, 22);
  DataParallel::Options overlapped, after;
  overlapped.bucket_bytes = after.bucket_bytes = 64;
  after.overlap = false;
  auto a = small_network(3), b = small_network(3);
  const Training ta = train(*a, data, validation, 16, 2, &comm, overlapped);
  const Training tb = train(*b, data, validation, 16, 2, &comm, after);
  CHECK(same_bits(a->parameters(), b->parameters()));
  CHECK(tb.stats.buckets_started_early == 0);
  if (comm.size() > 1) CHECK(ta.stats.buckets_started_early > 0);
  CHECK(ta.stats.buckets == tb.stats.buckets);
  CHECK(ta.stats.buckets > 2);

  // Dropout draws each item's mask as one process would, and per-process BatchNorm keeps one
  // model: the moving statistics are averaged before validation.
  DataParallel::Options synced;
  synced.sync_batch_norm = true;
  auto c = small_network(3), reference = small_network(3);
  train(*c, data, validation, 16, 2, &comm, synced);
  train(*reference, data, validation, 16, 2, nullptr);
  const Difference d = difference(c->parameters(), reference->parameters());
  CAPTURE(d.tensor);
  CHECK(d.value < 1e-4);
  CHECK(same_on_every_process(a->parameters()));
}

TEST_CASE("DataParallel: other models or set-ups on some process, and a model that drifts apart, stop every process") {
  Communicator& comm = world();
  const int p = comm.size(), last = p - 1;
  const Data data = random_images(32, 8, 1, 4, 31), validation = random_images(8, 8, 1, 4, 32);
  if (p > 1) {
    // The last process builds 5 classes instead of 4.
    auto other = small_network(3, true, comm.rank() == last ? 5 : 4);
    const std::string message = error_of([&] { train(*other, data, validation, 16, 1, &comm); });
    CHECK(message.find(comm.describe(last)) != std::string::npos);
    CHECK(message.find("the model and training set-up differ from rank 0's: parameter 'logits/kernel' [8, 5] trained here, parameter 'logits/kernel' [8, 4] trained on rank 0") !=
          std::string::npos);

    // A callback changes a weight on the last process only: the epoch's checksum catches it.
    struct Corrupt : Callback {
      int rank, victim;
      Sequential* net;
      void on_batch_end(FitContext&) override {
        if (rank == victim) net->parameters()[0]->value[0] += 1e-6f;
      }
    };
    auto drifting = small_network(3);
    Corrupt corrupt;
    corrupt.rank = comm.rank();
    corrupt.victim = last;
    corrupt.net = drifting.get();
    const std::string drift = error_of([&] { train(*drifting, data, validation, 16, 1, &comm, {}, {&corrupt}); });
    CHECK(drift.find("the processes no longer hold the same model: after epoch 1, 'conv/kernel' on " +
                     comm.describe(last) + " differs from rank 0's") != std::string::npos);
  }
  // A training source that is not sharded.
  auto net = small_network(3);
  SGD sgd(net->parameters(), {0.05f});
  SoftmaxCrossEntropy loss;
  TensorSource whole(data.x, data.y);
  DataParallel parallel(comm);
  FitOptions options;
  options.batch_size = 16;
  const std::string unsharded = error_of([&] { fit(*net, sgd, loss, whole, nullptr, options, {&parallel}); });
  if (p > 1) CHECK(unsharded.find("fit()'s training source is not sharded") != std::string::npos);
  else CHECK(unsharded.empty());
}

TEST_CASE("OnRankZero: rank 0 writes the files, resumes for everyone, and its errors reach every process") {
  Communicator& comm = world();
  set_threads(1);
  const Data data = random_images(32, 8, 1, 4, 41), validation = random_images(8, 8, 1, 4, 42);
  const std::filesystem::path dir = shared_directory("rank_zero");
  const auto run = [&](Sequential& net, int64_t epochs, const std::string& name, bool resume) {
    SGD sgd(net.parameters(), {0.05f, 0.9f});
    SoftmaxCrossEntropy loss;
    TensorSource all(data.x, data.y, {Order::shuffled, 3});
    TensorSource all_validation(validation.x, validation.y);
    BatchShard shard(all, comm, 8);
    ItemShard validation_part(all_validation, comm);
    DataParallel parallel(comm);
    RunSettings settings;
    settings.add("name", name);
    Checkpoint checkpoint((dir / (name + ".safetensors")).string(), {net.parameters()}, settings, {resume, nullptr});
    CsvLogger csv((dir / (name + "_rank" + std::to_string(comm.rank()) + ".csv")).string());
    OnRankZero checkpoint_0(comm, checkpoint), csv_0(comm, csv);
    FitOptions options;
    options.epochs = epochs;
    options.batch_size = 8;
    options.seed = 5;
    return fit(net, sgd, loss, shard, &validation_part, options, {&parallel, &checkpoint_0, &csv_0});
  };
  auto whole = small_network(3);
  const FitResult uninterrupted = run(*whole, 3, "whole", false);
  // 2 epochs, then new objects resume to 3 from rank 0's checkpoint.
  auto first = small_network(3);
  run(*first, 2, "parts", false);
  auto resumed = small_network(4);  // other initial weights: the checkpoint's must replace them
  const FitResult rest = run(*resumed, 3, "parts", true);
  CHECK(rest.state.epochs_done == 3);
  CHECK(rest.state.history.size() == 3);
  CHECK(same_bits(whole->parameters(), resumed->parameters()));
  CHECK(rest.state.history[1].val_loss == uninterrupted.state.history[1].val_loss);
  comm.barrier();  // every process has finished writing
  CHECK(std::filesystem::exists(dir / "whole_rank0.csv"));
  CHECK(std::filesystem::exists(dir / ("whole_rank" + std::to_string(comm.rank()) + ".csv")) == (comm.rank() == 0));

  // Rank 0 cannot restore (other settings): every process stops with its message.
  auto refused = small_network(3);
  const std::string message = error_of([&] {
    SGD sgd(refused->parameters(), {0.05f});
    SoftmaxCrossEntropy loss;
    TensorSource all(data.x, data.y);
    BatchShard shard(all, comm, 8);
    DataParallel parallel(comm);
    RunSettings settings;
    settings.add("name", "other");
    Checkpoint checkpoint((dir / "whole.safetensors").string(), {refused->parameters()}, settings, {true, nullptr});
    OnRankZero checkpoint_0(comm, checkpoint);
    FitOptions options;
    options.epochs = 4;
    options.batch_size = 8;
    fit(*refused, sgd, loss, shard, nullptr, options, {&parallel, &checkpoint_0});
  });
  CHECK(message.find("it was written by a run with different settings (name: whole in the checkpoint, other now)") !=
        std::string::npos);
  if (comm.size() > 1) CHECK(message.find(comm.describe(0)) != std::string::npos);
  comm.barrier();
  if (comm.rank() == 0) std::filesystem::remove_all(dir);
}

TEST_CASE("Cached features and predictions computed in parts equal one process's") {
  Communicator& comm = world();
  set_threads(1);
  const Data images = random_images(13, 32, 3, 3, 51);
  ClassifierSpec spec;
  spec.base.alpha = 0.35f;
  spec.base.height = spec.base.width = 32;
  spec.base.pooling = GlobalPooling::avg;
  spec.head = {16, 0.4f, 3};
  spec.class_names = {"a", "b", "c"};
  auto model = make_classifier(spec, 7);
  TensorSource source(images.x, images.y);
  const FeatureCache alone = eigennet::cache_features(model->base(), source, {4, false, {}});
  const FeatureCache parts = distributed::cache_features(comm, model->base(), source, {4, false, {}});
  REQUIRE(parts.features.shape() == alone.features.shape());
  CHECK(parts.labels == alone.labels);
  float worst = 0;
  for (int64_t i = 0; i < alone.features.size(); ++i)
    worst = std::max(worst, std::fabs(parts.features[i] - alone.features[i]));
  CHECK(worst < 1e-5f);  // other batch compositions: GEMM blocking may sum in another order

  const Predictions p1 = eigennet::predict(*model, source, {5});
  const Predictions pp = distributed::predict(comm, *model, source, {5});
  REQUIRE(pp.probabilities.shape() == p1.probabilities.shape());
  CHECK(pp.labels == p1.labels);
  for (int64_t i = 0; i < p1.probabilities.size(); ++i) CHECK(pp.probabilities[i] == doctest::Approx(p1.probabilities[i]).epsilon(1e-5));

  // The frozen-base recipe: the head trains on the cached features, dropout included; one batch
  // of 13 per epoch, shared unevenly (P = 2: 6 and 7; P = 4: 3, 3, 3, 4).
  FeatureSource features(parts, {Order::shuffled, 3, 3});
  auto head = make_classifier_head(parts.features.dim(1), spec.head, 9), reference = make_classifier_head(parts.features.dim(1), spec.head, 9);
  SoftmaxCrossEntropy loss;
  Adam adam(head->parameters()), reference_adam(reference->parameters());
  FitOptions options;
  options.epochs = 3;
  options.batch_size = 13;
  BatchShard shard(features, comm, 13);
  DataParallel parallel(comm);
  fit(*head, adam, loss, shard, nullptr, options, {&parallel});
  fit(*reference, reference_adam, loss, features, nullptr, options);
  const Difference d = difference(head->parameters(), reference->parameters());
  CAPTURE(d.tensor);
  CHECK(d.value < 1e-4);
  CHECK(same_on_every_process(head->parameters()));
}

int main(int argc, char** argv) {
  MpiEnvironment mpi(argc, argv);
  world_pointer = &mpi.world();
  doctest::Context context(argc, argv);
  const int status = context.run();
  return mpi.finish(status);
}
