// Training augmentation: random horizontal flip, shift, rotation, scale, brightness and contrast.
//
// AugmentConfig says how strong each is; sample_augment draws one sample's concrete
// AugmentParams from an Rng; inverse_affine_map turns the geometric part together with the
// resize to the model input into one map from output pixels to source pixels, which batch
// assembly samples bilinearly in a single pass (batch.hpp). Batch assembly seeds one Rng per
// sample from (seed, epoch, image index), so augmentations do not depend on thread count or on
// which other images share the batch. Evaluation uses no augmentation (identity parameters).
#pragma once

#include <cmath>
#include <cstdint>

#include "../core/error.hpp"
#include "../core/rng.hpp"

namespace eigennet {

// How pixels that a shift, rotation or zoom-out brings in from outside the image are filled.
enum class FillMode {
  edge,      // replicate the nearest edge pixel
  constant,  // AugmentConfig::fill_value (pixel units, 0 = black)
};

struct AugmentConfig {
  float flip_probability = 0.5f;       // horizontal mirror
  float max_shift = 0.1f;              // translation, uniform in [-max, max] times width (x) and height (y)
  float max_rotation_degrees = 10.0f;  // uniform in [-max, max]
  float max_scale = 0.1f;              // zoom factor uniform in [1 - max, 1 + max] (> 1 zooms in)
  float max_brightness = 0.2f;         // added value uniform in [-max, max] times 255
  float max_contrast = 0.2f;           // factor uniform in [1 - max, 1 + max] around the image's mean
  FillMode fill = FillMode::edge;
  float fill_value = 0.0f;  // pixel value in [0, 255] for FillMode::constant

  // Everything off: samples the identity.
  static AugmentConfig none() {
    AugmentConfig c;
    c.flip_probability = 0;
    c.max_shift = 0;
    c.max_rotation_degrees = 0;
    c.max_scale = 0;
    c.max_brightness = 0;
    c.max_contrast = 0;
    return c;
  }

  void validate() const {
    EIGENNET_CHECK(flip_probability >= 0 && flip_probability <= 1, "AugmentConfig: flip_probability ", flip_probability,
                   " is outside [0, 1]");
    EIGENNET_CHECK(max_shift >= 0 && max_shift <= 1, "AugmentConfig: max_shift ", max_shift, " is outside [0, 1]");
    EIGENNET_CHECK(max_rotation_degrees >= 0 && max_rotation_degrees <= 180, "AugmentConfig: max_rotation_degrees ",
                   max_rotation_degrees, " is outside [0, 180]");
    EIGENNET_CHECK(max_scale >= 0 && max_scale < 1, "AugmentConfig: max_scale ", max_scale, " is outside [0, 1)");
    EIGENNET_CHECK(max_brightness >= 0 && max_brightness <= 1, "AugmentConfig: max_brightness ", max_brightness,
                   " is outside [0, 1]");
    EIGENNET_CHECK(max_contrast >= 0 && max_contrast <= 1, "AugmentConfig: max_contrast ", max_contrast,
                   " is outside [0, 1]");
    EIGENNET_CHECK(fill_value >= 0 && fill_value <= 255, "AugmentConfig: fill_value ", fill_value,
                   " is outside [0, 255]");
  }
};

// One sample's augmentation. The default is the identity.
struct AugmentParams {
  bool flip = false;           // mirror horizontally (applied last, to the output)
  float shift_x = 0;           // fraction of the width; positive moves the content right
  float shift_y = 0;           // fraction of the height; positive moves the content down
  float rotation_degrees = 0;  // positive turns the content clockwise as displayed
  float scale = 1;             // > 1 enlarges the content (zooms in)
  float brightness = 0;        // added to every pixel, fraction of 255
  float contrast = 1;          // multiplies the distance of every pixel from the image mean

  bool is_identity() const {
    return !flip && shift_x == 0 && shift_y == 0 && rotation_degrees == 0 && scale == 1 && brightness == 0 &&
           contrast == 1;
  }
};

// Draws one sample's parameters. Always consumes the same number of random values, so turning
// one kind of augmentation on or off does not change the draws of the others.
inline AugmentParams sample_augment(const AugmentConfig& config, Rng& rng) {
  AugmentParams p;
  p.flip = rng.uniform() < config.flip_probability;
  p.shift_x = config.max_shift * rng.uniform(-1.0f, 1.0f);
  p.shift_y = config.max_shift * rng.uniform(-1.0f, 1.0f);
  p.rotation_degrees = config.max_rotation_degrees * rng.uniform(-1.0f, 1.0f);
  p.scale = 1.0f + config.max_scale * rng.uniform(-1.0f, 1.0f);
  p.brightness = config.max_brightness * rng.uniform(-1.0f, 1.0f);
  p.contrast = 1.0f + config.max_contrast * rng.uniform(-1.0f, 1.0f);
  return p;
}

// Maps an output pixel (x, y) (integer indices, pixel centers) to the continuous source position
// (pixel centers at integers) it samples: source = (xx x + xy y + x0, yx x + yy y + y0).
struct AffineMap {
  double xx = 1, xy = 0, x0 = 0;
  double yx = 0, yy = 1, y0 = 0;
};

// The inverse of "resize src to dst, then rotate by rotation_degrees and scale by `scale` about
// the center, then shift": output pixel -> source position. Pixel centers are aligned the usual
// way (half-pixel offsets, as in stb_image_resize, TensorFlow's half_pixel_centers and PyTorch's
// align_corners=False). The flip is not part of the map (batch assembly mirrors output columns
// so that a flip is bit-exactly a mirror). Identity parameters give exactly the plain resize.
inline AffineMap inverse_affine_map(const AugmentParams& p, int src_height, int src_width, int dst_height,
                                    int dst_width) {
  EIGENNET_CHECK(src_height > 0 && src_width > 0 && dst_height > 0 && dst_width > 0,
                 "inverse_affine_map: invalid sizes ", src_width, "x", src_height, " -> ", dst_width, "x", dst_height);
  EIGENNET_CHECK(p.scale > 0, "inverse_affine_map: scale must be positive, got ", p.scale);
  // Output pixel x lands at u = (x + 0.5) * kx - src_width / 2 in source units about the center.
  const double kx = static_cast<double>(src_width) / dst_width;
  const double ky = static_cast<double>(src_height) / dst_height;
  const double u0 = 0.5 * kx - 0.5 * src_width;
  const double v0 = 0.5 * ky - 0.5 * src_height;
  const double tx = static_cast<double>(p.shift_x) * src_width;
  const double ty = static_cast<double>(p.shift_y) * src_height;
  // The forward transform is q = scale * R(theta) * u + t; its inverse u = R(-theta) (q - t) / scale.
  const double theta = static_cast<double>(p.rotation_degrees) * (3.14159265358979323846 / 180.0);
  const double c = std::cos(theta) / p.scale, s = std::sin(theta) / p.scale;
  AffineMap m;
  m.xx = c * kx;
  m.xy = s * ky;
  m.x0 = 0.5 * src_width - 0.5 + (c * (u0 - tx) + s * (v0 - ty));
  m.yx = -s * kx;
  m.yy = c * ky;
  m.y0 = 0.5 * src_height - 0.5 + (-s * (u0 - tx) + c * (v0 - ty));
  return m;
}

}  // namespace eigennet
