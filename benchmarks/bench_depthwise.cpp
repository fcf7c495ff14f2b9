// bench_depthwise: times eigennet's 3x3 depthwise kernels (forward, backward to the input,
// backward to the weights) on every distinct depthwise layer of MobileNetV2 alpha 1.0, at
// 96x96 batch 32 (training) and 224x224 batch 1 (inference), and relates each time to the
// machine's bandwidth measured in the same run with a STREAM-style triad.
//
// Effective GB/s counts only the bytes a kernel cannot avoid moving (each tensor read or
// written once; the 9*C weights are ignored):
//   fwd:        read input  + write output
//   bwd_input:  read dout   + write din
//   bwd_weight: read dout   + read input
//   fused_fwd:  read E      + write D     (an inverted residual block's training forward: the
//               expand BatchNorm + ReLU6 applied to each input row of E, the convolution, and
//               the output's BatchNorm statistics; depthwise_conv2d_forward_fused)
//   fused_bwd:  read dz + D + E + write dA (its backward: the depthwise BatchNorm's backward
//               applied to each row of dz, the input recomputed from E, the input gradient
//               masked by the ReLU6 below with the expand BatchNorm's sums, the weight gradient;
//               depthwise_conv2d_backward_fused)
//   expand_bwd: fused_bwd followed by the expand convolution's backward, as an inverted residual
//               block with expansion 6 runs it (E = X We, X with C / 6 channels, a skip added to
//               dX), in both of its forms, each timed: `separate` stores dA, then dE = bn'(dA) in
//               place, dWe = X^T dE, dX = dE We^T + skip; `sweep` takes dX and X^T dA from each
//               row inside the sweep and adds the BatchNorm's terms after it (ExpandBelow, which
//               the block uses where the input has >= 8 pixels per in_c^2: blocks 1-3 at 96x96).
//               Bytes: read dz + D + E + X, write dX (what the sweep form cannot avoid).
// The fused directions are not part of `all`: they measure what the training step's depthwise
// sweeps cost beyond the plain convolution.
// GFLOP/s counts 2 * 9 flops per output element per channel in every direction (twice that in
// fused_bwd: both gradients). Fractions:
// of the DRAM triad for every shape, of the L3 triad when the working set fits in half the L3,
// of the L2 triad when it fits in 3/4 of the L2 of the cores in use.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "eigennet/core/parallel.hpp"
#include "eigennet/core/rng.hpp"
#include "eigennet/kernels/depthwise_conv2d.hpp"
#include "eigennet/kernels/depthwise_fused.hpp"
#include "eigennet/kernels/pointwise_conv2d.hpp"

