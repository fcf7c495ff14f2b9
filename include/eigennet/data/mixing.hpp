// Mixup and CutMix: training batches in which every image is blended with another image of the
// same batch, and its target with that image's label in the same proportion.
//
//   mixup  (Zhang et al. 2018):  x_i <- lam x_i + (1 - lam) x_j over the whole image;
//   cutmix (Yun et al. 2019):    a box of x_i is replaced by the same box of x_j, and lam is the
//                                fraction of x_i's pixels left.
//
// One lam ~ Beta(alpha, alpha) per batch and j = partner[i], a random permutation of the batch
// (an item may be its own partner: it stays itself). The target of item i is lam of labels[i]
// and 1 - lam of mixed_labels[i] (Batch::mixed_labels, Batch::mix_weight), which
// SoftmaxCrossEntropy and DistillationLoss read. The images at other sizes (Batch::other_sizes,
// a distillation teacher's) are mixed the same way, the box scaled to their size, so a teacher
// describes the image the student sees.
//
//   MixingSource mixed(train, {/*mixup_alpha=*/0.2f, /*cutmix_alpha=*/1.0f, /*probability=*/1.0f, seed});
//   fit(model, adam, loss, mixed, &validation, options);
//
// The draws depend on (seed, epoch, the batch's first position) only: a resumed run mixes its
// batches as the uninterrupted one did.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"
#include "source.hpp"

namespace eigennet {

// A box of an image in fractions of its height and width: rows [top, bottom), columns [left, right).
struct MixBox {
  double top = 0, left = 0, bottom = 0, right = 0;
};

// What one batch's mixing does.
struct MixDraw {
  enum class Kind { none, mixup, cutmix } kind = Kind::none;
  float weight = 1;              // lam: the weight of each item's own image and label
  std::vector<int64_t> partner;  // item i is mixed with item partner[i]
  MixBox box;                    // cutmix: the box taken from the partner
};

// The rows [first, last) of a box of `size` pixels along one axis.
inline std::pair<int64_t, int64_t> box_span(double begin, double end, int64_t size) {
  const auto at = [size](double f) {
    return std::min<int64_t>(size, std::max<int64_t>(0, static_cast<int64_t>(std::lround(f * static_cast<double>(size)))));
  };
  return {at(begin), at(end)};
}

// Mixes images [N, ...] (cutmix: [N, H, W, C]) in place as `draw` says; `scratch` holds a copy.
inline void mix_inputs(Tensor& inputs, const MixDraw& draw, Tensor& scratch) {
  if (draw.kind == MixDraw::Kind::none) return;
  const int64_t n = inputs.dim(0);
  EIGENNET_CHECK(static_cast<int64_t>(draw.partner.size()) == n, "mix_inputs: ", draw.partner.size(),
                 " partners for a batch of ", n);
  scratch.copy_from(inputs);
  const int64_t per_item = inputs.size() / n;
  if (draw.kind == MixDraw::Kind::mixup) {
    const float a = draw.weight, b = 1 - draw.weight;
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(std::min<int64_t>(max_threads(), n)))
    for (int64_t i = 0; i < n; ++i) {
      const float* own = scratch.data() + i * per_item;
      const float* other = scratch.data() + draw.partner[static_cast<size_t>(i)] * per_item;
      float* out = inputs.data() + i * per_item;
      for (int64_t k = 0; k < per_item; ++k) out[k] = a * own[k] + b * other[k];
    }
    return;
  }
  EIGENNET_CHECK(inputs.rank() == 4, "cutmix: inputs must be images [N, H, W, C], got ", inputs.shape());
  const int64_t height = inputs.dim(1), width = inputs.dim(2), channels = inputs.dim(3);
  const auto [top, bottom] = box_span(draw.box.top, draw.box.bottom, height);
  const auto [left, right] = box_span(draw.box.left, draw.box.right, width);
  for (int64_t i = 0; i < n; ++i) {
    const float* other = scratch.data() + draw.partner[static_cast<size_t>(i)] * per_item;
    float* out = inputs.data() + i * per_item;
    for (int64_t y = top; y < bottom; ++y) {
      const int64_t offset = (y * width + left) * channels;
      std::memcpy(out + offset, other + offset, static_cast<size_t>((right - left) * channels) * sizeof(float));
    }
  }
}

