// bench_mobilenet: end-to-end MobileNetV2 with eigennet. Configurations:
//   train_a1.00_96_b32  one training step at 96x96, batch 32: forward (train mode), softmax
//                       cross-entropy over 7 classes, backward, Adam step
//   infer_a1.00_96_b32  one inference batch through the model compiled for inference
//                       (compile_for_inference: BatchNorm folded, blocks fused, weights packed)
//   train_a0.35_96_b32, infer_a0.35_96_b32   the same with width multiplier 0.35
//   infer_a1.00_96_b1   one 96x96 image (a face, a camera frame)
//   infer_a1.00_224_b1  one 224x224 image
// With --plain-inference, inference runs the model itself in Mode::inference instead (the path
// before compile_for_inference existed), for before/after comparisons in one build.
// The model is make_mobilenet_v2 (average pooling) followed by Dense(7), as an
// eigennet::Classifier with a head of just the Dense layer. bench_mobilenet_torch.py builds the
// same network in PyTorch; compare_mobilenet.py drives both through --serve.
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "eigennet/core/parallel.hpp"
#include "eigennet/core/profile.hpp"
#include "eigennet/inference/inference_net.hpp"
#include "eigennet/loss/softmax_cross_entropy.hpp"
#include "eigennet/models/classifier.hpp"
#include "eigennet/optim/adam.hpp"

namespace {

const char* usage =
    "usage: bench_mobilenet [options]\n"
    "  --config NAME|all       train_a1.00_96_b32, infer_a1.00_96_b32, train_a0.35_96_b32, infer_a0.35_96_b32,\n"
    "                          infer_a1.00_96_b1, infer_a1.00_224_b1, or all (all)\n"
    "  --plain-inference       inference through model.forward(Mode::inference), not the compiled net\n"
    "  --warmup N              untimed steps first (2)\n"
    "  --steps N               timed steps, median reported (5)\n"
    "  --threads N             OpenMP threads (default: OpenMP's default)\n"
    "  --profile               after timing, profile one step per configuration with eigennet::profiler()\n"
    "                          and print the per-layer-type breakdown\n"
    "  --profile-steps N       profile N steps instead and print the breakdown per step (1)\n"
    "  --jsonl                 one JSON object per line instead of text\n"
    "  --list-configs          print the configuration names and exit\n"
    "  --serve                 read commands from stdin, one JSON line per command:\n"
    "                            setup NAME WARMUP | run NAME STEPS | free NAME | quit\n"
    "Peak memory (VmHWM) is that of the whole process: run one configuration per process to read it.\n";

struct Config {
  std::string name;
  bool train = false;
  float alpha = 1.0f;
  int64_t size = 96, batch = 32;
};

const std::vector<Config>& configs() {
  static const std::vector<Config> all = {
      {"train_a1.00_96_b32", true, 1.0f, 96, 32},  {"infer_a1.00_96_b32", false, 1.0f, 96, 32},
      {"train_a0.35_96_b32", true, 0.35f, 96, 32}, {"infer_a0.35_96_b32", false, 0.35f, 96, 32},
      {"infer_a1.00_96_b1", false, 1.0f, 96, 1},   {"infer_a1.00_224_b1", false, 1.0f, 224, 1},
  };
  return all;
}

const Config& find_config(const std::string& name) {
  for (const Config& c : configs())
    if (c.name == name) return c;
  eigennet::fail("bench_mobilenet: unknown configuration '", name, "' (see --list-configs)");
}

constexpr int64_t kClasses = 7;

// Resident memory before any model exists (program, libraries, OpenMP), for reading the peak.
double base_rss_mib = -1;
bool plain_inference = false;

// A model, its optimizer and one fixed batch; step() is one timed unit of work.
class Workload {
 public:
  explicit Workload(const Config& c) : config_(c) {
    eigennet::MobileNetV2Config mc;
    mc.alpha = c.alpha;
    mc.height = mc.width = c.size;
    mc.pooling = eigennet::GlobalPooling::avg;
    eigennet::HeadConfig head;
    head.hidden_units = 0;  // just Dense(7) on the pooled features
    head.dropout = 0.0f;
    head.classes = kClasses;
    model_ = std::make_unique<eigennet::Classifier>(eigennet::make_mobilenet_v2(mc, 1), head, 2);
    if (c.train) optimizer_ = std::make_unique<eigennet::Adam>(model_->parameters());
    else if (!plain_inference) net_ = std::make_unique<eigennet::InferenceNet>(eigennet::compile_for_inference(*model_));
    images_ = eigennet::Tensor(eigennet::Shape{c.batch, c.size, c.size, 3});
    eigennet::Rng rng(3);
    for (int64_t i = 0; i < images_.size(); ++i) images_[i] = rng.uniform(-1.0f, 1.0f);
    for (int64_t i = 0; i < c.batch; ++i) labels_.push_back(static_cast<int32_t>(rng.below(kClasses)));
  }

