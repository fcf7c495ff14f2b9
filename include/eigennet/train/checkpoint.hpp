// Checkpoints: everything a run needs to continue exactly where it stopped, in one safetensors
// file written atomically at the end of every epoch, and the Checkpoint callback that writes it
// and restores it (resume). The format is defined here, once:
//
//   tensors   the saved model's parameters by name (weights and BatchNorm statistics), then the
//             optimizer's state ("optimizer/<parameter>/m", ...), then the state of callbacks
//             that have one ("callback/<name>/...", e.g. the weight average of
//             ExponentialMovingAverage; Checkpoint::add_state)
//   metadata  the saved model's own metadata (so a checkpoint also loads as a model file), plus
//             checkpoint       "eigennet-fit-1"
//             settings         JSON object: the run's settings (RunSettings), compared on resume
//             epochs_done, step, optimizer_steps
//             history          JSON array: one object per epoch (train/history.hpp), exact
//
// A resumed run that restores this state, with the same settings and thread count, ends
// bit-identical to an uninterrupted run: every random choice derives from (seed, epoch).
#pragma once

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <signal.h>

#include "../io/json.hpp"
#include "../io/model_io.hpp"
#include "../optim/optimizer.hpp"
#include "fit.hpp"

namespace eigennet {

constexpr const char* checkpoint_format = "eigennet-fit-1";

// The settings that make a run what it is (data, model, optimizer, seeds, epochs ...): a resumed
// run must have the same, or it would continue a different run. Names are the caller's (a
// program uses its flags, "--lr"), so that a refusal names what to change.
class RunSettings {
 public:
  RunSettings& add(const std::string& name, const std::string& value) {
    EIGENNET_CHECK(!name.empty(), "RunSettings: empty setting name");
    for (const auto& [n, v] : values_) EIGENNET_CHECK(n != name, "RunSettings: setting '", name, "' added twice");
    values_.emplace_back(name, value);
    return *this;
  }
  RunSettings& add(const std::string& name, const char* value) { return add(name, std::string(value)); }
  // Doubles in their shortest exact form: 0.001 is "0.001", and 0.0010000001 differs from it.
  RunSettings& add(const std::string& name, double value) { return add(name, json_number(value)); }
  RunSettings& add(const std::string& name, int64_t value) { return add(name, std::to_string(value)); }
  RunSettings& add(const std::string& name, int value) { return add(name, std::to_string(value)); }
  RunSettings& add(const std::string& name, uint64_t value) { return add(name, std::to_string(value)); }
  RunSettings& add(const std::string& name, bool value) { return add(name, std::string(value ? "true" : "false")); }

  const std::vector<std::pair<std::string, std::string>>& values() const { return values_; }

  Json to_json() const {
    Json j = Json::object();
    for (const auto& [name, value] : values_) j[name] = value;
    return j;
  }
  // "--lr: 0.001 in the checkpoint, 0.002 now; --seed: ..." for every setting that differs from
  // `saved` (a to_json() object read back); empty when they agree.
  std::string differences_from(const Json& saved) const {
    const auto quoted = [](const std::string& v) { return v.empty() ? std::string("''") : v; };
    std::string out;
    const auto add_line = [&](const std::string& name, const std::string& then, const std::string& now) {
      out += (out.empty() ? "" : "; ") + name + ": " + then + " in the checkpoint, " + now + " now";
    };
    for (const auto& [name, value] : values_) {
      const Json* s = saved.find(name);
      if (!s) add_line(name, "absent", quoted(value));
      else if (!s->is_string()) add_line(name, std::string("a JSON ") + s->type_name(), quoted(value));
      else if (s->as_string() != value) add_line(name, quoted(s->as_string()), quoted(value));
    }
    for (size_t i = 0; i < saved.keys().size(); ++i) {
      const std::string& name = saved.keys()[i];
      bool known = false;
      for (const auto& [n, v] : values_) known = known || n == name;
      if (!known)
        add_line(name, saved.elements()[i].is_string() ? quoted(saved.elements()[i].as_string()) : "?", "absent");
    }
    return out;
  }

