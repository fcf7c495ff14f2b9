// Image decoding: eigennet's decode_image (libjpeg-turbo for JPEG, libpng for PNG) against
// stb_image 2.27 (what decode_image used before), and libspng for PNG when it is installed,
// in the same run, interleaved (A B A B ...), medians.
//
//   bench_decode [--samples N] [--fer DIR] [--large WxH]
//
// Inputs: FER-2013 test crops (48x48 grayscale JPEG, read from --fer when present, otherwise
// generated at that size), and two generated photos, 640x480 and by default 4032x3024 (a
// 12-megapixel phone photo), each as baseline and as progressive JPEG (libjpeg, quality 90,
// 4:2:0, standard Huffman tables, as cameras write them) and the 640x480 one as PNG. The photos
// are a procedural landscape (smooth gradients, textures at several scales, edges, sensor
// noise) that compresses like a real photo: their bits per pixel are printed. "for 224x224"
// rows decode and resize to a 224x224 model input, as predict does: stb_image at full size,
// eigennet reduced through the JPEG DCT (DecodeOptions::min_height/min_width), and eigennet at
// full size. Columns: stb_image ms, eigennet ms, their ratio; then a third contender's ms and its
// ratio to eigennet, as the row's note says.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

// The full stb_image (JPEG and PNG too) for the comparison; eigennet's headers then use these
// declarations and still hand stb_image only BMP files.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <eigennet/data/image.hpp>

#ifdef EIGENNET_BENCH_SPNG
#include <spng.h>
#endif

namespace fs = std::filesystem;
using eigennet::ColorMode;
using eigennet::DecodeOptions;
using eigennet::Image;

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Times the contenders in turn, `samples` rounds (after one untimed round); each sample repeats
// a call until it lasts at least 100 ms, so that on a shared machine each sample spans many
// scheduler slices. Returns the median ms per call of each.
std::vector<double> interleaved(const std::vector<std::function<void()>>& contenders, int samples) {
  std::vector<int> calls(contenders.size(), 1);
  for (size_t c = 0; c < contenders.size(); ++c) {
    const auto start = Clock::now();
    contenders[c]();
    const double t = std::chrono::duration<double>(Clock::now() - start).count();
    calls[c] = std::max(1, static_cast<int>(0.1 / std::max(t, 1e-7)));
  }
  std::vector<std::vector<double>> ms(contenders.size());
  for (int s = 0; s < samples; ++s) {
    for (size_t c = 0; c < contenders.size(); ++c) {
      const auto start = Clock::now();
      for (int i = 0; i < calls[c]; ++i) contenders[c]();
      ms[c].push_back(1e3 * std::chrono::duration<double>(Clock::now() - start).count() / calls[c]);
    }
  }
  std::vector<double> out;
  for (const auto& m : ms) out.push_back(median(m));
  return out;
}

// ---- Test images ------------------------------------------------------------------------------

struct Rgb {
  int width, height;
  std::vector<uint8_t> pixels;
};

uint32_t hash(uint32_t x, uint32_t y, uint32_t seed) {
  uint32_t h = x * 374761393u + y * 668265263u + seed * 2246822519u;
  h = (h ^ (h >> 13)) * 1274126177u;
  return h ^ (h >> 16);
}

// Smooth random field in [0, 1) with features of about `scale` pixels (bilinear value noise).
float value_noise(float x, float y, float scale, uint32_t seed) {
  const float fx = x / scale, fy = y / scale;
  const int ix = static_cast<int>(fx), iy = static_cast<int>(fy);
  const float tx = fx - ix, ty = fy - iy;
  const auto v = [&](int a, int b) { return (hash(static_cast<uint32_t>(a), static_cast<uint32_t>(b), seed) & 0xFFFF) / 65536.0f; };
  const float sx = tx * tx * (3 - 2 * tx), sy = ty * ty * (3 - 2 * ty);
  return (v(ix, iy) * (1 - sx) + v(ix + 1, iy) * sx) * (1 - sy) + (v(ix, iy + 1) * (1 - sx) + v(ix + 1, iy + 1) * sx) * sy;
}

