// Line charts and the training-curves PNG: loss and accuracy per epoch, train and validation,
// as two panels with axes, tick labels, grid, legend and title.
//
// Values that are not finite (NaN from a diverged step, or a missing validation epoch) are not
// drawn: the line breaks there and resumes at the next finite value. A single epoch, or a point
// with no finite neighbour, still shows as a marker.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "canvas.hpp"
#include "color.hpp"

namespace eigennet {

// One line of a chart: values[i] is plotted at x = i + 1 (epochs count from 1).
struct ChartSeries {
  std::string label;
  std::vector<double> values;
  Color color = colors::blue;
  bool hollow_markers = false;  // tells series apart without relying on color
};

struct LineChart {
  std::string title;
  std::string x_label = "epoch";
  std::vector<ChartSeries> series;
};

namespace detail {

// The smallest "nice" step (1, 2, 2.5 or 5 times a power of ten) at least `raw_step`.
inline double nice_step(double raw_step) {
  if (!(raw_step > 0.0) || !std::isfinite(raw_step)) return 1.0;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw_step)));
  const double fraction = raw_step / magnitude;
  const double nice = fraction <= 1.0   ? 1.0
                      : fraction <= 2.0 ? 2.0
                      : fraction <= 2.5 ? 2.5
                      : fraction <= 5.0 ? 5.0
                                        : 10.0;
  return nice * magnitude;
}

inline std::string format_tick(double value, double step) {
  // As many decimals as the step needs (0.2 -> 1, 0.25 -> 2, 5 -> 0).
  int decimals = 0;
  while (decimals < 12) {
    const double scaled = step * std::pow(10.0, decimals);
    if (std::abs(scaled - std::round(scaled)) < 1e-6 * scaled) break;
    ++decimals;
  }
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "%.*f", std::min(decimals, 12), value);
  std::string text = buffer;
  if (text.find_first_of("123456789") == std::string::npos && text[0] == '-') text.erase(0, 1);  // "-0.0"
  return text;
}

struct Axis {
  double low = 0.0, high = 1.0, step = 0.25;
};

// A y axis whose ticks at multiples of `step` enclose every finite value (about 6 intervals).
inline Axis value_axis(const std::vector<ChartSeries>& series) {
  double low = std::numeric_limits<double>::infinity(), high = -low;
  for (const ChartSeries& s : series)
    for (double v : s.values)
      if (std::isfinite(v)) {
        low = std::min(low, v);
        high = std::max(high, v);
      }
  if (!(low <= high)) return {};  // no finite value
  if (high - low < 1e-12 * std::max(1.0, std::abs(high))) {
    const double pad = low == 0.0 ? 1.0 : 0.1 * std::abs(low);
    low -= pad;
    high += pad;
  } else {
    // A 5% margin keeps extreme points (and their markers) off the frame.
    const double pad = 0.05 * (high - low);
    low -= pad;
    high += pad;
  }
  Axis axis;
  axis.step = nice_step((high - low) / 6.0);
  axis.low = std::floor(low / axis.step) * axis.step;
  axis.high = std::ceil(high / axis.step) * axis.step;
  if (axis.high - axis.low < axis.step) axis.high = axis.low + axis.step;
  return axis;
}

inline bool has_finite_value(const std::vector<ChartSeries>& series) {
  for (const ChartSeries& s : series)
    for (double v : s.values)
      if (std::isfinite(v)) return true;
  return false;
}

}  // namespace detail