namespace {

const char* usage =
    "usage: bench_depthwise [options]\n"
    "  --config train|infer|all        shapes: 96x96 batch 32, 224x224 batch 1, or both (all)\n"
    "  --direction fwd|bwd_input|bwd_weight|all   (all), or fused_fwd|fused_bwd: the training step's\n"
    "                                  fused depthwise sweeps, or expand_bwd: with the expand\n"
    "                                  convolution's backward, separate and in the sweep (see the top\n"
    "                                  of bench_depthwise.cpp)\n"
    "  --samples N                     timed samples per measurement, median reported (7)\n"
    "  --min-sample-ms X               calls per sample are chosen so one sample lasts >= X ms (2)\n"
    "  --threads N                     OpenMP threads (default: OpenMP's default)\n"
    "  --dram-mib N                    total size of the DRAM triad's three arrays (768)\n"
    "  --no-bandwidth                  skip the triad (no bandwidth fractions)\n"
    "  --jsonl                         one JSON object per line instead of a table\n"
    "  --cpu-time                      time the thread's CPU time, not wall time (with --threads 1, busy machine)\n"
    "  --list-shapes                   print the shapes as JSON lines and exit\n"
    "  --serve                         read commands from stdin, answer each with one JSON line:\n"
    "                                    bandwidth | run BATCH H W C STRIDE DIRECTION | quit\n";

// ---- Bandwidth --------------------------------------------------------------------------

struct Bandwidth {
  bool measured = false;
  double dram_gbs = 0, l3_gbs = 0, l2_gbs = 0;
  int64_t dram_bytes = 0, l3_bytes = 0, l2_bytes = 0;  // footprint of the three arrays
  int64_t l2_per_core = 0, l3_total = 0;
  int threads = 1;
};

// Best GB/s of a[i] = b[i] + s * c[i] over n floats, STREAM's convention of 12 bytes per
// element (the write-allocate read of a is not counted, as for our kernels' writes). Each
// thread sweeps its own static chunk `passes` times inside one parallel region, so in-cache
// runs measure the cache, not barriers.
double triad_gbs(int64_t n, int passes, int samples) {
  std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n)), c(static_cast<size_t>(n));
  float* pa = a.data();
  const float* pb = b.data();
  const float* pc = c.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {  // first touch by the thread that will stream the chunk
    a[static_cast<size_t>(i)] = 0.0f;
    b[static_cast<size_t>(i)] = 1.0f;
    c[static_cast<size_t>(i)] = 2.0f;
  }
  double best = 0;
  for (int s = 0; s <= samples; ++s) {  // sample 0 is a warm-up
    const auto start = bench::Clock::now();
#pragma omp parallel
    {
      const int64_t t = eigennet::thread_index(), team = omp_get_num_threads();
      const int64_t lo = n * t / team, hi = n * (t + 1) / team;
      for (int p = 0; p < passes; ++p) {
        const float scale = 3.0f + 1e-7f * static_cast<float>(p);
#pragma omp simd
        for (int64_t i = lo; i < hi; ++i) pa[i] = pb[i] + scale * pc[i];
      }
    }
    const double seconds = bench::seconds_since(start);
    if (s > 0) best = std::max(best, 12.0 * static_cast<double>(n) * passes / seconds / 1e9);
  }
  if (a[static_cast<size_t>(n / 2)] < 0) std::printf("impossible\n");  // keeps the stores observable
  return best;
}

Bandwidth measure_bandwidth(int64_t dram_mib) {
  Bandwidth bw;
  bw.threads = eigennet::max_threads();
  bw.l2_per_core = bench::cache_bytes(2, 2 << 20);
  bw.l3_total = bench::cache_bytes(3, 32 << 20);
  // DRAM: three arrays together several times the L3. L3: 24 MiB in total, beyond every
  // core's L2 but well inside the L3. L2: half of each core's L2 per thread.
  const int64_t dram_n = std::max<int64_t>(dram_mib << 20, 3 * bw.l3_total) / 12;
  const int64_t l3_n = (std::min<int64_t>(24 << 20, bw.l3_total / 4)) / 12;
  const int64_t l2_n = bw.l2_per_core / 2 * bw.threads / 12 / 64 * 64;
  bw.dram_bytes = 12 * dram_n;
  bw.l3_bytes = 12 * l3_n;
  bw.l2_bytes = 12 * l2_n;
  bw.dram_gbs = triad_gbs(dram_n, 1, 5);
  bw.l3_gbs = triad_gbs(l3_n, 20, 7);
  bw.l2_gbs = triad_gbs(l2_n, 400, 9);
  bw.measured = true;
  return bw;
}

std::string bandwidth_json(const Bandwidth& bw) {
  bench::JsonLine j;
  j.add("tool", "triad").add("threads", bw.threads);
  j.add("dram_gbs", bw.dram_gbs).add("dram_mib", static_cast<double>(bw.dram_bytes) / (1 << 20));
  j.add("l3_gbs", bw.l3_gbs).add("l3_mib", static_cast<double>(bw.l3_bytes) / (1 << 20));
  j.add("l2_gbs", bw.l2_gbs).add("l2_mib", static_cast<double>(bw.l2_bytes) / (1 << 20));
  j.add("l2_per_core_mib", static_cast<double>(bw.l2_per_core) / (1 << 20));
  j.add("l3_mib_total", static_cast<double>(bw.l3_total) / (1 << 20));
  return j.str();
}

