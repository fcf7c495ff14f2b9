// Layer-by-layer parity with PyTorch. tests/fixtures/make_fixtures.py computes each case with
// torch 1.13 in float64 from float32 inputs (NHWC, Keras layouts, TF-SAME padding applied with
// F.pad); here the eigennet layer, loss or optimizer runs on the same inputs and weights.
//
// Error measures, per compared tensor (printed as a table):
//   max_abs = max |ours - reference|
//   rel     = max_abs / max |reference|   (normwise: the error relative to the tensor's scale; an
//             elementwise ratio is meaningless where a sum cancels to nearly zero)
// A layer tensor passes when rel <= the case's tolerance. Optimizer weights are checked in
// absolute terms (a few float32 ulps of the weights), which resolves the tiny-gradient elements
// where the placement of Adam's epsilon matters.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <eigennet/eigennet.hpp>
#include <eigennet/models/blazeface.hpp>

using namespace eigennet;

namespace {

class Fixture {
 public:
  explicit Fixture(const std::string& name) : file_(read_safetensors(std::string(EIGENNET_FIXTURES_DIR) + "/" + name)) {}

  const Tensor& get(const std::string& c, const std::string& role) const { return file_.at(c + "/" + role); }
  bool has(const std::string& c, const std::string& role) const { return file_.contains(c + "/" + role); }
  const std::string& text(const std::string& c, const std::string& key) const { return file_.metadata_at(c + "/" + key); }
  int64_t integer(const std::string& c, const std::string& key) const { return std::stoll(text(c, key)); }
  double number(const std::string& c, const std::string& key) const { return std::stod(text(c, key)); }
  Padding padding(const std::string& c) const {
    const std::string& p = text(c, "padding");
    REQUIRE((p == "same" || p == "valid"));
    return p == "same" ? Padding::same : Padding::valid;
  }
  std::vector<std::string> cases() const {
    std::vector<std::string> out;
    std::stringstream list(file_.metadata_at("cases"));
    for (std::string c; std::getline(list, c, ',');) out.push_back(c);
    return out;
  }

 private:
  SafetensorsFile file_;
};

struct Errors {
  double max_abs = 0, rel = 0;
};

Errors measure(const Tensor& actual, const Tensor& expected) {
  Errors e;
  double scale = 0;
  for (int64_t i = 0; i < expected.size(); ++i) {
    e.max_abs = std::max(e.max_abs, std::abs(static_cast<double>(actual[i]) - expected[i]));
    scale = std::max(scale, std::abs(static_cast<double>(expected[i])));
  }
  e.rel = scale > 0 ? e.max_abs / scale : e.max_abs;
  return e;
}

void print_row(const std::string& c, const std::string& what, const Errors& e, const char* criterion, double tol) {
  static bool header = false;
  if (!header) {
    std::printf("%-28s %-22s %10s %10s   %s\n", "case", "tensor", "max_abs", "rel", "tolerance");
    header = true;
  }
  std::printf("%-28s %-22s %10.2e %10.2e   %s <= %.0e\n", c.c_str(), what.c_str(), e.max_abs, e.rel, criterion, tol);
}

// Passes when max_abs <= tol * max|expected|.
void expect_close(const std::string& c, const std::string& what, const Tensor& actual, const Tensor& expected,
                  double tol) {
  CAPTURE(c);
  CAPTURE(what);
  REQUIRE(actual.shape() == expected.shape());
  const Errors e = measure(actual, expected);
  print_row(c, what, e, "rel", tol);
  CHECK(e.rel <= tol);
}

// Passes when max_abs <= tol.
void expect_close_abs(const std::string& c, const std::string& what, const Tensor& actual, const Tensor& expected,
                      double tol) {
  CAPTURE(c);
  CAPTURE(what);
  REQUIRE(actual.shape() == expected.shape());
  const Errors e = measure(actual, expected);
  print_row(c, what, e, "max_abs", tol);
  CHECK(e.max_abs <= tol);
}

// Copies a fixture weight into a parameter after checking that the layouts agree.
void load(Parameter& p, const Tensor& value) {
  CAPTURE(p.name);
  REQUIRE(p.value.shape() == value.shape());
  p.value.copy_from(value);
}

// Runs forward (mode) and backward with dy = r; returns y and dx.
void run_layer(Layer& layer, const Tensor& x, const Tensor& r, Mode mode, Tensor& y, Tensor& dx) {
  zero_grad(layer.parameters());
  layer.forward(x, y, mode);
  REQUIRE(y.shape() == r.shape());
  layer.backward(x, y, r, &dx);
}

void check_cases_present(const Fixture& f, const std::vector<std::string>& expected) {
  const std::vector<std::string> present = f.cases();
  for (const std::string& c : expected) {
    CAPTURE(c);
    CHECK(std::find(present.begin(), present.end(), c) != present.end());
  }
  CHECK(present.size() == expected.size());
}

}  // namespace

