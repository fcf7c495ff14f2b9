// A live progress line for training loops. On a terminal it redraws in place ("\r"); when
// stderr is a file or pipe it prints a plain line at most every `plain_interval` seconds and at
// the end of each epoch, so logs stay readable.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <unistd.h>

namespace eigennet {

class ProgressLine {
 public:
  explicit ProgressLine(std::FILE* out = stderr, double plain_interval_seconds = 10.0)
      : out_(out), interactive_(::isatty(::fileno(out)) != 0), interval_(plain_interval_seconds) {}

  // Call at the start of each epoch.
  void start_epoch(int64_t epoch, int64_t epochs, int64_t batches) {
    epoch_ = epoch;
    epochs_ = epochs;
    batches_ = batches;
    start_ = last_print_ = std::chrono::steady_clock::now();
    images_ = 0;
  }

  // Call after each batch with running averages for the epoch so far.
  void update(int64_t batch, int64_t batch_images, double loss, double accuracy) {
    images_ += batch_images;
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const bool last = batch + 1 >= batches_;
    if (!interactive_ && !last && std::chrono::duration<double>(now - last_print_).count() < interval_) return;
    last_print_ = now;
    const double rate = elapsed > 0 ? static_cast<double>(images_) / elapsed : 0.0;
    const double per_batch = batch + 1 > 0 ? elapsed / static_cast<double>(batch + 1) : 0.0;
    const double eta = per_batch * static_cast<double>(batches_ - batch - 1);
    char line[256];
    std::snprintf(line, sizeof line, "epoch %lld/%lld  batch %lld/%lld  %.0f img/s  loss %.4f  acc %.4f  %s %s",
                  static_cast<long long>(epoch_ + 1), static_cast<long long>(epochs_), static_cast<long long>(batch + 1),
                  static_cast<long long>(batches_), rate, loss, accuracy, last ? "took" : "eta",
                  format_seconds(last ? elapsed : eta).c_str());
    if (interactive_) {
      std::fprintf(out_, "\r\033[K%s", line);
      if (last) std::fputc('\n', out_);
    } else {
      std::fprintf(out_, "%s\n", line);
    }
    std::fflush(out_);
  }

  static std::string format_seconds(double s) {
    const long total = static_cast<long>(s + 0.5);
    char buf[32];
    if (total >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm%02lds", total / 3600, total / 60 % 60, total % 60);
    else if (total >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", total / 60, total % 60);
    else std::snprintf(buf, sizeof buf, "%lds", total);
    return buf;
  }

 private:
  std::FILE* out_;
  bool interactive_;
  double interval_;
  int64_t epoch_ = 0, epochs_ = 0, batches_ = 0, images_ = 0;
  std::chrono::steady_clock::time_point start_, last_print_;
};

}  // namespace eigennet
