// Atomic writes never replace what is not a regular file. The writers rename a temporary file
// over the target, which would turn a FIFO, a device (as root: `--out /dev/null`) or a directory
// into a regular file; they must refuse instead, naming the path, and leave the target as it was.
// (Program-level robustness tests: tests/robustness/*.sh.)
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <eigennet/eigennet.hpp>
#include <eigennet/io/npy.hpp>

using namespace eigennet;
namespace fs = std::filesystem;

namespace {

struct ScratchDir {
  fs::path path;
  ScratchDir() {
    path = fs::temp_directory_path() / ("eigennet_robustness_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  size_t entries() const {
    size_t n = 0;
    for (const auto& e : fs::directory_iterator(path)) n += e.path().filename() != "keep";
    return n;
  }
};

std::string message_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("atomic writers refuse to replace a FIFO or a directory") {
  ScratchDir dir;
  const std::string fifo = (dir.path / "fifo").string();
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string directory = (dir.path / "folder").string();
  fs::create_directories(directory);
  Tensor t(Shape{2, 3});
  t.fill(1.5f);

  for (const std::string& target : {fifo, directory}) {
    CAPTURE(target);
    const std::string text = message_of([&] { write_file_atomically(target, "text"); });
    CHECK(text.find("cannot write '" + target + "': it exists and is not a regular file") != std::string::npos);
    const std::string tensors = message_of([&] { write_safetensors(target, std::vector<TensorRef>{{"t", &t}}); });
    CHECK(tensors.find("'" + target + "': cannot write: it exists and is not a regular file") != std::string::npos);
    const std::string npy = message_of([&] { save_npy(target, t); });
    CHECK(npy.find("not a regular file") != std::string::npos);
  }
  struct stat info {};
  REQUIRE(::stat(fifo.c_str(), &info) == 0);
  CHECK(S_ISFIFO(info.st_mode));
  CHECK(fs::is_directory(directory));
  CHECK(dir.entries() == 2);  // no temporary file left behind

  // A regular file is still replaced, atomically.
  const std::string file = (dir.path / "t.safetensors").string();
  write_safetensors(file, std::vector<TensorRef>{{"t", &t}});
  t.fill(-2.0f);
  write_safetensors(file, std::vector<TensorRef>{{"t", &t}});
  CHECK(read_safetensors(file).at("t")[0] == -2.0f);
  CHECK(dir.entries() == 3);
}
