// Optional per-layer-type time profile. Off by default; when off, a scope costs one branch
// on a global flag. Turn on with eigennet::profiler().enable(true), read with report().
#pragma once

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>
#include <algorithm>

namespace eigennet {

class Profiler {
 public:
  void enable(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  void reset() { totals_.clear(); }
  void add(const char* category, double seconds) {
    auto& e = totals_[category];
    e.seconds += seconds;
    e.calls += 1;
  }
  struct Entry {
    double seconds = 0;
    long calls = 0;
  };
  const std::map<std::string, Entry>& totals() const { return totals_; }

  // A table sorted by time, with each category's share of the total; with `per` > 1 the times
  // and call counts are divided by it (the totals of `per` steps shown per step).
  std::string report(int per = 1) const {
    const double divide = std::max(per, 1);
    std::vector<std::pair<std::string, Entry>> rows(totals_.begin(), totals_.end());
    std::sort(rows.begin(), rows.end(),
              [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
    double total = 0;
    for (const auto& r : rows) total += r.second.seconds;
    std::string out;
    char line[160];
    std::snprintf(line, sizeof line, "%-32s %10s %8s %7s\n", "category", "ms", "calls", "share");
    out += line;
    for (const auto& r : rows) {
      std::snprintf(line, sizeof line, "%-32s %10.2f %8.4g %6.1f%%\n", r.first.c_str(),
                    r.second.seconds * 1e3 / divide, static_cast<double>(r.second.calls) / divide,
                    total > 0 ? 100 * r.second.seconds / total : 0.0);
      out += line;
    }
    std::snprintf(line, sizeof line, "%-32s %10.2f\n", "total", total * 1e3 / divide);
    return out + line;
  }

 private:
  bool enabled_ = false;
  std::map<std::string, Entry> totals_;
};

inline Profiler& profiler() {
  static Profiler instance;
  return instance;
}

// Times the enclosing scope under `category` when profiling is on.
class ProfileScope {
 public:
  explicit ProfileScope(const char* category) : category_(profiler().enabled() ? category : nullptr) {
    if (category_) start_ = std::chrono::steady_clock::now();
  }
  ~ProfileScope() {
    if (category_)
      profiler().add(category_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  const char* category_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace eigennet