TEST_CASE("parity: Conv2D matches PyTorch (TF-SAME via F.pad)") {
  const Fixture f("conv2d.safetensors");
  const double tol = 1e-5;
  check_cases_present(f, {"conv3x3_s1_same", "conv3x3_s2_same_even", "conv3x3_s2_same_odd", "conv1x1",
                          "conv1x1_s2_same", "conv5x5_valid", "conv3x3_s2_same_nobias", "conv5x5_s2_same_even"});
  for (const std::string& c : f.cases()) {
    const Tensor& x = f.get(c, "x");
    const bool use_bias = f.integer(c, "use_bias") != 0;
    CHECK(use_bias == f.has(c, "bias"));
    Conv2D conv(c, f.integer(c, "filters"), f.integer(c, "kernel"), f.integer(c, "stride"), f.padding(c), use_bias);
    Rng rng(1);
    conv.build(x.shape().without_batch(), rng);
    load(conv.kernel(), f.get(c, "kernel"));
    if (use_bias) load(conv.bias(), f.get(c, "bias"));
    Tensor y, dx;
    run_layer(conv, x, f.get(c, "r"), Mode::train, y, dx);
    expect_close(c, "y", y, f.get(c, "y"), tol);
    expect_close(c, "dx", dx, f.get(c, "dx"), tol);
    expect_close(c, "dkernel", conv.kernel().grad, f.get(c, "dkernel"), tol);
    if (use_bias) expect_close(c, "dbias", conv.bias().grad, f.get(c, "dbias"), tol);
  }
}

TEST_CASE("parity: DepthwiseConv2D matches PyTorch (groups = channels)") {
  const Fixture f("depthwise_conv2d.safetensors");
  const double tol = 1e-5;
  check_cases_present(f, {"dw3x3_s1_same_even", "dw3x3_s1_same_odd", "dw3x3_s2_same_even", "dw3x3_s2_same_odd",
                          "dw3x3_s2_same_even_nobias", "dw5x5_valid"});
  for (const std::string& c : f.cases()) {
    const Tensor& x = f.get(c, "x");
    const bool use_bias = f.integer(c, "use_bias") != 0;
    DepthwiseConv2D conv(c, f.integer(c, "kernel"), f.integer(c, "stride"), f.padding(c), use_bias);
    Rng rng(1);
    conv.build(x.shape().without_batch(), rng);
    load(conv.kernel(), f.get(c, "depthwise_kernel"));
    if (use_bias) load(conv.bias(), f.get(c, "bias"));
    Tensor y, dx;
    run_layer(conv, x, f.get(c, "r"), Mode::train, y, dx);
    expect_close(c, "y", y, f.get(c, "y"), tol);
    expect_close(c, "dx", dx, f.get(c, "dx"), tol);
    expect_close(c, "ddepthwise_kernel", conv.kernel().grad, f.get(c, "ddepthwise_kernel"), tol);
    if (use_bias) expect_close(c, "dbias", conv.bias().grad, f.get(c, "dbias"), tol);
  }
}

