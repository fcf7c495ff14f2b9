// Parameter: a named tensor of the model with its gradient. Names follow Keras
// ("block_1_expand/kernel", "bn_Conv1/moving_mean") so that weight files map one to one.
//
// Two kinds: weights the optimizer updates (kernel, bias, gamma, beta) and statistics that the
// forward pass maintains (BatchNorm's moving mean and variance; Keras counts them as
// non-trainable parameters). A weight can be frozen: it then gets no gradient work and no update.
#pragma once

#include <string>
#include <vector>

#include "tensor.hpp"

namespace eigennet {

enum class ParameterKind { weight, statistic };

struct Parameter {
  std::string name;
  ParameterKind kind = ParameterKind::weight;
  Tensor value;
  Tensor grad;  // same shape as value for weights; empty for statistics
  bool frozen = false;

  bool trainable() const { return kind == ParameterKind::weight && !frozen; }

  static Parameter weight(std::string name, const Shape& shape) {
    Parameter p;
    p.name = std::move(name);
    p.value = Tensor(shape);
    p.grad = Tensor(shape);
    return p;
  }
  static Parameter statistic(std::string name, const Shape& shape) {
    Parameter p;
    p.name = std::move(name);
    p.kind = ParameterKind::statistic;
    p.value = Tensor(shape);
    return p;
  }
};

using ParameterList = std::vector<Parameter*>;

// Which parameters count_elements counts: all of them; the weights (what Keras reports as
// "trainable params" of an unfrozen model, without BatchNorm's moving statistics); or only the
// weights the optimizer updates now (frozen ones left out).
enum class ParameterCount { all, weights, trainable };

inline int64_t count_elements(const ParameterList& params, ParameterCount which = ParameterCount::all) {
  int64_t n = 0;
  for (const Parameter* p : params) {
    const bool counted = which == ParameterCount::all || (which == ParameterCount::weights && p->kind == ParameterKind::weight) ||
                         (which == ParameterCount::trainable && p->trainable());
    if (counted) n += p->value.size();
  }
  return n;
}

inline void zero_grad(const ParameterList& params) {
  for (Parameter* p : params)
    if (p->kind == ParameterKind::weight) p->grad.zero();
}

inline void set_frozen(const ParameterList& params, bool frozen) {
  for (Parameter* p : params)
    if (p->kind == ParameterKind::weight) p->frozen = frozen;
}

}  // namespace eigennet
