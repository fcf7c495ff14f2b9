// Errors: every failure the library detects is an eigennet::Error with a message that names
// the object (layer, file, tensor) and the problem.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace eigennet {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

// Throws Error with the concatenation of `parts` (anything that has operator<<).
template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(detail::concat(std::forward<Parts>(parts)...));
}

}  // namespace eigennet

// Checks a precondition; the message parts are only evaluated when it fails.
#define EIGENNET_CHECK(condition, ...)      \
  do {                                      \
    if (!(condition)) {                     \
      ::eigennet::fail(__VA_ARGS__);        \
    }                                       \
  } while (false)
