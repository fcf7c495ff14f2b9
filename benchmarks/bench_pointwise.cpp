// bench_pointwise: times the 1x1 convolutions of MobileNetV2 alpha 1.0 through eigennet's
// pointwise engine (kernels/pointwise_engine.hpp) and through the Eigen GEMM reference
// (pointwise_conv2d_*_reference), alternating the two per shape, and relates each to the
// machine's FP32 FMA peak measured in the same run with a register-only FMA loop.
//
// Configurations (every distinct [pixels, in, out] shape, with how many layers have it):
//   infer_96_b32, infer_96_b1, infer_224_b1: forward as the inference path runs it (weights
//       packed once beforehand, bias + ReLU6 for expand and Conv_1, bias for project), against
//       the reference forward with its bias (the reference then still needs separate
//       BatchNorm / ReLU6 passes, which are not timed here);
//   train_96_b32: forward (weights packed per call), input gradient, weight gradient; and the
//       two products whose epilogues carry a BatchNorm in a training step (the reference
//       column is the same product through Eigen's GEMM without them): fwd_stats, the forward
//       with the per-channel mean and variance of its output (expand and project), and
//       bwd_bn, the input gradient masked by a ReLU6 through BatchNorm coefficients, with that
//       BatchNorm backward's sums (as the project convolution's backward computes it).
// GFLOP/s counts 2 * pixels * in * out per product.
#include <cstdio>
#include <string>
#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif
#include <vector>

#include "bench_util.hpp"
#include "eigennet/core/parallel.hpp"
#include "eigennet/core/rng.hpp"
#include "eigennet/kernels/pointwise_conv2d.hpp"

