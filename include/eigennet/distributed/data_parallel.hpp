// Data-parallel training: fit() on several processes (MPI ranks, on one machine or many), each
// with its part of every batch, all keeping the same model. Two callbacks and a source wrapper:
//
//   distributed::DataParallel  keeps the processes in step (CallbackRole::distributed: it runs
//                              before the other callbacks). At the start it checks that every
//                              process has the same model and set-up, and gives them rank 0's
//                              parameters, BatchNorm statistics, optimizer state and history
//                              (rank 0 may just have restored a checkpoint). Each step it averages
//                              the gradients (over flat buckets, each summed as soon as the layers
//                              it holds have finished backward, while the layers below still
//                              compute, as PyTorch's DistributedDataParallel does) and the loss,
//                              so every process takes the same optimizer step; each epoch it
//                              combines the training and validation metrics and compares a
//                              checksum of every parameter across processes.
//   distributed::OnRankZero    runs a callback that writes files or prints (checkpoint, best
//                              model, logs, progress) on rank 0 only; its errors still stop every
//                              process.
//   distributed::BatchShard    each process's part of every batch (sharding.hpp); ItemShard for
//                              the validation source.
//
//   MpiEnvironment mpi(argc, argv);                   // mpi.hpp
//   Communicator& world = mpi.world();
//   BatchShard train(all_train, world, /*batch_size=*/32);
//   ItemShard validation(all_validation, world);
//   DataParallel parallel(world, {/*sync_batch_norm=*/true});
//   OnRankZero checkpoint(world, checkpoint_callback), progress(world, progress_callback);
//   fit(model, optimizer, loss, train, &validation, options, {&parallel, &checkpoint, &progress});
//
// With synchronized BatchNorm, P processes with B/P items compute what one process computes
// with B items, up to the order of floating-point sums: the order of an epoch, augmentation and
// dropout masks (Dropout draws the masks of the other processes' rows too) are those of one
// process. Without it, each process normalizes
// with its own items' statistics, and the moving statistics are averaged across processes at
// the end of every epoch (before validation), so that every process keeps the same model.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "../layers/dropout.hpp"
#include "../io/model_io.hpp"
#include "../train/fit.hpp"
#include "../train/history.hpp"
#include "communicator.hpp"
#include "sharding.hpp"
#include "sync_batch_norm.hpp"

namespace eigennet::distributed {

class DataParallel : public Callback {
 public:
  struct Options {
    bool sync_batch_norm = false;   // BatchNorm statistics of the whole batch (sync_batch_norm.hpp)
    bool overlap = true;            // sum gradient buckets during backward (needs Model::set_backward_hook)
    int64_t bucket_bytes = 1 << 20; // gradient bytes per bucket (the last layers' bucket may be larger)
  };
  // Where the time of the gradient exchange goes, summed over the steps.
  struct Stats {
    int64_t steps = 0;
    int64_t buckets = 0;                 // per step
    int64_t gradient_values = 0;         // floats summed per step
    int64_t buckets_started_early = 0;   // buckets started during backward, over all steps
    double sync_seconds = 0;             // after backward, until every process had finished its backward
    double wait_seconds = 0;             // then, until every gradient sum had arrived (not hidden by overlap)
    double copy_seconds = 0;             // copying gradients into the buckets and back
  };

  explicit DataParallel(Communicator& comm) : DataParallel(comm, Options{}) {}
  DataParallel(Communicator& comm, Options options) : comm_(comm), options_(options), sync_(comm) {
    EIGENNET_CHECK(options.bucket_bytes > 0, "DataParallel: bucket_bytes must be positive, got ", options.bucket_bytes);
  }
  ~DataParallel() override { detach(); }
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  CallbackRole role() const override { return CallbackRole::distributed; }
  const Stats& stats() const { return stats_; }
  Communicator& communicator() { return comm_; }

