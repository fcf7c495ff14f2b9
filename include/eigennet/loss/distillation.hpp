// Knowledge distillation: a student learns from a teacher's class probabilities on the same
// inputs (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural Network"),
// mixed with the ordinary hard-label cross-entropy:
//
//   loss = w T^2 KL(p_teacher(T) || softmax(z / T)) + (1 - w) CE_smoothed(z, y)
//
// averaged over the batch, with z the student's logits, T the temperature, w the weight of the
// soft targets and p_teacher(T) the teacher's probabilities at temperature T (the mean over its
// models for an ensemble). The T^2 keeps the soft term's gradient, (w T)(softmax(z/T) - p) per
// sample, on the scale of the hard term's as T changes. KL rather than the soft cross-entropy, so
// that a student that matches its teacher has soft loss 0 (their gradients are the same).
//
//   ModelTeacher teacher({{&teacher_a, 96, 96}, {&teacher_b, 112, 112}});
//   DistillationLoss loss(teacher, {/*temperature=*/2, /*soft_weight=*/0.8f, /*label_smoothing=*/0.1f});
//   train.also_render(112, 112);   // ImageSource: teacher_b sees the same augmented images at 112x112
//   fit(student, adam, loss, train, &validation, options);  // validation_loss: a plain cross-entropy
//
// The teachers run in inference mode on the batch the student trains on (the same augmentation
// draws), inside forward(), through their compiled inference nets when given (Member::compiled,
// about 3x faster than Model::forward); their time is counted (ModelTeacher::seconds).
#pragma once

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../inference/inference_net.hpp"
#include "../kernels/softmax.hpp"
#include "../layers/model.hpp"
#include "loss.hpp"

namespace eigennet {

// What a student learns from: class probabilities [N, K] at a temperature for a batch.
class Teacher {
 public:
  virtual ~Teacher() = default;
  // Valid until the next call.
  virtual const Tensor& probabilities(const Batch& batch, float temperature) = 0;
};

// probs[n, :] = softmax(logits[n, :] / temperature).
inline void softmax_at_temperature(float* probs, const float* logits, int64_t batch, int64_t classes,
                                   float temperature) {
  EIGENNET_CHECK(temperature > 0 && std::isfinite(temperature), "softmax_at_temperature: temperature must be positive, got ",
                 temperature);
  for (int64_t n = 0; n < batch; ++n) {
    const float* z = logits + n * classes;
    float* p = probs + n * classes;
    double zmax = z[0];
    for (int64_t k = 1; k < classes; ++k) zmax = std::max(zmax, static_cast<double>(z[k]));
    double sum = 0;
    for (int64_t k = 0; k < classes; ++k) sum += std::exp((z[k] - zmax) / temperature);
    for (int64_t k = 0; k < classes; ++k) p[k] = static_cast<float>(std::exp((z[k] - zmax) / temperature) / sum);
  }
}

// One or more trained models as a teacher, in inference mode: each reads the batch's inputs at
// its own size (Batch::inputs_at; 0 x 0 = the batch's inputs as they are), and their
// probabilities at the temperature are averaged.
class ModelTeacher : public Teacher {
 public:
  struct Member {
    Model* model = nullptr;
    int64_t height = 0, width = 0;  // the input size it reads; 0 x 0: Batch::inputs as they are
    // The model compiled for inference (compile_for_inference_if_supported), run instead of
    // model->forward when given: the same logits up to float rounding, in less time.
    InferenceNet* compiled = nullptr;
  };
  explicit ModelTeacher(std::vector<Member> members) : members_(std::move(members)) {
    EIGENNET_CHECK(!members_.empty(), "ModelTeacher: no models");
    for (const Member& m : members_) {
      EIGENNET_CHECK(m.model != nullptr, "ModelTeacher: a model is null");
      EIGENNET_CHECK((m.height == 0) == (m.width == 0) && m.height >= 0 && m.width >= 0,
                     "ModelTeacher: invalid input size ", m.width, "x", m.height);
    }
  }

