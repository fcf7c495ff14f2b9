// TrainingCurvesPng: loss and accuracy per epoch (training and validation) as a PNG, rewritten
// after every epoch so that a long run can be watched. Needs stb (PNG output).
#pragma once

#include <string>

#include "../plot/curves_png.hpp"
#include "fit.hpp"

namespace eigennet {

inline TrainingCurves training_curves(const History& history) {
  TrainingCurves curves;
  for (const EpochRecord& r : history) {
    curves.train_loss.push_back(r.train_loss);
    curves.val_loss.push_back(r.val_loss);
    curves.train_accuracy.push_back(r.train_accuracy);
    curves.val_accuracy.push_back(r.val_accuracy);
  }
  return curves;
}

class TrainingCurvesPng : public Callback {
 public:
  TrainingCurvesPng(std::string path, std::string title) : path_(std::move(path)), title_(std::move(title)) {}
  void on_epoch_end(FitContext& ctx) override {
    save_training_curves_png(path_, training_curves(ctx.state.history), title_);
  }

 private:
  std::string path_, title_;
};

}  // namespace eigennet
