// Which items each process of a data-parallel run reads. Every process holds the same source
// (same items, seeds and order), and reads only its shard of it:
//
//   BatchShard  training: this process's part of every batch. The epoch's order is the same on
//               every process (a function of (seed, epoch)), and batch [b, b + B) of that order is
//               cut into one contiguous part per process, so the processes together train on
//               exactly the batches one process would.
//   ItemShard   evaluation: this process's contiguous part of all items (sequential order).
#pragma once

#include <memory>

#include "../data/source.hpp"
#include "communicator.hpp"

namespace eigennet::distributed {

// Items [begin, end) of a batch of `count` that process `rank` of `size` takes: contiguous
// parts whose sizes differ by at most one.
struct Part {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
inline Part part_of(int64_t count, int rank, int size) {
  return {count * rank / size, count * (rank + 1) / size};
}

class BatchShard : public DataSource {
 public:
  // This process's part of every batch of `batch_size` items (fit()'s batch size: the batch of
  // the whole run) of `source`, which must outlive the shard. Each process needs at least one
  // item of every batch: an epoch whose last batch would have fewer items than processes ends
  // before that batch (a one-process run keeps it).
  BatchShard(DataSource& source, Communicator& comm, int64_t batch_size)
      : source_(&source), rank_(comm.rank()), size_(comm.size()), batch_size_(batch_size) {
    EIGENNET_CHECK(batch_size >= size_, "BatchShard: the batch size ", batch_size, " is smaller than the ", size_,
                   " processes; each needs at least one item of every batch");
    const int64_t n = source.size(), last = n % batch_size;
    size_items_ = last > 0 && last < size_ ? n - last : n;
    EIGENNET_CHECK(size_items_ > 0, "BatchShard: ", n, " items are fewer than the ", size_, " processes");
  }
  // Items per epoch of the whole run (what fit() cuts into batches).
  int64_t size() const override { return size_items_; }
  void start_epoch(int64_t epoch) override { source_->start_epoch(epoch); }
  // `batch` receives only this process's part of batch [begin, begin + count).
  void get(int64_t begin, int64_t count, Batch& batch) override {
    EIGENNET_CHECK(count >= size_, "BatchShard: a batch of ", count, " items cannot be shared by ", size_, " processes");
    const Part part = part_of(count, rank_, size_);
    source_->get(begin + part.begin, part.size(), batch);
  }
  std::unique_ptr<DataSource> mirrored() const override {
    std::unique_ptr<DataSource> inner = source_->mirrored();
    if (!inner) return nullptr;
    auto shard = std::unique_ptr<BatchShard>(new BatchShard(*this));
    shard->source_ = inner.get();
    shard->owned_ = std::move(inner);
    return shard;
  }

  int64_t batch_size() const { return batch_size_; }
  // The part of batch [begin, begin + count) that this process reads.
  Part part(int64_t count) const { return part_of(count, rank_, size_); }
  int processes() const { return size_; }

 private:
  BatchShard(const BatchShard& other)
      : source_(other.source_), rank_(other.rank_), size_(other.size_), batch_size_(other.batch_size_),
        size_items_(other.size_items_) {}

  DataSource* source_;
  std::shared_ptr<DataSource> owned_;  // the mirrored source of a mirrored() shard
  int rank_, size_;
  int64_t batch_size_, size_items_ = 0;
};

// This process's contiguous part of a source's items, in sequential order: the part of an
// evaluation (validation, test, feature caching) that it computes. It may be empty when there
// are fewer items than processes.
class ItemShard : public DataSource {
 public:
  ItemShard(DataSource& source, Communicator& comm) : ItemShard(source, part_of(source.size(), comm.rank(), comm.size())) {}

  int64_t size() const override { return part_.size(); }
  void start_epoch(int64_t epoch) override { source_->start_epoch(epoch); }
  void get(int64_t begin, int64_t count, Batch& batch) override {
    EIGENNET_CHECK(begin >= 0 && count > 0 && begin + count <= part_.size(), "ItemShard: items [", begin, ", ",
                   begin + count, ") outside this process's ", part_.size(), " items");
    source_->get(part_.begin + begin, count, batch);
  }
  std::unique_ptr<DataSource> mirrored() const override {
    std::unique_ptr<DataSource> inner = source_->mirrored();
    if (!inner) return nullptr;
    auto shard = std::unique_ptr<ItemShard>(new ItemShard(*inner, part_));
    shard->owned_ = std::move(inner);
    return shard;
  }
  // Which items of the source this process holds.
  Part part() const { return part_; }

 private:
  ItemShard(DataSource& source, Part part) : source_(&source), part_(part) {}

  DataSource* source_;
  std::shared_ptr<DataSource> owned_;
  Part part_;
};

}  // namespace eigennet::distributed
