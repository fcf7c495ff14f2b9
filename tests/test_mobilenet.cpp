// MobileNetV2 as Keras builds it: channel rounding, parameter counts, layer names, output shapes,
// the fused InvertedResidual blocks against the plain-layer reference, ImageNet weight loading,
// BatchNorm recalibration, freezing and saving/loading a whole Classifier.
//
// Tests that need the ImageNet weights (EIGENNET_SHARED_DIR/weights) skip with a message when
// they are absent.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <eigennet/eigennet.hpp>
#include <eigennet/io/model_io.hpp>
#include <eigennet/models/classifier.hpp>
#include <eigennet/models/imagenet_weights.hpp>

using namespace eigennet;

namespace {

const std::string weights_dir = std::string(EIGENNET_SHARED_DIR) + "/weights";
const std::string file_a035 = weights_dir + "/mobilenetv2_0.35_224_imagenet_notop.safetensors";
const std::string file_a100 = weights_dir + "/mobilenetv2_1.0_224_imagenet_notop_bnfolded.safetensors";

bool weights_available() {
  struct stat info {};
  if (::stat(file_a035.c_str(), &info) == 0 && ::stat(file_a100.c_str(), &info) == 0) return true;
  MESSAGE("ImageNet weights not found under " << weights_dir << " (EIGENNET_SHARED_DIR): skipped");
  return false;
}

MobileNetV2Config config_for(float alpha, int64_t height, int64_t width, bool fused,
                             GlobalPooling pooling = GlobalPooling::none) {
  MobileNetV2Config c;
  c.alpha = alpha;
  c.height = height;
  c.width = width;
  c.fused_blocks = fused;
  c.pooling = pooling;
  return c;
}

std::unique_ptr<Sequential> make_base(float alpha, int64_t size, bool fused,
                                      GlobalPooling pooling = GlobalPooling::none, uint64_t seed = 0) {
  return make_mobilenet_v2(config_for(alpha, size, size, fused, pooling), seed);
}

const char* build_name(bool fused) { return fused ? "fused" : "reference"; }

// Smooth images in [-1, 1] (what preprocessed photos look like), different per image.
Tensor smooth_images(int64_t count, int64_t size, int64_t first = 0) {
  Tensor x(Shape{count, size, size, 3});
  int64_t i = 0;
  for (int64_t b = first; b < first + count; ++b)
    for (int64_t h = 0; h < size; ++h)
      for (int64_t w = 0; w < size; ++w)
        for (int64_t c = 0; c < 3; ++c)
          x[i++] = static_cast<float>(std::sin(0.11 * h + 0.07 * (c + 1) * w + 1.3 * b) *
                                      std::cos(0.05 * w - 0.03 * h * (b + 1)));
  return x;
}

Tensor random_tensor(const Shape& shape, Rng& rng, float scale = 1.0f) {
  Tensor t(shape);
  for (int64_t i = 0; i < t.size(); ++i) t[i] = scale * rng.normal();
  return t;
}

// Normwise relative difference: max |a - b| / max |b|.
double relative_difference(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  // An empty tensor (a moving statistic's gradient) may hold no buffer: memcmp needs one.
  return a.size() == 0 || std::memcmp(a.data(), b.data(), static_cast<size_t>(a.size()) * sizeof(float)) == 0;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.size(); ++i) m = std::max(m, static_cast<double>(std::abs(t[i])));
  return m;
}

std::map<std::string, Parameter*> by_name(const ParameterList& params) {
  std::map<std::string, Parameter*> out;
  for (Parameter* p : params) out[p->name] = p;
  return out;
}

std::string layer_of(const std::string& parameter) { return parameter.substr(0, parameter.rfind('/')); }

// Random but plausible values for every parameter: kernels ~ N(0, 1/fan_in), gamma ~ 1 + N(0, 0.2^2),
// beta and moving mean ~ N(0, 0.1^2), moving variance in [0.5, 1.5).
void perturb(const ParameterList& params, uint64_t seed) {
  Rng rng(seed);
  for (Parameter* p : params) {
    const std::string leaf = p->name.substr(p->name.rfind('/') + 1);
    Tensor& v = p->value;
    for (int64_t i = 0; i < v.size(); ++i) {
      if (leaf == "kernel" || leaf == "depthwise_kernel") {
        const int64_t fan_in = leaf == "depthwise_kernel" ? v.dim(0) * v.dim(1) : v.size() / v.shape().back();
        v[i] = rng.normal() / std::sqrt(static_cast<float>(fan_in));
      } else if (leaf == "gamma") {
        v[i] = 1.0f + 0.2f * rng.normal();
      } else if (leaf == "moving_variance") {
        v[i] = 0.5f + rng.uniform();
      } else {
        v[i] = 0.1f * rng.normal();
      }
    }
  }
}