// ---- Kernels ----------------------------------------------------------------------------

struct Result {
  bench::DepthwiseShape shape;
  std::string direction;
  bench::Timing timing;
  double flops = 0, bytes = 0;
};

void fill_uniform(std::vector<float>& v, uint64_t seed) {
  eigennet::Rng rng(seed);
  for (float& x : v) x = rng.uniform(-1.0f, 1.0f);
}

Result run_shape(const bench::DepthwiseShape& shape, const std::string& direction, int samples, double min_sample_s) {
  namespace k = eigennet::kernels;
  const eigennet::WindowGeometry g = shape.geometry();
  const size_t in_size = static_cast<size_t>(g.in_pixels() * g.in_c);
  const size_t out_size = static_cast<size_t>(g.out_pixels() * g.in_c);
  const size_t weight_size = static_cast<size_t>(9 * g.in_c);
  Result r;
  r.shape = shape;
  r.direction = direction;
  r.flops = 18.0 * static_cast<double>(out_size);
  if (direction == "fwd") {
    std::vector<float> in(in_size), out(out_size), w(weight_size);
    fill_uniform(in, 1);
    fill_uniform(w, 2);
    r.bytes = 4.0 * static_cast<double>(in_size + out_size);
    r.timing = bench::time_calls([&] { k::depthwise_conv2d_forward(out.data(), in.data(), w.data(), nullptr, g); },
                                 samples, min_sample_s);
  } else if (direction == "bwd_input") {
    std::vector<float> din(in_size), dout(out_size), w(weight_size);
    fill_uniform(dout, 3);
    fill_uniform(w, 2);
    r.bytes = 4.0 * static_cast<double>(in_size + out_size);
    r.timing = bench::time_calls([&] { k::depthwise_conv2d_backward_input(din.data(), dout.data(), w.data(), g); },
                                 samples, min_sample_s);
  } else if (direction == "bwd_weight") {
    std::vector<float> in(in_size), dout(out_size), dw(weight_size, 0.0f);
    fill_uniform(in, 1);
    fill_uniform(dout, 3);
    r.bytes = 4.0 * static_cast<double>(in_size + out_size);
    // The kernel accumulates into dw, as a layer's gradient does; no bias in MobileNetV2.
    r.timing = bench::time_calls(
        [&] { k::depthwise_conv2d_backward_weight(dw.data(), nullptr, dout.data(), in.data(), g); }, samples,
        min_sample_s);
  } else if (direction == "fused_fwd" || direction == "fused_bwd" || direction == "expand_bwd_separate" ||
             direction == "expand_bwd_sweep") {
    // BatchNorm coefficients of plausible size; E around zero, so that ReLU6 masks some values.
    const int64_t c = g.in_c;
    std::vector<float> e(in_size), w(weight_size), scale(c), shift(c), mean(c), k(c), a(c), b(c), inv_std(c);
    fill_uniform(e, 1);
    fill_uniform(w, 2);
    for (auto* v : {&scale, &k, &inv_std}) {
      fill_uniform(*v, 4);
      for (float& x : *v) x = 1.0f + 0.5f * x;
    }
    for (auto* v : {&shift, &mean, &a, &b}) fill_uniform(*v, 5);
    const k::Relu6Affine expand{scale.data(), shift.data()};
    if (direction == "fused_fwd") {
      std::vector<float> d(out_size), d_mean(c), d_variance(c);
      r.bytes = 4.0 * static_cast<double>(in_size + out_size);
      r.timing = bench::time_calls(
          [&] {
            k::depthwise_conv2d_forward_fused(d.data(), e.data(), w.data(), g, &expand, nullptr, d_mean.data(),
                                              d_variance.data());
          },
          samples, min_sample_s);
      return r;
    }
    // The backward sweep, as an inverted residual block runs it.
    std::vector<float> dz(out_size), d(out_size), da(in_size), dw(weight_size, 0.0f);
    std::vector<double> s1(c), s2(c);
    fill_uniform(dz, 3);
    fill_uniform(d, 6);
    const k::AboveBatchNorm above{d.data(), mean.data(), k.data(), a.data(), b.data()};
    const k::BelowBatchNormRelu6 below{e.data(), mean.data(), inv_std.data(), s1.data(), s2.data()};
    auto sweep = [&](float* din, const k::ExpandBelow* expand_below) {
      std::fill(s1.begin(), s1.end(), 0.0);
      std::fill(s2.begin(), s2.end(), 0.0);
      k::depthwise_conv2d_backward_fused(din, dw.data(), dz.data(), e.data(), w.data(), g, &expand, &below, &above,
                                         expand_below);
    };
    if (direction == "fused_bwd") {
      r.bytes = 4.0 * static_cast<double>(2 * out_size + 2 * in_size);
      r.flops *= 2;  // the input and the weight gradient
      r.timing = bench::time_calls([&] { sweep(da.data(), nullptr); }, samples, min_sample_s);
      return r;
    }
    // expand_bwd: X has c / 6 channels (an expansion of 6), a skip is added to dX.
    EIGENNET_CHECK(c % 6 == 0, "bench_depthwise: expand_bwd needs channels that are 6 x the block's input");
    const int64_t in_c = c / 6, m = g.in_pixels();
    std::vector<float> x(static_cast<size_t>(m * in_c)), skip(x.size()), dx(x.size()),
        we(static_cast<size_t>(in_c * c));
    std::vector<float> dwe(we.size(), 0.0f), xt_dz(we.size());
    std::vector<double> scatter(static_cast<size_t>(in_c * in_c + in_c));
    for (auto* v : {&x, &skip, &we}) fill_uniform(*v, 7 + v->size());
    r.bytes = 4.0 * static_cast<double>(2 * out_size + in_size + 2 * x.size());
    r.flops = 36.0 * static_cast<double>(out_size) + 4.0 * static_cast<double>(m * in_c * c);
    if (direction == "expand_bwd_separate") {
      r.timing = bench::time_calls(
          [&] {
            sweep(da.data(), nullptr);
            k::batch_norm_act_backward_apply<k::Activation::none>(da.data(), da.data(), da.data(), e.data(),
                                                                  mean.data(), k.data(), a.data(), b.data(), m, c);
            k::pointwise_conv2d_backward(nullptr, dwe.data(), nullptr, da.data(), x.data(), we.data(), m, in_c, c);
            k::pointwise::Epilogue add_skip;
            add_skip.residual = skip.data();
            add_skip.ld_residual = in_c;
            k::pointwise_conv2d_backward_input(dx.data(), da.data(), we.data(), m, in_c, c, add_skip);
          },
          samples, min_sample_s);
    } else {
      k::ExpandBelow expand_below;
      expand_below.x = x.data();
      expand_below.in_c = in_c;
      expand_below.weight = we.data();
      expand_below.k = k.data();
      expand_below.dx = dx.data();
      expand_below.skip = skip.data();
      expand_below.xt_dz = xt_dz.data();
      expand_below.scatter = scatter.data();
      expand_below.shifted_sum = scatter.data() + in_c * in_c;
      r.timing = bench::time_calls(
          [&] {
            sweep(nullptr, &expand_below);
            k::expand_backward_finish(dwe.data(), expand_below, m, c, mean.data(), a.data(), b.data());
          },
          samples, min_sample_s);
    }
  } else {
    eigennet::fail("bench_depthwise: unknown direction '", direction,
                   "' (fwd, bwd_input, bwd_weight, fused_fwd, fused_bwd, expand_bwd_separate, expand_bwd_sweep)");
  }
  return r;
}

