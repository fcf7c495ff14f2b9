// Loss: what fit() minimizes. forward() takes the model's outputs and the batch they came from
// (labels, and the inputs and item ids for losses that need them, e.g. a teacher network's
// outputs on the same inputs), returns the mean loss over the batch, and keeps d loss / d outputs
// for gradient().
#pragma once

#include "../core/tensor.hpp"
#include "../data/source.hpp"

namespace eigennet {

class Loss {
 public:
  virtual ~Loss() = default;
  virtual float forward(const Tensor& outputs, const Batch& batch) = 0;
  // d loss / d outputs of the latest forward.
  virtual const Tensor& gradient() const = 0;
};

}  // namespace eigennet