  void on_train_begin(FitContext& ctx) override {
    check_set_up(ctx);
    share_rank_zero_state(ctx);
    model_ = &ctx.model;
    if (options_.sync_batch_norm) {
      int64_t layers = 0;
      ctx.model.for_each_layer([&](Layer&) { ++layers; });
      raise_together(comm_, layers > 0 ? "" : "DataParallel: synchronized BatchNorm needs a model that shows its "
                                               "layers (Model::for_each_layer); this one shows none");
      set_batch_norm_sync(ctx.model, &sync_);
    }
    dropouts_.clear();
    ctx.model.for_each_layer([&](Layer& layer) {
      if (auto* d = dynamic_cast<Dropout*>(&layer)) dropouts_.push_back(d);
    });
    build_buckets(ctx);
    if (options_.overlap) ctx.model.set_backward_hook([this](Layer& layer) { on_layer_backward(layer); });
  }

  void on_epoch_begin(FitContext& ctx) override {
    if (trainable_signature(ctx) != signature_) build_buckets(ctx);  // freezing changed
    loss_sum_ = 0;
    correct_ = 0;
    items_ = 0;
  }

  void on_batch_begin(FitContext& ctx) override {
    local_items_ = ctx.batch ? ctx.batch->size() : 0;
    if (auto* shard = dynamic_cast<BatchShard*>(ctx.train)) {
      const int64_t begin = ctx.batch_index * ctx.options.batch_size;
      const int64_t count = std::min(ctx.options.batch_size, shard->size() - begin);
      const Part part = shard->part(count);
      for (Dropout* d : dropouts_) d->set_rows_elsewhere(part.begin, count - part.end);
    }
    std::fill(ready_.begin(), ready_.end(), 0);
    for (size_t b = 0; b < buckets_.size(); ++b) buckets_[b].pending = buckets_[b].parameters;
    next_bucket_ = 0;
  }

  void on_gradients(FitContext& ctx) override {
    // The batch's loss, items and correct predictions of all processes. This also waits for the
    // slowest process to finish its backward (buckets already started move on meanwhile).
    const auto sync_start = std::chrono::steady_clock::now();
    double totals[3] = {static_cast<double>(ctx.loss) * static_cast<double>(local_items_),
                        static_cast<double>(local_items_),
                        ctx.outputs && ctx.batch ? static_cast<double>(count_correct(*ctx.outputs, *ctx.batch)) : 0.0};
    comm_.sum(totals, 3);
    // Buckets whose layers did not report (no hook, or layers backward skipped) start now, in
    // order: every process must start the same sums in the same order.
    while (next_bucket_ < buckets_.size()) start_bucket(next_bucket_++);
    const auto wait_start = std::chrono::steady_clock::now();
    stats_.sync_seconds += std::chrono::duration<double>(wait_start - sync_start).count();
    comm_.wait_all();
    const auto copy_start = std::chrono::steady_clock::now();
    // Each process's gradient is that of its mean loss; weighted by its items (packed), summed,
    // and divided by all items it is the gradient of the mean loss over the whole batch.
    const float scale = static_cast<float>(1.0 / totals[1]);
    for (const Slot& s : slots_) {
      float* g = s.parameter->grad.data();
      const float* src = flat_.data() + s.offset;
      for (int64_t i = 0; i < s.parameter->grad.size(); ++i) g[i] = src[i] * scale;
    }
    const auto end = std::chrono::steady_clock::now();
    stats_.wait_seconds += std::chrono::duration<double>(copy_start - wait_start).count();
    stats_.copy_seconds += std::chrono::duration<double>(end - copy_start).count();
    ++stats_.steps;
    ctx.loss = static_cast<float>(totals[0] / totals[1]);
    loss_sum_ += totals[0];
    items_ += static_cast<int64_t>(totals[1]);
    correct_ += static_cast<int64_t>(totals[2]);
  }

