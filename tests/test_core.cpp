// Tensor, Shape, Rng and the Sequential container: the basics everything else stands on.
#include <doctest/doctest.h>

#include <eigennet/eigennet.hpp>

using namespace eigennet;

TEST_CASE("Shape counts elements and rejects bad ranks") {
  Shape s{2, 3, 4};
  CHECK(s.rank() == 3);
  CHECK(s.elements() == 24);
  CHECK(s.with_batch(5) == Shape{5, 2, 3, 4});
  CHECK(Shape{5, 2, 3}.without_batch() == Shape{2, 3});
  CHECK_THROWS_WITH_AS(Shape({1, 2, 3, 4, 5, 6, 7}), doctest::Contains("rank"), Error);
  CHECK_THROWS_AS(Shape({2, -1}), Error);
}

TEST_CASE("Tensor keeps its capacity when resized smaller") {
  Tensor t(Shape{4, 8});
  const float* before = t.data();
  t.resize(Shape{2, 8});
  CHECK(t.data() == before);
  CHECK(t.size() == 16);
  t.resize(Shape{4, 8});
  CHECK(t.data() == before);
  CHECK(t.matrix().rows() == 4);
  CHECK(t.matrix().cols() == 8);
  CHECK_THROWS_AS(t.view<3>(), Error);
}

TEST_CASE("Rng is deterministic and uniform in [0, 1)") {
  Rng a(42), b(42), c(43);
  bool differs = false;
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const float x = a.uniform();
    CHECK(x == b.uniform());
    differs |= x != c.uniform();
    CHECK(x >= 0.0f);
    CHECK(x < 1.0f);
    sum += x;
  }
  CHECK(differs);
  CHECK(sum / 10000 == doctest::Approx(0.5).epsilon(0.02));
}

TEST_CASE("Sequential builds shapes as layers are added") {
  Sequential net("net", Shape{9, 9, 3}, 1);
  net.add<Conv2D>("conv", 8, 3, 2, Padding::same);
  CHECK(net.model_output_shape() == Shape{5, 5, 8});
  net.add<BatchNorm>("bn");
  net.add<ReLU6>("relu");
  net.add<GlobalAvgPool>("pool");
  net.add<Dense>("dense", 4);
  CHECK(net.model_output_shape() == Shape{4});
  CHECK(net.parameters().size() == 2 + 4 + 2);
  Tensor x(Shape{2, 9, 9, 3});
  const Tensor& y = net.forward(x, Mode::train);
  CHECK(y.shape() == Shape{2, 4});
  CHECK_THROWS_WITH_AS(net.forward(Tensor(Shape{2, 8, 9, 3}), Mode::train), doctest::Contains("expected input"), Error);
  CHECK_THROWS_WITH_AS(net.add<Dense>("dense", 3), doctest::Contains("duplicate layer name"), Error);
}