// Draws `chart` into the rectangle (left, top, width, height) of `canvas`, text at `scale`.
inline void draw_line_chart(Canvas& canvas, int left, int top, int width, int height, const LineChart& chart,
                            int scale = 2) {
  const int s = std::max(1, scale);
  const int line = Canvas::font_cap_height * s;
  const int gap = 3 * s;

  size_t points = 0;
  for (const ChartSeries& series : chart.series) points = std::max(points, series.values.size());
  const int epochs = static_cast<int>(std::max<size_t>(points, 1));
  const detail::Axis y_axis = detail::value_axis(chart.series);

  // X axis: integer epochs 1..n with a little room at both ends (a single epoch sits in the middle).
  const double x_pad = epochs == 1 ? 0.5 : 0.03 * (epochs - 1);
  const double x_low = 1.0 - x_pad, x_high = epochs + x_pad;
  const int x_step = std::max(1, static_cast<int>(detail::nice_step(epochs / 8.0)));
  std::vector<int> x_ticks{1};
  for (int e = x_step; e <= epochs; e += x_step)
    if (e > 1) x_ticks.push_back(e);

  std::vector<double> y_ticks;
  for (int i = 0;; ++i) {
    const double v = y_axis.low + i * y_axis.step;
    if (v > y_axis.high + 1e-9 * y_axis.step) break;
    y_ticks.push_back(v);
  }
  int widest_y_label = 0;
  for (double v : y_ticks)
    widest_y_label = std::max(widest_y_label, Canvas::measure_text(detail::format_tick(v, y_axis.step), s).width);

  // Plot area inside the panel: title above, tick labels left, tick labels and x label below.
  const int plot_left = left + widest_y_label + 2 * gap;
  const int plot_top = top + line + 2 * gap;
  const int plot_width = width - (plot_left - left) - gap;
  const int plot_height = height - (plot_top - top) - (line + gap) * 2 - 2 * gap;
  EIGENNET_CHECK(plot_width > 20 && plot_height > 20, "draw_line_chart '", chart.title, "': a ", width, "x", height,
                 " panel is too small");
  canvas.draw_text(left + width / 2, top, chart.title, colors::black, s, HAlign::center);

  auto pixel_x = [&](double x) {
    return plot_left + static_cast<int>(std::lround((x - x_low) / (x_high - x_low) * (plot_width - 1)));
  };
  auto pixel_y = [&](double y) {
    return plot_top +
           static_cast<int>(std::lround((1.0 - (y - y_axis.low) / (y_axis.high - y_axis.low)) * (plot_height - 1)));
  };

  // Grid, ticks and their labels.
  const int plot_bottom = plot_top + plot_height - 1;
  for (double v : y_ticks) {
    const int y = pixel_y(v);
    canvas.fill_rect(plot_left, y, plot_width, 1, colors::light_gray);
    canvas.fill_rect(plot_left - s - 1, y, s + 1, 1, colors::dark_gray);
    canvas.draw_text(plot_left - gap - s, y, detail::format_tick(v, y_axis.step), colors::black, s, HAlign::right,
                     VAlign::middle);
  }
  for (int e : x_ticks) {
    const int x = pixel_x(e);
    canvas.fill_rect(x, plot_top, 1, plot_height, colors::light_gray);
    canvas.fill_rect(x, plot_bottom + 1, 1, s + 1, colors::dark_gray);
    canvas.draw_text(x, plot_bottom + gap + s, std::to_string(e), colors::black, s, HAlign::center);
  }
  canvas.draw_rect(plot_left - 1, plot_top - 1, plot_width + 2, plot_height + 2, colors::dark_gray);
  canvas.draw_text(plot_left + plot_width / 2, plot_bottom + 3 * gap + line + s, chart.x_label, colors::black, s,
                   HAlign::center);

  if (!detail::has_finite_value(chart.series)) {
    canvas.draw_text(plot_left + plot_width / 2, plot_top + plot_height / 2, "no data", colors::gray, s,
                     HAlign::center, VAlign::middle);
    return;
  }

  // Lines, broken at non-finite values, and markers (each point while there are few of them,
  // otherwise only points with no finite neighbour, which no line would show).
  const int marker = 3 * s + 1;
  auto draw_marker = [&](int x, int y, const ChartSeries& series) {
    if (series.hollow_markers) {
      canvas.fill_rect(x - marker / 2, y - marker / 2, marker, marker, colors::white);
      canvas.draw_rect(x - marker / 2, y - marker / 2, marker, marker, series.color, std::max(1, s / 2 + 1));
    } else {
      canvas.fill_rect(x - marker / 2, y - marker / 2, marker, marker, series.color);
    }
  };
  const bool mark_every_point = points <= 40;
  for (const ChartSeries& series : chart.series) {
    const std::vector<double>& v = series.values;
    for (size_t i = 0; i + 1 < v.size(); ++i)
      if (std::isfinite(v[i]) && std::isfinite(v[i + 1]))
        canvas.draw_line(pixel_x(static_cast<double>(i) + 1.0), pixel_y(v[i]), pixel_x(static_cast<double>(i) + 2.0),
                         pixel_y(v[i + 1]), series.color, s);
    for (size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v[i])) continue;
      const bool isolated = (i == 0 || !std::isfinite(v[i - 1])) && (i + 1 == v.size() || !std::isfinite(v[i + 1]));
      if (mark_every_point || isolated) draw_marker(pixel_x(static_cast<double>(i) + 1.0), pixel_y(v[i]), series);
    }
  }

  // Legend in the corner of the plot that covers the fewest points.
  std::vector<const ChartSeries*> entries;
  for (const ChartSeries& series : chart.series)
    if (!series.values.empty() && !series.label.empty()) entries.push_back(&series);
  if (entries.empty()) return;
  const int sample_length = 8 * s;
  int widest_label = 0;
  for (const ChartSeries* e : entries) widest_label = std::max(widest_label, Canvas::measure_text(e->label, s).width);
  const int row_height = line + 2 * gap;
  const int legend_width = gap + sample_length + gap + widest_label + gap;
  const int legend_height = static_cast<int>(entries.size()) * row_height + gap;
  const int inset = 2 * gap;
  const std::array<std::array<int, 2>, 4> corners{{
      {plot_left + plot_width - legend_width - inset, plot_top + inset},                         // top right
      {plot_left + plot_width - legend_width - inset, plot_bottom - legend_height - inset},      // bottom right
      {plot_left + inset, plot_top + inset},                                                     // top left
      {plot_left + inset, plot_bottom - legend_height - inset},                                  // bottom left
  }};
  int best_corner = 0;
  long best_covered = std::numeric_limits<long>::max();
  for (int c = 0; c < 4; ++c) {
    long covered = 0;
    const int lx = corners[static_cast<size_t>(c)][0], ly = corners[static_cast<size_t>(c)][1];
    for (const ChartSeries& series : chart.series)
      for (size_t i = 0; i < series.values.size(); ++i) {
        if (!std::isfinite(series.values[i])) continue;
        const int x = pixel_x(static_cast<double>(i) + 1.0), y = pixel_y(series.values[i]);
        covered += x >= lx - marker && x < lx + legend_width + marker && y >= ly - marker &&
                   y < ly + legend_height + marker;
      }
    if (covered < best_covered) {
      best_covered = covered;
      best_corner = c;
    }
  }
  const int lx = corners[static_cast<size_t>(best_corner)][0], ly = corners[static_cast<size_t>(best_corner)][1];
  canvas.fill_rect(lx, ly, legend_width, legend_height, colors::white);
  canvas.draw_rect(lx, ly, legend_width, legend_height, colors::gray);
  for (size_t i = 0; i < entries.size(); ++i) {
    const int row_center = ly + gap + static_cast<int>(i) * row_height + row_height / 2;
    canvas.draw_line(lx + gap, row_center, lx + gap + sample_length, row_center, entries[i]->color, s);
    draw_marker(lx + gap + sample_length / 2, row_center, *entries[i]);
    canvas.draw_text(lx + 2 * gap + sample_length, row_center, entries[i]->label, colors::black, s, HAlign::left,
                     VAlign::middle);
  }
}