  void on_batch_end(FitContext& ctx) override {
    // What the others (progress line, history) see: the epoch so far over all processes.
    ctx.epoch_items = items_;
    ctx.epoch_loss = loss_sum_ / static_cast<double>(items_);
    ctx.epoch_accuracy = static_cast<double>(correct_) / static_cast<double>(items_);
    if (!options_.sync_batch_norm && ctx.batch_index + 1 == ctx.batches_per_epoch) average_statistics(ctx.model);
  }

  void on_epoch_end(FitContext& ctx) override {
    EpochRecord& record = ctx.state.history.back();
    record.train_loss = ctx.epoch_loss;
    record.train_accuracy = ctx.epoch_accuracy;
    if (ctx.validation) {
      // Each process evaluated its part (ItemShard) or all of it: weighted by its items.
      const double n = static_cast<double>(ctx.validation->size());
      double v[3] = {record.val_loss * n, record.val_accuracy * n, n};
      comm_.sum(v, 3);
      record.val_loss = v[0] / v[2];
      record.val_accuracy = v[1] / v[2];
    }
    comm_.broadcast(&record.seconds, sizeof record.seconds, 0);  // every history the same: rank 0's
    check_same_parameters(ctx);
  }

  void on_train_end(FitContext&) override { detach(); }

 private:
  struct Slot {
    Parameter* parameter;
    int64_t offset;  // in flat_
    size_t bucket;
  };
  struct Bucket {
    int64_t begin = 0, end = 0;  // range of flat_
    size_t first_slot = 0, last_slot = 0;
    int parameters = 0, pending = 0;
  };

  // ---- Start of training ------------------------------------------------------------------
  // Every process must train the same model the same way: compared line by line with rank 0.
  void check_set_up(FitContext& ctx) {
    std::vector<std::string> lines;
    const FitOptions& o = ctx.options;
    lines.push_back("fit options: epochs " + std::to_string(o.epochs) + ", batch size " + std::to_string(o.batch_size) +
                    ", validation batch size " + std::to_string(o.validation_batch_size) + ", seed " +
                    std::to_string(o.seed) + ", gradient clipping " + std::to_string(o.clip_grad_norm));
    lines.push_back("training items: " + std::to_string(ctx.train ? ctx.train->size() : -1));
    lines.push_back(std::string("validation: ") + (ctx.validation ? "yes" : "no"));
    lines.push_back("data-parallel options: sync_batch_norm " + std::to_string(options_.sync_batch_norm) + ", overlap " +
                    std::to_string(options_.overlap) + ", bucket_bytes " + std::to_string(options_.bucket_bytes));
    for (const Parameter* p : ctx.model.parameters())
      lines.push_back("parameter '" + p->name + "' " + p->value.shape().to_string() +
                      (p->kind == ParameterKind::statistic ? " statistic" : p->frozen ? " frozen" : " trained"));
    lines.push_back("optimizer: " + std::to_string(ctx.optimizer.parameters().size()) + " parameters");
    for (auto& [name, tensor] : ctx.optimizer.state())
      lines.push_back("optimizer state '" + name + "' " + tensor->shape().to_string());
    check_same(comm_, lines, "the model and training set-up");

    std::string problem;
    auto* shard = dynamic_cast<BatchShard*>(ctx.train);
    if (comm_.size() > 1 && !shard)
      problem = "DataParallel: fit()'s training source is not sharded: wrap it in distributed::BatchShard, so that each "
                "process trains on its part of every batch";
    else if (shard && shard->batch_size() != o.batch_size)
      problem = "DataParallel: the training source is sharded for batches of " + std::to_string(shard->batch_size()) +
                " items, but fit() uses batches of " + std::to_string(o.batch_size);
    else if (ctx.validation && ctx.validation->size() == 0)
      problem = "DataParallel: this process's part of the validation source is empty (fewer validation items than "
                "processes)";
    raise_together(comm_, problem);
  }

