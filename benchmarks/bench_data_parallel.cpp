// bench_data_parallel: MobileNetV2 + Dense(7) trained through fit() with distributed::DataParallel,
// as one process or under mpirun (benchmarks/data_parallel.sh runs the configurations
// interleaved). Rank 0 prints one JSON line:
//
//   step_ms          median wall time of a training step (forward, backward, gradient exchange,
//                    Adam) of the global batch; images_per_s = batch / step
//   forward_ms, backward_ms   this process's batch, timed before training (no communication)
//   exposed_ms       per step, the wait for the gradient sums once every process has finished its
//                    backward (what overlap did not hide); skew_ms: the wait for the slowest process
//   allreduce_ms     one blocking sum of the whole gradient across the processes (median)
//   gradient_mb      trainable floats x 4 bytes
//   ready            the backward's timeline: fraction of backward time -> fraction of gradient bytes
//                    final (Model::set_backward_hook), the input of the overlap model below
//
// As one process it also prints the scaling model of README.md ("Training on several
// machines"): ring allreduce over P nodes of the measured gradient, with and without overlap, at
// 10, 25 and 100 Gb/s.
//
//   bench_data_parallel [--alpha 1.0] [--size 96] [--batch 32] [--steps 12] [--warmup 3] [--threads N]
//                       [--sync-bn] [--no-overlap] [--bucket-kb 1024] [--latency-us 20]
//                       [--model-compute-ms X]   (the model with this step time instead of the measured one,
//                                                 backward scaled alike)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <eigennet/distributed/mpi.hpp>
#include <eigennet/nn.hpp>

using namespace eigennet;
using Clock = std::chrono::steady_clock;

namespace {

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }
double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Wall time of each step, from the first hook of the step to the last.
class StepTimer : public Callback {
 public:
  CallbackRole role() const override { return CallbackRole::reporter; }  // last in on_batch_end
  void on_batch_begin(FitContext&) override { start_ = Clock::now(); }
  void on_batch_end(FitContext&) override { steps.push_back(seconds(start_, Clock::now())); }
  std::vector<double> steps;

 private:
  Clock::time_point start_;
};

struct Readiness {
  double at;      // seconds since the backward started
  double bytes;   // gradient bytes final by then
};

// Ring allreduce of `bytes` over p nodes at `bandwidth` bytes/s with `latency` s per message:
// 2 (p - 1) steps, each moving bytes / p (reduce-scatter, then all-gather).
double ring_allreduce(double bytes, int p, double bandwidth, double latency) {
  if (p < 2) return 0;
  return 2.0 * (p - 1) * (latency + bytes / p / bandwidth);
}

// Gradient exchange time not hidden behind backward: buckets of `bucket` bytes are summed one
// after another (ring allreduce each), each starting when its bytes are final (the measured
// timeline, scaled to a backward of `backward` s) and the previous sum has finished.
double exposed_with_overlap(const std::vector<Readiness>& ready, double backward_measured, double backward,
                            double total_bytes, double bucket, int p, double bandwidth, double latency) {
  double end = 0, done_bytes = 0;
  while (done_bytes < total_bytes - 0.5) {
    const double size = std::min(bucket, total_bytes - done_bytes);
    double ready_at = backward;  // when the bucket's last byte is final
    for (const Readiness& r : ready)
      if (r.bytes >= done_bytes + size - 0.5) {
        ready_at = r.at / backward_measured * backward;
        break;
      }
    end = std::max(end, ready_at) + ring_allreduce(size, p, bandwidth, latency);
    done_bytes += size;
  }
  return std::max(0.0, end - backward);
}

}  // namespace

