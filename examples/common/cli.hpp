// A small, strict command-line parser for the example programs. Flags are declared with a
// default and a description; parse() rejects unknown flags, missing values and values that do
// not parse or fall outside their range, with a message that names the flag. --help prints
// every flag with its default.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdexcept>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Parser {
 public:
  Parser(std::string program, std::string summary) : program_(std::move(program)), summary_(std::move(summary)) {}

  void flag(const std::string& name, bool& target, const std::string& help) {
    add(name, "", help, target ? "on" : "off", [&target](const std::string&) { target = true; }, false);
  }
  void option(const std::string& name, std::string& target, const std::string& help, const std::string& metavar = "STR") {
    add(name, metavar, help, target.empty() ? "none" : target, [&target](const std::string& v) { target = v; }, true);
  }
  void option(const std::string& name, int64_t& target, const std::string& help, int64_t lo, int64_t hi) {
    add(name, "N", help, std::to_string(target),
        [&target, name, lo, hi](const std::string& v) {
          char* end = nullptr;
          errno = 0;
          const long long x = std::strtoll(v.c_str(), &end, 10);
          if (v.empty() || *end != '\0' || errno == ERANGE) throw UsageError("--" + name + ": '" + v + "' is not an integer");
          if (x < lo || x > hi)
            throw UsageError("--" + name + ": " + v + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
          target = x;
        },
        true);
  }
  void option(const std::string& name, double& target, const std::string& help, double lo, double hi) {
    std::ostringstream def;
    def << target;
    add(name, "X", help, def.str(),
        [&target, name, lo, hi](const std::string& v) {
          char* end = nullptr;
          errno = 0;
          const double x = std::strtod(v.c_str(), &end);
          if (v.empty() || *end != '\0' || errno == ERANGE || x != x)
            throw UsageError("--" + name + ": '" + v + "' is not a number");
          if (x < lo || x > hi) {
            std::ostringstream msg;
            msg << "--" << name << ": " << v << " is outside [" << lo << ", " << hi << "]";
            throw UsageError(msg.str());
          }
          target = x;
        },
        true);
  }
  // One of a fixed set of words.
  void choice(const std::string& name, std::string& target, const std::vector<std::string>& choices,
              const std::string& help) {
    std::string all;
    for (const auto& c : choices) all += (all.empty() ? "" : "|") + c;
    add(name, all, help, target,
        [&target, name, choices, all](const std::string& v) {
          for (const auto& c : choices)
            if (c == v) {
              target = v;
              return;
            }
          throw UsageError("--" + name + ": '" + v + "' is not one of " + all);
        },
        true);
  }
  // Remaining non-flag arguments (e.g. image paths).
  void positional(std::vector<std::string>& target, const std::string& metavar, const std::string& help) {
    positional_ = &target;
    positional_metavar_ = metavar;
    positional_help_ = help;
  }

  // Returns false when --help was printed (the caller exits 0). Throws UsageError otherwise.
  bool parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        std::fputs(help().c_str(), stdout);
        return false;
      }
      if (arg.rfind("--", 0) == 0 && arg.size() > 2) {
        std::string name = arg.substr(2), value;
        bool inline_value = false;
        const auto eq = name.find('=');
        if (eq != std::string::npos) {
          value = name.substr(eq + 1);
          name = name.substr(0, eq);
          inline_value = true;
        }
        auto it = options_.find(name);
        if (it == options_.end()) throw UsageError("unknown flag --" + name + " (see --help)");
        Option& o = it->second;
        if (o.takes_value && !inline_value) {
          // "--out --epochs 3" forgot the value: do not take the next flag as the directory.
          if (i + 1 >= argc || (std::string(argv[i + 1]).rfind("--", 0) == 0 && std::string(argv[i + 1]).size() > 2))
            throw UsageError("--" + name + " needs a value (" + o.metavar + ")");
          value = argv[++i];
        } else if (!o.takes_value && inline_value) {
          throw UsageError("--" + name + " takes no value");
        }
        o.set(value);
        o.given = true;
        continue;
      }
      // "-x" is a mistyped flag rather than a file name (write ./-x for such a file).
      if (arg.size() > 1 && arg[0] == '-') throw UsageError("unknown flag " + arg + " (see --help)");
      if (!positional_) throw UsageError("unexpected argument '" + arg + "' (see --help)");
      positional_->push_back(arg);
    }
    return true;
  }
  bool given(const std::string& name) const {
    auto it = options_.find(name);
    return it != options_.end() && it->second.given;
  }

  std::string help() const {
    std::string out = "usage: " + program_ + " [flags]" + (positional_ ? " " + positional_metavar_ : "") + "\n\n" +
                      summary_ + "\n\nflags:\n";
    for (const auto& name : order_) {
      const Option& o = options_.at(name);
      std::string head = "  --" + name + (o.takes_value ? " " + o.metavar : "");
      if (head.size() < 34) head.resize(34, ' ');
      else head += "\n" + std::string(34, ' ');
      // A help text that explains its own default does not get a second one.
      const bool explains_default = o.help.find("(default:") != std::string::npos;
      out += head + o.help + (explains_default ? "" : " (default: " + o.default_text + ")") + "\n";
    }
    if (positional_) out += "  " + positional_metavar_ + "\n" + std::string(34, ' ') + positional_help_ + "\n";
    out += "  --help                          show this help and exit\n";
    return out;
  }

 private:
  struct Option {
    std::string metavar, help, default_text;
    std::function<void(const std::string&)> set;
    bool takes_value = true;
    bool given = false;
  };
  void add(const std::string& name, const std::string& metavar, const std::string& help, const std::string& def,
           std::function<void(const std::string&)> set, bool takes_value) {
    options_[name] = Option{metavar, help, def, std::move(set), takes_value, false};
    order_.push_back(name);
  }

  std::string program_, summary_;
  std::map<std::string, Option> options_;
  std::vector<std::string> order_;
  std::vector<std::string>* positional_ = nullptr;
  std::string positional_metavar_, positional_help_;
};