  // Rank 0's parameters, optimizer state and run state (epochs, steps, history) everywhere.
  void share_rank_zero_state(FitContext& ctx) {
    broadcast_parameters(comm_, ctx.model.parameters());
    for (auto& [name, tensor] : ctx.optimizer.state())
      if (tensor->size() > 0) comm_.broadcast(tensor->data(), tensor->size() * static_cast<int64_t>(sizeof(float)), 0);
    int64_t counters[3] = {ctx.optimizer.steps(), ctx.state.epochs_done, ctx.state.step};
    comm_.broadcast(counters, sizeof counters, 0);
    ctx.optimizer.set_steps(counters[0]);
    ctx.state.epochs_done = counters[1];
    ctx.state.step = counters[2];
    const std::string history = broadcast_string(comm_, history_to_json(ctx.state.history).dump(-1));
    if (comm_.rank() != 0) ctx.state.history = history_from_json(Json::parse(history, "rank 0's history"), "rank 0's history");
  }

  // ---- Buckets ------------------------------------------------------------------------------
  std::vector<Parameter*> trainable_signature(FitContext& ctx) const {
    std::vector<Parameter*> trained;
    for (Parameter* p : ctx.optimizer.parameters())
      if (p->trainable()) trained.push_back(p);
    return trained;
  }

  // The trainable parameters in reverse order (the order backward finishes them), cut into
  // buckets of about bucket_bytes, laid out in one flat buffer.
  void build_buckets(FitContext& ctx) {
    signature_ = trainable_signature(ctx);
    slots_.clear();
    buckets_.clear();
    slot_of_.clear();
    layer_slots_.clear();
    int64_t offset = 0;
    for (auto it = signature_.rbegin(); it != signature_.rend(); ++it) {
      Parameter* p = *it;
      if (buckets_.empty() ||
          (buckets_.back().end - buckets_.back().begin) * static_cast<int64_t>(sizeof(float)) >= options_.bucket_bytes) {
        Bucket b;
        b.begin = b.end = offset;
        b.first_slot = b.last_slot = slots_.size();
        buckets_.push_back(b);
      }
      Bucket& b = buckets_.back();
      slot_of_[p] = slots_.size();
      slots_.push_back({p, offset, buckets_.size() - 1});
      offset += p->grad.size();
      b.end = offset;
      b.last_slot = slots_.size();
      ++b.parameters;
    }
    flat_.assign(static_cast<size_t>(offset), 0.0f);
    ready_.assign(slots_.size(), 0);
    stats_.buckets = static_cast<int64_t>(buckets_.size());
    stats_.gradient_values = offset;
  }

  // The backward hook: marks the layer's parameters final and starts every bucket that is
  // complete, in bucket order.
  void on_layer_backward(Layer& layer) {
    auto found = layer_slots_.find(&layer);
    if (found == layer_slots_.end()) {  // first time: which of our slots the layer holds
      std::vector<size_t> slots;
      for (Parameter* p : layer.parameters()) {
        auto s = slot_of_.find(p);
        if (s != slot_of_.end()) slots.push_back(s->second);
      }
      found = layer_slots_.emplace(&layer, std::move(slots)).first;
    }
    for (size_t s : found->second)
      if (!ready_[s]) {
        ready_[s] = 1;
        --buckets_[slots_[s].bucket].pending;
      }
    bool started = false;
    while (next_bucket_ < buckets_.size() && buckets_[next_bucket_].pending == 0) {
      start_bucket(next_bucket_++);
      ++stats_.buckets_started_early;
      started = true;
    }
    if (!started) comm_.progress();
  }

  void start_bucket(size_t index) {
    const auto start = std::chrono::steady_clock::now();
    const Bucket& b = buckets_[index];
    const float weight = static_cast<float>(local_items_);
    for (size_t s = b.first_slot; s < b.last_slot; ++s) {
      const Tensor& g = slots_[s].parameter->grad;
      float* dst = flat_.data() + slots_[s].offset;
      for (int64_t i = 0; i < g.size(); ++i) dst[i] = g[i] * weight;
    }
    stats_.copy_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    comm_.start_sum(flat_.data() + b.begin, b.end - b.begin);
  }