bool fits_l2(const Result& r, const Bandwidth& bw) {
  return r.bytes <= 0.75 * static_cast<double>(bw.l2_per_core) * bw.threads;
}
// Repeated calls find such a working set in the L3 (which the previous layer of a real step has
// just written to as well), so the L3 triad is the realistic bound there, not DRAM.
bool fits_l3(const Result& r, const Bandwidth& bw) { return r.bytes <= 0.5 * static_cast<double>(bw.l3_total); }

std::string result_json(const Result& r, const Bandwidth& bw) {
  const eigennet::WindowGeometry g = r.shape.geometry();
  const double s = r.timing.median_s, gbs = r.bytes / s / 1e9;
  bench::JsonLine j;
  j.add("tool", "eigennet").add("config", r.shape.config).add("batch", r.shape.batch).add("h", r.shape.height);
  j.add("w", r.shape.width).add("c", r.shape.channels).add("stride", r.shape.stride).add("out_h", g.out_h);
  j.add("out_w", g.out_w).add("layers", r.shape.layers).add("direction", r.direction);
  j.add("threads", eigennet::max_threads());
  j.add("ms", 1e3 * s).add("ms_min", 1e3 * r.timing.min_s).add("samples", r.timing.samples);
  j.add("calls_per_sample", r.timing.calls_per_sample);
  j.add("gflops", r.flops / s / 1e9).add("bytes", r.bytes).add("gbs", gbs);
  if (bw.measured) {
    j.add("frac_dram", gbs / bw.dram_gbs);
    j.add("fits_l2", fits_l2(r, bw));
    if (fits_l2(r, bw)) j.add("frac_l2", gbs / bw.l2_gbs);
    else j.null("frac_l2");
    j.add("fits_l3", fits_l3(r, bw));
    if (fits_l3(r, bw)) j.add("frac_l3", gbs / bw.l3_gbs);
    else j.null("frac_l3");
  }
  return j.str();
}