// A procedural photo: sky gradient with clouds, foliage-like texture at several scales, a few hard
// edges (buildings), and per-pixel sensor noise. The scene scales with the resolution; the finest
// texture and the noise stay at pixel scale, as a camera's do.
Rgb make_photo(int width, int height) {
  Rgb p{width, height, std::vector<uint8_t>(static_cast<size_t>(width) * height * 3)};
  const float unit = width / 640.0f;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const float fx = static_cast<float>(x), fy = static_cast<float>(y);
      const float horizon = height * (0.45f + 0.1f * value_noise(fx, 0, 160 * unit, 1));
      float r, g, b;
      if (fy < horizon) {  // sky with clouds
        const float cloud = value_noise(fx, fy, 90 * unit, 2) * 0.6f + value_noise(fx, fy, 25 * unit, 3) * 0.4f;
        const float t = fy / horizon;
        r = 90 + 80 * t + 120 * std::max(0.0f, cloud - 0.55f);
        g = 140 + 60 * t + 110 * std::max(0.0f, cloud - 0.55f);
        b = 220 - 20 * t + 30 * std::max(0.0f, cloud - 0.55f);
      } else {  // ground: foliage texture at three scales
        const float t = value_noise(fx, fy, 40 * unit, 4) * 0.45f + value_noise(fx, fy, 9 * unit, 5) * 0.25f +
                        value_noise(fx, fy, 2.5f, 6) * 0.3f;  // the finest detail at pixel scale
        r = 40 + 90 * t;
        g = 70 + 110 * t;
        b = 30 + 50 * t;
      }
      // Buildings: rectangles with windows.
      const int bx = static_cast<int>(fx / (70 * unit));
      const float top = height * (0.3f + 0.25f * ((hash(static_cast<uint32_t>(bx), 0, 7) & 255) / 255.0f));
      if ((bx % 3 == 1) && fy > top && fy < height * 0.8f) {
        const float shade = 120 + 60 * ((hash(static_cast<uint32_t>(bx), 1, 7) & 255) / 255.0f);
        const bool window = (static_cast<int>(fx / (8 * unit)) % 2) && (static_cast<int>(fy / (11 * unit)) % 2);
        r = g = b = window ? shade * 0.35f : shade;
        b += 10;
      }
      const float noise = ((hash(static_cast<uint32_t>(x), static_cast<uint32_t>(y), 9) & 255) / 255.0f - 0.5f) * 14;
      uint8_t* q = p.pixels.data() + (static_cast<size_t>(y) * width + x) * 3;
      q[0] = static_cast<uint8_t>(std::clamp(r + noise, 0.0f, 255.0f));
      q[1] = static_cast<uint8_t>(std::clamp(g + noise, 0.0f, 255.0f));
      q[2] = static_cast<uint8_t>(std::clamp(b + noise, 0.0f, 255.0f));
    }
  }
  return p;
}

// libjpeg's encoder (its default error handler exits with a message: fine for a benchmark).
std::vector<uint8_t> encode_jpeg(const uint8_t* pixels, int width, int height, int channels, int quality,
                                 bool progressive) {
  jpeg_compress_struct info{};
  jpeg_error_mgr errors{};
  info.err = jpeg_std_error(&errors);
  jpeg_create_compress(&info);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&info, &buffer, &size);
  info.image_width = static_cast<JDIMENSION>(width);
  info.image_height = static_cast<JDIMENSION>(height);
  info.input_components = channels;
  info.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, quality, TRUE);
  if (progressive) jpeg_simple_progression(&info);
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels) + static_cast<size_t>(info.next_scanline) * width * channels;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  std::vector<uint8_t> out(buffer, buffer + size);
  jpeg_destroy_compress(&info);
  std::free(buffer);
  return out;
}