// Per-epoch history of a training run. Any vector may be empty (that line is left out) or
// shorter than the others; NaN marks an epoch without a value.
struct TrainingCurves {
  std::vector<double> train_loss;
  std::vector<double> val_loss;
  std::vector<double> train_accuracy;
  std::vector<double> val_accuracy;
};

struct TrainingCurvesPlotOptions {
  int width = 1200;
  int height = 520;
  int text_scale = 2;
};

// Two panels side by side, loss (left) and accuracy (right), under `title`.
inline Canvas render_training_curves(const TrainingCurves& curves, const std::string& title = "Training curves",
                                     const TrainingCurvesPlotOptions& options = {}) {
  const int s = std::max(1, options.text_scale);
  Canvas canvas(options.width, options.height, colors::white);
  const int margin = 6 * s;
  // One size larger than the labels unless that makes the title wider than the image.
  const int title_scale = Canvas::measure_text(title, s + 1).width + 2 * margin <= options.width ? s + 1 : s;
  canvas.draw_text(options.width / 2, margin, title, colors::black, title_scale, HAlign::center);

  const int panels_top = margin + Canvas::font_cap_height * title_scale + 7 * s;
  const int panel_width = (options.width - 3 * margin) / 2;
  const int panel_height = options.height - panels_top - margin;
  auto chart = [](const char* name, const std::vector<double>& train, const std::vector<double>& validation) {
    LineChart c;
    c.title = name;
    c.series.push_back({"train", train, colors::blue, false});
    c.series.push_back({"validation", validation, colors::orange, true});
    return c;
  };
  draw_line_chart(canvas, margin, panels_top, panel_width, panel_height,
                  chart("loss", curves.train_loss, curves.val_loss), s);
  draw_line_chart(canvas, 2 * margin + panel_width, panels_top, panel_width, panel_height,
                  chart("accuracy", curves.train_accuracy, curves.val_accuracy), s);
  return canvas;
}

// Renders the curves and writes them to `path` (atomically). Throws Error naming the path.
inline void save_training_curves_png(const std::string& path, const TrainingCurves& curves,
                                     const std::string& title = "Training curves",
                                     const TrainingCurvesPlotOptions& options = {}) {
  render_training_curves(curves, title, options).save_png(path);
}

}  // namespace eigennet