  const Tensor& probabilities(const Batch& batch, float temperature) override {
    const auto start = std::chrono::steady_clock::now();
    for (size_t m = 0; m < members_.size(); ++m) {
      const Member& member = members_[m];
      const Tensor* inputs = member.height == 0 ? &batch.inputs : batch.inputs_at(member.height, member.width);
      EIGENNET_CHECK(inputs != nullptr, "ModelTeacher: teacher ", m + 1, " reads ", member.width, "x", member.height,
                     " inputs but the batch has none of that size (inputs ", batch.inputs.shape(),
                     "); render them with ImageSource::also_render(", member.height, ", ", member.width, ")");
      const Tensor& logits = member.compiled != nullptr ? member.compiled->forward(*inputs)
                                                        : member.model->forward(*inputs, Mode::inference);
      EIGENNET_CHECK(logits.rank() == 2 && logits.dim(0) == batch.size(), "ModelTeacher: teacher ", m + 1,
                     " must output [batch, classes] for a batch of ", batch.size(), ", got ", logits.shape());
      EIGENNET_CHECK(m == 0 || logits.shape() == mean_.shape(), "ModelTeacher: teacher ", m + 1, " outputs ",
                     logits.shape(), " but teacher 1 ", mean_.shape(), ": the teachers must predict the same classes");
      if (m == 0) mean_.resize(logits.shape());
      member_probabilities_.resize(logits.shape());
      softmax_at_temperature(m == 0 ? mean_.data() : member_probabilities_.data(), logits.data(), logits.dim(0),
                             logits.dim(1), temperature);
      if (m > 0)
        for (int64_t i = 0; i < mean_.size(); ++i) mean_[i] += member_probabilities_[i];
    }
    if (members_.size() > 1) {
      const float scale = 1.0f / static_cast<float>(members_.size());
      for (int64_t i = 0; i < mean_.size(); ++i) mean_[i] *= scale;
    }
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ++calls_;
    return mean_;
  }

  const std::vector<Member>& members() const { return members_; }
  // Wall time spent in probabilities() and the number of calls (batches) so far.
  double seconds() const { return seconds_; }
  int64_t calls() const { return calls_; }

 private:
  std::vector<Member> members_;
  Tensor mean_, member_probabilities_;
  double seconds_ = 0;
  int64_t calls_ = 0;
};

namespace kernels {

struct DistillationTerms {
  double loss = 0;  // w T^2 soft + (1 - w) hard
  double soft = 0;  // mean KL(p || softmax(z / T))
  double hard = 0;  // mean (smoothed) cross-entropy of softmax(z) against the labels
};

// The distillation loss of logits z [N, K] against teacher probabilities p [N, K] and labels [N]
// (the definition at the top of this file), in double; writes d loss / d z into dlogits unless
// it is null:
//   (1 - w) d CE / dz + w T (softmax(z / T) - p) / N
// (the soft term's gradient assumes each row of p sums to 1, as probabilities do).
// A mixed batch (data/mixing.hpp) gives mixed_labels and the weight of the own labels: the hard
// term is then mixed_softmax_cross_entropy's, with `scratch` [N x K] for its gradient.
inline DistillationTerms distillation_loss(float* dlogits, const float* logits, const float* teacher, const int32_t* labels,
                                           int64_t batch, int64_t classes, double temperature, double soft_weight,
                                           float label_smoothing, const int32_t* mixed_labels = nullptr,
                                           double mix_weight = 1, float* scratch = nullptr) {
  const double t = temperature, w = soft_weight;
  DistillationTerms out;
  // The hard term and its gradient, which is then scaled by (1 - w) and gets the soft term's.
  out.hard = mixed_softmax_cross_entropy(dlogits, scratch, logits, labels, mixed_labels, mix_weight, batch, classes,
                                         nullptr, label_smoothing);
  double soft = 0;
  for (int64_t i = 0; i < batch; ++i) {
    const float* z = logits + i * classes;
    const float* p = teacher + i * classes;
    double zmax = z[0];
    for (int64_t j = 1; j < classes; ++j) zmax = std::max(zmax, static_cast<double>(z[j]));
    double sum = 0;
    for (int64_t j = 0; j < classes; ++j) sum += std::exp((z[j] - zmax) / t);
    const double log_sum = std::log(sum);
    for (int64_t j = 0; j < classes; ++j) {
      EIGENNET_CHECK(p[j] >= 0 && p[j] <= 1, "distillation loss: teacher probability ", p[j], " of sample ", i,
                     " is outside [0, 1]");
      const double log_q = (z[j] - zmax) / t - log_sum;  // log softmax(z / T)
      if (p[j] > 0) soft += p[j] * (std::log(static_cast<double>(p[j])) - log_q);
      if (dlogits) {
        float& d = dlogits[i * classes + j];
        d = static_cast<float>((1 - w) * d + w * t * (std::exp(log_q) - p[j]) / static_cast<double>(batch));
      }
    }
  }
  out.soft = soft / static_cast<double>(batch);
  out.loss = w * t * t * out.soft + (1 - w) * out.hard;
  return out;
}

}  // namespace kernels

class DistillationLoss : public Loss {
 public:
  struct Options {
    float temperature = 2.0f;      // T: > 1 softens both distributions
    float soft_weight = 0.5f;      // w: weight of the soft-target term; 1 - w for the hard labels
    float label_smoothing = 0.0f;  // of the hard-label cross-entropy (PyTorch's definition)
  };
  // `teacher` may be null for the three-argument forward only (tests, precomputed targets).
  DistillationLoss(Teacher* teacher, Options options) : teacher_(teacher), options_(options) {
    EIGENNET_CHECK(options_.temperature > 0 && std::isfinite(options_.temperature),
                   "DistillationLoss: temperature must be positive, got ", options_.temperature);
    EIGENNET_CHECK(options_.soft_weight >= 0 && options_.soft_weight <= 1,
                   "DistillationLoss: soft_weight must be in [0, 1], got ", options_.soft_weight);
    EIGENNET_CHECK(options_.label_smoothing >= 0 && options_.label_smoothing <= 1,
                   "DistillationLoss: label_smoothing must be in [0, 1], got ", options_.label_smoothing);
  }
  DistillationLoss(Teacher& teacher, Options options) : DistillationLoss(&teacher, options) {}