  // ---- Keeping the processes' models the same -------------------------------------------------
  // Per-process BatchNorm: the moving statistics drift apart; their mean becomes everyone's.
  void average_statistics(Model& model) {
    const float inverse = 1.0f / static_cast<float>(comm_.size());
    for (Parameter* p : model.parameters())
      if (p->kind == ParameterKind::statistic && p->value.size() > 0) {
        comm_.sum(p->value.data(), p->value.size());
        p->value.flat() *= inverse;
      }
  }

  // Every parameter and optimizer tensor must be bit-identical on every process; a difference
  // (a bug, a broken network or memory) stops the run before anything is saved.
  void check_same_parameters(FitContext& ctx) {
    std::vector<std::string> names;
    std::vector<uint64_t> mine;
    for (const Parameter* p : ctx.model.parameters()) {
      names.push_back(p->name);
      mine.push_back(fingerprint(p->value.data(), p->value.size()));
    }
    for (auto& [name, tensor] : ctx.optimizer.state()) {
      names.push_back(name);
      mine.push_back(fingerprint(tensor->data(), tensor->size()));
    }
    const size_t k = mine.size();
    std::vector<uint64_t> all(k * static_cast<size_t>(comm_.size()));
    comm_.all_gather(mine.data(), static_cast<int64_t>(k * sizeof(uint64_t)), all.data());
    for (size_t i = 0; i < k; ++i) {
      std::string ranks;
      for (int r = 1; r < comm_.size(); ++r)
        if (all[static_cast<size_t>(r) * k + i] != all[i]) ranks += (ranks.empty() ? "" : ", ") + comm_.describe(r);
      if (ranks.empty()) continue;
      comm_.set_failed_together();
      fail("the processes no longer hold the same model: after epoch ", ctx.epoch + 1, ", '", names[i], "' on ", ranks,
           " differs from rank 0's. The run stops before saving this epoch");
    }
  }

  void detach() {
    for (Dropout* d : dropouts_) d->set_rows_elsewhere(0, 0);
    dropouts_.clear();
    if (!model_) return;
    model_->set_backward_hook({});
    if (options_.sync_batch_norm) set_batch_norm_sync(*model_, nullptr);
    model_ = nullptr;
  }

  Communicator& comm_;
  Options options_;
  SyncBatchNorm sync_;
  Model* model_ = nullptr;
  std::vector<Dropout*> dropouts_;
  Stats stats_;

  std::vector<Parameter*> signature_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  std::unordered_map<const Parameter*, size_t> slot_of_;
  std::unordered_map<const Layer*, std::vector<size_t>> layer_slots_;
  std::vector<float> flat_;
  std::vector<char> ready_;
  size_t next_bucket_ = 0;
  int64_t local_items_ = 0;

  double loss_sum_ = 0;
  int64_t correct_ = 0, items_ = 0;
};

// Runs a callback on rank 0 only: the ones that write files or print (Checkpoint, BestModel,
// CsvLogger, ProgressLogger, TrainingCurvesPng). Every process calls the hooks that can fail or
// stop the run (train and epoch begin and end): rank 0's error, or its decision to stop, reaches
// every process. Errors in its batch hooks stop the whole run (MpiEnvironment::finish).
class OnRankZero : public Callback {
 public:
  OnRankZero(Communicator& comm, Callback& callback) : comm_(comm), callback_(callback) {}
  CallbackRole role() const override { return callback_.role(); }