// Wraps a training source: the batches it returns are mixed (a fraction `probability` of them;
// see the top of this file).
class MixingSource : public DataSource {
 public:
  struct Options {
    float mixup_alpha = 0;   // > 0: mixup with lam ~ Beta(alpha, alpha)
    float cutmix_alpha = 0;  // > 0: cutmix with the box's area fraction 1 - lam, lam ~ Beta(alpha, alpha)
    float probability = 1;   // of mixing a batch; with both kinds on, each mixed batch picks one at even odds
    uint64_t seed = 0;
  };
  // `source` is referenced: it must outlive this one.
  MixingSource(DataSource& source, Options options) : source_(source), options_(options) {
    EIGENNET_CHECK(options_.mixup_alpha >= 0 && std::isfinite(options_.mixup_alpha),
                   "MixingSource: mixup_alpha must be >= 0, got ", options_.mixup_alpha);
    EIGENNET_CHECK(options_.cutmix_alpha >= 0 && std::isfinite(options_.cutmix_alpha),
                   "MixingSource: cutmix_alpha must be >= 0, got ", options_.cutmix_alpha);
    EIGENNET_CHECK(options_.probability >= 0 && options_.probability <= 1,
                   "MixingSource: probability must be in [0, 1], got ", options_.probability);
  }

  int64_t size() const override { return source_.size(); }
  void start_epoch(int64_t epoch) override {
    epoch_ = epoch;
    source_.start_epoch(epoch);
  }
  void get(int64_t begin, int64_t count, Batch& batch) override {
    source_.get(begin, count, batch);
    draw(begin, batch, draw_);
    batch.clear_mixing();
    if (draw_.kind == MixDraw::Kind::none) return;
    mix_inputs(batch.inputs, draw_, scratch_);
    for (Tensor& other : batch.other_sizes) mix_inputs(other, draw_, scratch_);
    batch.mixed_labels.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i)
      batch.mixed_labels[static_cast<size_t>(i)] = batch.labels[static_cast<size_t>(draw_.partner[static_cast<size_t>(i)])];
    batch.mix_weight = draw_.weight;
  }
  // Training only: a mirrored (test-time) view is not mixed.
  std::unique_ptr<DataSource> mirrored() const override { return nullptr; }

  // The draw of the latest batch.
  const MixDraw& last_draw() const { return draw_; }
  const Options& options() const { return options_; }

 private:
  // Fills d (reusing its partner list) with the draw of the batch at `begin`.
  void draw(int64_t begin, const Batch& batch, MixDraw& d) const {
    d.kind = MixDraw::Kind::none;
    d.weight = 1;
    d.box = MixBox{};
    const bool mixup = options_.mixup_alpha > 0, cutmix = options_.cutmix_alpha > 0;
    if (!mixup && !cutmix) return;
    Rng rng(derive_seed(derive_seed(options_.seed, 0x313C), static_cast<uint64_t>(epoch_), static_cast<uint64_t>(begin)));
    if (!(rng.uniform() < options_.probability)) return;
    const int64_t n = batch.size();
    d.kind = mixup && cutmix ? (rng.uniform() < 0.5f ? MixDraw::Kind::mixup : MixDraw::Kind::cutmix)
                             : (mixup ? MixDraw::Kind::mixup : MixDraw::Kind::cutmix);
    d.partner.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) d.partner[static_cast<size_t>(i)] = i;
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(d.partner[static_cast<size_t>(i)], d.partner[static_cast<size_t>(rng.below(static_cast<uint64_t>(i + 1)))]);
    const double alpha = d.kind == MixDraw::Kind::mixup ? options_.mixup_alpha : options_.cutmix_alpha;
    const double lam = rng.beta(alpha, alpha);
    if (d.kind == MixDraw::Kind::mixup) {
      d.weight = static_cast<float>(lam);
      return;
    }
    // A box of area 1 - lam (in fractions of the image) centred anywhere, clipped to the image;
    // lam is then what is left of the item's own image at the model's input size.
    EIGENNET_CHECK(batch.inputs.rank() == 4, "cutmix: inputs must be images [N, H, W, C], got ", batch.inputs.shape());
    const double side = std::sqrt(1 - lam), cy = rng.uniform(), cx = rng.uniform();
    d.box.top = std::max(0.0, cy - side / 2);
    d.box.bottom = std::min(1.0, cy + side / 2);
    d.box.left = std::max(0.0, cx - side / 2);
    d.box.right = std::min(1.0, cx + side / 2);
    const int64_t height = batch.inputs.dim(1), width = batch.inputs.dim(2);
    const auto [top, bottom] = box_span(d.box.top, d.box.bottom, height);
    const auto [left, right] = box_span(d.box.left, d.box.right, width);
    d.weight = static_cast<float>(1 - static_cast<double>((bottom - top) * (right - left)) / static_cast<double>(height * width));
  }

  DataSource& source_;
  Options options_;
  int64_t epoch_ = 0;
  MixDraw draw_;
  Tensor scratch_;
};

}  // namespace eigennet