TEST_CASE("parity: ChannelPad and BlazeFace's block (max-pooled, zero-padded shortcut) match PyTorch") {
  const Fixture f("blaze_block.safetensors");
  const double tol = 1e-5;
  check_cases_present(f, {"channel_pad", "channel_pad_before_after", "blaze_block_s1", "blaze_block_s1_widen",
                          "blaze_block_s2", "blaze_block_s2_widen"});
  for (const std::string& c : {std::string("channel_pad"), std::string("channel_pad_before_after")}) {
    const Tensor& x = f.get(c, "x");
    ChannelPad pad(c, f.integer(c, "after"), f.integer(c, "before"));
    Rng rng(1);
    pad.build(x.shape().without_batch(), rng);
    Tensor y, dx;
    run_layer(pad, x, f.get(c, "r"), Mode::train, y, dx);
    // A copy: exact.
    expect_close_abs(c, "y", y, f.get(c, "y"), 0.0);
    expect_close_abs(c, "dx", dx, f.get(c, "dx"), 0.0);
  }
  for (const std::string c : {"blaze_block_s1", "blaze_block_s1_widen", "blaze_block_s2", "blaze_block_s2_widen"}) {
    const Tensor& x = f.get(c, "x");
    const int64_t in_c = x.dim(3), stride = f.integer(c, "stride");
    BlazeBlockSetting setting{f.integer(c, "filters"), stride, 1};
    std::unique_ptr<Layer> block = make_blaze_block(1, in_c, setting, stride);
    Rng rng(1);
    block->build(x.shape().without_batch(), rng);
    std::map<std::string, Parameter*> params;
    for (Parameter* p : block->parameters()) params[p->name] = p;
    REQUIRE(params.size() == 3);
    load(*params.at("block_1_depthwise/depthwise_kernel"), f.get(c, "depthwise_kernel"));
    load(*params.at("block_1_project/kernel"), f.get(c, "kernel"));
    load(*params.at("block_1_project/bias"), f.get(c, "bias"));
    Tensor y, dx;
    run_layer(*block, x, f.get(c, "r"), Mode::train, y, dx);
    expect_close(c, "y", y, f.get(c, "y"), tol);
    expect_close(c, "dx", dx, f.get(c, "dx"), tol);
    expect_close(c, "ddepthwise_kernel", params.at("block_1_depthwise/depthwise_kernel")->grad,
                 f.get(c, "ddepthwise_kernel"), tol);
    expect_close(c, "dkernel", params.at("block_1_project/kernel")->grad, f.get(c, "dkernel"), tol);
    expect_close(c, "dbias", params.at("block_1_project/bias")->grad, f.get(c, "dbias"), tol);
  }
}

TEST_CASE("parity: BatchNorm matches PyTorch in training and inference mode") {
  const Fixture f("batch_norm.safetensors");
  const double tol = 1e-5;
  check_cases_present(f, {"bn_train", "bn_inference", "bn_train_features"});
  for (const std::string& c : f.cases()) {
    const Tensor& x = f.get(c, "x");
    const bool training = f.integer(c, "training") != 0;
    BatchNorm bn(c, static_cast<float>(f.number(c, "momentum")), static_cast<float>(f.number(c, "epsilon")));
    Rng rng(1);
    bn.build(x.shape().without_batch(), rng);
    load(bn.gamma(), f.get(c, "gamma"));
    load(bn.beta(), f.get(c, "beta"));
    load(bn.moving_mean(), f.get(c, "moving_mean"));
    load(bn.moving_variance(), f.get(c, "moving_variance"));
    Tensor y, dx;
    run_layer(bn, x, f.get(c, "r"), training ? Mode::train : Mode::inference, y, dx);
    expect_close(c, "y", y, f.get(c, "y"), tol);
    expect_close(c, "dx", dx, f.get(c, "dx"), tol);
    expect_close(c, "dgamma", bn.gamma().grad, f.get(c, "dgamma"), tol);
    expect_close(c, "dbeta", bn.beta().grad, f.get(c, "dbeta"), tol);
    expect_close(c, "moving_mean", bn.moving_mean().value, f.get(c, "moving_mean_after"), tol);
    expect_close(c, "moving_variance", bn.moving_variance().value, f.get(c, "moving_variance_after"), tol);
  }
}

