// Confusion-matrix heatmap as a PNG: rows are true classes, columns predicted classes, each cell
// colored by its row-normalized value (the fraction of that true class predicted as the column,
// so the diagonal reads as per-class recall) on a white-to-dark-blue scale, with the count and
// the row percentage printed in black or white, whichever contrasts with the cell.
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../metrics/classification.hpp"
#include "canvas.hpp"
#include "color.hpp"

namespace eigennet {

struct ConfusionMatrixPlotOptions {
  bool show_row_percent = true;  // print "43.5%" under each count
  int text_scale = 2;            // stb_easy_font scale of labels and cell text (title is one larger)
  int min_cell_size = 64;        // cells grow beyond this to fit their text
};

// The picture and where its grid is, for callers that add to it (and for tests).
struct ConfusionMatrixPlot {
  Canvas canvas;
  int grid_left = 0;  // pixel of the top-left corner of cell (0, 0)
  int grid_top = 0;
  int cell_size = 0;  // cells are square; cell (t, p) starts at grid_left + p * cell_size, grid_top + t * cell_size
};

inline ConfusionMatrixPlot render_confusion_matrix(const ConfusionMatrix& confusion,
                                                   const std::vector<std::string>& class_names,
                                                   const std::string& title = "Confusion matrix",
                                                   const ConfusionMatrixPlotOptions& options = {}) {
  const int k = confusion.num_classes();
  EIGENNET_CHECK(k > 0, "render_confusion_matrix: the confusion matrix has no classes");
  EIGENNET_CHECK(static_cast<int>(class_names.size()) == k, "render_confusion_matrix: ", class_names.size(),
                 " class names for ", k, " classes");
  const int s = std::max(1, options.text_scale);
  const int gap = 4 * s;  // between text and what it labels
  const int line = Canvas::font_cap_height * s;

  auto percent_text = [](double fraction) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "%.1f%%", 100.0 * fraction);
    return std::string(buffer);
  };

  // Cell size: room for the widest count and percentage with a margin.
  int widest_cell_text = Canvas::measure_text(percent_text(1.0), s).width;
  for (int t = 0; t < k; ++t)
    for (int p = 0; p < k; ++p)
      widest_cell_text = std::max(widest_cell_text, Canvas::measure_text(std::to_string(confusion(t, p)), s).width);
  const int line_gap = (3 * line) / 4;  // between the count and the percentage
  const int cell_text_height = options.show_row_percent ? 2 * line + line_gap : line;
  int cell = std::max({options.min_cell_size, widest_cell_text + 4 * s, cell_text_height + 6 * s});

  int widest_name = 0;
  for (const std::string& name : class_names) widest_name = std::max(widest_name, Canvas::measure_text(name, s).width);
  // Column labels go under the columns: horizontal (easier to read) when widening the cells by
  // up to 2x makes them fit, rotated otherwise.
  const int name_cell = widest_name + 4 * s;
  if (name_cell > cell && name_cell <= 2 * cell) cell = name_cell;
  const bool vertical_column_labels = name_cell > cell;
  const int column_label_height = vertical_column_labels ? widest_name : line + Canvas::font_descent * s;

  const int margin = 10 * s;
  const int colorbar_width = 10 * s;
  const int colorbar_label_width = Canvas::measure_text("100%", s).width;
  const int grid_left = margin + line + gap + widest_name + gap;
  const int grid_size = k * cell;
  const int colorbar_left = grid_left + grid_size + 3 * gap;
  const int content_width = colorbar_left + colorbar_width + gap + colorbar_label_width + margin;
  // The title is one size larger than the labels unless that makes it wider than the picture.
  const int title_scale = Canvas::measure_text(title, s + 1).width + 2 * margin <= content_width ? s + 1 : s;
  const int title_height = Canvas::font_cap_height * title_scale;
  const int grid_top = margin + title_height + 3 * gap;
  const int width = std::max(content_width, Canvas::measure_text(title, title_scale).width + 2 * margin);
  const int height = grid_top + grid_size + gap + column_label_height + 2 * gap + line + margin;

  ConfusionMatrixPlot plot{Canvas(width, height, colors::white), grid_left, grid_top, cell};
  Canvas& canvas = plot.canvas;
  // The title is centered over the grid unless it would then run off the image.
  const int title_half_width = Canvas::measure_text(title, title_scale).width / 2;
  const int title_center =
      std::clamp(grid_left + grid_size / 2, margin + title_half_width, std::max(margin + title_half_width,
                                                                                width - margin - title_half_width));
  canvas.draw_text(title_center, margin, title, colors::black, title_scale, HAlign::center);

  for (int t = 0; t < k; ++t) {
    const int64_t row_total = confusion.support(t);
    for (int p = 0; p < k; ++p) {
      const int64_t count = confusion(t, p);
      const double fraction = row_total > 0 ? static_cast<double>(count) / static_cast<double>(row_total) : 0.0;
      const Color fill = blues_colormap(fraction);
      const int x = grid_left + p * cell, y = grid_top + t * cell;
      canvas.fill_rect(x, y, cell, cell, fill);
      const Color ink = contrasting_text_color(fill);
      const int center_x = x + cell / 2, center_y = y + cell / 2;
      if (options.show_row_percent) {
        canvas.draw_text(center_x, center_y - line_gap / 2, std::to_string(count), ink, s, HAlign::center,
                         VAlign::bottom);
        canvas.draw_text(center_x, center_y + line_gap - line_gap / 2, row_total > 0 ? percent_text(fraction) : "-",
                         ink, s, HAlign::center, VAlign::top);
      } else {
        canvas.draw_text(center_x, center_y, std::to_string(count), ink, s, HAlign::center, VAlign::middle);
      }
    }
  }
  // Thin white lines between cells keep neighbouring cells of similar color apart.
  for (int i = 1; i < k; ++i) {
    canvas.fill_rect(grid_left + i * cell, grid_top, 1, grid_size, colors::white);
    canvas.fill_rect(grid_left, grid_top + i * cell, grid_size, 1, colors::white);
  }
  canvas.draw_rect(grid_left - 1, grid_top - 1, grid_size + 2, grid_size + 2, colors::dark_gray);

  // Class names: rows on the left (true), columns below (predicted), then the axis titles.
  for (int c = 0; c < k; ++c) {
    const std::string& name = class_names[static_cast<size_t>(c)];
    canvas.draw_text(grid_left - gap, grid_top + c * cell + cell / 2, name, colors::black, s, HAlign::right,
                     VAlign::middle);
    const int column_center = grid_left + c * cell + cell / 2;
    if (vertical_column_labels) {
      const int name_width = Canvas::measure_text(name, s).width;
      // Right-aligned against the grid: the rotated text ends just below it.
      canvas.draw_text_vertical(column_center, grid_top + grid_size + gap + name_width / 2, name, colors::black, s);
    } else {
      canvas.draw_text(column_center, grid_top + grid_size + gap, name, colors::black, s, HAlign::center);
    }
  }
  canvas.draw_text(grid_left + grid_size / 2, grid_top + grid_size + gap + column_label_height + 2 * gap, "predicted",
                   colors::black, s, HAlign::center);
  canvas.draw_text_vertical(margin + line / 2, grid_top + grid_size / 2, "true", colors::black, s);

  // Colorbar: the row fraction scale, 100% at the top.
  for (int row = 0; row < grid_size; ++row) {
    const double fraction = grid_size > 1 ? 1.0 - static_cast<double>(row) / (grid_size - 1) : 1.0;
    canvas.fill_rect(colorbar_left, grid_top + row, colorbar_width, 1, blues_colormap(fraction));
  }
  canvas.draw_rect(colorbar_left - 1, grid_top - 1, colorbar_width + 2, grid_size + 2, colors::dark_gray);
  for (int tick = 0; tick <= 4; ++tick) {
    const int y = grid_top + (grid_size - 1) - tick * (grid_size - 1) / 4;
    canvas.fill_rect(colorbar_left + colorbar_width, y, s + 1, 1, colors::dark_gray);
    canvas.draw_text(colorbar_left + colorbar_width + gap, y, std::to_string(tick * 25) + "%", colors::black, s,
                     HAlign::left, VAlign::middle);
  }
  return plot;
}

// Renders the heatmap and writes it to `path` (atomically). Throws Error naming the path.
inline void save_confusion_matrix_png(const std::string& path, const ConfusionMatrix& confusion,
                                      const std::vector<std::string>& class_names,
                                      const std::string& title = "Confusion matrix",
                                      const ConfusionMatrixPlotOptions& options = {}) {
  render_confusion_matrix(confusion, class_names, title, options).canvas.save_png(path);
}

inline void save_confusion_matrix_png(const std::string& path, const ClassificationMetrics& metrics,
                                      const std::string& title = "Confusion matrix",
                                      const ConfusionMatrixPlotOptions& options = {}) {
  save_confusion_matrix_png(path, metrics.confusion, metrics.class_names, title, options);
}

}  // namespace eigennet
