// Learning-rate schedules as a function of the global step: constant, or linear warmup followed
// by a cosine decay to min_lr.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "../core/error.hpp"

namespace eigennet {

struct LearningRateSchedule {
  enum class Kind { constant, cosine };
  Kind kind = Kind::constant;
  float base = 1e-3f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  float min_lr = 0.0f;

  float at(int64_t step) const {
    if (warmup_steps > 0 && step < warmup_steps)
      return base * static_cast<float>(step + 1) / static_cast<float>(warmup_steps);
    if (kind == Kind::constant) return base;
    const int64_t decay_steps = std::max<int64_t>(1, total_steps - warmup_steps);
    const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps));
    return static_cast<float>(min_lr + (base - min_lr) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress)));
  }
};

inline LearningRateSchedule::Kind parse_schedule_kind(const std::string& name) {
  if (name == "constant") return LearningRateSchedule::Kind::constant;
  if (name == "cosine") return LearningRateSchedule::Kind::cosine;
  fail("unknown learning-rate schedule '", name, "' (expected constant or cosine)");
}

}  // namespace eigennet