int main(int argc, char** argv) {
  distributed::MpiEnvironment mpi(argc, argv);
  distributed::Communicator& world = mpi.world();
  double alpha = 1.0, latency_us = 20, model_compute_ms = 0;
  int64_t size = 96, batch = 32, steps = 12, warmup = 3, threads = 0, bucket_kb = 1024;
  bool sync_bn = false, overlap = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_data_parallel: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--alpha") alpha = std::atof(next());
    else if (a == "--size") size = std::atoll(next());
    else if (a == "--batch") batch = std::atoll(next());
    else if (a == "--steps") steps = std::atoll(next());
    else if (a == "--warmup") warmup = std::atoll(next());
    else if (a == "--threads") threads = std::atoll(next());
    else if (a == "--bucket-kb") bucket_kb = std::atoll(next());
    else if (a == "--latency-us") latency_us = std::atof(next());
    else if (a == "--model-compute-ms") model_compute_ms = std::atof(next());
    else if (a == "--sync-bn") sync_bn = true;
    else if (a == "--no-overlap") overlap = false;
    else {
      std::fprintf(stderr, "bench_data_parallel: unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  if (threads > 0) set_threads(static_cast<int>(threads));
  const int p = world.size();
  const bool lead = world.rank() == 0;

  MobileNetV2Config c;
  c.alpha = static_cast<float>(alpha);
  c.height = c.width = size;
  c.include_top = true;
  c.classes = 7;
  std::unique_ptr<Sequential> net = make_mobilenet_v2(c, 1);
  Adam adam(net->parameters());
  SoftmaxCrossEntropy loss;
  const int64_t n = (warmup + steps) * batch;
  Tensor images(Shape{n, size, size, 3});
  Rng rng(5);
  for (int64_t i = 0; i < images.size(); ++i) images[i] = rng.uniform(-1.0f, 1.0f);
  std::vector<int32_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = static_cast<int32_t>(i % 7);

  // ---- Compute alone: this process's part of a batch, forward and backward -------------------
  const distributed::Part part = distributed::part_of(batch, world.rank(), p);
  Tensor local(Shape{part.size(), size, size, 3});
  std::memcpy(local.data(), images.data() + part.begin * size * size * 3,
              static_cast<size_t>(local.size()) * sizeof(float));
  const std::vector<int32_t> local_labels(labels.begin() + part.begin, labels.begin() + part.end);
  double gradient_bytes = 0;
  for (const Parameter* q : net->parameters())
    if (q->trainable()) gradient_bytes += 4.0 * static_cast<double>(q->grad.size());
  std::vector<double> forward_s, backward_s;
  std::vector<Readiness> ready;
  Clock::time_point backward_start;
  double ready_bytes = 0;
  net->set_backward_hook([&](Layer& layer) {
    for (const Parameter* q : layer.parameters())
      if (q->trainable()) ready_bytes += 4.0 * static_cast<double>(q->grad.size());
    ready.push_back({seconds(backward_start, Clock::now()), ready_bytes});
  });
  for (int64_t i = 0; i < warmup + 5; ++i) {
    adam.zero_grad();
    const auto t0 = Clock::now();
    loss.forward(net->forward(local, Mode::train), local_labels);
    backward_start = Clock::now();
    ready.clear();
    ready_bytes = 0;
    net->backward(loss.gradient());
    const auto t2 = Clock::now();
    if (i >= warmup) {
      forward_s.push_back(seconds(t0, backward_start));
      backward_s.push_back(seconds(backward_start, t2));
    }
  }
  net->set_backward_hook({});
  const double backward_measured = ready.empty() ? median(backward_s) : ready.back().at;

  // ---- Training through fit() -----------------------------------------------------------------
  TensorSource source(images, labels);
  StepTimer timer;
  distributed::DataParallel::Options options;
  options.sync_batch_norm = sync_bn;
  options.overlap = overlap;
  options.bucket_bytes = bucket_kb * 1024;
  distributed::DataParallel parallel(world, options);
  distributed::BatchShard shard(source, world, batch);
  FitOptions fit_options;
  fit_options.epochs = 1;
  fit_options.batch_size = batch;
  const auto fit_start = Clock::now();
  eigennet::fit(*net, adam, loss, shard, nullptr, fit_options, {&parallel, &timer});
  (void)fit_start;
  const std::vector<double> timed(timer.steps.begin() + warmup, timer.steps.end());
  const distributed::DataParallel::Stats& stats = parallel.stats();

  // ---- One blocking sum of the whole gradient ---------------------------------------------------
  std::vector<float> buffer(static_cast<size_t>(gradient_bytes / 4), 1.0f);
  std::vector<double> allreduce_s;
  for (int i = 0; i < 12; ++i) {
    world.barrier();
    const auto t0 = Clock::now();
    world.sum(buffer.data(), static_cast<int64_t>(buffer.size()));
    if (i >= 2) allreduce_s.push_back(seconds(t0, Clock::now()));
  }
  // Every process's numbers: the slowest decides a step.
  double mine[3] = {median(forward_s), median(backward_s), median(allreduce_s)};
  std::vector<double> all(static_cast<size_t>(3 * p));
  world.all_gather(mine, sizeof mine, all.data());
  double forward_max = 0, backward_max = 0, allreduce_max = 0;
  for (int r = 0; r < p; ++r) {
    forward_max = std::max(forward_max, all[static_cast<size_t>(3 * r)]);
    backward_max = std::max(backward_max, all[static_cast<size_t>(3 * r + 1)]);
    allreduce_max = std::max(allreduce_max, all[static_cast<size_t>(3 * r + 2)]);
  }
  if (!lead) return mpi.finish(0);

  const double step = median(timed);
  std::string timeline;
  for (double f : {0.1, 0.25, 0.5, 0.75, 1.0}) {
    double bytes = 0;
    for (const Readiness& r : ready)
      if (r.at <= f * backward_measured + 1e-12) bytes = r.bytes;
    char part_text[64];
    std::snprintf(part_text, sizeof part_text, "%s\"%.2f\": %.3f", timeline.empty() ? "" : ", ", f, bytes / gradient_bytes);
    timeline += part_text;
  }
  std::printf("{\"processes\": %d, \"threads\": %d, \"alpha\": %g, \"size\": %lld, \"batch\": %lld, \"sync_bn\": %s, "
              "\"overlap\": %s, \"bucket_kb\": %lld, \"steps\": %zu, \"step_ms\": %.2f, \"images_per_s\": %.1f, "
              "\"forward_ms\": %.2f, \"backward_ms\": %.2f, \"exposed_ms\": %.3f, \"skew_ms\": %.3f, \"copy_ms\": %.3f, "
              "\"buckets\": %lld, \"started_in_backward\": %.2f, \"allreduce_ms\": %.3f, \"gradient_mb\": %.3f, "
              "\"ready\": {%s}}\n",
              p, max_threads(), alpha, static_cast<long long>(size), static_cast<long long>(batch),
              sync_bn ? "true" : "false", overlap ? "true" : "false", static_cast<long long>(bucket_kb), timed.size(),
              1e3 * step, static_cast<double>(batch) / step, 1e3 * forward_max, 1e3 * backward_max,
              1e3 * stats.wait_seconds / std::max<int64_t>(1, stats.steps),
              1e3 * stats.sync_seconds / std::max<int64_t>(1, stats.steps),
              1e3 * stats.copy_seconds / std::max<int64_t>(1, stats.steps), static_cast<long long>(stats.buckets),
              static_cast<double>(stats.buckets_started_early) /
                  static_cast<double>(std::max<int64_t>(1, stats.steps * stats.buckets)),
              1e3 * allreduce_max, gradient_bytes / 1e6, timeline.c_str());

  if (p == 1) {
    // The scaling model: a step of P nodes = this step (compute) + the part of the gradient
    // exchange that backward does not hide.
    const double scale = model_compute_ms > 0 ? model_compute_ms * 1e-3 / step : 1.0;
    const double latency = latency_us * 1e-6, compute = step * scale, backward = median(backward_s) * scale;
    std::printf("# model: compute %.1f ms per step (%s; backward %.1f ms), gradient %.2f MB, latency %g us, "
                "buckets of %lld KB\n",
                1e3 * compute, model_compute_ms > 0 ? "given" : "measured", 1e3 * backward, gradient_bytes / 1e6,
                latency_us, static_cast<long long>(bucket_kb));
    std::printf("# %-6s %-10s %-16s %-20s %-20s\n", "nodes", "Gb/s", "allreduce ms", "no overlap: step/eff",
                "overlap: step/eff");
    for (double gbps : {10.0, 25.0, 100.0})
      for (int nodes : {2, 4, 8, 16, 32, 64}) {
        const double bandwidth = gbps * 1e9 / 8;
        const double t = ring_allreduce(gradient_bytes, nodes, bandwidth, latency);
        const double hidden = exposed_with_overlap(ready, backward_measured, backward, gradient_bytes,
                                                   static_cast<double>(bucket_kb) * 1024, nodes, bandwidth, latency);
        std::printf("# %-6d %-10g %-16.2f %7.1f ms %5.1f%%     %7.1f ms %5.1f%%\n", nodes, gbps, 1e3 * t,
                    1e3 * (compute + t), 100 * compute / (compute + t), 1e3 * (compute + hidden),
                    100 * compute / (compute + hidden));
      }
  }
  return mpi.finish(0);
}
