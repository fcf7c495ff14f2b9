// Shared helpers for the benchmark programs: timing (warm-up, calibrated inner loop, median),
// MobileNetV2's distinct depthwise shapes, a one-line JSON writer, peak memory, command lines.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "eigennet/core/geometry.hpp"
#include "eigennet/models/mobilenet_v2.hpp"

namespace bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// CPU time consumed so far by the calling thread (excludes time other processes took from it).
inline double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

inline double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Timing {
  double median_s = 0, min_s = 0;  // per call
  int samples = 0, calls_per_sample = 0;
};

// When set (--cpu-time, with one thread), time_calls measures the calling thread's CPU time
// instead of wall time: on a busy machine that excludes the time other processes take.
inline bool& use_cpu_time() {
  static bool flag = false;
  return flag;
}
inline double timer_seconds() {
  return use_cpu_time() ? thread_cpu_seconds()
                        : std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

// Times fn(): `warmup` untimed calls, then a calls-per-sample count chosen so that one sample
// lasts at least min_sample_s (short kernels would otherwise be dominated by clock
// resolution), then `samples` samples. Reports the median and the minimum time per call.
inline Timing time_calls(const std::function<void()>& fn, int samples, double min_sample_s, int warmup = 2) {
  for (int i = 0; i < warmup; ++i) fn();
  int calls = 1;
  for (;;) {
    const double start = timer_seconds();
    for (int i = 0; i < calls; ++i) fn();
    const double t = (timer_seconds() - start);
    if (t >= min_sample_s || calls >= (1 << 20)) break;
    const double grow = t > 0 ? 1.2 * min_sample_s / t : 16.0;
    calls = std::max(calls * 2, static_cast<int>(std::ceil(calls * std::min(grow, 64.0))));
  }
  std::vector<double> per_call;
  for (int s = 0; s < samples; ++s) {
    const double start = timer_seconds();
    for (int i = 0; i < calls; ++i) fn();
    per_call.push_back((timer_seconds() - start) / calls);
  }
  Timing t;
  t.median_s = median(per_call);
  t.min_s = *std::min_element(per_call.begin(), per_call.end());
  t.samples = samples;
  t.calls_per_sample = calls;
  return t;
}

// ---- MobileNetV2's depthwise layers ------------------------------------------------------

struct DepthwiseShape {
  std::string config;  // "train" (96x96, batch 32) or "infer" (224x224, batch 1)
  int64_t batch = 0, height = 0, width = 0, channels = 0, stride = 1;
  int layers = 0;       // how many depthwise layers of the model have this shape
  std::string first;    // name of the first such layer

  eigennet::WindowGeometry geometry() const {
    return eigennet::make_window_geometry(batch, height, width, channels, channels, 3, 3, stride, stride,
                                          eigennet::Padding::same, "depthwise benchmark");
  }
  std::string label() const {
    std::ostringstream s;
    s << config << " " << batch << "x" << height << "x" << width << "x" << channels << " s" << stride;
    return s.str();
  }
};

// The distinct depthwise layers of MobileNetV2 (alpha 1.0) in model order: 96x96 at batch 32
// (training) and 224x224 at batch 1 (inference). Derived from the paper's table
// (eigennet::mobilenet_v2_table) with the model's channel rounding and TF-SAME output sizes, so
// the list does not depend on how the model file groups its layers.
inline std::vector<DepthwiseShape> mobilenet_v2_depthwise_shapes(const std::string& which = "all") {
  std::vector<DepthwiseShape> shapes;
  struct Setting {
    const char* config;
    int64_t size, batch;
  };
  const double alpha = 1.0;
  for (const Setting& s : {Setting{"train", 96, 32}, Setting{"infer", 224, 1}}) {
    if (which != "all" && which != s.config) continue;
    int64_t size = (s.size + 1) / 2;  // Conv1: 3x3 stride 2, SAME
    int64_t channels = eigennet::make_divisible(32.0 * alpha, 8);
    int block_id = 0;
    for (const eigennet::InvertedResidualSetting& row : eigennet::mobilenet_v2_table) {
      const int64_t out_channels =
          eigennet::make_divisible(static_cast<double>(static_cast<int64_t>(row.channels * alpha)), 8);
      for (int64_t i = 0; i < row.repeats; ++i, ++block_id) {
        const int64_t stride = i == 0 ? row.stride : 1, dw_channels = channels * row.expansion;
        auto same = std::find_if(shapes.begin(), shapes.end(), [&](const DepthwiseShape& d) {
          return d.config == s.config && d.height == size && d.channels == dw_channels && d.stride == stride;
        });
        if (same != shapes.end()) {
          ++same->layers;
        } else {
          const std::string name =
              block_id == 0 ? "expanded_conv_depthwise" : "block_" + std::to_string(block_id) + "_depthwise";
          shapes.push_back({s.config, s.batch, size, size, dw_channels, stride, 1, name});
        }
        size = (size + stride - 1) / stride;
        channels = out_channels;
      }
    }
  }
  return shapes;
}

// ---- Output -----------------------------------------------------------------------------

// One JSON object on one line, keys in insertion order.
class JsonLine {
 public:
  JsonLine& add(const std::string& key, const std::string& value) {
    std::string quoted = "\"";
    for (char ch : value) {
      if (ch == '"' || ch == '\\') quoted += '\\';
      quoted += ch;
    }
    return raw(key, quoted + "\"");
  }
  JsonLine& add(const std::string& key, const char* value) { return add(key, std::string(value)); }
  JsonLine& add(const std::string& key, int64_t value) { return raw(key, std::to_string(value)); }
  JsonLine& add(const std::string& key, int value) { return raw(key, std::to_string(value)); }
  JsonLine& add(const std::string& key, bool value) { return raw(key, value ? "true" : "false"); }
  JsonLine& add(const std::string& key, double value) {
    if (!std::isfinite(value)) return raw(key, "null");
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", value);
    return raw(key, buf);
  }
  JsonLine& add(const std::string& key, const std::vector<double>& values) {
    std::string s = "[";
    for (size_t i = 0; i < values.size(); ++i) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%s%.6g", i ? "," : "", values[i]);
      s += buf;
    }
    return raw(key, s + "]");
  }
  JsonLine& null(const std::string& key) { return raw(key, "null"); }
  std::string str() const { return "{" + body_ + "}"; }

 private:
  JsonLine& raw(const std::string& key, const std::string& value) {
    if (!body_.empty()) body_ += ", ";
    body_ += "\"" + key + "\": " + value;
    return *this;
  }
  std::string body_;
};