// Runs main_body, turning UsageError into "program: message" + exit code 2 and any other
// exception into "program: error: message" + exit code 1.
inline int run(const char* program, const std::function<int()>& main_body) {
  try {
    return main_body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    return 1;
  }
}

// Keeps the memory a program frees for its own later allocations (glibc: no separate mapping for
// blocks under 32 MiB, no handing the top of the heap back to the kernel), so that a step after a
// released one reuses its pages instead of faulting in fresh ones: predict's classifiers load
// into the face detector's memory (on the virtual machines measured here a fresh page costs
// about a microsecond; 12 MB fewer page faults per photo). For short programs: the heap never
// shrinks. (Not for a program that frees nothing large: recycled blocks are zeroed again by
// calloc, where fresh ones would come zeroed by the kernel: predict of one face crop, one
// network, 1 thread, 17.7 -> 19.1 ms.)
inline void keep_freed_memory() {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

// Ends the process with `status` once its output is flushed, without destroying what main
// built: the kernel takes a loaded model's memory back at exit in one go, while destructors hand
// it back block by block (measured: 4-5 ms of a 55 ms predict of one photo). For the end of a
// program only, when every file it wrote is closed.
[[noreturn]] inline void exit_without_cleanup(const char* program, int status) {
  if (std::fflush(nullptr) != 0) {  // e.g. stdout on a full disk: say so, as a normal exit would not
    std::fprintf(stderr, "%s: error: writing the output failed: %s\n", program, std::strerror(errno));
    std::_Exit(1);
  }
  std::_Exit(status);
}

// Splits "a,b,c" into its non-empty parts.
inline std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(text);
  while (std::getline(in, part, ','))
    if (!part.empty()) parts.push_back(part);
  return parts;
}

}  // namespace cli
