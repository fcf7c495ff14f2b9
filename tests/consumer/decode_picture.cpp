// A consumer's program that decodes pictures through the installed package (libjpeg-turbo and
// libpng come with eigennet::eigennet): prints "<file>: <width>x<height>x<channels>" for each.
#include <cstdio>

#include <eigennet/eigennet.hpp>

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    eigennet::Image image;
    std::string error;
    if (!eigennet::read_image(argv[i], eigennet::DecodeOptions{}, image, error)) {
      std::fprintf(stderr, "%s: %s\n", argv[i], error.c_str());
      return 1;
    }
    std::printf("%s: %dx%dx%d\n", argv[i], image.width, image.height, image.channels);
  }
  return 0;
}