  void on_train_begin(FitContext& ctx) override { shared(ctx, &Callback::on_train_begin); }
  void on_epoch_begin(FitContext& ctx) override { shared(ctx, &Callback::on_epoch_begin); }
  void on_batch_begin(FitContext& ctx) override {
    if (comm_.rank() == 0) callback_.on_batch_begin(ctx);
  }
  void on_gradients(FitContext& ctx) override {
    if (comm_.rank() == 0) callback_.on_gradients(ctx);
  }
  void on_batch_end(FitContext& ctx) override {
    if (comm_.rank() == 0) callback_.on_batch_end(ctx);
  }
  void on_epoch_end(FitContext& ctx) override { shared(ctx, &Callback::on_epoch_end); }
  void on_train_end(FitContext& ctx) override { shared(ctx, &Callback::on_train_end); }

 private:
  void shared(FitContext& ctx, void (Callback::*hook)(FitContext&)) {
    std::string problem;
    if (comm_.rank() == 0) {
      try {
        (callback_.*hook)(ctx);
      } catch (const std::exception& e) {
        problem = e.what();
        if (problem.empty()) problem = "failed";
      }
    }
    raise_together(comm_, problem);
    char stop = ctx.stop ? 1 : 0;
    comm_.broadcast(&stop, 1, 0);
    if (stop && !ctx.stop) {
      ctx.stop = true;
      ctx.stop_reason = broadcast_string(comm_, ctx.stop_reason);
    } else if (stop) {
      broadcast_string(comm_, ctx.stop_reason);
    }
  }

  Communicator& comm_;
  Callback& callback_;
};

// fit() for a program that may run as one process or several: with one (world.size() == 1)
// it is exactly fit(model, optimizer, loss, train, validation, options, callbacks followed by
// rank_zero_callbacks). With several, each process trains on its part of every batch
// (BatchShard) and validates its part (ItemShard, when every process gets one), DataParallel
// keeps them in step, `callbacks`
// run on every process (those that decide: learning rate, early stopping) and
// `rank_zero_callbacks` (those that write files or print: checkpoint, best model, logs, progress)
// on rank 0 only.
inline FitResult fit(Communicator& world, Model& model, Optimizer& optimizer, Loss& loss, DataSource& train,
                     DataSource* validation, const FitOptions& options, const std::vector<Callback*>& callbacks,
                     const std::vector<Callback*>& rank_zero_callbacks = {}, const DataParallel::Options& parallel = {}) {
  std::vector<Callback*> all = callbacks;
  if (world.size() == 1) {
    all.insert(all.end(), rank_zero_callbacks.begin(), rank_zero_callbacks.end());
    return eigennet::fit(model, optimizer, loss, train, validation, options, all);
  }
  BatchShard train_part(train, world, options.batch_size);
  // Each process validates its part; a validation set smaller than the run is validated whole
  // by every process (the same numbers everywhere).
  std::unique_ptr<ItemShard> validation_part;
  if (validation && validation->size() >= world.size()) validation_part = std::make_unique<ItemShard>(*validation, world);
  DataSource* validation_source = validation_part ? validation_part.get() : validation;
  DataParallel data_parallel(world, parallel);
  std::vector<std::unique_ptr<OnRankZero>> on_rank_zero;
  all.insert(all.begin(), &data_parallel);
  for (Callback* c : rank_zero_callbacks) {
    EIGENNET_CHECK(c != nullptr, "fit: a callback is null");
    on_rank_zero.push_back(std::make_unique<OnRankZero>(world, *c));
    all.push_back(on_rank_zero.back().get());
  }
  return eigennet::fit(model, optimizer, loss, train_part, validation_source, options, all);
}

// Rank 0's file of parameters (e.g. the best model that rank 0 saved) loaded on every process:
// rank 0 reads it and sends the values (the other processes' machines may not have it).
inline void load_parameters(Communicator& world, const ParameterList& params, const std::string& path) {
  run_together(world, [&] {
    if (world.rank() == 0) eigennet::load_parameters(params, path);
  });
  broadcast_parameters(world, params);
}

}  // namespace eigennet::distributed