std::vector<uint8_t> encode_png(const Rgb& p) {
  std::vector<uint8_t> out;
  const auto append = [](void* context, void* data, int size) {
    auto* bytes = static_cast<std::vector<uint8_t>*>(context);
    bytes->insert(bytes->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  stbi_write_png_compression_level = 6;
  if (!stbi_write_png_to_func(append, &out, p.width, p.height, 3, p.pixels.data(), p.width * 3)) {
    std::fprintf(stderr, "bench_decode: PNG encoding failed\n");
    std::exit(1);
  }
  return out;
}

std::vector<uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// ---- The contenders -------------------------------------------------------------------------

volatile unsigned sink = 0;  // keeps results alive

void stb_decode(const std::vector<uint8_t>& file, int channels) {
  int w = 0, h = 0, c = 0;
  stbi_uc* p = stbi_load_from_memory(file.data(), static_cast<int>(file.size()), &w, &h, &c, channels);
  if (!p) {
    std::fprintf(stderr, "bench_decode: stb_image failed: %s\n", stbi_failure_reason());
    std::exit(1);
  }
  sink = sink + p[0];
  stbi_image_free(p);
}

void eigennet_decode(const std::vector<uint8_t>& file, const DecodeOptions& options, Image& out) {
  std::string error;
  if (!eigennet::decode_image(file.data(), file.size(), options, out, error)) {
    std::fprintf(stderr, "bench_decode: decode_image failed: %s\n", error.c_str());
    std::exit(1);
  }
  sink = sink + out.pixels[0];
}

void print_row(const char* what, const std::vector<double>& ms, const std::string& note = {}) {
  std::printf("%-44s %10.3f %10.3f %8.2fx", what, ms[0], ms[1], ms[0] / ms[1]);
  if (ms.size() > 2) {
    std::printf(" %10.3f %8.2fx", ms[2], ms[2] / ms[1]);
  } else {
    std::printf(" %10s %9s", "", "");
  }
  std::printf("  %s\n", note.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  int samples = 9, large_w = 4032, large_h = 3024;
  std::string fer_dir;
#ifdef EIGENNET_SOURCE_DIR
  fer_dir = std::string(EIGENNET_SOURCE_DIR) + "/../shared/data/fer2013/test";
#endif
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--samples" && i + 1 < argc) {
      samples = std::atoi(argv[++i]);
    } else if (a == "--fer" && i + 1 < argc) {
      fer_dir = argv[++i];
    } else if (a == "--large" && i + 1 < argc && std::sscanf(argv[++i], "%dx%d", &large_w, &large_h) == 2) {
    } else {
      std::printf("usage: bench_decode [--samples N] [--fer DIR] [--large WxH]\n");
      return a == "--help" ? 0 : 2;
    }
  }

  // FER crops: the first 300 files of the test split (all classes in turn), else generated.
  std::vector<std::vector<uint8_t>> fer;
  std::error_code ec;
  if (fs::is_directory(fer_dir, ec)) {
    std::vector<fs::path> files;
    for (const auto& cls : fs::directory_iterator(fer_dir))
      for (const auto& f : fs::directory_iterator(cls.path())) files.push_back(f.path());
    std::sort(files.begin(), files.end());
    for (size_t i = 0; i < files.size() && fer.size() < 300; i += std::max<size_t>(1, files.size() / 300))
      fer.push_back(read_file(files[i]));
  }
  const bool real_fer = !fer.empty();
  if (!real_fer) {
    const Rgb face = make_photo(48, 48);
    std::vector<uint8_t> gray(48 * 48);
    for (int i = 0; i < 48 * 48; ++i) gray[static_cast<size_t>(i)] = face.pixels[static_cast<size_t>(i) * 3 + 1];
    for (int i = 0; i < 300; ++i) fer.push_back(encode_jpeg(gray.data(), 48, 48, 1, 75, false));
  }
  size_t fer_bytes = 0;
  for (const auto& f : fer) fer_bytes += f.size();

  const Rgb small = make_photo(640, 480), large = make_photo(large_w, large_h);
  struct Photo {
    std::string name;
    int width, height;
    std::vector<uint8_t> file;
  };
  const std::vector<Photo> photos = {
      {"640x480 baseline", 640, 480, encode_jpeg(small.pixels.data(), 640, 480, 3, 90, false)},
      {"640x480 progressive", 640, 480, encode_jpeg(small.pixels.data(), 640, 480, 3, 90, true)},
      {std::to_string(large_w) + "x" + std::to_string(large_h) + " baseline", large_w, large_h,
       encode_jpeg(large.pixels.data(), large_w, large_h, 3, 90, false)},
      {std::to_string(large_w) + "x" + std::to_string(large_h) + " progressive", large_w, large_h,
       encode_jpeg(large.pixels.data(), large_w, large_h, 3, 90, true)},
  };
  const std::vector<uint8_t> png = encode_png(small);

  std::printf("bench_decode: median of %d interleaved samples, ms per image; ratio = stb_image / eigennet,\n"
              "other = a third contender (see the note), its ratio = other / eigennet\n",
              samples);
  std::printf("libjpeg-turbo %d, libpng %s, stb_image 2.27 (Debian 12)%s\n\n", LIBJPEG_TURBO_VERSION_NUMBER,
              PNG_LIBPNG_VER_STRING,
#ifdef EIGENNET_BENCH_SPNG
              ", libspng (PNG column 3)"
#else
              ""
#endif
  );
  std::printf("%-44s %10s %10s %9s %10s %9s\n", "input", "stb_image", "eigennet", "ratio", "other", "ratio");

  Image out;
  // FER crops, grayscale.
  DecodeOptions gray;
  gray.color = ColorMode::grayscale;
  {
    const auto ms = interleaved({[&] { for (const auto& f : fer) stb_decode(f, 1); },
                                 [&] { for (const auto& f : fer) eigennet_decode(f, gray, out); }},
                                samples);
    const std::vector<double> per_image = {ms[0] / fer.size(), ms[1] / fer.size()};
    char note[128];
    std::snprintf(note, sizeof(note), "%zu %s crops, %.0f bytes each", fer.size(),
                  real_fer ? "FER-2013 test" : "generated", static_cast<double>(fer_bytes) / fer.size());
    print_row("FER-2013 crop 48x48 grayscale", per_image, note);
  }
  DecodeOptions rgb;
  for (const Photo& p : photos) {
    char note[128];
    std::snprintf(note, sizeof(note), "%.2f bits/pixel, %zu KB", 8.0 * p.file.size() / (double(p.width) * p.height),
                  p.file.size() / 1024);
    print_row(p.name.c_str(), interleaved({[&] { stb_decode(p.file, 3); }, [&] { eigennet_decode(p.file, rgb, out); }}, samples),
              note);
  }
  // Decoding for a 224x224 model input: decode + resize, stb at full size, eigennet through the
  // DCT, and (columns 5-6) eigennet at full size: what the reduced decode alone saves.
  DecodeOptions model = rgb;
  model.min_height = model.min_width = 224;
  std::vector<uint8_t> resized(224 * 224 * 3);
  for (const Photo& p : photos) {
    eigennet_decode(p.file, model, out);
    char note[128];
    std::snprintf(note, sizeof(note), "decoded at %dx%d, then resized; columns 5-6: eigennet at full size", out.width,
                  out.height);
    const auto ms = interleaved(
        {[&] {
           int w = 0, h = 0, c = 0;
           stbi_uc* px = stbi_load_from_memory(p.file.data(), static_cast<int>(p.file.size()), &w, &h, &c, 3);
           eigennet::resize_image(px, h, w, 3, resized.data(), 224, 224);
           stbi_image_free(px);
         },
         [&] {
           eigennet_decode(p.file, model, out);
           eigennet::resize_image(out.pixels.data(), out.height, out.width, 3, resized.data(), 224, 224);
         },
         [&] {
           eigennet_decode(p.file, rgb, out);
           eigennet::resize_image(out.pixels.data(), out.height, out.width, 3, resized.data(), 224, 224);
         }},
        samples);
    print_row((p.name + " for 224x224").c_str(), ms, note);
  }
  // PNG.
  {
    std::vector<std::function<void()>> contenders = {[&] { stb_decode(png, 3); }, [&] { eigennet_decode(png, rgb, out); }};
#ifdef EIGENNET_BENCH_SPNG
    std::vector<uint8_t> spng_out(640 * 480 * 3);
    contenders.push_back([&] {
      spng_ctx* ctx = spng_ctx_new(0);
      spng_set_png_buffer(ctx, png.data(), png.size());
      if (spng_decode_image(ctx, spng_out.data(), spng_out.size(), SPNG_FMT_RGB8, 0) != 0) std::exit(1);
      spng_ctx_free(ctx);
      sink = sink + spng_out[0];
    });
#endif
    char note[96];
    std::snprintf(note, sizeof(note), "%zu KB%s", png.size() / 1024,
                  contenders.size() > 2 ? "; columns 5-6: libspng ms, libspng / eigennet" : "");
    print_row("640x480 PNG (RGB, zlib level 6)", interleaved(contenders, samples), note);
  }

  // The decoders agree (stb_image's IDCT and chroma upsampling differ from libjpeg's slightly).
  {
    int w = 0, h = 0, c = 0;
    stbi_uc* px = stbi_load_from_memory(photos[0].file.data(), static_cast<int>(photos[0].file.size()), &w, &h, &c, 3);
    eigennet_decode(photos[0].file, rgb, out);
    double sum = 0;
    int worst = 0;
    for (size_t i = 0; i < out.pixels.size(); ++i) {
      const int d = std::abs(int{px[i]} - int{out.pixels[i]});
      sum += d;
      worst = std::max(worst, d);
    }
    stbi_image_free(px);
    std::printf("\n640x480 baseline, stb_image against libjpeg-turbo: mean |difference| %.3f, largest %d (of 255)\n",
                sum / out.pixels.size(), worst);
  }
  return 0;
}
