// Where programs find the project's trained weights (the emotion classifiers, BlazeFace) when
// they are not told: $EIGENNET_WEIGHTS_DIR, weights/ in the working directory, weights/ beside
// the program, and <prefix>/share/eigennet/weights for a program in <prefix>/bin (where
// `cmake --install` puts them; a build tree links <build>/share/eigennet/weights to the project's
// weights/, so its programs find them from any directory). No source path is compiled in, so an
// installed or moved program behaves the same, and a failed search names every folder.
#pragma once

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "../core/error.hpp"

namespace eigennet {

// The folder of the running program (empty when unknown).
inline std::string executable_dir() {
  char buffer[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buffer, sizeof buffer - 1);
  if (n <= 0) return {};
  buffer[n] = '\0';
  return std::filesystem::path(buffer).parent_path().string();
}

// The folders searched, in order.
inline std::vector<std::string> weights_folders() {
  std::vector<std::string> folders;
  if (const char* env = std::getenv("EIGENNET_WEIGHTS_DIR"); env && *env) folders.push_back(env);
  folders.push_back("weights");
  const std::string exe = executable_dir();
  if (!exe.empty()) {
    folders.push_back(exe + "/weights");
    folders.push_back(std::filesystem::path(exe).parent_path().string() + "/share/eigennet/weights");
  }
  return folders;
}

// The first folder that holds `file`, or an Error naming `what`, the file and every folder tried.
inline std::string find_weights_file(const std::string& file, const std::string& what) {
  std::string tried;
  for (const auto& folder : weights_folders()) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(folder + "/" + file, ec)) return folder + "/" + file;
    tried += (tried.empty() ? "" : ", ") + folder;
  }
  fail(what, " '", file, "' not found in any of: ", tried, " (set EIGENNET_WEIGHTS_DIR, or give the file)");
}

}  // namespace eigennet