 private:
  std::vector<std::pair<std::string, std::string>> values_;
};

// The run's state as a checkpoint stores it, read back without a model (e.g. to inspect a file).
struct CheckpointInfo {
  TrainingState state;
  int64_t optimizer_steps = 0;
  Json settings;
};

inline CheckpointInfo read_checkpoint_info(const SafetensorsFile& file) {
  const std::string& path = file.path;
  const auto meta = file.metadata.find("checkpoint");
  EIGENNET_CHECK(meta != file.metadata.end(), "'", path, "': it is not a training checkpoint (no 'checkpoint' metadata)");
  EIGENNET_CHECK(meta->second == checkpoint_format, "'", path, "': checkpoint format '", meta->second,
                 "' is not the one this version reads ('", checkpoint_format, "')");
  const auto text = [&](const char* key) -> const std::string& {
    auto it = file.metadata.find(key);
    EIGENNET_CHECK(it != file.metadata.end(), "'", path, "': checkpoint metadata '", key, "' is missing");
    return it->second;
  };
  const auto integer = [&](const char* key) {
    const std::string& v = text(key);
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    EIGENNET_CHECK(!v.empty() && *end == '\0' && errno == 0 && x >= 0, "'", path, "': checkpoint metadata '", key,
                   "' = '", v, "' is not a non-negative integer");
    return static_cast<int64_t>(x);
  };
  CheckpointInfo info;
  info.state.epochs_done = integer("epochs_done");
  info.state.step = integer("step");
  info.optimizer_steps = integer("optimizer_steps");
  info.state.history = history_from_json(Json::parse(text("history"), "'" + path + "' (history)"), "'" + path + "'");
  info.settings = Json::parse(text("settings"), "'" + path + "' (settings)");
  EIGENNET_CHECK(info.settings.is_object(), "'", path, "': checkpoint settings must be a JSON object");
  EIGENNET_CHECK(static_cast<int64_t>(info.state.history.size()) == info.state.epochs_done, "'", path, "': ",
                 info.state.history.size(), " history entries for ", info.state.epochs_done, " epochs");
  return info;
}

// Tensors a checkpoint saves and restores besides the model and the optimizer, by name (each
// starting with "callback/").
using CheckpointState = std::vector<std::pair<std::string, Tensor*>>;

// Writes a checkpoint atomically (see the top of this file).
inline void save_checkpoint(const std::string& path, const SavedModel& model, Optimizer& optimizer,
                            const TrainingState& state, const RunSettings& settings,
                            const CheckpointState& callback_state = {}) {
  std::vector<TensorRef> extra;
  for (auto& [name, tensor] : optimizer.state()) extra.push_back({name, tensor});
  for (const auto& [name, tensor] : callback_state) extra.push_back({name, tensor});
  std::map<std::string, std::string> metadata = model.metadata;
  metadata["checkpoint"] = checkpoint_format;
  metadata["settings"] = settings.to_json().dump(-1);
  metadata["epochs_done"] = std::to_string(state.epochs_done);
  metadata["step"] = std::to_string(state.step);
  metadata["optimizer_steps"] = std::to_string(optimizer.steps());
  metadata["history"] = history_to_json(state.history).dump(-1);
  save_parameters(path, model.parameters, metadata, extra);
}

// Restores model parameters, optimizer state and training state from a checkpoint written with
// the same settings. Everything is checked before anything changes: a refused or damaged file
// leaves model and optimizer as they were.
inline TrainingState load_checkpoint(const std::string& path, const SavedModel& model, Optimizer& optimizer,
                                     const RunSettings& settings, const CheckpointState& callback_state = {}) {
  SafetensorsFile file = read_safetensors(path);
  if (!file.metadata.count("checkpoint"))
    fail("cannot resume from '", path, "': it is not a training checkpoint (no 'checkpoint' metadata)");
  const CheckpointInfo info = read_checkpoint_info(file);
  const std::string differences = settings.differences_from(info.settings);
  if (!differences.empty())
    fail("cannot resume from '", path, "': it was written by a run with different settings (", differences,
         "). Repeat that run's settings, or write to another checkpoint.");
  std::vector<std::pair<Tensor*, const Tensor*>> optimizer_plan;
  for (auto& [name, tensor] : optimizer.state()) {
    const Tensor* saved = file.find(name);
    EIGENNET_CHECK(saved != nullptr, "'", path, "': optimizer tensor '", name, "' is missing");
    EIGENNET_CHECK(saved->shape() == tensor->shape(), "'", path, "': optimizer tensor '", name, "' has shape ",
                   saved->shape(), ", expected ", tensor->shape());
    optimizer_plan.emplace_back(tensor, saved);
  }
  for (const auto& [name, tensor] : callback_state) {
    const Tensor* saved = file.find(name);
    EIGENNET_CHECK(saved != nullptr, "'", path, "': tensor '", name,
                   "' is missing (the run that wrote it did not keep this callback's state)");
    EIGENNET_CHECK(saved->shape() == tensor->shape(), "'", path, "': tensor '", name, "' has shape ", saved->shape(),
                   ", expected ", tensor->shape());
    optimizer_plan.emplace_back(tensor, saved);
  }
  SafetensorsFile parameters;
  parameters.path = path;
  for (const NamedTensor& t : file.tensors)
    if (t.name.rfind("optimizer/", 0) != 0 && t.name.rfind("callback/", 0) != 0) parameters.tensors.push_back(t);
  load_parameters(model.parameters, parameters);
  for (auto& [tensor, saved] : optimizer_plan) tensor->copy_from(*saved);
  optimizer.set_steps(info.optimizer_steps);
  return info.state;
}

// Removes "<name>.tmp.<pid>.<n>" files in `dir` whose writing process is gone (left by a run
// killed while writing, io/atomic_file.hpp); returns their paths.
inline std::vector<std::string> remove_stale_temporaries(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::string> removed;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir.empty() ? "." : dir, ec)) {
    const std::string name = entry.path().filename().string();
    const size_t at = name.rfind(".tmp.");
    if (at == std::string::npos) continue;
    const char* digits = name.c_str() + at + 5;
    char* end = nullptr;
    const long pid = std::strtol(digits, &end, 10);
    if (end == digits || *end != '.' || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // still running (or not ours)
    std::error_code remove_ec;
    if (fs::remove(entry.path(), remove_ec)) removed.push_back(entry.path().string());
  }
  return removed;
}

