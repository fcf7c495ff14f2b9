// bench_depthwise_xnnpack: the forward shapes of bench_depthwise through XNNPACK's depthwise
// convolution (a grouped convolution with groups = C, one input and one output channel per
// group), single-threaded and on a 2-thread pthreadpool, with the same GFLOP/s and byte
// counts. Every shape is first checked against eigennet's depthwise_conv2d_forward on the same
// data; the maximum absolute difference is reported and must be ~1e-5.
//
// Written for the XNNPACK API Debian 12 ships (create / setup / run operators): the kernel is
// passed in HWC layout with XNN_FLAG_DEPTHWISE_CONVOLUTION, which is exactly Keras'
// [kh, kw, C, 1] layout that eigennet uses, and TF-SAME padding as explicit padding values
// (top/left = floor(total / 2), the rest bottom/right), taken from eigennet's geometry.
#include <pthreadpool.h>
#include <xnnpack.h>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "eigennet/core/rng.hpp"
#include "eigennet/kernels/depthwise_conv2d.hpp"

namespace {

const char* usage =
    "usage: bench_depthwise_xnnpack [options]\n"
    "  --config train|infer|all        shapes (all)\n"
    "  --samples N                     timed samples per measurement, median reported (7)\n"
    "  --min-sample-ms X               calls per sample chosen so one sample lasts >= X ms (2)\n"
    "  --tolerance X                   largest accepted |xnnpack - eigennet| (1e-4)\n"
    "  --jsonl                         one JSON object per line instead of a table\n"
    "  --serve                         read commands from stdin, one JSON line per command:\n"
    "                                    run BATCH H W C STRIDE THREADS | quit\n";

void check(xnn_status status, const char* what) {
  if (status != xnn_status_success) eigennet::fail("XNNPACK: ", what, " failed with status ", static_cast<int>(status));
}

struct Result {
  bench::DepthwiseShape shape;
  int threads = 1;
  bench::Timing timing;
  double flops = 0, bytes = 0, max_abs_err = 0, max_abs_ref = 0;
};

class XnnDepthwise {
 public:
  explicit XnnDepthwise(const bench::DepthwiseShape& shape) : shape_(shape), g_(shape.geometry()) {
    const size_t in_size = static_cast<size_t>(g_.in_pixels() * g_.in_c);
    const size_t out_size = static_cast<size_t>(g_.out_pixels() * g_.in_c);
    input_.resize(in_size + XNN_EXTRA_BYTES / sizeof(float));  // XNNPACK may read a little past the end
    output_.resize(out_size);
    reference_.resize(out_size);
    weight_.resize(static_cast<size_t>(9 * g_.in_c));
    bias_.assign(static_cast<size_t>(g_.in_c), 0.0f);
    eigennet::Rng rng(1);
    for (size_t i = 0; i < in_size; ++i) input_[i] = rng.uniform(-1.0f, 1.0f);
    for (float& w : weight_) w = rng.uniform(-1.0f, 1.0f);

    const int64_t total_h = std::max<int64_t>((g_.out_h - 1) * g_.stride_h + 3 - g_.in_h, 0);
    const int64_t total_w = std::max<int64_t>((g_.out_w - 1) * g_.stride_w + 3 - g_.in_w, 0);
    const auto u = [](int64_t v) { return static_cast<uint32_t>(v); };
    const size_t C = static_cast<size_t>(g_.in_c);
    check(xnn_create_convolution2d_nhwc_f32(u(g_.pad_top), u(total_w - g_.pad_left), u(total_h - g_.pad_top),
                                            u(g_.pad_left), 3, 3, u(g_.stride_h), u(g_.stride_w), 1, 1,
                                            u(g_.in_c), /*group_input_channels=*/1, /*group_output_channels=*/1,
                                            /*input_channel_stride=*/C, /*output_channel_stride=*/C, weight_.data(),
                                            bias_.data(), -std::numeric_limits<float>::infinity(),
                                            std::numeric_limits<float>::infinity(), XNN_FLAG_DEPTHWISE_CONVOLUTION,
                                            &op_),
          "xnn_create_convolution2d_nhwc_f32");
    eigennet::kernels::depthwise_conv2d_forward(reference_.data(), input_.data(), weight_.data(), nullptr, g_);
  }
  ~XnnDepthwise() {
    if (op_) xnn_delete_operator(op_);
  }
  XnnDepthwise(const XnnDepthwise&) = delete;
  XnnDepthwise& operator=(const XnnDepthwise&) = delete;

  Result run(pthreadpool_t pool, int threads, int samples, double min_sample_s) {
    check(xnn_setup_convolution2d_nhwc_f32(op_, static_cast<size_t>(g_.batch), static_cast<size_t>(g_.in_h),
                                           static_cast<size_t>(g_.in_w), input_.data(), output_.data(), pool),
          "xnn_setup_convolution2d_nhwc_f32");
    Result r;
    r.shape = shape_;
    r.threads = threads;
    std::fill(output_.begin(), output_.end(), NAN);
    check(xnn_run_operator(op_, pool), "xnn_run_operator");
    for (size_t i = 0; i < output_.size(); ++i) {
      const double err = std::fabs(static_cast<double>(output_[i]) - reference_[i]);
      r.max_abs_err = std::isnan(err) ? INFINITY : std::max(r.max_abs_err, err);
      r.max_abs_ref = std::max(r.max_abs_ref, std::fabs(static_cast<double>(reference_[i])));
    }
    r.flops = 18.0 * static_cast<double>(output_.size());
    r.bytes = 4.0 * static_cast<double>(output_.size() + g_.in_pixels() * g_.in_c);
    r.timing = bench::time_calls([&] { xnn_run_operator(op_, pool); }, samples, min_sample_s);
    return r;
  }

