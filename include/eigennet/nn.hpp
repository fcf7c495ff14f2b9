// eigennet's neural-network part: everything that needs only Eigen and OpenMP (the CMake target
// eigennet::nn). Tensors, kernels, layers, losses, optimizers, MobileNetV2 and the classifier,
// safetensors and .npy files, metrics, data sources from memory (images already decoded, with
// augmentation; tensors; cached features), and training: fit(), its callbacks, checkpoints,
// predict() and evaluate().
//
// Reading image files and writing PNG plots need the image libraries as well: include
// <eigennet/eigennet.hpp> and link eigennet::eigennet for those.
#pragma once

#include "core/error.hpp"
#include "core/geometry.hpp"
#include "core/init.hpp"
#include "core/parallel.hpp"
#include "core/parameter.hpp"
#include "core/profile.hpp"
#include "core/rng.hpp"
#include "core/shape.hpp"
#include "core/tensor.hpp"

#include "data/augment.hpp"
#include "data/batch.hpp"
#include "data/feature_cache.hpp"
#include "data/image_set.hpp"
#include "data/image_source.hpp"
#include "data/mixing.hpp"
#include "data/sampling.hpp"
#include "data/source.hpp"
#include "data/split.hpp"

#include "inference/inference_net.hpp"
#include "io/atomic_file.hpp"
#include "io/json.hpp"
#include "io/model_io.hpp"
#include "io/npy.hpp"
#include "io/safetensors.hpp"
#include "io/weights_folders.hpp"

#include "layers/activation.hpp"
#include "layers/batch_norm.hpp"
#include "layers/channel_pad.hpp"
#include "layers/conv2d.hpp"
#include "layers/dense.hpp"
#include "layers/depthwise_conv2d.hpp"
#include "layers/dropout.hpp"
#include "layers/inverted_residual.hpp"
#include "layers/layer.hpp"
#include "layers/model.hpp"
#include "layers/pooling.hpp"
#include "layers/residual.hpp"
#include "layers/sequential.hpp"

#include "loss/distillation.hpp"
#include "loss/loss.hpp"
#include "loss/softmax_cross_entropy.hpp"

#include "metrics/classification.hpp"
#include "metrics/report.hpp"

#include "models/blazeface.hpp"
#include "models/classifier.hpp"
#include "models/classifier_io.hpp"
#include "models/ensemble.hpp"
#include "models/imagenet_weights.hpp"
#include "models/mobilenet_v2.hpp"

#include "optim/adam.hpp"
#include "optim/optimizer.hpp"
#include "optim/sgd.hpp"

#include "train/callbacks.hpp"
#include "train/checkpoint.hpp"
#include "train/ema.hpp"
#include "train/fit.hpp"
#include "train/history.hpp"
#include "train/predict.hpp"
#include "train/progress.hpp"
#include "train/schedule.hpp"
#include "train/weight_average.hpp"