  void step() {
    if (config_.train) {
      optimizer_->zero_grad();
      const eigennet::Tensor& logits = model_->forward(images_, eigennet::Mode::train);
      last_loss_ = loss_.forward(logits, labels_);
      model_->backward(loss_.gradient());
      optimizer_->step();
    } else {
      const eigennet::Tensor& logits = net_ ? net_->forward(images_) : model_->forward(images_, eigennet::Mode::inference);
      last_loss_ = logits[0];
    }
  }
  // Seconds of each of `steps` consecutive steps.
  std::vector<double> run(int steps) {
    std::vector<double> seconds;
    cpu_seconds_.clear();
    for (int i = 0; i < steps; ++i) {
      const auto start = bench::Clock::now();
      const double cpu_start = bench::thread_cpu_seconds();
      step();
      cpu_seconds_.push_back(bench::thread_cpu_seconds() - cpu_start);
      seconds.push_back(bench::seconds_since(start));
    }
    return seconds;
  }
  // CPU time of the calling thread in each step of the latest run(): with one thread, the
  // step's work without the time other processes took from it.
  const std::vector<double>& cpu_seconds() const { return cpu_seconds_; }
  int64_t trainable_parameters() { return eigennet::count_elements(model_->parameters(), eigennet::ParameterCount::weights); }
  const Config& config() const { return config_; }
  float last_loss() const { return last_loss_; }