TEST_CASE("parity: ReLU, ReLU6 and Softmax match PyTorch") {
  const Fixture f("activations.safetensors");
  check_cases_present(f, {"relu", "relu6", "softmax"});
  for (const std::string& c : f.cases()) {
    const Tensor& x = f.get(c, "x");
    std::unique_ptr<Layer> layer;
    if (c == "relu") layer = std::make_unique<ReLU>(c);
    else if (c == "relu6") layer = std::make_unique<ReLU6>(c);
    else layer = std::make_unique<Softmax>(c);
    // ReLU is exact; softmax computes in double and rounds once.
    const double tol = c == "softmax" ? 1e-6 : 0.0;
    Rng rng(1);
    layer->build(x.shape().without_batch(), rng);
    Tensor y, dx;
    run_layer(*layer, x, f.get(c, "r"), Mode::train, y, dx);
    expect_close(c, "y", y, f.get(c, "y"), tol);
    expect_close(c, "dx", dx, f.get(c, "dx"), tol);
  }
}

TEST_CASE("parity: pooling matches PyTorch (TF-SAME; averages skip padded cells)") {
  const Fixture f("pooling.safetensors");
  check_cases_present(f, {"maxpool2x2_valid", "maxpool3x3_s2_valid", "maxpool3x3_s2_same_even",
                          "maxpool3x3_s2_same_odd", "maxpool3x3_s1_same", "avgpool2x2_valid", "avgpool3x3_s2_valid",
                          "avgpool3x3_s2_same_even", "avgpool3x3_s2_same_odd", "avgpool3x3_s1_same",
                          "global_avg_pool", "global_max_pool"});
  for (const std::string& c : f.cases()) {
    const Tensor& x = f.get(c, "x");
    std::unique_ptr<Layer> layer;
    if (c == "global_avg_pool") layer = std::make_unique<GlobalAvgPool>(c);
    else if (c == "global_max_pool") layer = std::make_unique<GlobalMaxPool>(c);
    else if (c.rfind("maxpool", 0) == 0)
      layer = std::make_unique<MaxPool2D>(c, f.integer(c, "pool"), f.integer(c, "stride"), f.padding(c));
    else layer = std::make_unique<AvgPool2D>(c, f.integer(c, "pool"), f.integer(c, "stride"), f.padding(c));
    // Max pooling only selects: its output is exact. Its dx is exact too unless windows overlap,
    // where a cell that wins several windows sums their gradients in float32 (the reference in
    // float64). Averages round a short float32 sum.
    const bool is_max = c.find("max") != std::string::npos;
    const double tol_y = is_max ? 0.0 : 1e-6;
    const double tol_dx = c == "maxpool2x2_valid" || c == "global_max_pool" ? 0.0 : 1e-6;
    Rng rng(1);
    layer->build(x.shape().without_batch(), rng);
    Tensor y, dx;
    run_layer(*layer, x, f.get(c, "r"), Mode::train, y, dx);
    expect_close(c, "y", y, f.get(c, "y"), tol_y);
    expect_close(c, "dx", dx, f.get(c, "dx"), tol_dx);
  }
}

TEST_CASE("parity: Dense matches PyTorch") {
  const Fixture f("dense.safetensors");
  const double tol = 1e-5;
  check_cases_present(f, {"dense", "dense_nobias"});
  for (const std::string& c : f.cases()) {
    const Tensor& x = f.get(c, "x");
    const bool use_bias = f.integer(c, "use_bias") != 0;
    Dense dense(c, f.integer(c, "units"), use_bias);
    Rng rng(1);
    dense.build(x.shape().without_batch(), rng);
    load(dense.kernel(), f.get(c, "kernel"));
    if (use_bias) load(dense.bias(), f.get(c, "bias"));
    Tensor y, dx;
    run_layer(dense, x, f.get(c, "r"), Mode::train, y, dx);
    expect_close(c, "y", y, f.get(c, "y"), tol);
    expect_close(c, "dx", dx, f.get(c, "dx"), tol);
    expect_close(c, "dkernel", dense.kernel().grad, f.get(c, "dkernel"), tol);
    if (use_bias) expect_close(c, "dbias", dense.bias().grad, f.get(c, "dbias"), tol);
  }
}

