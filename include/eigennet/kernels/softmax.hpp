// Softmax and the fused softmax cross-entropy, computed with log-sum-exp in double so that
// large logits neither overflow nor lose the small probabilities.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../core/error.hpp"

namespace eigennet::kernels {

// probs[n, :] = softmax(logits[n, :]).
inline void softmax_forward(float* probs, const float* logits, int64_t batch, int64_t classes) {
  for (int64_t n = 0; n < batch; ++n) {
    const float* z = logits + n * classes;
    float* p = probs + n * classes;
    const float zmax = *std::max_element(z, z + classes);
    double sum = 0;
    for (int64_t k = 0; k < classes; ++k) sum += std::exp(static_cast<double>(z[k]) - zmax);
    for (int64_t k = 0; k < classes; ++k) p[k] = static_cast<float>(std::exp(static_cast<double>(z[k]) - zmax) / sum);
  }
}

// dlogits = p * (dp - sum(dp * p)) per row (the softmax Jacobian-vector product).
inline void softmax_backward(float* dlogits, const float* dprobs, const float* probs, int64_t batch, int64_t classes) {
  for (int64_t n = 0; n < batch; ++n) {
    const float* p = probs + n * classes;
    const float* dp = dprobs + n * classes;
    double dot = 0;
    for (int64_t k = 0; k < classes; ++k) dot += static_cast<double>(dp[k]) * p[k];
    for (int64_t k = 0; k < classes; ++k) dlogits[n * classes + k] = static_cast<float>(p[k] * (dp[k] - dot));
  }
}

// Mean softmax cross-entropy of logits[N, K] against integer labels, with optional class
// weights w[K] and label smoothing e, following PyTorch's definition:
//   loss_n = (1 - e) * w[y_n] * (-log p[n, y_n]) + (e / K) * sum_k w[k] * (-log p[n, k])
//   loss   = sum_n loss_n / sum_n w[y_n]          (w = 1 gives the plain batch mean)
// Writes dlogits = d loss / d logits when dlogits is not null. Returns the loss.
inline double softmax_cross_entropy(float* dlogits, const float* logits, const int32_t* labels, int64_t batch,
                                    int64_t classes, const float* class_weights, float label_smoothing) {
  EIGENNET_CHECK(batch > 0 && classes > 0, "softmax_cross_entropy: empty input (batch ", batch, ", classes ", classes, ")");
  double weight_total = 0;
  for (int64_t n = 0; n < batch; ++n) {
    EIGENNET_CHECK(labels[n] >= 0 && labels[n] < classes, "softmax_cross_entropy: label ", labels[n], " of sample ", n,
                   " is outside [0, ", classes, ")");
    weight_total += class_weights ? class_weights[labels[n]] : 1.0;
  }
  EIGENNET_CHECK(weight_total > 0, "softmax_cross_entropy: the class weights of this batch sum to zero");
  double weight_sum_all = 0;  // sum_k w[k]
  for (int64_t k = 0; k < classes; ++k) weight_sum_all += class_weights ? class_weights[k] : 1.0;
  const double e = label_smoothing, smooth = e / static_cast<double>(classes);
  double loss = 0;
  for (int64_t n = 0; n < batch; ++n) {
    const float* z = logits + n * classes;
    const double zmax = *std::max_element(z, z + classes);
    double sum = 0;
    for (int64_t k = 0; k < classes; ++k) sum += std::exp(z[k] - zmax);
    const double log_sum = std::log(sum) + zmax;
    const int32_t y = labels[n];
    const double w_y = class_weights ? class_weights[y] : 1.0;
    double smooth_term = 0;
    for (int64_t k = 0; k < classes; ++k) smooth_term += (class_weights ? class_weights[k] : 1.0) * (log_sum - z[k]);
    loss += (1 - e) * w_y * (log_sum - z[y]) + smooth * smooth_term;
    if (dlogits) {
      // d/dz_k: (1-e) w_y (p_k - [k=y]) + smooth * (W p_k - w_k), with W = sum_k w_k.
      float* d = dlogits + n * classes;
      for (int64_t k = 0; k < classes; ++k) {
        const double p = std::exp(z[k] - log_sum);
        const double w_k = class_weights ? class_weights[k] : 1.0;
        const double g = (1 - e) * w_y * (p - (k == y ? 1.0 : 0.0)) + smooth * (weight_sum_all * p - w_k);
        d[k] = static_cast<float>(g / weight_total);
      }
    }
  }
  return loss / weight_total;
}

// The cross-entropy of a mixed batch (data/mixing.hpp: mixup, cutmix), each term the mean above:
//   loss = weight * CE(z, labels) + (1 - weight) * CE(z, mixed_labels)
// With mixed_labels null it is CE(z, labels). `scratch` [batch x classes] holds the second term's
// gradient when dlogits is not null.
inline double mixed_softmax_cross_entropy(float* dlogits, float* scratch, const float* logits, const int32_t* labels,
                                          const int32_t* mixed_labels, double weight, int64_t batch, int64_t classes,
                                          const float* class_weights, float label_smoothing) {
  if (mixed_labels == nullptr)
    return softmax_cross_entropy(dlogits, logits, labels, batch, classes, class_weights, label_smoothing);
  EIGENNET_CHECK(weight >= 0 && weight <= 1, "mixed cross-entropy: the weight of the own labels must be in [0, 1], got ",
                 weight);
  EIGENNET_CHECK(dlogits == nullptr || scratch != nullptr, "mixed cross-entropy: no scratch for the gradient");
  const double own = softmax_cross_entropy(dlogits, logits, labels, batch, classes, class_weights, label_smoothing);
  const double other = softmax_cross_entropy(dlogits ? scratch : nullptr, logits, mixed_labels, batch, classes,
                                             class_weights, label_smoothing);
  if (dlogits)
    for (int64_t i = 0; i < batch * classes; ++i)
      dlogits[i] = static_cast<float>(weight * dlogits[i] + (1 - weight) * scratch[i]);
  return weight * own + (1 - weight) * other;
}

}  // namespace eigennet::kernels
