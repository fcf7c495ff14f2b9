// Canvas drawing, PNG output (decoded back with stb_image), the confusion-matrix heatmap and the
// training-curves plot.
#include <doctest/doctest.h>

#include "test_util.hpp"

#include <cmath>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include <eigennet/plot/canvas.hpp>
#include <eigennet/plot/confusion_matrix_png.hpp>
#include <eigennet/plot/curves_png.hpp>

// The decoder, only for the test: its own static copy, warnings of third-party code silenced.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#ifndef STBI_INCLUDE_STB_IMAGE_H
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#endif
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

using namespace eigennet;

namespace {

using testing::fresh_directory;

struct DecodedImage {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;  // RGB
  Color at(int x, int y) const {
    const size_t i = (static_cast<size_t>(y) * static_cast<size_t>(width) + static_cast<size_t>(x)) * 3;
    return {pixels[i], pixels[i + 1], pixels[i + 2]};
  }
};

DecodedImage decode_png(const std::string& path) {
  DecodedImage image;
  unsigned char* data = stbi_load(path.c_str(), &image.width, &image.height, &image.channels, 3);
  REQUIRE_MESSAGE(data != nullptr, "stb_image could not decode ", path);
  image.pixels.assign(data, data + static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3);
  stbi_image_free(data);
  return image;
}

int64_t count_color(const Canvas& canvas, Color color, int x0 = 0, int y0 = 0, int x1 = -1, int y1 = -1) {
  if (x1 < 0) x1 = canvas.width();
  if (y1 < 0) y1 = canvas.height();
  int64_t n = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) n += canvas.pixel(x, y) == color;
  return n;
}

// Bounding box of the pixels that differ from `background`.
struct Box {
  int x0 = 1 << 30, y0 = 1 << 30, x1 = -1, y1 = -1;  // inclusive
};
Box ink_box(const Canvas& canvas, Color background) {
  Box b;
  for (int y = 0; y < canvas.height(); ++y)
    for (int x = 0; x < canvas.width(); ++x)
      if (canvas.pixel(x, y) != background) {
        b.x0 = std::min(b.x0, x);
        b.y0 = std::min(b.y0, y);
        b.x1 = std::max(b.x1, x);
        b.y1 = std::max(b.y1, y);
      }
  return b;
}

}  // namespace

TEST_CASE("Canvas draws clipped rectangles and lines") {
  Canvas c(10, 8, colors::white);
  CHECK(c.width() == 10);
  CHECK(c.height() == 8);
  CHECK(c.pixels().size() == 10 * 8 * 3);
  c.fill_rect(-5, -5, 8, 8, colors::red);  // covers x, y in [0, 3)
  CHECK(c.pixel(0, 0) == colors::red);
  CHECK(c.pixel(2, 2) == colors::red);
  CHECK(c.pixel(3, 2) == colors::white);
  CHECK(c.pixel(2, 3) == colors::white);
  CHECK(count_color(c, colors::red) == 9);

  c.clear(colors::white);
  c.draw_line(0, 7, 9, 0, colors::blue);  // both ends included, one pixel per column (|dx| > |dy|)
  CHECK(c.pixel(0, 7) == colors::blue);
  CHECK(c.pixel(9, 0) == colors::blue);
  CHECK(count_color(c, colors::blue) == 10);

  c.clear(colors::white);
  // A 3-pixel square brush: rows 3..5, and one extra column at each end (square caps).
  c.draw_line(2, 4, 7, 4, colors::green, 3);
  CHECK(count_color(c, colors::green) == 8 * 3);
  CHECK(c.pixel(1, 3) == colors::green);
  CHECK(c.pixel(8, 5) == colors::green);
  CHECK(c.pixel(0, 4) == colors::white);
  CHECK(c.pixel(9, 4) == colors::white);
  CHECK(c.pixel(4, 2) == colors::white);
  CHECK(c.pixel(4, 6) == colors::white);

  c.clear(colors::white);
  c.draw_rect(1, 1, 5, 4, colors::black);
  CHECK(count_color(c, colors::black) == 2 * 5 + 2 * 2);
  CHECK(c.pixel(3, 2) == colors::white);

  CHECK_THROWS_WITH_AS(c.pixel(10, 0), doctest::Contains("outside the 10x8 canvas"), Error);
  CHECK_THROWS_AS(Canvas(0, 5), Error);
}