namespace {

// Class labels stored as floats in a fixture.
std::vector<int32_t> labels_of(const Tensor& values) {
  std::vector<int32_t> labels;
  for (int64_t i = 0; i < values.size(); ++i) labels.push_back(static_cast<int32_t>(values[i]));
  return labels;
}

// A cross-entropy case's label smoothing and class weights (when it has them).
SoftmaxCrossEntropy::Options cross_entropy_options(const Fixture& f, const std::string& c) {
  SoftmaxCrossEntropy::Options options;
  options.label_smoothing = static_cast<float>(f.number(c, "label_smoothing"));
  if (f.has(c, "class_weights")) {
    const Tensor& w = f.get(c, "class_weights");
    options.class_weights.assign(w.data(), w.data() + w.size());
  }
  return options;
}

}  // namespace

TEST_CASE("parity: softmax cross-entropy matches torch.nn.functional.cross_entropy") {
  const Fixture f("cross_entropy.safetensors");
  // Computed in double and rounded once.
  const double tol = 1e-6;
  check_cases_present(f, {"ce_plain", "ce_weighted", "ce_smoothing", "ce_weighted_smoothing", "ce_large_logits"});
  for (const std::string& c : f.cases()) {
    const Tensor& logits = f.get(c, "logits");
    SoftmaxCrossEntropy loss(cross_entropy_options(f, c));
    const Tensor value(Shape{}, {loss.forward(logits, labels_of(f.get(c, "labels")))});
    expect_close(c, "loss", value, f.get(c, "loss"), tol);
    expect_close(c, "dlogits", loss.gradient(), f.get(c, "dlogits"), tol);
  }
}

TEST_CASE("parity: distillation loss matches T^2 KL(teacher || student) and cross-entropy in torch") {
  const Fixture f("distillation.safetensors");
  // Computed in double on both sides and rounded once.
  const double tol = 1e-6;
  check_cases_present(f, {"kd_t1_w05", "kd_t2_w08_smoothing", "kd_t4_soft_only", "kd_zero_probs", "kd_large_logits"});
  for (const std::string& c : f.cases()) {
    const std::vector<int32_t> labels = labels_of(f.get(c, "labels"));
    DistillationLoss::Options options;
    options.temperature = static_cast<float>(f.number(c, "temperature"));
    options.soft_weight = static_cast<float>(f.number(c, "soft_weight"));
    options.label_smoothing = static_cast<float>(f.number(c, "label_smoothing"));
    DistillationLoss loss(nullptr, options);
    const Tensor value(Shape{}, {loss.forward(f.get(c, "logits"), f.get(c, "teacher_probabilities"), labels)});
    expect_close(c, "loss", value, f.get(c, "loss"), tol);
    expect_close(c, "soft", Tensor(Shape{}, {static_cast<float>(loss.soft_loss())}), f.get(c, "soft"), tol);
    expect_close(c, "hard", Tensor(Shape{}, {static_cast<float>(loss.hard_loss())}), f.get(c, "hard"), tol);
    expect_close(c, "dlogits", loss.gradient(), f.get(c, "dlogits"), tol);
  }
}