namespace {

const char* usage =
    "usage: bench_pointwise [options]\n"
    "  --config NAME|all       infer_96_b32, infer_96_b1, infer_224_b1, train_96_b32, or all (all)\n"
    "  --samples N             timed samples per measurement, median reported (7)\n"
    "  --min-sample-ms X       calls per sample are chosen so one sample lasts >= X ms (2)\n"
    "  --threads N             OpenMP threads (default: OpenMP's default)\n"
    "  --jsonl                 one JSON object per line instead of a table\n"
    "  --cpu-time              time the thread's CPU time, not wall time (use with --threads 1 on a busy machine)\n";

namespace pw = eigennet::kernels::pointwise;

// Best GFLOP/s of `thread_loop` (a register-only loop doing `flops_per_thread` and returning a
// value that depends on its result) run on every thread at once; best of 7 after a warm-up.
template <class ThreadLoop>
double register_loop_peak_gflops(double flops_per_thread, ThreadLoop thread_loop) {
  double best = 0;
  for (int sample = 0; sample < 8; ++sample) {
    float sink = 0;
    const double start = bench::timer_seconds();
#pragma omp parallel reduction(+ : sink)
    sink += thread_loop();
    const double seconds = bench::timer_seconds() - start;
    if (sink == 12345.0f) std::printf(" ");  // keeps the loop observable
    if (sample > 0) best = std::max(best, flops_per_thread * eigennet::max_threads() / seconds / 1e9);
  }
  return best;
}

constexpr int64_t peak_iterations = 4000000;

// Best FP32 GFLOP/s of a loop of independent FMAs on registers, on every thread at once.
double fma_peak_gflops() {
  using eigennet::simd::Packet;
  constexpr int chains = eigennet::simd::registers >= 32 ? 16 : 10;  // > latency x ports
  const double flops = 2.0 * eigennet::simd::width * chains * static_cast<double>(peak_iterations);
  return register_loop_peak_gflops(flops, [] {
    Packet acc[chains];
    for (int i = 0; i < chains; ++i) acc[i] = eigennet::simd::set1(static_cast<float>(i));
    const Packet a = eigennet::simd::set1(0.9999f), b = eigennet::simd::set1(1e-4f);
    for (int64_t it = 0; it < peak_iterations; ++it)
      for (int i = 0; i < chains; ++i) acc[i] = eigennet::simd::fmadd(acc[i], a, b);
    float lanes[eigennet::simd::width];
    Packet total = acc[0];
    for (int i = 1; i < chains; ++i) total = eigennet::simd::add(total, acc[i]);
    eigennet::simd::store(lanes, total);
    return lanes[0];
  });
}

// Best GFLOP/s of the same loop on bfloat16 pairs (vdpbf16ps: 32 products a 512-bit register,
// accumulated in FP32), on every thread at once; 0 where the build has no AVX512_BF16. Printed
// beside the FP32 peak: what products on bf16 operands could gain on this CPU (none use it).
double bf16_dot_peak_gflops() {
#if defined(__AVX512BF16__)
  constexpr int chains = 16;
  return register_loop_peak_gflops(2.0 * 32 * chains * static_cast<double>(peak_iterations), [] {
    __m512 acc[chains];
    for (int i = 0; i < chains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
    const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-4f), _mm512_set1_ps(1e-4f));
    for (int64_t it = 0; it < peak_iterations; ++it)
      for (int i = 0; i < chains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    __m512 total = acc[0];
    for (int i = 1; i < chains; ++i) total = _mm512_add_ps(total, acc[i]);
    return _mm512_reduce_add_ps(total);
  });
#else
  return 0;
#endif
}

struct Shape {
  std::string config, layer;  // first layer with this shape
  int64_t pixels = 0, in = 0, out = 0;
  bool relu6 = false;  // expand and Conv_1 (inference epilogue)
  int layers = 0;
};

// The distinct 1x1 convolutions of MobileNetV2 alpha 1.0 at one input size and batch.
std::vector<Shape> shapes_for(const std::string& config, int64_t size, int64_t batch) {
  eigennet::MobileNetV2Config mc;
  mc.height = mc.width = size;
  auto net = eigennet::make_mobilenet_v2(mc);
  std::vector<Shape> shapes;
  net->for_each_layer([&](eigennet::Layer& layer) {
    auto* conv = dynamic_cast<eigennet::Conv2D*>(&layer);
    if (!conv || conv->kernel().value.dim(0) != 1 || layer.input_shape()[0] != layer.output_shape()[0]) return;
    const eigennet::Shape& in = layer.input_shape();
    Shape s;
    s.config = config;
    s.layer = layer.name();
    s.pixels = batch * in[0] * in[1];
    s.in = in[2];
    s.out = layer.output_shape()[2];
    s.relu6 = layer.name().find("project") == std::string::npos;
    for (Shape& known : shapes)
      if (known.pixels == s.pixels && known.in == s.in && known.out == s.out && known.relu6 == s.relu6) {
        ++known.layers;
        return;
      }
    s.layers = 1;
    shapes.push_back(s);
  });
  return shapes;
}

std::vector<float> random_vector(int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  eigennet::Rng rng(seed);
  for (float& x : v) x = rng.uniform(-1.0f, 1.0f);
  return v;
}

struct Row {
  Shape shape;
  std::string direction;
  bench::Timing ours, eigen;
  double flops = 0;
};

Row run(const Shape& s, const std::string& direction, int samples, double min_sample_s) {
  namespace k = eigennet::kernels;
  const auto x = random_vector(s.pixels * s.in, 1), w = random_vector(s.in * s.out, 2);
  const auto dy = random_vector(s.pixels * s.out, 3), bias = random_vector(s.out, 4);
  std::vector<float> y(static_cast<size_t>(s.pixels * s.out)), dx(x.size()), dw(w.size(), 0.0f);
  // BatchNorm coefficients and outputs of the epilogues (fwd_stats, bwd_bn).
  std::vector<float> mean(static_cast<size_t>(s.out)), variance(mean.size());
  const auto scale = random_vector(s.in, 5), shift = random_vector(s.in, 6);
  std::vector<double> sums1(static_cast<size_t>(s.in)), sums2(sums1.size());
  Row r;
  r.shape = s;
  r.direction = direction;
  r.flops = 2.0 * static_cast<double>(s.pixels) * s.in * s.out;
  std::function<void()> ours, eigen;
  std::vector<float> packed;
  if (direction == "infer") {
    packed.resize(static_cast<size_t>(pw::packed_size(s.in, s.out)));
    pw::pack_panels(packed.data(), w.data(), s.in, s.out, false);
    pw::Epilogue e;
    e.bias = bias.data();
    if (s.relu6) e = pw::Epilogue::relu6(bias.data());
    const pw::Packed b{packed.data(), s.in, s.out};
    ours = [&, e, b] { pw::multiply(y.data(), s.out, x.data(), s.in, s.pixels, b, e); };
    eigen = [&] { k::pointwise_conv2d_forward_reference(y.data(), x.data(), w.data(), bias.data(), s.pixels, s.in, s.out); };
  } else if (direction == "fwd") {
    ours = [&] { k::pointwise_conv2d_forward(y.data(), x.data(), w.data(), nullptr, s.pixels, s.in, s.out); };
    eigen = [&] { k::pointwise_conv2d_forward_reference(y.data(), x.data(), w.data(), nullptr, s.pixels, s.in, s.out); };
  } else if (direction == "fwd_stats") {
    ours = [&] {
      k::pointwise_conv2d_forward_statistics(y.data(), x.data(), w.data(), s.pixels, s.in, s.out, mean.data(),
                                             variance.data());
    };
    eigen = [&] {
      k::pointwise_conv2d_forward_reference(y.data(), x.data(), w.data(), nullptr, s.pixels, s.in, s.out);
    };
  } else if (direction == "bwd_bn") {
    // x stands for the BatchNorm's input D [pixels, in], which both the mask and the sums read.
    pw::Epilogue mask;
    mask.relu6_mask = x.data();
    mask.ld_mask = s.in;
    mask.mask_scale = scale.data();
    mask.mask_shift = shift.data();
    ours = [&, mask] {
      const pw::Packed packed = pw::pack_to_scratch<27>(w.data(), s.out, s.in, true);
      pw::multiply_with_batch_norm_sums(dx.data(), s.in, dy.data(), s.out, s.pixels, packed, mask, x.data(), s.in,
                                        shift.data(), scale.data(), sums1.data(), sums2.data());
    };
    eigen = [&] {
      k::pointwise_conv2d_backward_reference(dx.data(), nullptr, nullptr, dy.data(), x.data(), w.data(), s.pixels, s.in,
                                             s.out);
    };
  } else if (direction == "bwd_input") {
    ours = [&] {
      k::pointwise_conv2d_backward(dx.data(), nullptr, nullptr, dy.data(), x.data(), w.data(), s.pixels, s.in, s.out);
    };
    eigen = [&] {
      k::pointwise_conv2d_backward_reference(dx.data(), nullptr, nullptr, dy.data(), x.data(), w.data(), s.pixels, s.in,
                                             s.out);
    };
  } else {
    ours = [&] {
      k::pointwise_conv2d_backward(nullptr, dw.data(), nullptr, dy.data(), x.data(), w.data(), s.pixels, s.in, s.out);
    };
    eigen = [&] {
      k::pointwise_conv2d_backward_reference(nullptr, dw.data(), nullptr, dy.data(), x.data(), w.data(), s.pixels,
                                             s.in, s.out);
    };
  }
  // Alternate: half the samples of each, twice, so that a slow phase of the machine hits both.
  const int half = std::max(1, samples / 2), rest = std::max(1, samples - half);
  const bench::Timing o1 = bench::time_calls(ours, half, min_sample_s);
  const bench::Timing e1 = bench::time_calls(eigen, half, min_sample_s);
  const bench::Timing o2 = bench::time_calls(ours, rest, min_sample_s);
  const bench::Timing e2 = bench::time_calls(eigen, rest, min_sample_s);
  auto merge = [](const bench::Timing& a, const bench::Timing& b) {
    bench::Timing t = a;  // median of the two medians weighted equally; min of both
    t.median_s = 0.5 * (a.median_s + b.median_s);
    t.min_s = std::min(a.min_s, b.min_s);
    t.samples = a.samples + b.samples;
    return t;
  };
  r.ours = merge(o1, o2);
  r.eigen = merge(e1, e2);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv, usage);
  const std::string config = args.get("config", "all");
  const int samples = static_cast<int>(args.number("samples", 7));
  const double min_sample_s = args.number("min-sample-ms", 2) / 1e3;
  const int threads = static_cast<int>(args.number("threads", 0));
  const bool jsonl = args.flag("jsonl");
  bench::use_cpu_time() = args.flag("cpu-time");
  args.done();
  if (threads > 0) eigennet::set_threads(threads);
  struct Config {
    const char* name;
    int64_t size, batch;
    std::vector<std::string> directions;
  };
  const std::vector<Config> configs = {
      {"infer_96_b32", 96, 32, {"infer"}},
      {"infer_96_b1", 96, 1, {"infer"}},
      {"infer_224_b1", 224, 1, {"infer"}},
      {"train_96_b32", 96, 32, {"fwd", "bwd_input", "bwd_weight", "fwd_stats", "bwd_bn"}}};
  bool known = config == "all";
  for (const Config& c : configs) known |= config == c.name;
  if (!known) args.fail("unknown --config '" + config + "'");