void print_table_header(const Bandwidth& bw) {
  std::printf("eigennet depthwise 3x3 kernels on MobileNetV2 alpha 1.0 shapes, %d threads\n", eigennet::max_threads());
  if (bw.measured)
    std::printf("triad bandwidth (best of several, %d threads): DRAM %.1f GB/s (%.0f MiB), L3 %.1f GB/s (%.0f MiB), "
                "L2 %.1f GB/s (%.2f MiB; %.1f MiB L2 per core)\n",
                bw.threads, bw.dram_gbs, bw.dram_bytes / 1048576.0, bw.l3_gbs, bw.l3_bytes / 1048576.0, bw.l2_gbs,
                bw.l2_bytes / 1048576.0, bw.l2_per_core / 1048576.0);
  std::printf("%-28s %3s %-19s %9s %9s %8s %8s %6s %6s %6s\n", "shape (NxHxWxC stride)", "n", "direction", "ms",
              "ms min", "GFLOP/s", "GB/s", "%DRAM", "%L3", "%L2");
}

void print_table_row(const Result& r, const Bandwidth& bw) {
  const double s = r.timing.median_s, gbs = r.bytes / s / 1e9;
  char dram[16] = "-", l3[16] = "-", l2[16] = "-";
  if (bw.measured) {
    std::snprintf(dram, sizeof dram, "%.0f%%", 100 * gbs / bw.dram_gbs);
    if (fits_l3(r, bw)) std::snprintf(l3, sizeof l3, "%.0f%%", 100 * gbs / bw.l3_gbs);
    if (fits_l2(r, bw)) std::snprintf(l2, sizeof l2, "%.0f%%", 100 * gbs / bw.l2_gbs);
  }
  std::printf("%-28s %3d %-19s %9.4f %9.4f %8.1f %8.1f %6s %6s %6s\n", r.shape.label().c_str(), r.shape.layers,
              r.direction.c_str(), 1e3 * s, 1e3 * r.timing.min_s, r.flops / s / 1e9, gbs, dram, l3, l2);
  std::fflush(stdout);
}

std::string shape_json(const bench::DepthwiseShape& s) {
  const eigennet::WindowGeometry g = s.geometry();
  bench::JsonLine j;
  j.add("config", s.config).add("batch", s.batch).add("h", s.height).add("w", s.width).add("c", s.channels);
  j.add("stride", s.stride).add("out_h", g.out_h).add("out_w", g.out_w).add("layers", s.layers).add("first", s.first);
  return j.str();
}