// Copies values by name; the two lists must hold the same names and shapes.
void copy_values(const ParameterList& from, const ParameterList& to) {
  auto source = by_name(from);
  REQUIRE(from.size() == to.size());
  for (Parameter* p : to) {
    CAPTURE(p->name);
    REQUIRE(source.count(p->name) == 1);
    p->value.copy_from(source.at(p->name)->value);
  }
}

// The parameter count of Keras' MobileNetV2, recomputed here from the paper's table, independently
// of make_mobilenet_v2: {weights, statistics}.
std::pair<int64_t, int64_t> expected_counts(float alpha, bool include_top, int64_t classes = 1000) {
  int64_t weights = 0, statistics = 0;
  auto conv_bn = [&](int64_t kernel_elements, int64_t out) {
    weights += kernel_elements + 2 * out;  // kernel, gamma, beta
    statistics += 2 * out;                 // moving mean, moving variance
  };
  int64_t channels = make_divisible(32.0 * alpha);
  conv_bn(3 * 3 * 3 * channels, channels);
  for (const InvertedResidualSetting& row : mobilenet_v2_table) {
    const int64_t out = make_divisible(static_cast<double>(static_cast<int64_t>(row.channels * alpha)));
    for (int64_t i = 0; i < row.repeats; ++i) {
      const int64_t hidden = channels * row.expansion;
      if (row.expansion != 1) conv_bn(channels * hidden, hidden);
      conv_bn(3 * 3 * hidden, hidden);
      conv_bn(hidden * out, out);
      channels = out;
    }
  }
  const int64_t last = alpha > 1.0f ? make_divisible(1280.0 * alpha) : 1280;
  conv_bn(channels * last, last);
  if (include_top) weights += last * classes + classes;
  return {weights, statistics};
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    path = std::filesystem::temp_directory_path() / ("eigennet_test_mobilenet_" + std::to_string(::getpid()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// Saves `params` to path, optionally leaving one out, replacing one by a tensor of another shape, or
// adding an extra tensor.
void write_variant(const std::string& path, const ParameterList& params, const std::string& skip = "",
                   const std::string& reshape = "", const Tensor* replacement = nullptr, const std::string& extra = "",
                   const Tensor* extra_tensor = nullptr) {
  std::vector<TensorRef> refs;
  for (const Parameter* p : params) {
    if (p->name == skip) continue;
    refs.push_back({p->name, p->name == reshape ? replacement : &p->value});
  }
  if (!extra.empty()) refs.push_back({extra, extra_tensor});
  write_safetensors(path, refs);
}

}  // namespace

TEST_CASE("make_divisible rounds channel counts as Keras does") {
  CHECK(make_divisible(32 * 0.35) == 16);  // 11.2 -> 8 is more than 10% below: 16
  CHECK(make_divisible(32 * 0.5) == 16);
  CHECK(make_divisible(32 * 0.75) == 24);
  CHECK(make_divisible(32 * 1.3) == 40);  // 41.6
  CHECK(make_divisible(32 * 1.4) == 48);  // 44.8
  CHECK(make_divisible(5) == 8);          // int(16 * 0.35): never below the divisor
  CHECK(make_divisible(18) == 24);        // int(24 * 0.75): 16 is more than 10% below 18
  CHECK(make_divisible(22) == 24);        // int(64 * 0.35)
  CHECK(make_divisible(33) == 32);        // int(96 * 0.35)
  CHECK(make_divisible(56) == 56);
  CHECK(make_divisible(12) == 16);  // ties round up
  CHECK(make_divisible(1280 * 1.3) == 1664);
  CHECK(mobilenet_v2_feature_channels(0.35f) == 1280);
  CHECK(mobilenet_v2_feature_channels(1.0f) == 1280);
  CHECK(mobilenet_v2_feature_channels(1.3f) == 1664);
  CHECK(mobilenet_v2_feature_channels(1.4f) == 1792);
  CHECK(mobilenet_v2_name(config_for(0.35f, 224, 224, true)) == "mobilenetv2_0.35_224");
}

TEST_CASE("parameter counts equal Keras'") {
  for (const bool fused : {true, false}) {
    const std::string build = build_name(fused);
    CAPTURE(build);
    // Known Keras values (model.summary() of keras.applications.MobileNetV2).
    auto a100 = make_base(1.0f, 32, fused);
    CHECK(count_elements(a100->parameters()) == 2'257'984);
    CHECK(count_elements(a100->parameters(), ParameterCount::weights) == 2'223'872);
    CHECK(count_elements(a100->parameters()) - count_elements(a100->parameters(), ParameterCount::weights) == 34'112);
    // Trainable: the weights the optimizer updates now; freezing takes them out.
    CHECK(count_elements(a100->parameters(), ParameterCount::trainable) == 2'223'872);
    set_frozen(a100->parameters(), true);
    CHECK(count_elements(a100->parameters(), ParameterCount::trainable) == 0);
    CHECK(count_elements(a100->parameters(), ParameterCount::weights) == 2'223'872);
    CHECK(count_elements(make_base(0.35f, 32, fused)->parameters()) == 410'208);
    MobileNetV2Config top = config_for(1.0f, 224, 224, fused);
    top.include_top = true;
    CHECK(count_elements(make_mobilenet_v2(top)->parameters()) == 3'538'984);

    // Every alpha, with and without the top, against the count recomputed from the table.
    for (const float alpha : {0.35f, 0.5f, 0.75f, 1.0f, 1.3f, 1.4f}) {
      CAPTURE(alpha);
      for (const bool include_top : {false, true}) {
        MobileNetV2Config c = config_for(alpha, 32, 32, fused);
        c.include_top = include_top;
        c.classes = 10;
        const auto model = make_mobilenet_v2(c);  // owns the parameters the list points to
        const ParameterList params = model->parameters();
        const auto [weights, statistics] = expected_counts(alpha, include_top, 10);
        CHECK(count_elements(params, ParameterCount::weights) == weights);
        CHECK(count_elements(params) - count_elements(params, ParameterCount::weights) == statistics);
      }
    }
  }
  // The recount itself reproduces the known Keras values.
  CHECK(expected_counts(1.0f, false).first == 2'223'872);
  CHECK(expected_counts(1.0f, false).second == 34'112);
  CHECK(expected_counts(1.0f, true).first + expected_counts(1.0f, true).second == 3'538'984);
}

TEST_CASE("Keras layer and parameter names, identical in the fused and reference builds") {
  // clang-format off
  const std::vector<std::string> keras_layers = {
      "Conv1", "bn_Conv1", "Conv1_relu", "expanded_conv_depthwise", "expanded_conv_depthwise_BN",
      "expanded_conv_project", "expanded_conv_project_BN", "block_1_expand", "block_1_expand_BN",
      "block_1_depthwise", "block_13_depthwise_BN", "block_16_project", "block_16_project_BN", "Conv_1",
      "Conv_1_bn", "out_relu"};
  // clang-format on
  std::vector<std::string> parameter_names[2];
  for (const bool fused : {true, false}) {
    const std::string build = build_name(fused);
    CAPTURE(build);
    auto net = make_base(0.35f, 32, fused);
    std::set<std::string> names;
    int64_t batch_norms = 0, convolutions = 0;
    net->for_each_layer([&](Layer& l) {
      names.insert(l.name());
      batch_norms += dynamic_cast<BatchNorm*>(&l) != nullptr;
      convolutions += dynamic_cast<Conv2D*>(&l) != nullptr || dynamic_cast<DepthwiseConv2D*>(&l) != nullptr;
    });
    for (const std::string& n : keras_layers) {
      CAPTURE(n);
      CHECK(names.count(n) == 1);
    }
    CHECK(names.count("expanded_conv_expand") == 0);  // block 0 has no expansion
    CHECK(batch_norms == 52);
    CHECK(convolutions == 52);  // Conv1, 16 expand, 17 depthwise, 17 project, Conv_1
    for (Parameter* p : net->parameters()) parameter_names[fused ? 0 : 1].push_back(p->name);
  }
  CHECK(parameter_names[0] == parameter_names[1]);
  CHECK(parameter_names[0].size() == 52 * 4 + 52);  // the 260 tensors of Keras' alpha 0.35 file
  CHECK(parameter_names[0].front() == "Conv1/kernel");
  CHECK(parameter_names[0].back() == "Conv_1_bn/moving_variance");
}

TEST_CASE("output shapes for square, odd and non-square inputs") {
  // TF-SAME with five stride-2 layers: each halves the size, rounding up.
  auto reduced = [](int64_t s) {
    for (int i = 0; i < 5; ++i) s = (s + 1) / 2;
    return s;
  };
  CHECK(reduced(32) == 1);
  CHECK(reduced(96) == 3);
  CHECK(reduced(97) == 4);
  CHECK(reduced(224) == 7);
  for (const bool fused : {true, false}) {
    const std::string build = build_name(fused);
    CAPTURE(build);
    for (const int64_t size : {32, 96, 97, 224}) {
      CAPTURE(size);
      CHECK(make_base(0.35f, size, fused)->model_output_shape() == Shape{reduced(size), reduced(size), 1280});
    }
    CHECK(make_mobilenet_v2(config_for(0.35f, 97, 130, fused))->model_output_shape() == Shape{4, 5, 1280});
    CHECK(make_base(1.4f, 33, fused)->model_output_shape() == Shape{2, 2, 1792});
    CHECK(make_base(0.5f, 96, fused, GlobalPooling::avg)->model_output_shape() == Shape{1280});
    CHECK(make_base(1.3f, 96, fused, GlobalPooling::max)->model_output_shape() == Shape{1664});
    MobileNetV2Config top = config_for(0.75f, 64, 64, fused);
    top.include_top = true;
    top.classes = 10;
    CHECK(make_mobilenet_v2(top)->model_output_shape() == Shape{10});

    // The tensors a forward produces have those shapes too (odd, non-square input).
    auto net = make_mobilenet_v2(config_for(0.35f, 97, 35, fused));
    const Tensor x(Shape{2, 97, 35, 3});
    CHECK(net->forward(x, Mode::train).shape() == Shape{2, 4, 2, 1280});
  }
}

TEST_CASE("invalid alpha, input size and classes are errors") {
  CHECK_THROWS_WITH_AS(make_mobilenet_v2(config_for(0.6f, 224, 224, true)), doctest::Contains("alpha must be one of"),
                       Error);
  CHECK_THROWS_WITH_AS(make_mobilenet_v2(config_for(1.0f, 31, 224, true)),
                       doctest::Contains("at least 32x32, got 31x224"), Error);
  CHECK_THROWS_WITH_AS(make_mobilenet_v2(config_for(1.0f, 224, 16, true)), doctest::Contains("at least 32x32"), Error);
  MobileNetV2Config top = config_for(1.0f, 224, 224, true);
  top.include_top = true;
  top.classes = 0;
  CHECK_THROWS_WITH_AS(make_mobilenet_v2(top), doctest::Contains("classes must be positive"), Error);
  CHECK_NOTHROW(make_mobilenet_v2(config_for(0.35f, 32, 32, true)));
}

// Fused InvertedResidual blocks against the plain-layer reference, same weights (random, so that
// no BatchNorm is an identity), odd non-square input. Errors are normwise relative; each gradient
// is measured against the largest gradient magnitude among its layer's parameters (kernel; or
// gamma and beta), not its own: some gradients are mathematically ~0 (a project BN's beta when a
// training-mode BatchNorm follows after a linear 1x1 convolution removes any constant shift), so
// their float32 values are rounding noise relative to themselves.
// Tolerances: in inference mode both builds do the same arithmetic (measured: forward and dx
// identical, gradients 6e-7). In training mode the batch statistics are summed in different orders
// and BatchNorm over the 3 * 2 * 2 = 12 values per channel of the last blocks amplifies rounding:
// changing the input by one float32 ulp moves this network's training-mode output by 4e-5, so the
// two builds cannot agree better than that (measured: forward 2.6e-5, dx 4.8e-5, gradients 6.2e-5,
// moving statistics 7e-7). The configuration matters: alpha 1.0 at 72x72, batch 2 (18 values per
// channel at the top) is too ill-conditioned to compare at all: moving every input by one ulp
// changes the plain-layer build's own gradient of block_16_depthwise_BN/beta by 17%, which is as
// far as the two builds differ there (measured 6 December); at 96x96, batch 4 they agree to 2.6e-5
// while one ulp moves either by 3e-3.
TEST_CASE("fused blocks equal the plain-layer reference: forward, gradients, moving statistics") {
  const int64_t height = 37, width = 45, batch = 3;
  auto fused = make_mobilenet_v2(config_for(0.35f, height, width, true), 1);
  auto reference = make_mobilenet_v2(config_for(0.35f, height, width, false), 2);
  perturb(reference->parameters(), 11);
  copy_values(reference->parameters(), fused->parameters());
  Rng rng(5);
  const Tensor x = random_tensor(Shape{batch, height, width, 3}, rng);
  const Tensor dy = random_tensor(Shape{batch, 2, 2, 1280}, rng);

  const double statistics_tol = 1e-5;
  for (const Mode mode : {Mode::inference, Mode::train}) {
    const std::string mode_name = mode == Mode::train ? "train" : "inference";
    CAPTURE(mode_name);
    const double forward_tol = mode == Mode::train ? 1e-4 : 1e-6;
    const double gradient_tol = mode == Mode::train ? 2e-4 : 1e-5;
    zero_grad(fused->parameters());
    zero_grad(reference->parameters());
    Tensor y_fused, y_reference, dx_fused, dx_reference;
    fused->forward(x, y_fused, mode);
    reference->forward(x, y_reference, mode);
    const double forward_error = relative_difference(y_fused, y_reference);
    CHECK(forward_error <= forward_tol);
    fused->backward(x, y_fused, dy, &dx_fused);
    reference->backward(x, y_reference, dy, &dx_reference);
    const double dx_error = relative_difference(dx_fused, dx_reference);
    CHECK(dx_error <= gradient_tol);

    // Gradients, relative to the largest gradient of their layer.
    std::map<std::string, double> layer_scale;
    for (Parameter* p : reference->parameters())
      if (p->kind == ParameterKind::weight)
        layer_scale[layer_of(p->name)] = std::max(layer_scale[layer_of(p->name)], max_abs(p->grad));
    auto fused_params = by_name(fused->parameters());
    double worst_gradient = 0, worst_statistic = 0;
    std::string worst_gradient_name;
    for (Parameter* p : reference->parameters()) {
      CAPTURE(p->name);
      const Parameter& q = *fused_params.at(p->name);
      if (p->kind == ParameterKind::weight) {
        const double scale = layer_scale[layer_of(p->name)];
        REQUIRE(scale > 0);
        double diff = 0;
        for (int64_t i = 0; i < p->grad.size(); ++i)
          diff = std::max(diff, std::abs(static_cast<double>(q.grad[i]) - p->grad[i]));
        CHECK(diff / scale <= gradient_tol);
        if (diff / scale > worst_gradient) worst_gradient = diff / scale, worst_gradient_name = p->name;
      } else {
        // Moving statistics after this forward (updated in training mode, untouched in inference).
        const double e = relative_difference(q.value, p->value);
        CHECK(e <= statistics_tol);
        worst_statistic = std::max(worst_statistic, e);
      }
    }
    MESSAGE(mode_name << ": forward " << forward_error << ", dx " << dx_error << ", worst parameter gradient "
                      << worst_gradient << " (" << worst_gradient_name << "), moving statistics " << worst_statistic);
  }
  // The comparison has teeth: the moving statistics moved in training mode.
  auto initial = make_mobilenet_v2(config_for(0.35f, height, width, false), 2);
  perturb(initial->parameters(), 11);
  CHECK(relative_difference(by_name(fused->parameters()).at("block_5_project_BN/moving_mean")->value,
                            by_name(initial->parameters()).at("block_5_project_BN/moving_mean")->value) > 1e-3);
}

TEST_CASE("a training step is bit-identical on 1, 2 and 3 threads and run after run") {
  // Every sum the kernels split between threads is split into the same chunks on 1 to 4
  // threads and reduced in chunk order, whichever thread ran which chunk (parallel_chunks).
  const int saved_threads = max_threads();
  const int64_t size = 48, batch = 4;
  for (const bool fused : {true, false}) {
    CAPTURE(build_name(fused));
    Rng rng(21);
    const Tensor x = random_tensor(Shape{batch, size, size, 3}, rng);
    const Tensor dy = random_tensor(Shape{batch, 2, 2, 1280}, rng);
    struct Result {
      Tensor y, dx;
      std::vector<Tensor> values;  // after the step: moving statistics updated
      std::vector<Tensor> grads;
    };
    auto run = [&](int threads) {
      set_threads(threads);
      auto net = make_mobilenet_v2(config_for(0.35f, size, size, fused), 1);
      perturb(net->parameters(), 11);
      zero_grad(net->parameters());
      Result r;
      net->forward(x, r.y, Mode::train);
      net->backward(x, r.y, dy, &r.dx);
      for (Parameter* p : net->parameters()) {
        r.values.push_back(p->value);
        r.grads.push_back(p->grad);
      }
      return r;
    };
    const Result one = run(1);
    for (const int threads : {2, 2, 3}) {
      CAPTURE(threads);
      const Result other = run(threads);
      CHECK(bit_equal(other.y, one.y));
      CHECK(bit_equal(other.dx, one.dx));
      REQUIRE(other.grads.size() == one.grads.size());
      int differing = 0;
      for (size_t i = 0; i < one.grads.size(); ++i)
        differing += !bit_equal(other.grads[i], one.grads[i]) || !bit_equal(other.values[i], one.values[i]);
      CHECK(differing == 0);
    }
  }
  set_threads(saved_threads);
}

TEST_CASE("both ImageNet weight files load; a file of the wrong alpha is an error naming the tensor") {
  if (!weights_available()) return;
  for (const bool fused : {true, false}) {
    const std::string build = build_name(fused);
    CAPTURE(build);
    // Separate BatchNorm: every tensor by name, exactly the model's parameters.
    auto a035 = make_base(0.35f, 32, fused, GlobalPooling::max);
    const WeightsLoadReport r035 = load_imagenet_weights(*a035, file_a035);
    CHECK_FALSE(r035.folded_batch_norm);
    CHECK(r035.tensors_loaded == 260);
    const SafetensorsFile f035 = read_safetensors(file_a035);
    CHECK(f035.total_elements() == 410'208);  // Keras' own count, from its export
    auto params035 = by_name(a035->parameters());
    CHECK(params035.size() == f035.tensors.size());
    for (const NamedTensor& t : f035.tensors) {
      CAPTURE(t.name);
      REQUIRE(params035.count(t.name) == 1);
      CHECK(bit_equal(params035.at(t.name)->value, t.tensor));
    }

    // Folded: kernels by name, each bias as the BatchNorm's beta with gamma 1, mean 0, var 1 - eps.
    auto a100 = make_base(1.0f, 32, fused, GlobalPooling::avg);
    const WeightsLoadReport r100 = load_imagenet_weights(*a100, file_a100);
    CHECK(r100.folded_batch_norm);
    CHECK(r100.tensors_loaded == 104);
    const SafetensorsFile f100 = read_safetensors(file_a100);
    auto params100 = by_name(a100->parameters());
    int64_t biases = 0;
    for (const NamedTensor& t : f100.tensors) {
      CAPTURE(t.name);
      const std::string layer = layer_of(t.name);
      if (t.name.size() > 5 && t.name.compare(t.name.size() - 5, 5, "/bias") == 0) {
        ++biases;
        const std::string bn = batch_norm_name_for(layer);
        CHECK(bit_equal(params100.at(bn + "/beta")->value, t.tensor));
        CHECK(max_abs(params100.at(bn + "/moving_mean")->value) == 0.0);
        int64_t not_identity = 0;
        for (int64_t j = 0; j < t.tensor.size(); ++j)
          not_identity += params100.at(bn + "/gamma")->value[j] != 1.0f ||
                          params100.at(bn + "/moving_variance")->value[j] != 1.0f - 1e-3f;
        CHECK(not_identity == 0);
      } else {
        CHECK(bit_equal(params100.at(t.name)->value, t.tensor));
      }
    }
    CHECK(biases == 52);

    // The wrong alpha: the first mismatching tensor and both shapes are named; nothing changes.
    auto wrong = make_base(1.0f, 32, fused, GlobalPooling::none, 4);
    const Tensor before = by_name(wrong->parameters()).at("Conv1/kernel")->value;
    CHECK_THROWS_WITH_AS(
        load_imagenet_weights(*wrong, file_a035),
        doctest::Contains("tensor 'Conv1/kernel' has shape [3, 3, 3, 16] but the model expects [3, 3, 3, 32]"), Error);
    CHECK(bit_equal(by_name(wrong->parameters()).at("Conv1/kernel")->value, before));
    auto wrong_folded = make_base(0.35f, 32, fused);
    CHECK_THROWS_WITH_AS(load_imagenet_weights(*wrong_folded, file_a100),
                         doctest::Contains("tensor 'Conv1/bias' has shape [32] but BatchNorm 'bn_Conv1' has [16]"),
                         Error);
    CHECK_THROWS_WITH_AS(load_imagenet_weights(*wrong_folded, file_a100), doctest::Contains(file_a100.c_str()), Error);
  }

  // A folded file that lacks one bias: the BatchNorm is named and nothing is loaded (the kernels
  // used to be loaded before this check).
  TempDir dir;
  const std::string no_bias = dir.file("no_bias.safetensors");
  SafetensorsFile f100 = read_safetensors(file_a100);
  f100.tensors.erase(std::find_if(f100.tensors.begin(), f100.tensors.end(),
                                  [](const NamedTensor& t) { return t.name == "block_7_expand/bias"; }));
  write_safetensors(no_bias, f100);
  auto net = make_base(1.0f, 32, true);
  const Tensor before = by_name(net->parameters()).at("Conv1/kernel")->value;
  CHECK_THROWS_WITH_AS(load_imagenet_weights(*net, no_bias),
                       doctest::Contains("no folded bias in the file for BatchNorm 'block_7_expand_BN'"), Error);
  CHECK(bit_equal(by_name(net->parameters()).at("Conv1/kernel")->value, before));
}

// After recalibration the folded network computes the same function in inference mode as before,
// and in training mode on the calibration batch (whose statistics it now has). Differences are
// float32 rounding of algebraically equal computations, normwise relative, tolerance 3e-5: changing
// the input by one float32 ulp already moves this output by 4e-6; measured 4.8e-6 (inference) and
// 8.6e-6 (training mode; the recalibrated variances are summed around the folded moving mean 0,
// which loses digits where |mean| >> std). Without recalibration training mode is a different
// function, by far.
TEST_CASE("recalibrate_batch_norm keeps the folded network's function in both modes") {
  if (!weights_available()) return;
  const Tensor x = smooth_images(4, 64, 3);
  for (const bool fused : {true, false}) {
    const std::string build = build_name(fused);
    CAPTURE(build);
    auto net = make_base(1.0f, 64, fused, GlobalPooling::avg);
    load_imagenet_weights(*net, file_a100);
    const Tensor before_inference = net->forward(x, Mode::inference);
    const Tensor before_train = net->forward(x, Mode::train);
    CHECK(relative_difference(before_train, before_inference) > 0.1);

    load_imagenet_weights(*net, file_a100);  // the training forward moved the moving statistics
    recalibrate_batch_norm(*net, x);
    auto params = by_name(net->parameters());
    CHECK(params.at("block_5_depthwise_BN/gamma")->value[0] != 1.0f);
    CHECK(params.at("Conv_1_bn/moving_mean")->value[0] != 0.0f);
    const Tensor after_inference = net->forward(x, Mode::inference);
    const Tensor after_train = net->forward(x, Mode::train);
    const double inference_change = relative_difference(after_inference, before_inference);
    const double train_difference = relative_difference(after_train, before_inference);
    MESSAGE(build << ": inference output changed by " << inference_change << ", training-mode output differs by "
                  << train_difference);
    CHECK(inference_change <= 3e-5);
    CHECK(train_difference <= 3e-5);
  }
}

TEST_CASE("freezing: a frozen base gets no gradient and no backward; frozen BatchNorm runs in inference mode") {
  HeadConfig head;  // the study's head: Dense 128 ReLU, dropout 0.4, 7 classes
  const Tensor x = smooth_images(3, 32);
  const std::vector<int32_t> labels = {1, 4, 6};
  for (const bool fused : {true, false}) {
    const std::string build = build_name(fused);
    CAPTURE(build);
    Classifier model(make_base(0.35f, 32, fused, GlobalPooling::max), head, 9);
    perturb(model.base().parameters(), 3);
    SoftmaxCrossEntropy loss;

    model.freeze_base();
    for (Parameter* p : model.base().parameters()) CHECK(!p->trainable());
    for (Parameter* p : model.head().parameters()) CHECK(p->trainable());
    std::vector<Tensor> statistics_before;
    for (Parameter* p : model.base().parameters())
      if (p->kind == ParameterKind::statistic) statistics_before.push_back(p->value);
    const Tensor inference_features = model.base().forward(x, Mode::inference);
    zero_grad(model.parameters());
    loss.forward(model.forward(x, Mode::train), labels);
    CHECK(bit_equal(model.base().output(), inference_features));  // frozen BatchNorm: moving statistics
    profiler().reset();
    profiler().enable(true);
    model.backward(loss.gradient());
    profiler().enable(false);
    for (const auto& [category, entry] : profiler().totals()) {
      CAPTURE(category);
      CHECK((category == "dense backward" || category == "relu backward" || category == "dropout"));
    }
    size_t s = 0;
    for (Parameter* p : model.base().parameters()) {
      CAPTURE(p->name);
      if (p->kind == ParameterKind::weight)
        CHECK(max_abs(p->grad) == 0.0);
      else
        CHECK(bit_equal(p->value, statistics_before[s++]));
    }
    for (Parameter* p : model.head().parameters()) CHECK(max_abs(p->grad) > 0.0);

    // Unfrozen, the same step runs the base's backward (the check above has teeth).
    model.unfreeze_base();
    zero_grad(model.parameters());
    loss.forward(model.forward(x, Mode::train), labels);
    profiler().reset();
    profiler().enable(true);
    model.backward(loss.gradient());
    profiler().enable(false);
    CHECK(profiler().totals().count("pooling backward") == 1);
    CHECK(max_abs(by_name(model.base().parameters()).at("Conv1/kernel")->grad) > 0.0);
    profiler().reset();
  }
}

TEST_CASE("freeze_below freezes exactly the parameters before the named block") {
  // Independent of the parameter order: Conv1, bn_Conv1, expanded_conv_* and block_1..12 come
  // before block_13.
  auto before_block = [](const std::string& name, int block) {
    if (name.rfind("Conv1/", 0) == 0 || name.rfind("bn_Conv1/", 0) == 0 || name.rfind("expanded_conv_", 0) == 0)
      return true;
    if (name.rfind("block_", 0) != 0) return false;
    return std::stoi(name.substr(6)) < block;
  };
  const Tensor x = smooth_images(3, 32, 1);
  const std::vector<int32_t> labels = {0, 2, 5};
  for (const bool fused : {true, false}) {
    const std::string build = build_name(fused);
    CAPTURE(build);
    HeadConfig head;
    head.dropout = 0.0f;
    Classifier model(make_base(0.35f, 32, fused, GlobalPooling::max), head, 9);
    perturb(model.base().parameters(), 4);

    model.freeze_below("block_1");  // not confused with block_13..16
    for (Parameter* p : model.base().parameters())
      if (p->kind == ParameterKind::weight) CHECK(p->frozen == before_block(p->name, 1));

    model.freeze_below("block_13");
    int64_t frozen = 0;
    for (Parameter* p : model.parameters()) {
      CAPTURE(p->name);
      if (p->kind == ParameterKind::statistic) {
        CHECK_FALSE(p->trainable());
        continue;
      }
      CHECK(p->frozen == before_block(p->name, 13));
      frozen += p->frozen;
    }
    // Conv1 + bn_Conv1 (3), block 0 (2 convolutions, 2 BatchNorms: 6), blocks 1-12 (3 + 3: 9 each).
    CHECK(frozen == 3 + 6 + 12 * 9);
    CHECK_THROWS_WITH_AS(model.freeze_below("block_99"), doctest::Contains("no layer or block named 'block_99'"),
                         Error);

    std::map<std::string, Tensor> statistics_before;
    for (Parameter* p : model.base().parameters())
      if (p->kind == ParameterKind::statistic) statistics_before[p->name] = p->value;
    zero_grad(model.parameters());
    SoftmaxCrossEntropy loss;
    loss.forward(model.forward(x, Mode::train), labels);
    model.backward(loss.gradient());
    for (Parameter* p : model.base().parameters()) {
      CAPTURE(p->name);
      const bool below = before_block(p->name, 13);
      if (p->kind == ParameterKind::statistic) {
        // Frozen BatchNorms keep their moving statistics (inference mode); the others update them.
        CHECK(bit_equal(p->value, statistics_before.at(p->name)) == below);
      } else if (below) {
        CHECK(max_abs(p->grad) == 0.0);
      } else if (p->name.find("kernel") != std::string::npos || p->name.find("gamma") != std::string::npos) {
        CHECK(max_abs(p->grad) > 0.0);
      }
    }
  }
}

TEST_CASE("save_parameters / load_parameters round trip a Classifier bit-exactly, with clear errors") {
  TempDir dir;
  const std::string path = dir.file("classifier.safetensors");
  HeadConfig head;
  Classifier saved(make_base(0.35f, 32, true, GlobalPooling::max), head, 1);
  perturb(saved.parameters(), 21);
  save_parameters(path, saved.parameters(), {{"model", "test"}});

  Classifier loaded(make_base(0.35f, 32, true, GlobalPooling::max), head, 2);
  const ParameterList params = loaded.parameters();
  const LoadReport report = load_parameters(params, path);
  CHECK(report.loaded.size() == params.size());
  CHECK(report.missing.empty());
  CHECK(report.unexpected.empty());
  auto original = by_name(saved.parameters());
  for (Parameter* p : params) {
    CAPTURE(p->name);
    CHECK(bit_equal(p->value, original.at(p->name)->value));
  }
  const Tensor x = smooth_images(2, 32);
  const Tensor logits_saved = saved.forward(x, Mode::inference);
  CHECK(bit_equal(loaded.forward(x, Mode::inference), logits_saved));

  // Loading by moving the file's tensors gives the same parameters (and empties those tensors).
  Classifier moved(make_base(0.35f, 32, true, GlobalPooling::max), head, 5);
  SafetensorsFile file = read_safetensors(path);
  CHECK(load_parameters(moved.parameters(), std::move(file)).loaded.size() == params.size());
  for (Parameter* p : moved.parameters()) {
    CAPTURE(p->name);
    CHECK(bit_equal(p->value, original.at(p->name)->value));
  }
  for (const NamedTensor& t : file.tensors) CHECK(t.tensor.empty());  // NOLINT(bugprone-use-after-move): checked on purpose

  // The reference build reads the same file (same names and shapes).
  Classifier reference(make_base(0.35f, 32, false, GlobalPooling::max), head, 3);
  CHECK(load_parameters(reference.parameters(), path).loaded.size() == params.size());
  CHECK(relative_difference(reference.forward(x, Mode::inference), logits_saved) <= 1e-5);

  Classifier target(make_base(0.35f, 32, true, GlobalPooling::max), head, 4);
  const ParameterList target_params = target.parameters();
  const Tensor untouched = by_name(target_params).at("block_3_expand/kernel")->value;
  auto target_unchanged = [&] {
    return bit_equal(by_name(target_params).at("block_3_expand/kernel")->value, untouched);
  };

  const std::string missing = dir.file("missing.safetensors");
  write_variant(missing, saved.parameters(), "block_5_project_BN/gamma");
  CHECK_THROWS_WITH_AS(
      load_parameters(target_params, missing),
      doctest::Contains("1 model parameter(s) missing from the file, first 'block_5_project_BN/gamma'"), Error);
  CHECK(target_unchanged());
  LoadOptions allow_missing;
  allow_missing.allow_missing = true;
  const LoadReport partial = load_parameters(target_params, missing, allow_missing);
  CHECK(partial.missing == std::vector<std::string>{"block_5_project_BN/gamma"});
  CHECK(partial.loaded.size() == params.size() - 1);

  const std::string reshaped = dir.file("reshaped.safetensors");
  const Tensor wrong_shape(Shape{3, 3, 3, 8});
  write_variant(reshaped, saved.parameters(), "", "Conv1/kernel", &wrong_shape);
  Classifier target2(make_base(0.35f, 32, true, GlobalPooling::max), head, 4);
  CHECK_THROWS_WITH_AS(
      load_parameters(target2.parameters(), reshaped),
      doctest::Contains("tensor 'Conv1/kernel' has shape [3, 3, 3, 8] but the model expects [3, 3, 3, 16]"), Error);
  CHECK(bit_equal(by_name(target2.parameters()).at("block_3_expand/kernel")->value, untouched));

  const std::string extra = dir.file("extra.safetensors");
  const Tensor extra_tensor(Shape{4});
  write_variant(extra, saved.parameters(), "", "", nullptr, "optimizer/step", &extra_tensor);
  Classifier target3(make_base(0.35f, 32, true, GlobalPooling::max), head, 4);
  CHECK_THROWS_WITH_AS(load_parameters(target3.parameters(), extra),
                       doctest::Contains("1 tensor(s) the model does not have, first 'optimizer/step'"), Error);
  CHECK(bit_equal(by_name(target3.parameters()).at("block_3_expand/kernel")->value, untouched));
  LoadOptions allow_unexpected;
  allow_unexpected.allow_unexpected = true;
  const LoadReport with_extra = load_parameters(target3.parameters(), extra, allow_unexpected);
  CHECK(with_extra.unexpected == std::vector<std::string>{"optimizer/step"});
  CHECK(bit_equal(target3.forward(x, Mode::inference), logits_saved));
}
