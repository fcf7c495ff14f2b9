// Colors for the plots: an RGB triple, a few named colors, contrast helpers and a sequential
// colormap (ColorBrewer's "Blues", as in matplotlib) for heatmaps, where darker means more.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

namespace eigennet {

struct Color {
  uint8_t r = 0, g = 0, b = 0;
  bool operator==(const Color& other) const { return r == other.r && g == other.g && b == other.b; }
  bool operator!=(const Color& other) const { return !(*this == other); }
};

namespace colors {
constexpr Color white{255, 255, 255};
constexpr Color black{0, 0, 0};
constexpr Color dark_gray{64, 64, 64};
constexpr Color gray{128, 128, 128};
constexpr Color light_gray{225, 225, 225};
// matplotlib's "tab10" blue and orange: the usual train / validation pair.
constexpr Color blue{31, 119, 180};
constexpr Color orange{255, 127, 14};
constexpr Color green{44, 160, 44};
constexpr Color red{214, 39, 40};
}  // namespace colors

// Linear interpolation a -> b at t in [0, 1].
inline Color mix(Color a, Color b, double t) {
  t = std::clamp(t, 0.0, 1.0);
  auto channel = [t](uint8_t x, uint8_t y) {
    return static_cast<uint8_t>(std::lround(x + (static_cast<double>(y) - x) * t));
  };
  return {channel(a.r, b.r), channel(a.g, b.g), channel(a.b, b.b)};
}

// Relative luminance in [0, 1] (Rec. 709 weights on sRGB values; close enough to pick a text color).
inline double luminance(Color c) { return (0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b) / 255.0; }

// Black or white, whichever reads better on `background`.
inline Color contrasting_text_color(Color background) {
  return luminance(background) > 0.5 ? colors::black : colors::white;
}

// ColorBrewer "Blues" (9 classes), interpolated: t = 0 is almost white, t = 1 dark blue.
// Luminance decreases strictly with t, so darker always means a larger value.
inline Color blues_colormap(double t) {
  static constexpr std::array<Color, 9> stops{{{247, 251, 255},
                                               {222, 235, 247},
                                               {198, 219, 239},
                                               {158, 202, 225},
                                               {107, 174, 214},
                                               {66, 146, 198},
                                               {33, 113, 181},
                                               {8, 81, 156},
                                               {8, 48, 107}}};
  if (!(t >= 0.0)) t = 0.0;  // also maps NaN to the lowest color
  t = std::min(t, 1.0);
  const double position = t * (stops.size() - 1);
  const size_t index = std::min(static_cast<size_t>(position), stops.size() - 2);
  return mix(stops[index], stops[index + 1], position - static_cast<double>(index));
}

}  // namespace eigennet