// --serve: one JSON line per command, so a driver can interleave us with other tools.
int serve(int samples, double min_sample_s, int64_t dram_mib) {
  Bandwidth bw;
  for (std::string line; std::getline(std::cin, line);) {
    const std::vector<std::string> words = bench::split_words(line);
    if (words.empty()) continue;
    try {
      if (words[0] == "quit") break;
      if (words[0] == "bandwidth") {
        bw = measure_bandwidth(dram_mib);
        bench::print_line(bandwidth_json(bw));
      } else if (words[0] == "run" && words.size() == 7) {
        bench::DepthwiseShape s;
        s.config = "custom";
        s.batch = std::stoll(words[1]);
        s.height = std::stoll(words[2]);
        s.width = std::stoll(words[3]);
        s.channels = std::stoll(words[4]);
        s.stride = std::stoll(words[5]);
        s.layers = 1;
        bench::print_line(result_json(run_shape(s, words[6], samples, min_sample_s), bw));
      } else {
        bench::print_line(bench::JsonLine().add("error", "unknown command: " + line).str());
      }
    } catch (const std::exception& e) {
      bench::print_line(bench::JsonLine().add("error", e.what()).str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv, usage);
  const std::string config = args.get("config", "all");
  const std::string direction = args.get("direction", "all");
  const int samples = static_cast<int>(args.number("samples", 7));
  const double min_sample_s = args.number("min-sample-ms", 2) / 1e3;
  const int threads = static_cast<int>(args.number("threads", 0));
  const int64_t dram_mib = static_cast<int64_t>(args.number("dram-mib", 768));
  const bool no_bandwidth = args.flag("no-bandwidth"), jsonl = args.flag("jsonl");
  bench::use_cpu_time() = args.flag("cpu-time");
  const bool list = args.flag("list-shapes"), serve_mode = args.flag("serve");
  args.done();
  if (config != "all" && config != "train" && config != "infer") args.fail("--config must be train, infer or all");
  if (direction != "all" && direction != "fwd" && direction != "bwd_input" && direction != "bwd_weight" &&
      direction != "fused_fwd" && direction != "fused_bwd" && direction != "expand_bwd")
    args.fail("--direction must be fwd, bwd_input, bwd_weight, all, fused_fwd, fused_bwd or expand_bwd");
  if (samples < 1) args.fail("--samples must be at least 1");
  if (threads > 0) eigennet::set_threads(threads);

  try {
    if (serve_mode) return serve(samples, min_sample_s, dram_mib);
    const std::vector<bench::DepthwiseShape> shapes = bench::mobilenet_v2_depthwise_shapes(config);
    if (list) {
      for (const auto& s : shapes) bench::print_line(shape_json(s));
      return 0;
    }
    const Bandwidth bw = no_bandwidth ? Bandwidth{} : measure_bandwidth(dram_mib);
    if (jsonl) {
      if (bw.measured) bench::print_line(bandwidth_json(bw));
    } else {
      print_table_header(bw);
    }
    const std::vector<std::string> directions =
        direction == "all"          ? std::vector<std::string>{"fwd", "bwd_input", "bwd_weight"}
        : direction == "expand_bwd" ? std::vector<std::string>{"expand_bwd_separate", "expand_bwd_sweep"}
                                    : std::vector<std::string>{direction};
    for (const auto& s : shapes)
      for (const auto& d : directions) {
        // expand_bwd: the layers after an expansion of 6 (not the first, whose input is the stem's).
        if (direction == "expand_bwd" && (s.channels % 6 != 0 || s.channels < 96)) continue;
        const Result r = run_shape(s, d, samples, min_sample_s);
        if (jsonl) bench::print_line(result_json(r, bw));
        else print_table_row(r, bw);
      }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_depthwise: %s\n", e.what());
    return 1;
  }
  return 0;
}