  // The loss of logits [N, K] against the teacher's probabilities [N, K] (at the temperature)
  // and the labels [N]; keeps d loss / d logits for gradient(). With mixed_labels (a mixed batch,
  // data/mixing.hpp) the hard term is mixed: weight of labels, 1 - weight of mixed_labels.
  float forward(const Tensor& logits, const Tensor& teacher_probabilities, const std::vector<int32_t>& labels,
                const std::vector<int32_t>* mixed_labels = nullptr, float weight = 1) {
    EIGENNET_CHECK(logits.rank() == 2, "DistillationLoss: logits must be [batch, classes], got ", logits.shape());
    EIGENNET_CHECK(teacher_probabilities.shape() == logits.shape(), "DistillationLoss: the teacher's probabilities are ",
                   teacher_probabilities.shape(), " but the student's logits ", logits.shape(),
                   ": teacher and student must predict the same classes");
    EIGENNET_CHECK(static_cast<int64_t>(labels.size()) == logits.dim(0), "DistillationLoss: ", labels.size(),
                   " labels for a batch of ", logits.dim(0));
    EIGENNET_CHECK(mixed_labels == nullptr || mixed_labels->size() == labels.size(), "DistillationLoss: ",
                   mixed_labels ? mixed_labels->size() : 0, " mixed labels for a batch of ", labels.size());
    gradient_.resize(logits.shape());
    if (mixed_labels) scratch_.resize(logits.shape());
    const kernels::DistillationTerms terms = kernels::distillation_loss(
        gradient_.data(), logits.data(), teacher_probabilities.data(), labels.data(), logits.dim(0), logits.dim(1),
        options_.temperature, options_.soft_weight, options_.label_smoothing,
        mixed_labels ? mixed_labels->data() : nullptr, weight, scratch_.data());
    soft_ = terms.soft;
    hard_ = terms.hard;
    return static_cast<float>(terms.loss);
  }
  float forward(const Tensor& outputs, const Batch& batch) override {
    EIGENNET_CHECK(teacher_ != nullptr, "DistillationLoss: no teacher (constructed with a null teacher)");
    return forward(outputs, teacher_->probabilities(batch, options_.temperature), batch.labels,
                   batch.mixed() ? &batch.mixed_labels : nullptr, batch.mix_weight);
  }
  const Tensor& gradient() const override { return gradient_; }

  const Options& options() const { return options_; }
  // The two terms of the latest forward, unweighted: mean KL(p || q) and the hard cross-entropy.
  double soft_loss() const { return soft_; }
  double hard_loss() const { return hard_; }

 private:
  Teacher* teacher_;
  Options options_;
  Tensor gradient_, scratch_;
  double soft_ = NAN, hard_ = NAN;
};

}  // namespace eigennet
