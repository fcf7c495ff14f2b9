// Small helpers shared by the test suites.
#pragma once

#include <filesystem>
#include <string>

#include <unistd.h>

namespace eigennet::testing {

// An empty directory under the system's temporary folder, unique to this process.
inline std::filesystem::path fresh_directory(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("eigennet_" + name + "_" + std::to_string(static_cast<long>(::getpid())));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace eigennet::testing
