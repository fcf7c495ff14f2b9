// BlazeFace and the face detector: the network against the original ONNX graphs (fixtures from
// tests/fixtures/make_blazeface_fixtures.py), anchors, decoding, weighted non-maximum
// suppression, letterboxing and the face crop against hand-worked cases, and detection on a
// picture made here from FER-2013 test faces pasted at known places.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <eigennet/detect/annotate.hpp>
#include <eigennet/detect/face_crop.hpp>
#include <eigennet/detect/face_detector.hpp>
#include <eigennet/inference/blazeface_inference.hpp>
#include <eigennet/eigennet.hpp>
#include <eigennet/models/blazeface.hpp>

using namespace eigennet;
using doctest::Approx;
using doctest::Contains;

namespace {

const std::string fixtures = EIGENNET_FIXTURES_DIR;
const std::string weights_dir = std::string(EIGENNET_SOURCE_DIR) + "/weights";

std::string weights_path(BlazeFaceVariant v) {
  return weights_dir + "/blazeface_" + to_string(v) + ".safetensors";
}

// The fixture photo and its mirror image as a batch in [-1, 1].
Tensor fixture_batch(int size) {
  const Image photo = load_image(fixtures + "/blazeface_input_" + std::to_string(size) + ".png", ColorMode::rgb);
  REQUIRE(photo.width == size);
  REQUIRE(photo.height == size);
  Tensor x(Shape{2, size, size, 3});
  for (int y = 0; y < size; ++y)
    for (int i = 0; i < size; ++i)
      for (int c = 0; c < 3; ++c) {
        x[((0 * size + y) * size + i) * 3 + c] = photo.at(y, i, c) / 127.5f - 1.0f;
        x[((1 * size + y) * size + (size - 1 - i)) * 3 + c] = photo.at(y, i, c) / 127.5f - 1.0f;
      }
  return x;
}

double relative_error(const Tensor& actual, const Tensor& expected) {
  double max_abs = 0, scale = 0;
  for (int64_t i = 0; i < expected.size(); ++i) {
    max_abs = std::max(max_abs, std::abs(static_cast<double>(actual[i]) - expected[i]));
    scale = std::max(scale, std::abs(static_cast<double>(expected[i])));
  }
  return max_abs / scale;
}

FaceDetection detection(Box box, float score) {
  FaceDetection d;
  d.box = box;
  d.score = score;
  for (size_t k = 0; k < 6; ++k) d.keypoints[k] = {box.x + static_cast<float>(k), box.y + 2.0f * static_cast<float>(k)};
  return d;
}

}  // namespace

TEST_CASE("BlazeFace: architecture, parameter counts and names") {
  BlazeFace front(BlazeFaceVariant::front_128);
  BlazeFace back(BlazeFaceVariant::back_256);
  // The parameter counts of the ONNX graphs' weights (tools/convert_blazeface.py prints them).
  CHECK(count_elements(front.parameters()) == 100412);
  CHECK(count_elements(back.parameters()) == 134704);
  CHECK(front.anchor_count() == 896);
  CHECK(back.anchor_count() == 896);
  CHECK(front.to_16x16().model_output_shape() == Shape{16, 16, 88});
  CHECK(front.to_8x8().model_output_shape() == Shape{8, 8, 96});
  CHECK(back.to_16x16().model_output_shape() == Shape{16, 16, 96});
  std::vector<std::string> names;
  for (const Parameter* p : front.parameters()) names.push_back(p->name);
  for (const char* name : {"conv1/kernel", "block_1_depthwise/depthwise_kernel", "block_3_project/bias",
                           "block_16_project/kernel", "classifier_16x16/kernel", "regressor_8x8/bias"})
    CHECK(std::find(names.begin(), names.end(), name) != names.end());
}

TEST_CASE("BlazeFace: the network with the committed weights reproduces the ONNX graphs (rel <= 1e-4)") {
  for (BlazeFaceVariant v : {BlazeFaceVariant::front_128, BlazeFaceVariant::back_256}) {
    CAPTURE(to_string(v));
    BlazeFace net(v);
    load_blazeface_weights(net, weights_path(v));
    const SafetensorsFile expected =
        read_safetensors(fixtures + "/blazeface_" + std::string(to_string(v)) + "_outputs.safetensors");
    const Tensor x = fixture_batch(static_cast<int>(net.input_size()));
    Tensor scores, boxes, fast_scores, fast_boxes;
    net.forward(x, scores, boxes);
    // The detector runs the compiled net (fused BlazeBlocks): the same witness for it.
    compile_for_inference(net).forward(x, fast_scores, fast_boxes);
    REQUIRE(scores.shape() == expected.at("scores").shape());
    REQUIRE(boxes.shape() == expected.at("boxes").shape());
    REQUIRE(fast_scores.shape() == expected.at("scores").shape());
    REQUIRE(fast_boxes.shape() == expected.at("boxes").shape());
    const double score_error = relative_error(scores, expected.at("scores"));
    const double box_error = relative_error(boxes, expected.at("boxes"));
    const double fast_score_error = relative_error(fast_scores, expected.at("scores"));
    const double fast_box_error = relative_error(fast_boxes, expected.at("boxes"));
    std::printf("BlazeFace %s vs ONNX: scores rel %.2e, boxes rel %.2e; compiled: %.2e, %.2e\n", to_string(v),
                score_error, box_error, fast_score_error, fast_box_error);
    CHECK(score_error <= 1e-4);
    CHECK(box_error <= 1e-4);
    CHECK(fast_score_error <= 1e-4);
    CHECK(fast_box_error <= 1e-4);
    // The photo holds faces: some anchor is confident, so the comparison covers real detections.
    CHECK(*std::max_element(scores.data(), scores.data() + scores.size()) > 1.0f);
  }
}