 private:
  bench::DepthwiseShape shape_;
  eigennet::WindowGeometry g_;
  std::vector<float> input_, output_, reference_, weight_, bias_;
  xnn_operator_t op_ = nullptr;
};

std::string result_json(const Result& r) {
  const eigennet::WindowGeometry g = r.shape.geometry();
  const double s = r.timing.median_s;
  bench::JsonLine j;
  j.add("tool", "xnnpack").add("config", r.shape.config).add("batch", r.shape.batch).add("h", r.shape.height);
  j.add("w", r.shape.width).add("c", r.shape.channels).add("stride", r.shape.stride).add("out_h", g.out_h);
  j.add("out_w", g.out_w).add("layers", r.shape.layers).add("direction", "fwd").add("threads", r.threads);
  j.add("ms", 1e3 * s).add("ms_min", 1e3 * r.timing.min_s).add("samples", r.timing.samples);
  j.add("calls_per_sample", r.timing.calls_per_sample);
  j.add("gflops", r.flops / s / 1e9).add("bytes", r.bytes).add("gbs", r.bytes / s / 1e9);
  j.add("max_abs_err", r.max_abs_err).add("max_abs_ref", r.max_abs_ref);
  return j.str();
}

// A pthreadpool for one measurement: none for 1 thread (XNNPACK then runs on the calling
// thread). Destroying it afterwards joins the workers, which would otherwise keep spin-waiting
// for a while and steal a core from whatever is measured next.
class Pool {
 public:
  explicit Pool(int threads) {
    EIGENNET_CHECK(threads >= 1, "bench_depthwise_xnnpack: threads must be >= 1, got ", threads);
    if (threads > 1) pool_ = pthreadpool_create(static_cast<size_t>(threads));
    EIGENNET_CHECK(threads == 1 || pool_ != nullptr, "bench_depthwise_xnnpack: pthreadpool_create failed");
  }
  ~Pool() {
    if (pool_) pthreadpool_destroy(pool_);
  }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  pthreadpool_t get() const { return pool_; }

 private:
  pthreadpool_t pool_ = nullptr;
};

int serve(int samples, double min_sample_s) {
  for (std::string line; std::getline(std::cin, line);) {
    const std::vector<std::string> words = bench::split_words(line);
    if (words.empty()) continue;
    try {
      if (words[0] == "quit") break;
      if (words[0] == "run" && words.size() == 7) {
        bench::DepthwiseShape s;
        s.config = "custom";
        s.batch = std::stoll(words[1]);
        s.height = std::stoll(words[2]);
        s.width = std::stoll(words[3]);
        s.channels = std::stoll(words[4]);
        s.stride = std::stoll(words[5]);
        s.layers = 1;
        const int threads = std::stoi(words[6]);
        XnnDepthwise op(s);
        Pool pool(threads);
        bench::print_line(result_json(op.run(pool.get(), threads, samples, min_sample_s)));
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
  const int samples = static_cast<int>(args.number("samples", 7));
  const double min_sample_s = args.number("min-sample-ms", 2) / 1e3;
  const double tolerance = args.number("tolerance", 1e-4);
  const bool jsonl = args.flag("jsonl"), serve_mode = args.flag("serve");
  args.done();
  if (config != "all" && config != "train" && config != "infer") args.fail("--config must be train, infer or all");
  if (samples < 1) args.fail("--samples must be at least 1");

  try {
    check(xnn_initialize(nullptr), "xnn_initialize");
    if (serve_mode) return serve(samples, min_sample_s);
    if (!jsonl) {
      std::printf("XNNPACK depthwise 3x3 forward on MobileNetV2 alpha 1.0 shapes (checked against eigennet)\n");
      std::printf("%-28s %3s %7s %9s %9s %8s %8s %11s\n", "shape (NxHxWxC stride)", "n", "threads", "ms", "ms min",
                  "GFLOP/s", "GB/s", "max|err|");
    }
    int failures = 0;
    for (const auto& s : bench::mobilenet_v2_depthwise_shapes(config)) {
      XnnDepthwise op(s);
      for (int threads : {1, 2}) {
        Pool pool(threads);
        const Result r = op.run(pool.get(), threads, samples, min_sample_s);
        if (!(r.max_abs_err <= tolerance)) {
          ++failures;
          std::fprintf(stderr, "bench_depthwise_xnnpack: %s: XNNPACK and eigennet differ by %g (> %g)\n",
                       s.label().c_str(), r.max_abs_err, tolerance);
        }
        if (jsonl) {
          bench::print_line(result_json(r));
        } else {
          const double t = r.timing.median_s;
          std::printf("%-28s %3d %7d %9.4f %9.4f %8.1f %8.1f %11.2e\n", s.label().c_str(), s.layers, threads, 1e3 * t,
                      1e3 * r.timing.min_s, r.flops / t / 1e9, r.bytes / t / 1e9, r.max_abs_err);
          std::fflush(stdout);
        }
      }
    }
    xnn_deinitialize();
    if (failures) {
      std::fprintf(stderr, "bench_depthwise_xnnpack: %d measurements disagree with eigennet\n", failures);
      return 3;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_depthwise_xnnpack: %s\n", e.what());
    return 1;
  }
  return 0;
}
