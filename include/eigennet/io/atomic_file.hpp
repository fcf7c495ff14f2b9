// Atomic file output: the bytes go to a temporary file beside the target, which is renamed
// over the target only once it is completely written and closed. A reader (or a crash) never
// sees a half-written metrics file, plot or checkpoint.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/error.hpp"

namespace eigennet {

namespace detail {
// A name in the target's directory (rename is atomic only within one file system) that no other
// process or thread writing the same target picks at the same time.
inline std::string temporary_path_for(const std::string& path) {
  static std::atomic<unsigned long> counter{0};
  return path + ".tmp." + std::to_string(static_cast<long>(::getpid())) + "." + std::to_string(counter++);
}
}  // namespace detail

// Writes `size` bytes to `path` atomically (temporary file + rename). Throws Error naming the
// path and the system's reason when any step fails; the temporary file is removed then.
inline void write_file_atomically(const std::string& path, const void* bytes, size_t size) {
  EIGENNET_CHECK(!path.empty(), "write_file_atomically: empty path");
  // The rename would replace a device, FIFO or directory (as root, "/dev/null" would become a file).
  struct stat existing {};
  if (::stat(path.c_str(), &existing) == 0 && !S_ISREG(existing.st_mode))
    fail("cannot write '", path, "': it exists and is not a regular file");
  const std::string temporary = detail::temporary_path_for(path);
  std::FILE* file = std::fopen(temporary.c_str(), "wb");
  if (!file) fail("cannot write '", path, "': cannot create '", temporary, "': ", std::strerror(errno));
  // Flushed and synced before the rename, so that after a crash the target is the old or the
  // new file, never a renamed empty one.
  const bool written = (size == 0 || std::fwrite(bytes, 1, size, file) == size) && std::fflush(file) == 0 &&
                       ::fsync(::fileno(file)) == 0;
  const int write_errno = errno;
  const bool closed = std::fclose(file) == 0;
  const int close_errno = errno;
  if (!written || !closed) {
    std::remove(temporary.c_str());
    fail("cannot write '", path, "': ", std::strerror(written ? close_errno : write_errno));
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    std::remove(temporary.c_str());
    fail("cannot write '", path, "': renaming '", temporary, "' failed: ", std::strerror(rename_errno));
  }
}

inline void write_file_atomically(const std::string& path, const std::string& text) {
  write_file_atomically(path, text.data(), text.size());
}

}  // namespace eigennet