TEST_CASE("BlazeFace compiled for inference equals the plain network: every block fused, batch 1 and 3") {
  // Each variant at its own square input and at a non-square one (the detector's fitted inputs).
  struct Case {
    BlazeFaceVariant variant;
    int64_t height, width;
  };
  for (const Case c : {Case{BlazeFaceVariant::front_128, 0, 0}, Case{BlazeFaceVariant::back_256, 0, 0},
                       Case{BlazeFaceVariant::front_128, 64, 112}, Case{BlazeFaceVariant::back_256, 320, 256}}) {
    const BlazeFaceVariant v = c.variant;
    CAPTURE(to_string(v));
    CAPTURE(c.height);
    // Random weights (seed 5) and random biases, so that every add, pad and clamp matters.
    BlazeFace net(v, 5, c.height, c.width);
    Rng rng(11);
    for (Parameter* p : net.parameters())
      if (p->name.find("bias") != std::string::npos)
        for (int64_t i = 0; i < p->value.size(); ++i) p->value[i] = rng.uniform(-0.5f, 0.5f);
    BlazeFaceInference fast = compile_for_inference(net);
    // One step per BlazeBlock: no plain layer, ReLU, residual or fallback step is left.
    const std::string summary = fast.summary();
    CHECK(summary.find("fallback") == std::string::npos);
    CHECK(summary.find("affine") == std::string::npos);
    CHECK(summary.find("residual block_") == std::string::npos);
    CHECK(summary.find("shortcut {") != std::string::npos);  // the max-pooled (and padded) shortcuts
    const int64_t blocks = static_cast<int64_t>(std::count(summary.begin(), summary.end(), '\n')) - 1;  // - conv1
    int64_t expected_blocks = 0;
    for (const auto* table : {&net.architecture().to_16x16, &net.architecture().to_8x8})
      for (const BlazeBlockSetting& b : *table) expected_blocks += b.repeats;
    CHECK(blocks == expected_blocks);
    for (int64_t batch : {1, 3}) {
      CAPTURE(batch);
      Tensor x(Shape{batch, net.input_height(), net.input_width(), 3});
      for (int64_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(-1.0f, 1.0f);
      Tensor scores, boxes, fast_scores, fast_boxes;
      net.forward(x, scores, boxes);
      fast.forward(x, fast_scores, fast_boxes);
      REQUIRE(fast_scores.shape() == scores.shape());
      REQUIRE(fast_boxes.shape() == boxes.shape());
      REQUIRE(scores.dim(1) == net.anchor_count());
      CHECK(relative_error(fast_scores, scores) <= 1e-5);
      CHECK(relative_error(fast_boxes, boxes) <= 1e-5);
    }
  }
}

TEST_CASE("BlazeFace compiled for two input sizes in one set of activation buffers gives what each gives alone") {
  // The detector's runs (the square whole picture, then fitted tiles) share buffers: run
  // alternately, each must still give what a net with buffers of its own gives.
  BlazeFace square(BlazeFaceVariant::front_128, 5);
  BlazeFace tall(BlazeFaceVariant::front_128, 0, 160, 96);
  const ParameterList from = square.parameters(), to = tall.parameters();
  for (size_t i = 0; i < from.size(); ++i) to[i]->value.copy_from(from[i]->value);
  BlazeFaceInference square_alone = compile_for_inference(square), tall_alone = compile_for_inference(tall);
  BlazeFaceInference square_shared = compile_for_inference(square), tall_shared = compile_for_inference(tall);
  tall_shared.share_buffers_with(square_shared);
  Rng rng(3);
  const auto random_input = [&](int64_t batch, int64_t height, int64_t width) {
    Tensor x(Shape{batch, height, width, 3});
    for (int64_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(-1.0f, 1.0f);
    return x;
  };
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    const Tensor a = random_input(1 + round, 128, 128), b = random_input(2 - round, 160, 96);
    Tensor scores, boxes, shared_scores, shared_boxes;
    square_alone.forward(a, scores, boxes);
    square_shared.forward(a, shared_scores, shared_boxes);
    CHECK(relative_error(shared_scores, scores) == 0.0);
    CHECK(relative_error(shared_boxes, boxes) == 0.0);
    tall_alone.forward(b, scores, boxes);
    tall_shared.forward(b, shared_scores, shared_boxes);
    CHECK(relative_error(shared_scores, scores) == 0.0);
    CHECK(relative_error(shared_boxes, boxes) == 0.0);
  }
}

TEST_CASE("BlazeFace weights: a clear error for the wrong file or variant") {
  CHECK_THROWS_WITH_AS(BlazeFace(BlazeFaceVariant::back_256, 0, 100, 256), Contains("is not a multiple of 32"), Error);
  CHECK(BlazeFace(BlazeFaceVariant::back_256, 0, 192, 256).anchor_count() ==
        static_cast<int64_t>(ssd_anchors(192, 256, {16, 32, 32, 32}).size()));
  CHECK(BlazeFace(BlazeFaceVariant::front_128, 0, 64, 112).anchor_count() ==
        static_cast<int64_t>(ssd_anchors(64, 112, {8, 16, 16, 16}).size()));
  BlazeFace front(BlazeFaceVariant::front_128);
  CHECK_THROWS_WITH_AS(load_blazeface_weights(front, weights_path(BlazeFaceVariant::back_256)),
                       Contains("holds the BlazeFace variant 'back_256' but the network is 'front_128'"), Error);
  CHECK_THROWS_WITH_AS(load_blazeface_weights(front, fixtures + "/conv2d.safetensors"),
                       Contains("is not a BlazeFace weight file"), Error);
  FaceDetectorOptions options;
  options.weights = fixtures + "/missing.safetensors";
  CHECK_THROWS_WITH_AS(FaceDetector{options}, Contains("missing.safetensors"), Error);
  options.weights = weights_path(BlazeFaceVariant::back_256);
  options.min_score = 1.5f;
  CHECK_THROWS_WITH_AS(FaceDetector{options}, Contains("min_score must be in (0, 1)"), Error);
}

TEST_CASE("ssd_anchors: MediaPipe's grids for both variants") {
  const std::vector<Anchor> front = ssd_anchors(128, {8, 16, 16, 16});
  const std::vector<Anchor> back = ssd_anchors(256, {16, 32, 32, 32});
  REQUIRE(front.size() == 896);
  REQUIRE(back.size() == 896);
  // 16x16 grid, 2 anchors per cell: cells of 1/16, centres at (i + 0.5) / 16.
  CHECK(front[0].x == Approx(0.5 / 16));
  CHECK(front[1].x == Approx(0.5 / 16));
  CHECK(front[2].x == Approx(1.5 / 16));
  CHECK(front[32].y == Approx(1.5 / 16));  // second row
  CHECK(front[511].x == Approx(15.5 / 16));
  CHECK(front[511].y == Approx(15.5 / 16));
  // 8x8 grid, 6 per cell.
  CHECK(front[512].x == Approx(0.5 / 8));
  CHECK(front[517].x == Approx(0.5 / 8));
  CHECK(front[518].x == Approx(1.5 / 8));
  CHECK(front[512 + 6 * 8].y == Approx(1.5 / 8));
  for (size_t i = 0; i < front.size(); ++i) {
    CHECK(front[i].x == back[i].x);
    CHECK(front[i].y == back[i].y);
  }
  CHECK_THROWS_AS(ssd_anchors(128, {0}), Error);
  // A 256x192 input (a 640x480 picture scaled by 0.4): a 16x12 grid, then an 8x6 grid.
  const std::vector<Anchor> wide = ssd_anchors(192, 256, {16, 32, 32, 32});
  REQUIRE(wide.size() == 16 * 12 * 2 + 8 * 6 * 6);
  CHECK(wide[0].x == Approx(0.5 / 16));
  CHECK(wide[0].y == Approx(0.5 / 12));
  CHECK(wide[32].x == Approx(0.5 / 16));  // second row: 16 cells x 2 anchors later
  CHECK(wide[32].y == Approx(1.5 / 12));
  CHECK(wide[383].x == Approx(15.5 / 16));
  CHECK(wide[383].y == Approx(11.5 / 12));
  CHECK(wide[384].x == Approx(0.5 / 8));
  CHECK(wide[384 + 6 * 8].y == Approx(1.5 / 6));
  CHECK(wide.back().y == Approx(5.5 / 6));
}

TEST_CASE("decode_blazeface: sigmoid scores, threshold, box and keypoint offsets") {
  const std::vector<Anchor> anchors = {{0.25f, 0.5f}, {0.75f, 0.75f}, {0.5f, 0.5f}};
  // logit 0 -> 0.5, logit ln(3) -> 0.75, logit -2 -> 0.119 (dropped at 0.5).
  const float scores[3] = {0.0f, std::log(3.0f), -2.0f};
  float boxes[3 * 16] = {};
  // Anchor 1: centre offset (+12.8, -6.4) px on a 128 input = (+0.1, -0.05); size 32 x 64 px.
  const float r[16] = {12.8f, -6.4f, 32.0f, 64.0f, 0, 0, 1.28f, 2.56f, -12.8f, 0, 0, 12.8f, 64, 64, -64, -64};
  std::copy(r, r + 16, boxes + 16);
  const std::vector<FaceDetection> d = decode_blazeface(scores, boxes, anchors, 128.0f, 0.5f);
  REQUIRE(d.size() == 2);
  CHECK(d[0].score == Approx(0.5));
  CHECK(d[0].box.width == 0.0f);
  CHECK(d[0].keypoints[0].x == Approx(0.25));
  CHECK(d[1].score == Approx(0.75));
  CHECK(d[1].support == Approx(0.75));  // one anchor: its own score
  CHECK(d[1].box.center_x() == Approx(0.85));
  CHECK(d[1].box.center_y() == Approx(0.70));
  CHECK(d[1].box.width == Approx(0.25));
  CHECK(d[1].box.height == Approx(0.5));
  CHECK(d[1].box.x == Approx(0.725));
  CHECK(d[1].keypoint(FaceKeypoint::right_eye).x == Approx(0.75));
  CHECK(d[1].keypoint(FaceKeypoint::left_eye).x == Approx(0.76));
  CHECK(d[1].keypoint(FaceKeypoint::left_eye).y == Approx(0.77));
  CHECK(d[1].keypoint(FaceKeypoint::nose_tip).x == Approx(0.65));
  CHECK(d[1].keypoint(FaceKeypoint::mouth_center).y == Approx(0.85));
  CHECK(d[1].keypoint(FaceKeypoint::right_ear).x == Approx(1.25));
  CHECK(d[1].keypoint(FaceKeypoint::left_ear).y == Approx(0.25));
  // Logits beyond +-100 are clipped (no overflow in exp, no NaN).
  const float extreme[3] = {1e30f, -1e30f, std::numeric_limits<float>::infinity()};
  const std::vector<FaceDetection> e = decode_blazeface(extreme, boxes, anchors, 128.0f, 0.5f);
  REQUIRE(e.size() == 2);
  CHECK(e[0].score == 1.0f);
  const float nan[3] = {std::nanf(""), 0.0f, std::nanf("")};
  CHECK(decode_blazeface(nan, boxes, anchors, 128.0f, 0.5f).size() == 1);  // NaN scores drop out
  // A 256x64 input: x offsets and widths in units of 256 pixels, y ones of 64.
  const std::vector<FaceDetection> w = decode_blazeface(scores, boxes, anchors, 256.0f, 64.0f, 0.5f);
  REQUIRE(w.size() == 2);
  CHECK(w[1].box.center_x() == Approx(0.75 + 12.8 / 256));
  CHECK(w[1].box.center_y() == Approx(0.75 - 6.4 / 64));
  CHECK(w[1].box.width == Approx(32.0 / 256));
  CHECK(w[1].box.height == Approx(1.0));
  CHECK(w[1].keypoint(FaceKeypoint::left_eye).x == Approx(0.75 + 1.28 / 256));
  CHECK(w[1].keypoint(FaceKeypoint::left_eye).y == Approx(0.75 + 2.56 / 64));
}

TEST_CASE("intersection_over_union: hand-worked boxes") {
  CHECK(intersection_over_union({0, 0, 10, 10}, {0, 0, 10, 10}) == Approx(1.0));
  CHECK(intersection_over_union({0, 0, 10, 10}, {5, 0, 10, 10}) == Approx(50.0 / 150.0));
  CHECK(intersection_over_union({0, 0, 10, 10}, {2, 2, 4, 4}) == Approx(16.0 / 100.0));
  CHECK(intersection_over_union({0, 0, 10, 10}, {10, 0, 10, 10}) == 0.0f);  // touching
  CHECK(intersection_over_union({0, 0, 0, 0}, {0, 0, 0, 0}) == 0.0f);
}

TEST_CASE("weighted_non_max_suppression: MediaPipe's weighted mean of overlapping detections") {
  // a and b overlap (IoU 90 / 110 = 0.82), c overlaps a only by IoU 20 / 180 = 0.11, d is alone.
  const FaceDetection a = detection({0, 0, 10, 10}, 0.9f);
  const FaceDetection b = detection({1, 0, 10, 10}, 0.6f);
  const FaceDetection c = detection({8, 0, 10, 10}, 0.7f);
  const FaceDetection d = detection({50, 50, 4, 4}, 0.95f);
  const std::vector<FaceDetection> out = weighted_non_max_suppression({b, a, c, d}, 0.3f);
  REQUIRE(out.size() == 3);
  // Best first: d alone, unchanged.
  CHECK(out[0].score == Approx(0.95));
  CHECK(out[0].box.x == Approx(50));
  // a absorbs b: x = (0.9 * 0 + 0.6 * 1) / 1.5 = 0.4, keypoints likewise, a's score.
  CHECK(out[1].score == Approx(0.9));
  CHECK(out[1].box.x == Approx(0.4));
  CHECK(out[1].box.width == Approx(10));
  CHECK(out[1].keypoints[3].x == Approx(3.4));
  CHECK(out[1].keypoints[3].y == Approx(6.0));
  // c was not absorbed by a (IoU 0.11), and b, already taken by a, is not merged into it.
  CHECK(out[2].score == Approx(0.7));
  CHECK(out[2].box.x == Approx(8));
  // A looser threshold merges c into a's group too: x = (0 + 0.6 + 0.7 * 8) / 2.2.
  const std::vector<FaceDetection> loose = weighted_non_max_suppression({a, b, c}, 0.1f);
  REQUIRE(loose.size() == 1);
  CHECK(loose[0].box.x == Approx(6.2 / 2.2));
  CHECK(weighted_non_max_suppression({}, 0.3f).empty());
}

TEST_CASE("letterbox: a 640x480 picture into 128x128 and back") {
  const Letterbox l = make_letterbox(0, 0, 640, 480, 128);
  CHECK(l.scale_x == Approx(0.2));
  CHECK(l.scale_y == Approx(0.2));
  CHECK(l.pad_x == 0.0f);
  CHECK(l.pad_y == 16.0f);  // 96 rows of picture, 16 black rows above and below
  const Point centre = l.point_to_image({0.5f, 0.5f});
  CHECK(centre.x == Approx(320));
  CHECK(centre.y == Approx(240));
  const Point corner = l.point_to_image({0.0f, 16.0f / 128.0f});
  CHECK(corner.x == Approx(0));
  CHECK(corner.y == Approx(0));
  // A region of the picture (a tile): offsets are added back.
  const Letterbox t = make_letterbox(100, 50, 200, 400, 256);
  CHECK(t.pad_x == 64.0f);
  CHECK(t.point_to_image({64.0f / 256, 0}).x == Approx(100));
  CHECK(t.point_to_image({64.0f / 256, 0}).y == Approx(50));
  // The pixels: a grey picture gives grey inside and black (-1) in the borders.
  Image grey;
  grey.width = 64;
  grey.height = 32;
  grey.channels = 1;
  grey.pixels.assign(64 * 32, 255);
  std::vector<float> input(16 * 16 * 3);
  const Letterbox g = letterbox_image(grey, 0, 0, 64, 32, 16, input.data());
  CHECK(g.pad_y == 4.0f);
  CHECK(input[(0 * 16 + 0) * 3] == -1.0f);
  CHECK(input[(8 * 16 + 8) * 3 + 2] == Approx(1.0));
  CHECK(input[(12 * 16 + 8) * 3] == -1.0f);
  CHECK_THROWS_WITH_AS(letterbox_image(grey, 10, 0, 64, 32, 16, input.data()), Contains("is not inside"), Error);
  // Into a fitted, non-square input: 640x480 into 256x192 needs no border; into 256x224, 16 rows
  // above and below.
  const Letterbox fitted = make_letterbox(0, 0, 640, 480, 256, 192);
  CHECK(fitted.scale_x == Approx(0.4));
  CHECK(fitted.scale_y == Approx(0.4));
  CHECK(fitted.pad_x == 0.0f);
  CHECK(fitted.pad_y == 0.0f);
  CHECK(fitted.point_to_image({1.0f, 1.0f}).x == Approx(640));
  CHECK(fitted.point_to_image({1.0f, 1.0f}).y == Approx(480));
  const Letterbox taller = make_letterbox(0, 0, 640, 480, 256, 224);
  CHECK(taller.pad_y == 16.0f);
  CHECK(taller.point_to_image({0.5f, 16.0f / 224}).y == Approx(0));
  FaceDetection unit;
  unit.box = {0.25f, 0.5f, 0.5f, 0.25f};
  const FaceDetection mapped = fitted.to_image(unit);
  CHECK(mapped.box.x == Approx(160));
  CHECK(mapped.box.y == Approx(240));
  CHECK(mapped.box.width == Approx(320));
  CHECK(mapped.box.height == Approx(120));
  std::vector<float> strip(16 * 12 * 3);
  const Letterbox s = letterbox_image(grey, 0, 0, 64, 32, 16, 12, strip.data());  // 16x8 picture, 2 rows each side
  CHECK(s.pad_y == 2.0f);
  CHECK(strip[(1 * 16 + 8) * 3] == -1.0f);
  CHECK(strip[(2 * 16 + 8) * 3] == Approx(1.0));
  CHECK(strip[(9 * 16 + 8) * 3] == Approx(1.0));
  CHECK(strip[(10 * 16 + 8) * 3] == -1.0f);
  grey.pixels.resize(10);
  CHECK_THROWS_WITH_AS(letterbox_image(grey, 0, 0, 64, 32, 16, input.data()), Contains("holds 10 bytes"), Error);
}

TEST_CASE("face_crop: calibrated square, eye levelling, grayscale, pixels outside repeat the edge") {
  // Left half black, right half white, RGB.
  Image image;
  image.width = 100;
  image.height = 80;
  image.channels = 3;
  image.pixels.assign(100 * 80 * 3, 0);
  for (int y = 0; y < 80; ++y)
    for (int x = 50; x < 100; ++x)
      for (int c = 0; c < 3; ++c) image.pixels[(y * 100 + x) * 3 + c] = 255;
  FaceDetection face = detection({30, 20, 40, 40}, 0.9f);
  face.keypoints[0] = {40, 35};  // right eye (picture left)
  face.keypoints[1] = {60, 35};
  FaceCropOptions options;
  options.scale = 1.5f;
  options.offset_x = 0.25f;
  options.offset_y = -0.1f;
  const FaceCropGeometry g = face_crop_geometry(face, options);
  CHECK(g.side == Approx(60));
  CHECK(g.center.x == Approx(60));
  CHECK(g.center.y == Approx(36));
  CHECK(g.angle == 0.0f);
  const Box square = g.square();
  CHECK(square.x == Approx(30));
  CHECK(square.y == Approx(6));
  const Image crop = face_crop(image, face, 12, options);
  CHECK(crop.channels == 1);
  CHECK(crop.width == 12);
  // The crop spans x 30..90: its first third is black, the rest white.
  CHECK(crop.at(6, 0, 0) == 0);
  CHECK(crop.at(6, 11, 0) == 255);
  CHECK(crop.at(6, 5, 0) == 255);
  // Eyes on a line at +90 degrees (right eye above the left): the crop turns by 90 degrees, so
  // the picture's left-right edge becomes the crop's top-bottom one.
  face.keypoints[1] = {40, 55};
  options.level_eyes = true;
  options.offset_x = 0;
  options.offset_y = 0;
  options.scale = 0.5f;  // x 40..60 around the edge at 50
  CHECK(face_crop_geometry(face, options).angle == Approx(std::acos(-1.0) / 2));
  const Image turned = face_crop(image, face, 10, options);
  // Crop frame u (along the eyes) is the picture's +y, v is the picture's -x: top rows are white.
  CHECK(turned.at(1, 5, 0) == 255);
  CHECK(turned.at(8, 5, 0) == 0);
  // Outside the picture: edge pixels repeat.
  options.level_eyes = false;
  options.scale = 1.0f;
  FaceDetection corner = detection({-30, -30, 40, 40}, 0.9f);
  const Image edge = face_crop(image, corner, 8, options);
  CHECK(edge.at(0, 0, 0) == 0);
  options.grayscale = false;
  CHECK(face_crop(image, face, 8, options).channels == 3);
  // Several sizes around the calibrated one: the larger crop reaches further into the black half.
  // Centre x 60: side 20 spans x 50..70 (white), side 40 spans x 40..80 (a quarter black).
  options.grayscale = true;
  options.scale = 0.5f;
  options.offset_x = 0.25f;
  const std::vector<Image> sizes = face_crops(image, face, 10, options, {1.0f, 2.0f});
  REQUIRE(sizes.size() == 2);
  const auto mean = [](const Image& im) {
    double sum = 0;
    for (uint8_t v : im.pixels) sum += v;
    return sum / static_cast<double>(im.pixels.size());
  };
  CHECK(mean(sizes[0]) == Approx(255).epsilon(0.02));
  CHECK(mean(sizes[1]) == Approx(0.75 * 255).epsilon(0.05));
  CHECK_THROWS_WITH_AS(face_crops(image, face, 10, options, {0.0f}), Contains("invalid scale"), Error);
  CHECK_THROWS_WITH_AS(face_crop(image, detection({0, 0, 0, 0}, 1), 8, options), Contains("empty or invalid crop"),
                       Error);
}

TEST_CASE("detection tiles and the selection of candidates over passes") {
  // 640x480, tiles of 0.6 x 640 = 384 pixels: two columns (x 0 and 256) and two rows (y 0 and 96).
  const std::vector<Box> tiles = detection_tiles(640, 480, 0.6f);
  REQUIRE(tiles.size() == 4);
  CHECK(tiles[0].x == 0.0f);
  CHECK(tiles[1].x == 256.0f);
  CHECK(tiles[2].y == 96.0f);
  CHECK(tiles[3].width == 384.0f);
  CHECK(tiles[3].height == 384.0f);
  // A picture no longer than a tile in one direction: one tile across it.
  const std::vector<Box> wide = detection_tiles(1000, 300, 0.5f);
  REQUIRE(wide.size() == 3);  // (1000 - 500) / 375 -> 2 steps
  CHECK(wide[2].x == 500.0f);
  CHECK(wide[0].height == 300.0f);
  // Stretched: a side up to 1.25 tile sides long gets one tile across it (480 <= 1.25 * 384).
  const std::vector<Box> stretched = detection_tiles(640, 480, 0.6f, 1.25f);
  REQUIRE(stretched.size() == 2);
  CHECK(stretched[0].x == 0.0f);
  CHECK(stretched[1].x == 256.0f);
  CHECK(stretched[1].width == 384.0f);
  CHECK(stretched[1].height == 480.0f);
  CHECK(detection_tiles(640, 640, 0.6f, 1.25f).size() == 4);  // a square picture: squares as before
  CHECK(detection_tiles(480, 640, 0.6f, 1.25f)[1].y == 256.0f);  // portrait: two rows
  // The regions a detector looks at, and the network input each becomes.
  FaceDetectorOptions fitted;
  fitted.weights = weights_path(fitted.variant);
  FaceDetector detector(fitted);
  const std::vector<DetectionRegion> regions = detector.regions(640, 480);
  REQUIRE(regions.size() == 3);
  CHECK(regions[0].side == 640.0f);
  CHECK(regions[1].side == 384.0f);
  CHECK(detector.input_shape(regions[0]) == std::make_pair(256, 256));  // the whole picture: letterboxed
  CHECK(detector.input_shape(regions[1]) == std::make_pair(256, 320));
  CHECK(detector.input_shape({{0, 0, 640, 480}, 640, true}) == std::make_pair(256, 192));
  CHECK(detector.input_shape({{0, 0, 1280, 720}, 1280, true}) == std::make_pair(256, 160));  // 144 rows, padded
  FaceDetectorOptions whole = fitted;
  whole.fit_whole = true;
  CHECK(FaceDetector(whole).input_shape(FaceDetector(whole).regions(640, 480)[0]) == std::make_pair(256, 192));
  FaceDetectorOptions square = fitted;
  square.fit_tiles = false;
  FaceDetector square_detector(square);
  const std::vector<DetectionRegion> squares = square_detector.regions(640, 480);
  REQUIRE(squares.size() == 5);
  CHECK(square_detector.input_shape(squares[1]) == std::make_pair(256, 256));
  // Pictures of many sizes: each new tile shape is compiled once, and at most max_shapes are kept.
  CHECK(detector.network_shapes() == 1);
  for (int height : {480, 300, 200, 160, 120, 100, 90, 480, 80, 60}) {
    Image flat;
    flat.width = 640;
    flat.height = height;
    flat.channels = 1;
    flat.pixels.assign(static_cast<size_t>(640 * height), 128);
    CHECK(detector.detect(flat).empty());
    CHECK(detector.network_shapes() <= FaceDetector::max_shapes);
  }
  CHECK(detector.network_shapes() == FaceDetector::max_shapes);
  // select(): each pass has its own threshold, suppression within and then across passes.
  const std::vector<std::vector<FaceDetection>> passes = {
      {detection({10, 10, 50, 50}, 0.9f), detection({12, 10, 50, 50}, 0.55f), detection({300, 10, 40, 40}, 0.6f)},
      {detection({11, 11, 50, 50}, 0.8f), detection({200, 200, 30, 30}, 0.62f)}};
  const std::vector<FaceDetection> strict = FaceDetector::select(passes, 0.7f, 0.7f, 0.3f);
  REQUIRE(strict.size() == 1);  // the first face, found in both passes, merged
  CHECK(strict[0].score == Approx(0.9));
  CHECK(strict[0].box.x == Approx((0.9 * 10 + 0.8 * 11) / 1.7));
  CHECK(strict[0].support == Approx(2.0));  // the supports (1 each here) add up
  const std::vector<FaceDetection> loose = FaceDetector::select(passes, 0.5f, 0.6f, 0.3f);
  CHECK(loose.size() == 3);
  const std::vector<FaceDetection> whole_only = FaceDetector::select(passes, 0.5f, 2.0f, 0.3f);
  REQUIRE(whole_only.size() == 2);
  CHECK(whole_only[0].box.x == Approx((0.9 * 10 + 0.55 * 12) / 1.45));
}

TEST_CASE("annotate_faces: boxes, crops, eyes and labels drawn on the picture") {
  Image gray;
  gray.width = 200;
  gray.height = 160;
  gray.channels = 1;
  gray.pixels.assign(200 * 160, 90);
  FaceDetection face = detection({60, 60, 50, 50}, 0.9f);
  face.keypoints[0] = {75, 80};
  face.keypoints[1] = {95, 80};
  FaceCropOptions crop;
  crop.scale = 1.4f;
  crop.offset_x = crop.offset_y = 0.0f;
  const Canvas canvas = annotate_faces(gray, {face}, {"happy 0.97"}, crop);
  CHECK(canvas.width() == 200);
  CHECK(canvas.pixel(0, 159) == Color{90, 90, 90});   // the picture, grey replicated
  CHECK(canvas.pixel(60, 85) == colors::green);        // the box's left edge
  CHECK(canvas.pixel(50, 85) == colors::orange);       // the crop's left edge: 85 - 70 / 2
  CHECK(canvas.pixel(75, 80) == colors::red);          // an eye
  CHECK(canvas.pixel(50, 47) == colors::orange);       // the label's background, just above the crop
  CHECK_THROWS_AS(annotate_faces(Image{2, 2, 2, std::vector<uint8_t>(8)}, {}), Error);
}

TEST_CASE("detect faces: FER-2013 test faces pasted into a larger picture are each found once") {
  // A 640x480 background of smooth colour gradients with ripples, then four faces from
  // tests/fixtures/faces pasted as squares of 110 to 220 pixels.
  Image photo;
  photo.width = 640;
  photo.height = 480;
  photo.channels = 3;
  photo.pixels.resize(640 * 480 * 3);
  for (int y = 0; y < 480; ++y)
    for (int x = 0; x < 640; ++x) {
      uint8_t* p = &photo.pixels[(y * 640 + x) * 3];
      p[0] = static_cast<uint8_t>(120 + 80 * std::sin(x * 0.013) * std::cos(y * 0.021));
      p[1] = static_cast<uint8_t>(100 + 60 * std::sin((x + y) * 0.009));
      p[2] = static_cast<uint8_t>(140 + 50 * std::cos(x * 0.031 + y * 0.004));
    }
  struct Paste {
    const char* file;
    int x, y, side;
  };
  const std::vector<Paste> faces = {{"happy_PublicTest_10886374.jpg", 30, 40, 200},
                                    {"surprise_PublicTest_12186725.jpg", 300, 30, 150},
                                    {"fear_PublicTest_10150476.jpg", 470, 250, 140},
                                    {"angry_PublicTest_11832974.jpg", 210, 280, 170}};
  for (const Paste& f : faces) {
    const Image face = resize_image(load_image(fixtures + "/faces/" + f.file, ColorMode::rgb), f.side, f.side);
    for (int y = 0; y < f.side; ++y)
      std::copy_n(&face.pixels[static_cast<size_t>(y) * f.side * 3], f.side * 3,
                  &photo.pixels[((f.y + y) * 640 + f.x) * 3]);
  }
  for (int setting = 0; setting < 4; ++setting) {
    const bool tiles = setting > 0;
    CAPTURE(setting);
    // The fast setting (one pass, score 0.6), the default (tiles, score 0.65, fitted tiles), the
    // default with square tiles, and with the whole picture fitted too.
    FaceDetectorOptions options = tiles ? FaceDetectorOptions{} : FaceDetectorOptions::fast();
    REQUIRE(options.tiles == tiles);
    options.fit_tiles = setting != 2;
    options.fit_whole = setting == 3;
    options.weights = weights_path(options.variant);
    FaceDetector detector(options);
    const std::vector<FaceDetection> found = detector.detect(photo);
    const FaceCropOptions crop = calibrated_face_crop(options.variant);
    for (const FaceDetection& d : found) {
      const Box s = face_crop_geometry(d, crop).square();
      std::printf("detection (tiles %d): score %.3f box %.0f,%.0f %.0fx%.0f crop %.0f,%.0f %.0fx%.0f\n", tiles,
                  d.score, d.box.x, d.box.y, d.box.width, d.box.height, s.x, s.y, s.width, s.height);
    }
    CHECK(found.size() == faces.size());
    for (const Paste& f : faces) {
      CAPTURE(f.file);
      const Box pasted{static_cast<float>(f.x), static_cast<float>(f.y), static_cast<float>(f.side),
                       static_cast<float>(f.side)};
      int matches = 0;
      for (const FaceDetection& d : found)
        matches += intersection_over_union(face_crop_geometry(d, crop).square(), pasted) >= 0.5f;
      CHECK(matches == 1);
    }
  }
}