inline void print_line(const std::string& line) {
  std::fputs(line.c_str(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

// A memory figure of this process from /proc/self/status in MiB ("VmHWM:" = peak resident
// memory, "VmRSS:" = current), or -1 when unavailable.
inline double status_mib(const char* field) {
  std::ifstream status("/proc/self/status");
  const std::string key = field;
  std::string line;
  while (std::getline(status, line))
    if (line.rfind(key, 0) == 0) return std::atof(line.c_str() + key.size()) / 1024.0;
  return -1;
}
inline double peak_rss_mib() { return status_mib("VmHWM:"); }
inline double current_rss_mib() { return status_mib("VmRSS:"); }

// Size in bytes of a cache level of CPU 0 from sysfs (e.g. "2048K"), or `fallback`.
inline int64_t cache_bytes(int index, int64_t fallback) {
  std::ifstream f("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
  std::string text;
  if (!(f >> text) || text.empty()) return fallback;
  int64_t value = std::atoll(text.c_str());
  const char unit = text.back();
  if (unit == 'K') value <<= 10;
  else if (unit == 'M') value <<= 20;
  return value > 0 ? value : fallback;
}

// ---- Command line -----------------------------------------------------------------------

// --key value / --key=value / --flag arguments.
class Args {
 public:
  Args(int argc, char** argv, const std::string& usage) : usage_(usage) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "-h" || a == "--help") {
        std::printf("%s", usage.c_str());
        std::exit(0);
      }
      if (a.rfind("--", 0) != 0) fail("unexpected argument '" + a + "'");
      a = a.substr(2);
      const size_t eq = a.find('=');
      if (eq != std::string::npos) {
        values_[a.substr(0, eq)] = a.substr(eq + 1);
      } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
        values_[a] = argv[++i];
      } else {
        values_[a] = "";
      }
    }
  }
  bool flag(const std::string& key) { return take(key) != nullptr; }
  std::string get(const std::string& key, const std::string& fallback) {
    const std::string* v = take(key);
    return v ? *v : fallback;
  }
  double number(const std::string& key, double fallback) {
    const std::string* v = take(key);
    if (!v) return fallback;
    char* end = nullptr;
    const double d = std::strtod(v->c_str(), &end);
    if (v->empty() || *end) fail("--" + key + " needs a number, got '" + *v + "'");
    return d;
  }
  // Call after reading every option: rejects the ones nobody asked for.
  void done() {
    for (const auto& kv : values_)
      if (!used_.count(kv.first)) fail("unknown option --" + kv.first);
  }
  [[noreturn]] void fail(const std::string& message) const {
    std::fprintf(stderr, "error: %s\n%s", message.c_str(), usage_.c_str());
    std::exit(2);
  }

 private:
  const std::string* take(const std::string& key) {
    used_[key] = true;
    auto it = values_.find(key);
    return it == values_.end() ? nullptr : &it->second;
  }
  std::string usage_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> used_;
};

// Splits a command line read in --serve mode into words.
inline std::vector<std::string> split_words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

}  // namespace bench
