// eigennet: a header-only C++17 neural-network library on Eigen tensors and OpenMP.
// This umbrella header includes the whole library.
#pragma once

#include "core/error.hpp"
#include "core/init.hpp"
#include "core/parallel.hpp"
#include "core/parameter.hpp"
#include "core/profile.hpp"
#include "core/rng.hpp"
#include "core/shape.hpp"
#include "core/tensor.hpp"

#include "data/augment.hpp"
#include "data/batch.hpp"
#include "data/image.hpp"
#include "data/image_folder.hpp"
#include "data/sampling.hpp"
#include "data/seed.hpp"
#include "data/split.hpp"
#include "data/stb.hpp"

#include "inference/inference_net.hpp"

#include "io/atomic_file.hpp"
#include "io/json_writer.hpp"
#include "io/model_io.hpp"
#include "io/safetensors.hpp"

#include "layers/activation.hpp"
#include "layers/batch_norm.hpp"
#include "layers/conv2d.hpp"
#include "layers/dense.hpp"
#include "layers/depthwise_conv2d.hpp"
#include "layers/dropout.hpp"
#include "layers/inverted_residual.hpp"
#include "layers/layer.hpp"
#include "layers/pooling.hpp"
#include "layers/residual.hpp"
#include "layers/sequential.hpp"

#include "loss/softmax_cross_entropy.hpp"

#include "metrics.hpp"
#include "models/classifier.hpp"
#include "models/classifier_io.hpp"
#include "models/imagenet_weights.hpp"
#include "models/mobilenet_v2.hpp"

#include "optim/adam.hpp"
#include "optim/optimizer.hpp"
#include "optim/sgd.hpp"

#include "plot/canvas.hpp"
#include "plot/color.hpp"
#include "plot/confusion_matrix_png.hpp"
#include "plot/curves_png.hpp"
#include "train/progress.hpp"
#include "train/schedule.hpp"
