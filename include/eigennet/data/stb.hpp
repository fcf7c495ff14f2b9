// stb_image (decoding BMP) and stb_image_resize (filtered resampling) for the data pipeline.
// JPEG and PNG are decoded by libjpeg-turbo and libpng (jpeg.hpp, png.hpp), not by stb_image.
//
// stb is header-only; each translation unit that includes this header gets its own static copy
// (STB_IMAGE_STATIC, STB_IMAGE_RESIZE_STATIC), so nothing has to be compiled separately and
// copies in different translation units never clash at link time. If the including file already
// included stb_image.h (or stb_image_resize.h) itself, its declarations are used instead and that
// file is responsible for providing the implementation (STB_IMAGE_IMPLEMENTATION in one .cpp).
// A translation unit that wants to export stb_image's symbols to others must include stb_image.h
// with its implementation before any eigennet header.
//
// Formats: our copy compiles BMP only. Debian 12's stb_image 2.27 has known memory-safety and
// undefined-behaviour bugs in its JPEG, PNG and PNM decoders (fixed upstream in 2.28; found here
// by fuzz/fuzz_image, see fuzz/README.md), and TGA has no magic number, so with it stb_image
// "decodes" random non-image files. decode_image only ever hands stb_image files that start with
// a BMP's "BM", also when the including program compiled stb_image with every format.
#pragma once

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-align"
#pragma GCC diagnostic ignored "-Wshadow"
#endif

#ifndef STBI_INCLUDE_STB_IMAGE_H
#define STB_IMAGE_STATIC
#ifndef STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_IMPLEMENTATION
#endif
#ifndef STBI_NO_JPEG
#define STBI_NO_JPEG
#endif
#ifndef STBI_NO_PNG
#define STBI_NO_PNG
#endif
#ifndef STBI_NO_PNM
#define STBI_NO_PNM
#endif
#ifndef STBI_NO_GIF
#define STBI_NO_GIF
#endif
#ifndef STBI_NO_HDR
#define STBI_NO_HDR
#endif
#ifndef STBI_NO_PIC
#define STBI_NO_PIC
#endif
#ifndef STBI_NO_PSD
#define STBI_NO_PSD
#endif
#ifndef STBI_NO_TGA
#define STBI_NO_TGA
#endif
#include <stb_image.h>
// The implementation is in this translation unit now: a later #include <stb_image.h> must not
// compile it a second time.
#undef STB_IMAGE_IMPLEMENTATION
#undef STB_IMAGE_STATIC
#endif

#if defined(STBI_NO_BMP)
#error "eigennet/data needs stb_image with BMP support (remove STBI_NO_BMP)"
#endif

#ifndef STBIR_INCLUDE_STB_IMAGE_RESIZE_H
// stb_image_resize v0.97 asserts that each output pixel's downsampling weights sum to less than
// 1.1 and then normalizes them to 1 anyway; for some size pairs (e.g. 13 -> 9, 2000 -> 1304) the
// sum exceeds that and a debug build aborts (github.com/nothings/stb/issues/1449). Its asserts
// are internal consistency checks (bad arguments are reported by a 0 return), so they are
// compiled out of our copy.
#ifndef STBIR_ASSERT
#define STBIR_ASSERT(x) ((void)0)
#define EIGENNET_DEFINED_STBIR_ASSERT
#endif
#define STB_IMAGE_RESIZE_STATIC
#ifndef STB_IMAGE_RESIZE_IMPLEMENTATION
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#endif
#include <stb_image_resize.h>
#undef STB_IMAGE_RESIZE_IMPLEMENTATION
#undef STB_IMAGE_RESIZE_STATIC
#ifdef EIGENNET_DEFINED_STBIR_ASSERT
#undef STBIR_ASSERT
#undef EIGENNET_DEFINED_STBIR_ASSERT
#endif
#endif

#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
