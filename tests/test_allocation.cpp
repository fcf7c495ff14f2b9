// No heap allocation inside a training step once shapes are known: every buffer (activations,
// gradients, scratch, optimizer state) is reused. malloc and friends are interposed for this test
// binary and count calls while a step runs.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>

#include <eigennet/eigennet.hpp>

namespace {
std::atomic<bool> counting{false};
std::atomic<long> allocations{0};
void count() {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

// AddressSanitizer owns malloc: interposing it as well hands ASan's free pointers it never
// allocated. Under ASan the test is skipped (the plain build runs it).
#if defined(__SANITIZE_ADDRESS__)
#define EIGENNET_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EIGENNET_TEST_UNDER_ASAN 1
#endif
#endif

#ifndef EIGENNET_TEST_UNDER_ASAN
extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
}

extern "C" {
void* malloc(size_t n) {
  count();
  return __libc_malloc(n);
}
void* calloc(size_t n, size_t size) {
  count();
  return __libc_calloc(n, size);
}
void* realloc(void* p, size_t n) {
  count();
  return __libc_realloc(p, n);
}
void* memalign(size_t alignment, size_t n) {
  count();
  return __libc_memalign(alignment, n);
}
void* aligned_alloc(size_t alignment, size_t n) {
  count();
  return __libc_memalign(alignment, n);
}
int posix_memalign(void** out, size_t alignment, size_t n) {
  count();
  *out = __libc_memalign(alignment, n);
  return *out ? 0 : 12;  // ENOMEM
}
}
#endif

using namespace eigennet;

namespace {
// Counts allocations made by `step`.
template <typename Step>
long allocations_during(Step&& step) {
  allocations = 0;
  counting = true;
  step();
  counting = false;
  return allocations.load();
}
}  // namespace

TEST_CASE("a MobileNetV2 training step and an inference batch allocate nothing once warmed up") {
#ifdef EIGENNET_TEST_UNDER_ASAN
  MESSAGE("skipped under AddressSanitizer, which owns malloc");
  return;
#endif
  MobileNetV2Config config;
  config.alpha = 0.35f;
  config.height = config.width = 64;
  config.pooling = GlobalPooling::max;
  Classifier model(make_mobilenet_v2(config, 1), HeadConfig{32, 0.4f, 7}, 2);
  Adam adam(model.parameters(), Adam::Options{});
  SoftmaxCrossEntropy loss(SoftmaxCrossEntropy::Options{{}, 0.1f});
  Tensor x(Shape{8, 64, 64, 3});
  Rng rng(3);
  for (int64_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(-1, 1);
  std::vector<int32_t> labels = {0, 1, 2, 3, 4, 5, 6, 0};
  const ParameterList params = model.parameters();
  auto train_step = [&] {
    adam.zero_grad();
    loss.forward(model.forward(x, Mode::train), labels);
    model.backward(loss.gradient());
    clip_grad_norm(params, 5.0);
    adam.step();
  };
  auto inference = [&] { model.forward(x, Mode::inference); };
  for (int i = 0; i < 2; ++i) {  // warm-up: buffers reach their sizes, OpenMP starts its threads
    train_step();
    inference();
  }
  CHECK(allocations_during(train_step) == 0);
  CHECK(allocations_during(inference) == 0);
  // Fine-tuning from a block: frozen parameters take other paths.
  model.freeze_below("block_8");
  Adam partial(model.parameters(), Adam::Options{});
  auto partial_step = [&] {
    partial.zero_grad();
    loss.forward(model.forward(x, Mode::train), labels);
    model.backward(loss.gradient());
    partial.step();
  };
  partial_step();
  partial_step();
  CHECK(allocations_during(partial_step) == 0);
  // The counter works: a vector allocates.
  CHECK(allocations_during([] { std::vector<float> v(1000); }) >= 1);
}

TEST_CASE("an inference batch through the compiled net (InferenceNet) allocates nothing once warmed up") {
#ifdef EIGENNET_TEST_UNDER_ASAN
  MESSAGE("skipped under AddressSanitizer, which owns malloc");
  return;
#endif
  MobileNetV2Config config;
  config.alpha = 0.35f;
  config.height = config.width = 64;
  config.pooling = GlobalPooling::max;
  Classifier model(make_mobilenet_v2(config, 1), HeadConfig{32, 0.4f, 7}, 2);
  InferenceNet net = compile_for_inference(model);
  Tensor batch(Shape{8, 64, 64, 3}), one(Shape{1, 64, 64, 3});
  Rng rng(3);
  for (int64_t i = 0; i < batch.size(); ++i) batch[i] = rng.uniform(-1, 1);
  for (int64_t i = 0; i < one.size(); ++i) one[i] = rng.uniform(-1, 1);
  auto both = [&] {  // a batch, then a single image (a smaller batch reuses the buffers)
    net.forward(batch);
    net.forward(one);
  };
  for (int i = 0; i < 2; ++i) both();
  CHECK(allocations_during(both) == 0);
}