TEST_CASE("Text is drawn at an integer scale inside its measured box") {
  for (int scale : {1, 2, 3}) {
    Canvas c(200, 60, colors::white);
    const Canvas::TextSize size = Canvas::measure_text("Hello", scale);
    CHECK(size.height == 7 * scale);
    CHECK(size.width > 4 * 5 * scale);   // five glyphs at least 4 units wide each
    CHECK(size.width < 7 * 5 * scale);
    c.draw_text(10, 20, "Hello", colors::black, scale);
    const Box box = ink_box(c, colors::white);
    CHECK(box.x0 == 10);
    CHECK(box.x1 == 10 + size.width - 1);
    CHECK(box.y0 == 20);
    CHECK(box.y1 == 20 + size.height - 1);  // no descenders in "Hello"
    // Every ink pixel comes in scale x scale blocks: the count is a multiple of scale^2.
    CHECK(count_color(c, colors::black) % (scale * scale) == 0);
  }

  // Centered and right-aligned anchors.
  Canvas centered(100, 40, colors::white);
  const Canvas::TextSize size = Canvas::measure_text("ab", 2);
  centered.draw_text(50, 20, "ab", colors::black, 2, HAlign::center, VAlign::middle);
  Box box = ink_box(centered, colors::white);
  CHECK(box.x0 == 50 - size.width / 2);
  CHECK(box.y0 >= 20 - size.height / 2);  // lowercase letters start below the capital height
  Canvas right(100, 40, colors::white);
  right.draw_text(90, 5, "ab", colors::black, 2, HAlign::right);
  CHECK(ink_box(right, colors::white).x1 == 89);

  // Vertical text swaps the box's width and height.
  Canvas vertical(60, 120, colors::white);
  const Canvas::TextSize word = Canvas::measure_text("TRUE", 2);
  vertical.draw_text_vertical(30, 60, "TRUE", colors::black, 2);
  box = ink_box(vertical, colors::white);
  CHECK(box.x1 - box.x0 + 1 == word.height);
  CHECK(box.y1 - box.y0 + 1 == word.width);

  // Characters outside printable ASCII are drawn as '?', never read past the font's table.
  Canvas odd(100, 30, colors::white);
  odd.draw_text(2, 2, "caf\xc3\xa9\x7f\t", colors::black, 1);
  Canvas question(100, 30, colors::white);
  question.draw_text(2, 2, "caf????", colors::black, 1);
  CHECK(odd.pixels() == question.pixels());
}

TEST_CASE("The heatmap colormap darkens as the value grows") {
  double previous = 2.0;
  for (int i = 0; i <= 20; ++i) {
    const double lum = luminance(blues_colormap(i / 20.0));
    CHECK(lum < previous);
    previous = lum;
  }
  CHECK(luminance(blues_colormap(0.0)) > 0.95);
  CHECK(luminance(blues_colormap(1.0)) < 0.25);
  CHECK(blues_colormap(std::nan("")) == blues_colormap(0.0));
  CHECK(contrasting_text_color(blues_colormap(1.0)) == colors::white);
  CHECK(contrasting_text_color(blues_colormap(0.0)) == colors::black);
}