 private:
  Config config_;
  std::unique_ptr<eigennet::Classifier> model_;
  std::unique_ptr<eigennet::Adam> optimizer_;
  std::unique_ptr<eigennet::InferenceNet> net_;  // inference configurations, unless --plain-inference
  eigennet::SoftmaxCrossEntropy loss_;
  eigennet::Tensor images_;
  std::vector<int32_t> labels_;
  float last_loss_ = 0;
  std::vector<double> cpu_seconds_;
};

std::string result_json(const Workload& w, const std::vector<double>& seconds, int64_t params) {
  std::vector<double> ms;
  for (double s : seconds) ms.push_back(1e3 * s);
  const double median_ms = bench::median(ms);
  bench::JsonLine j;
  j.add("tool", "eigennet").add("config", w.config().name).add("train", w.config().train);
  j.add("inference_path", w.config().train ? "-" : plain_inference ? "plain model" : "compiled");
  j.add("alpha", static_cast<double>(w.config().alpha)).add("size", w.config().size).add("batch", w.config().batch);
  j.add("threads", eigennet::max_threads()).add("params", params);
  j.add("ms", median_ms).add("ms_min", *std::min_element(ms.begin(), ms.end())).add("times_ms", ms);
  std::vector<double> cpu_ms;
  for (double c : w.cpu_seconds()) cpu_ms.push_back(1e3 * c);
  j.add("cpu_times_ms", cpu_ms);
  j.add("images_per_s", static_cast<double>(w.config().batch) / (median_ms / 1e3));
  j.add("loss_or_logit", static_cast<double>(w.last_loss()));
  j.add("peak_rss_mib", bench::peak_rss_mib()).add("base_rss_mib", base_rss_mib);
  return j.str();
}

void print_profile(Workload& w, int steps) {
  eigennet::profiler().reset();
  eigennet::profiler().enable(true);
  const auto start = bench::Clock::now();
  for (int s = 0; s < steps; ++s) w.step();
  const double wall = bench::seconds_since(start) / steps;
  eigennet::profiler().enable(false);
  std::printf("profile of %d %s of %s, per step (wall %.1f ms; scopes that nest inside others count twice, "
              "work outside any scope, e.g. the loss and Adam, is not listed)\n%s\n",
              steps, w.config().train ? "training step(s)" : "inference batch(es)", w.config().name.c_str(),
              1e3 * wall, eigennet::profiler().report(steps).c_str());
  eigennet::profiler().reset();
  std::fflush(stdout);
}

int serve() {
  std::map<std::string, std::unique_ptr<Workload>> loaded;
  for (std::string line; std::getline(std::cin, line);) {
    const std::vector<std::string> words = bench::split_words(line);
    if (words.empty()) continue;
    try {
      if (words[0] == "quit") break;
      if (words.size() != 3 && !(words.size() == 2 && words[0] == "free")) {
        eigennet::fail("expected 'setup NAME WARMUP', 'run NAME STEPS' or 'free NAME'");
      }
      const std::string& name = words[1];
      if (words[0] == "setup") {
        const auto start = bench::Clock::now();
        auto w = std::make_unique<Workload>(find_config(name));
        w->run(std::stoi(words[2]));
        const int64_t params = w->trainable_parameters();
        loaded[name] = std::move(w);
        bench::print_line(bench::JsonLine().add("setup", name).add("params", params)
                              .add("seconds", bench::seconds_since(start)).str());
      } else if (words[0] == "run") {
        auto it = loaded.find(name);
        EIGENNET_CHECK(it != loaded.end(), "configuration '", name, "' is not set up");
        const std::vector<double> seconds = it->second->run(std::stoi(words[2]));
        bench::print_line(result_json(*it->second, seconds, it->second->trainable_parameters()));
      } else if (words[0] == "free") {
        loaded.erase(name);
        bench::print_line(bench::JsonLine().add("freed", name).str());
      } else {
        eigennet::fail("unknown command '", words[0], "'");
      }
    } catch (const std::exception& e) {
      bench::print_line(bench::JsonLine().add("error", e.what()).str());
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  base_rss_mib = bench::current_rss_mib();
  bench::Args args(argc, argv, usage);
  const std::string config = args.get("config", "all");
  const int warmup = static_cast<int>(args.number("warmup", 2));
  const int steps = static_cast<int>(args.number("steps", 5));
  const int threads = static_cast<int>(args.number("threads", 0));
  const bool profile = args.flag("profile"), jsonl = args.flag("jsonl");
  const int profile_steps = static_cast<int>(args.number("profile-steps", 1));
  const bool list = args.flag("list-configs"), serve_mode = args.flag("serve");
  plain_inference = args.flag("plain-inference");
  args.done();
  if (steps < 1 || warmup < 0 || profile_steps < 1)
    args.fail("--steps and --profile-steps must be >= 1 and --warmup >= 0");
  if (threads > 0) eigennet::set_threads(threads);

  try {
    if (serve_mode) return serve();
    if (list) {
      for (const Config& c : configs()) std::printf("%s\n", c.name.c_str());
      return 0;
    }
    std::vector<Config> selected;
    if (config == "all") selected = configs();
    else selected.push_back(find_config(config));
    if (!jsonl)
      std::printf("eigennet MobileNetV2 + Dense(%lld), %d threads, %d warm-up + %d timed steps\n%-20s %10s %9s %9s "
                  "%10s %11s\n",
                  static_cast<long long>(kClasses), eigennet::max_threads(), warmup, steps, "config", "params", "ms",
                  "ms min", "images/s", "peak MiB*");
    for (const Config& c : selected) {
      Workload w(c);
      w.run(warmup);
      const std::vector<double> seconds = w.run(steps);
      const int64_t params = w.trainable_parameters();
      if (jsonl) {
        bench::print_line(result_json(w, seconds, params));
      } else {
        const double med = bench::median(seconds);
        std::printf("%-20s %10lld %9.1f %9.1f %10.1f %11.0f\n", c.name.c_str(), static_cast<long long>(params),
                    1e3 * med, 1e3 * *std::min_element(seconds.begin(), seconds.end()),
                    static_cast<double>(c.batch) / med, bench::peak_rss_mib());
        std::fflush(stdout);
      }
      if (profile) print_profile(w, profile_steps);
    }
    if (!jsonl && selected.size() > 1)
      std::printf("* peak resident memory of this process so far (covers all configurations above)\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_mobilenet: %s\n", e.what());
    return 1;
  }
  return 0;
}