// Writes a checkpoint after every epoch; with `resume`, restores the run from it (when it exists)
// before the first epoch (CallbackRole::checkpoint: it restores before the others start and saves
// after they wrote their files, so a crash in between redoes the epoch).
class Checkpoint : public Callback {
 public:
  struct Options {
    bool resume = false;       // continue from the checkpoint when it exists
    std::FILE* log = stderr;   // one line on resuming or cleaning up; null: silent
  };
  Checkpoint(std::string path, SavedModel model, RunSettings settings, Options options)
      : path_(std::move(path)), model_(std::move(model)), settings_(std::move(settings)), options_(options) {}
  Checkpoint(std::string path, SavedModel model, RunSettings settings, bool resume)
      : Checkpoint(std::move(path), std::move(model), std::move(settings), Options{resume, stderr}) {}

  CallbackRole role() const override { return CallbackRole::checkpoint; }

  void on_train_begin(FitContext& ctx) override {
    const std::string dir = std::filesystem::path(path_).parent_path().string();
    for (const std::string& removed : remove_stale_temporaries(dir))
      say("removed %s, left behind by an interrupted run\n", removed.c_str());
    if (!options_.resume) return;
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) {
      say("no checkpoint at %s yet: starting from scratch\n", path_.c_str());
      return;
    }
    ctx.state = load_checkpoint(path_, model_, ctx.optimizer, settings_, state_);
    resumed_ = true;
    say("resumed from %s after epoch %lld\n", path_.c_str(), static_cast<long long>(ctx.state.epochs_done));
  }
  void on_epoch_end(FitContext& ctx) override {
    save_checkpoint(path_, model_, ctx.optimizer, ctx.state, settings_, state_);
  }

  // Also saves and restores these tensors of another callback (names starting with "callback/"),
  // e.g. ExponentialMovingAverage::state(): a resumed run then continues it too.
  void add_state(const CheckpointState& tensors) {
    for (const auto& [name, tensor] : tensors) {
      EIGENNET_CHECK(name.rfind("callback/", 0) == 0, "Checkpoint::add_state: tensor name '", name,
                     "' must start with 'callback/'");
      EIGENNET_CHECK(tensor != nullptr, "Checkpoint::add_state: tensor '", name, "' is null");
      for (const auto& [n, t] : state_) EIGENNET_CHECK(n != name, "Checkpoint::add_state: tensor '", name, "' added twice");
      state_.emplace_back(name, tensor);
    }
  }

  bool resumed() const { return resumed_; }
  const std::string& path() const { return path_; }

 private:
  template <typename... Args>
  void say(const char* format, Args... args) {
    if (!options_.log) return;
    std::fprintf(options_.log, format, args...);
    std::fflush(options_.log);
  }

  std::string path_;
  SavedModel model_;
  RunSettings settings_;
  Options options_;
  CheckpointState state_;
  bool resumed_ = false;
};

}  // namespace eigennet
