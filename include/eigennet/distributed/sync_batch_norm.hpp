// SyncBatchNorm: BatchNorm over the batch of all processes of a data-parallel run. Each process
// holds a part of every batch; with it, every BatchNorm normalizes with the mean and variance of
// the whole batch (and its backward uses the sums over the whole batch), so that P processes with
// B/P items each compute what one process computes with B. Without it each process uses its own
// part's statistics (cheaper: no communication inside forward and backward, but the
// normalization sees B/P items).
//
// Cost: one sum of 2C+1 numbers per BatchNorm in forward and one of 2C in backward (MobileNetV2:
// 52 layers), each a round trip between the processes.
#pragma once

#include <algorithm>
#include <vector>

#include "../layers/batch_norm.hpp"
#include "../layers/model.hpp"
#include "communicator.hpp"

namespace eigennet::distributed {

class SyncBatchNorm : public BatchStatisticsSync {
 public:
  explicit SyncBatchNorm(Communicator& comm) : comm_(comm) {}

  // Chan et al.'s combination of per-process means and variances: with m_r rows, mean u_r and
  // variance v_r per process, the total M = sum m_r, mean u = sum m_r u_r / M and variance
  // sum m_r (v_r + u_r^2) / M - u^2, summed in double (the squares of float means are exact in
  // double; cancellation would need |u| / sqrt(v) above ~1e4).
  int64_t combine_statistics(float* mean, float* variance, int64_t m, int64_t c) override {
    double* sums = buffer(2 * c + 1);
    const double rows = static_cast<double>(m);
    for (int64_t j = 0; j < c; ++j) {
      const double u = mean[j], v = variance[j];
      sums[j] = rows * u;
      sums[c + j] = rows * (v + u * u);
    }
    sums[2 * c] = rows;
    comm_.sum(sums, 2 * c + 1);
    const double total = sums[2 * c];
    for (int64_t j = 0; j < c; ++j) {
      const double u = sums[j] / total;
      mean[j] = static_cast<float>(u);
      variance[j] = static_cast<float>(std::max(0.0, sums[c + j] / total - u * u));
    }
    return static_cast<int64_t>(total);
  }

  // Each process's sums carry the factor 1 / (its items) of its loss mean; weighted by its rows
  // (proportional to its items: every process has the same rows per item) they share one unit,
  // and divided by this process's rows they are back in this process's unit.
  void combine_gradient_sums(double* s1, double* s2, int64_t m, int64_t c) override {
    double* sums = buffer(2 * c);
    const double rows = static_cast<double>(m);
    for (int64_t j = 0; j < c; ++j) {
      sums[j] = rows * s1[j];
      sums[c + j] = rows * s2[j];
    }
    comm_.sum(sums, 2 * c);
    for (int64_t j = 0; j < c; ++j) {
      s1[j] = sums[j] / rows;
      s2[j] = sums[c + j] / rows;
    }
  }

 private:
  double* buffer(int64_t n) {
    if (static_cast<int64_t>(buffer_.size()) < n) buffer_.resize(static_cast<size_t>(n));
    return buffer_.data();
  }

  Communicator& comm_;
  std::vector<double> buffer_;
};

// Makes every BatchNorm of the model use `sync` (null: each process's own statistics again);
// returns how many there are. The model must show its layers (Model::for_each_layer).
inline int64_t set_batch_norm_sync(Model& model, BatchStatisticsSync* sync) {
  int64_t count = 0;
  model.for_each_layer([&](Layer& layer) {
    if (auto* bn = dynamic_cast<BatchNorm*>(&layer)) {
      bn->set_statistics_sync(sync);
      ++count;
    }
  });
  return count;
}

}  // namespace eigennet::distributed