TEST_CASE("parity: mixed targets (mixup, cutmix) match lam CE(y) + (1 - lam) CE(y') in torch, with distillation") {
  const Fixture f("mixed_targets.safetensors");
  const double tol = 1e-6;  // double on both sides, rounded once
  check_cases_present(f, {"ce_mixed", "ce_mixed_smoothing", "ce_mixed_weighted", "ce_mixed_same_partner", "kd_mixed",
                          "kd_mixed_hard_only"});
  for (const std::string& c : f.cases()) {
    CAPTURE(c);
    // Through Loss::forward(outputs, batch), as fit() calls it on a batch from MixingSource.
    Batch batch;
    batch.labels = labels_of(f.get(c, "labels"));
    batch.mixed_labels = labels_of(f.get(c, "mixed_labels"));
    batch.mix_weight = static_cast<float>(f.number(c, "mix_weight"));
    const Tensor& logits = f.get(c, "logits");
    if (f.has(c, "teacher_probabilities")) {
      DistillationLoss loss(nullptr, {static_cast<float>(f.number(c, "temperature")),
                                      static_cast<float>(f.number(c, "soft_weight")),
                                      static_cast<float>(f.number(c, "label_smoothing"))});
      const Tensor value(Shape{}, {loss.forward(logits, f.get(c, "teacher_probabilities"), batch.labels,
                                                &batch.mixed_labels, batch.mix_weight)});
      expect_close(c, "loss", value, f.get(c, "loss"), tol);
      expect_close(c, "hard", Tensor(Shape{}, {static_cast<float>(loss.hard_loss())}), f.get(c, "hard"), tol);
      expect_close(c, "dlogits", loss.gradient(), f.get(c, "dlogits"), tol);
    } else {
      SoftmaxCrossEntropy loss(cross_entropy_options(f, c));
      const Tensor value(Shape{}, {loss.forward(logits, batch)});
      expect_close(c, "loss", value, f.get(c, "loss"), tol);
      expect_close(c, "dlogits", loss.gradient(), f.get(c, "dlogits"), tol);
    }
  }
}

TEST_CASE("parity: Adam, AdamW and SGD steps match torch.optim") {
  const Fixture f("optimizers.safetensors");
  check_cases_present(f, {"adam", "adamw", "sgd_momentum"});
  for (const std::string& c : f.cases()) {
    Parameter w1 = Parameter::weight("w1", f.get(c, "w1").shape());
    Parameter w2 = Parameter::weight("w2", f.get(c, "w2").shape());
    load(w1, f.get(c, "w1"));
    load(w2, f.get(c, "w2"));
    const std::string kind = f.text(c, "optimizer");
    std::unique_ptr<Optimizer> optimizer;
    if (kind == "sgd") {
      SGD::Options o;
      o.learning_rate = static_cast<float>(f.number(c, "learning_rate"));
      o.momentum = static_cast<float>(f.number(c, "momentum"));
      optimizer = std::make_unique<SGD>(ParameterList{&w1, &w2}, o);
    } else {
      Adam::Options o;
      o.learning_rate = static_cast<float>(f.number(c, "learning_rate"));
      o.beta1 = static_cast<float>(f.number(c, "beta1"));
      o.beta2 = static_cast<float>(f.number(c, "beta2"));
      o.epsilon = static_cast<float>(f.number(c, "epsilon"));
      o.weight_decay = static_cast<float>(f.number(c, "weight_decay"));
      CHECK((o.weight_decay > 0) == (kind == "adamw"));
      optimizer = std::make_unique<Adam>(ParameterList{&w1, &w2}, o);
    }
    // Weights of magnitude up to ~3 have a float32 ulp of 2.4e-7: allow about 4 ulps after 3 steps.
    // (PyTorch's own Adam formula, eps added after bias correction, differs here by up to 1.3e-3
    // on the tiny gradients, so the check tells the two apart.)
    const double tol = 1e-6;
    const int64_t steps = f.integer(c, "steps");
    for (int64_t t = 1; t <= steps; ++t) {
      const std::string step = std::to_string(t);
      w1.grad.copy_from(f.get(c, "w1_grad_" + step));
      w2.grad.copy_from(f.get(c, "w2_grad_" + step));
      optimizer->step();
      expect_close_abs(c, "w1 after step " + step, w1.value, f.get(c, "w1_after_" + step), tol);
      expect_close_abs(c, "w2 after step " + step, w2.value, f.get(c, "w2_after_" + step), tol);
    }
  }
}