  const double peak = fma_peak_gflops(), bf16_peak = bf16_dot_peak_gflops();
  if (jsonl) {
    bench::print_line(bench::JsonLine()
                          .add("tool", "fma_peak")
                          .add("threads", eigennet::max_threads())
                          .add("gflops", peak)
                          .add("simd_width", eigennet::simd::width)
                          .add("bf16_dot_gflops", bf16_peak)
                          .str());
  } else {
    std::printf("eigennet 1x1 convolutions (pointwise engine vs Eigen GEMM reference) on MobileNetV2 alpha 1.0, %d "
                "threads\nFP32 FMA peak (register-only FMA loop, %d-float vectors, best of 7): %.1f GFLOP/s\n",
                eigennet::max_threads(), eigennet::simd::width, peak);
    if (bf16_peak > 0)
      std::printf(
          "BF16 dot-product peak (the same loop on vdpbf16ps, FP32 sums; unused by the engine): %.1f GFLOP/s, "
          "%.2fx the FP32 peak\n",
          bf16_peak, bf16_peak / peak);
    std::printf("%-13s %-22s %3s %-10s %9s %9s %8s %9s %6s %9s\n", "config", "pixels x in -> out", "n", "direction",
                "ours ms", "eigen ms", "speedup", "GFLOP/s", "%peak", "eigen GF/s");
  }
  for (const Config& c : configs) {
    if (config != "all" && config != c.name) continue;
    for (const std::string& d : c.directions) {
      double ours_total = 0, eigen_total = 0, flops_total = 0;
      for (const Shape& s : shapes_for(c.name, c.size, c.batch)) {
        const Row r = run(s, d, samples, min_sample_s);
        const double ours_s = r.ours.median_s, eigen_s = r.eigen.median_s;
        ours_total += s.layers * ours_s;
        eigen_total += s.layers * eigen_s;
        flops_total += s.layers * r.flops;
        if (jsonl) {
          bench::JsonLine j;
          j.add("tool", "eigennet").add("config", c.name).add("direction", d).add("layer", s.layer);
          j.add("pixels", s.pixels).add("in", s.in).add("out", s.out).add("layers", s.layers);
          j.add("ms", 1e3 * ours_s).add("ms_min", 1e3 * r.ours.min_s).add("eigen_ms", 1e3 * eigen_s);
          j.add("eigen_ms_min", 1e3 * r.eigen.min_s).add("gflops", r.flops / ours_s / 1e9);
          j.add("eigen_gflops", r.flops / eigen_s / 1e9).add("frac_peak", r.flops / ours_s / 1e9 / peak);
          bench::print_line(j.str());
        } else {
          char label[64];
          std::snprintf(label, sizeof label, "%lldx%lld -> %lld", static_cast<long long>(s.pixels),
                        static_cast<long long>(s.in), static_cast<long long>(s.out));
          std::printf("%-13s %-22s %3d %-10s %9.4f %9.4f %8.2f %9.1f %5.0f%% %9.1f\n", c.name, label, s.layers,
                      d.c_str(), 1e3 * ours_s, 1e3 * eigen_s, eigen_s / ours_s, r.flops / ours_s / 1e9,
                      100 * r.flops / ours_s / 1e9 / peak, r.flops / eigen_s / 1e9);
          std::fflush(stdout);
        }
      }
      if (jsonl) {
        bench::print_line(bench::JsonLine().add("tool", "eigennet").add("config", c.name).add("direction", d)
                              .add("layer", "all (sum n*ms)").add("ms", 1e3 * ours_total)
                              .add("eigen_ms", 1e3 * eigen_total).add("gflops", flops_total / ours_total / 1e9)
                              .add("frac_peak", flops_total / ours_total / 1e9 / peak).str());
      } else {
        std::printf("%-13s %-22s %3s %-10s %9.3f %9.3f %8.2f %9.1f %5.0f%% %9.1f\n", c.name, "all layers (sum n*ms)", "",
                    d.c_str(), 1e3 * ours_total, 1e3 * eigen_total, eigen_total / ours_total,
                    flops_total / ours_total / 1e9, 100 * flops_total / ours_total / 1e9 / peak,
                    flops_total / eigen_total / 1e9);
      }
    }
  }
  return 0;
}
