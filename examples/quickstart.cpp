// The README's usage example: a small convolutional network learns to tell horizontal from
// vertical stripes.
#include <cstdio>
#include <eigennet/eigennet.hpp>
using namespace eigennet;

int main() {
  Sequential net("stripes", Shape{8, 8, 1}, /*seed=*/1);   // per-sample input: 8x8, 1 channel
  net.add<Conv2D>("conv", 8, 3, 1, Padding::same);           // 8 filters, 3x3, stride 1
  net.add<BatchNorm>("bn");
  net.add<ReLU6>("relu");
  net.add<GlobalAvgPool>("pool");
  net.add<Dense>("logits", 2);
  Tensor x(Shape{16, 8, 8, 1});                              // a batch: NHWC, float32
  std::vector<int32_t> labels(16);
  for (int n = 0; n < 16; ++n) {
    labels[n] = n % 2;                                       // 0: horizontal, 1: vertical
    for (int i = 0; i < 64; ++i) x[n * 64 + i] = ((labels[n] ? i % 8 : i / 8) % 2) ? 1.0f : -1.0f;
  }
  Adam adam(net.parameters());                               // Keras defaults: lr 1e-3, ...
  SoftmaxCrossEntropy loss;
  for (int step = 0; step < 200; ++step) {
    adam.zero_grad();
    const float l = loss.forward(net.forward(x, Mode::train), labels);
    net.backward(loss.gradient());
    adam.step();
    if (step % 50 == 0) std::printf("step %3d  loss %.4f\n", step, l);
  }
  const std::vector<int32_t> predicted = argmax_predictions(net.forward(x, Mode::inference));
  int correct = 0;
  for (int n = 0; n < 16; ++n) correct += predicted[n] == labels[n];
  std::printf("accuracy %d/16\n", correct);
  return correct == 16 ? 0 : 1;
}