TEST_CASE("PNG files decode to the canvas; a missing directory is an Error naming the path") {
  const auto dir = fresh_directory("test_plot_png");
  Canvas c(37, 23, colors::light_gray);
  c.fill_rect(3, 4, 10, 5, colors::orange);
  c.draw_line(0, 22, 36, 0, colors::blue, 2);
  c.draw_text(2, 12, "png", colors::black, 1);
  const std::string path = (dir / "canvas.png").string();
  c.save_png(path);
  const DecodedImage image = decode_png(path);
  CHECK(image.width == 37);
  CHECK(image.height == 23);
  CHECK(image.channels == 3);
  CHECK(image.pixels == c.pixels());  // PNG is lossless

  const std::string missing = (dir / "missing" / "canvas.png").string();
  CHECK_THROWS_WITH_AS(c.save_png(missing), doctest::Contains(missing.c_str()), Error);
  CHECK_FALSE(std::filesystem::exists(dir / "missing"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("Confusion-matrix heatmap: row-normalized colors, contrasting counts, labels") {
  const auto dir = fresh_directory("test_plot_confusion");
  // Row 0: 8 2 0 (fractions .8 .2 0); row 1: 1 5 4 (.1 .5 .4); row 2 has no samples.
  ConfusionMatrix cm(3);
  cm.add(0, 0, 8);
  cm.add(0, 1, 2);
  cm.add(1, 0, 1);
  cm.add(1, 1, 5);
  cm.add(1, 2, 4);
  const std::vector<std::string> names{"angry", "happy", "neutral"};
  const std::string path = (dir / "confusion.png").string();
  save_confusion_matrix_png(path, cm, names, "Test set");
  const ConfusionMatrixPlot plot = render_confusion_matrix(cm, names, "Test set");

  const DecodedImage image = decode_png(path);
  CHECK(image.width == plot.canvas.width());
  CHECK(image.height == plot.canvas.height());
  CHECK(image.channels == 3);
  CHECK(image.pixels == plot.canvas.pixels());

  // A cell's background, sampled near its top-left corner, away from the centered text.
  auto cell_color = [&](int t, int p) {
    return image.at(plot.grid_left + p * plot.cell_size + 3, plot.grid_top + t * plot.cell_size + 3);
  };
  // Higher row fraction, darker cell: .8 > .5 > .4 > .2 > .1 > 0.
  const std::vector<std::pair<int, int>> by_fraction{{0, 0}, {1, 1}, {1, 2}, {0, 1}, {1, 0}, {0, 2}};
  for (size_t i = 0; i + 1 < by_fraction.size(); ++i) {
    const Color darker = cell_color(by_fraction[i].first, by_fraction[i].second);
    const Color lighter = cell_color(by_fraction[i + 1].first, by_fraction[i + 1].second);
    CHECK(luminance(darker) < luminance(lighter));
  }
  // Colors are the row fractions, not the raw counts: 8 of 10 and 4 of 10 in different rows.
  CHECK(cell_color(0, 0) == blues_colormap(0.8));
  CHECK(cell_color(1, 2) == blues_colormap(0.4));
  // A row without samples is drawn as all zeros.
  for (int p = 0; p < 3; ++p) CHECK(cell_color(2, p) == blues_colormap(0.0));

  // Counts are printed in a color that contrasts with the cell: white on the darkest cell,
  // black on a light one.
  const int cell = plot.cell_size;
  auto cell_count = [&](int t, int p, Color color) {
    const int x = plot.grid_left + p * cell, y = plot.grid_top + t * cell;
    return count_color(plot.canvas, color, x + 1, y + 1, x + cell - 1, y + cell - 1);
  };
  CHECK(cell_count(0, 0, colors::white) > 20);
  CHECK(cell_count(0, 0, colors::black) == 0);
  CHECK(cell_count(0, 2, colors::black) > 20);
  CHECK(cell_count(0, 2, colors::white) == 0);

  // Labels, axis titles and the title are drawn outside the grid: ink left of it, below it
  // and above it.
  const int grid_end = plot.grid_left + 3 * cell;
  CHECK(count_color(plot.canvas, colors::black, 0, plot.grid_top, plot.grid_left - 2, plot.grid_top + 3 * cell) > 50);
  CHECK(count_color(plot.canvas, colors::black, plot.grid_left, plot.grid_top + 3 * cell + 2, grid_end,
                    plot.canvas.height()) > 50);
  CHECK(count_color(plot.canvas, colors::black, 0, 0, plot.canvas.width(), plot.grid_top - 2) > 20);

  // Long names do not fit under a cell: they are rotated, making the image taller, not wider.
  const std::vector<std::string> long_names{"a_rather_long_class_name", "another_long_one", "x"};
  const ConfusionMatrixPlot tall = render_confusion_matrix(cm, long_names, "Test set");
  CHECK(tall.canvas.height() - plot.canvas.height() > 100);

  CHECK_THROWS_WITH_AS(render_confusion_matrix(cm, {"a", "b"}), doctest::Contains("2 class names for 3"), Error);
  const std::string missing = (dir / "missing" / "confusion.png").string();
  CHECK_THROWS_WITH_AS(save_confusion_matrix_png(missing, cm, names), doctest::Contains(missing.c_str()), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("Training curves: two panels, one epoch, NaN values") {
  const auto dir = fresh_directory("test_plot_curves");
  TrainingCurves curves;
  for (int e = 0; e < 12; ++e) {
    curves.train_loss.push_back(1.8 * std::exp(-0.2 * e) + 0.3);
    curves.val_loss.push_back(1.7 * std::exp(-0.15 * e) + 0.5);
    curves.train_accuracy.push_back(0.3 + 0.05 * e);
    curves.val_accuracy.push_back(0.28 + 0.03 * e);
  }
  curves.val_loss[5] = std::nan("");  // a gap, not a crash
  const std::string path = (dir / "curves.png").string();
  save_training_curves_png(path, curves, "MobileNetV2 on FER-2013");
  const DecodedImage image = decode_png(path);
  CHECK(image.width == 1200);
  CHECK(image.height == 520);
  CHECK(image.channels == 3);
  const Canvas canvas = render_training_curves(curves, "MobileNetV2 on FER-2013");
  CHECK(image.pixels == canvas.pixels());
  // Both series appear in both panels (left and right half).
  CHECK(count_color(canvas, colors::blue, 0, 0, 600, 520) > 100);
  CHECK(count_color(canvas, colors::orange, 0, 0, 600, 520) > 100);
  CHECK(count_color(canvas, colors::blue, 600, 0, 1200, 520) > 100);
  CHECK(count_color(canvas, colors::orange, 600, 0, 1200, 520) > 100);

  // One epoch: markers only, still in both panels.
  TrainingCurves one{{0.9}, {1.1}, {0.6}, {0.55}};
  const Canvas single = render_training_curves(one, "one epoch");
  CHECK(count_color(single, colors::blue, 0, 0, 600, 520) > 20);
  CHECK(count_color(single, colors::orange, 600, 0, 1200, 520) > 20);
  save_training_curves_png((dir / "one.png").string(), one);
  CHECK(decode_png((dir / "one.png").string()).width == 1200);

  // Nothing finite: empty panels with axes, no series color at all; no validation data: no orange.
  const double nan = std::nan("");
  const Canvas empty = render_training_curves(TrainingCurves{{nan, nan}, {nan}, {}, {}}, "diverged");
  CHECK(count_color(empty, colors::blue) == 0);
  CHECK(count_color(empty, colors::orange) == 0);
  CHECK(count_color(empty, colors::black) > 100);  // title, ticks, labels
  const Canvas train_only = render_training_curves(TrainingCurves{{1.0, 0.5}, {}, {0.5, 0.7}, {}}, "train only");
  CHECK(count_color(train_only, colors::blue) > 100);
  CHECK(count_color(train_only, colors::orange) == 0);

  const std::string missing = (dir / "missing" / "curves.png").string();
  CHECK_THROWS_WITH_AS(save_training_curves_png(missing, curves), doctest::Contains(missing.c_str()), Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("A NaN breaks the line between its neighbours") {
  // Unlabeled series get no legend entry, so the series color comes only from lines and markers.
  auto red_columns = [](const std::vector<double>& values) {
    Canvas canvas(400, 300, colors::white);
    draw_line_chart(canvas, 0, 0, 400, 300, LineChart{"", "epoch", {{"", values, colors::red, false}}});
    std::set<int> columns;
    for (int y = 0; y < canvas.height(); ++y)
      for (int x = 0; x < canvas.width(); ++x)
        if (canvas.pixel(x, y) == colors::red) columns.insert(x);
    return columns;
  };
  auto contiguous = [](const std::set<int>& columns) {
    return !columns.empty() && *columns.rbegin() - *columns.begin() + 1 == static_cast<int>(columns.size());
  };
  CHECK(contiguous(red_columns({1.0, 2.0, 1.0})));
  const std::set<int> broken = red_columns({1.0, std::nan(""), 1.0});
  CHECK_FALSE(broken.empty());
  CHECK_FALSE(contiguous(broken));  // two markers, nothing between them
}
