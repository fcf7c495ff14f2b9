// Communicator: what data-parallel training needs from the processes of a run (sums, broadcasts,
// gathers), behind one small interface, so that the training code (data_parallel.hpp,
// sync_batch_norm.hpp, sharding.hpp) does not depend on MPI. Two implementations:
//
//   SingleProcess     this file: a run of one process (every collective is the identity)
//   MpiCommunicator   mpi.hpp: Open MPI, MPICH, ... (the only header that includes <mpi.h>)
//
// Every collective is called by every process of the run, in the same order. A failure that one
// process detects (a missing file, other settings) must reach the others, or they would wait for
// it forever: raise_together() and run_together() make every process throw the same error.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/parameter.hpp"
#include "../core/rng.hpp"

namespace eigennet::distributed {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Processes of this run on this machine (they share its cores).
  virtual int local_size() const { return 1; }
  // The machine a process runs on, for messages.
  virtual std::string host(int rank) const {
    (void)rank;
    return "";
  }
  // "rank 1 of 4 (node7)".
  std::string describe(int r) const {
    std::string h = host(r);
    return "rank " + std::to_string(r) + " of " + std::to_string(size()) + (h.empty() ? "" : " (" + h + ")");
  }

  // ---- Blocking collectives ------------------------------------------------------------------
  // In place: data = the element-wise sum over all processes.
  virtual void sum(float* data, int64_t count) = 0;
  virtual void sum(double* data, int64_t count) = 0;
  virtual void sum(int64_t* data, int64_t count) = 0;
  // Copies `bytes` bytes of process `root` into `data` on every process.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  // all = the `bytes` bytes of every process, rank after rank (size() * bytes).
  virtual void all_gather(const void* mine, int64_t bytes, void* all) = 0;
  // Returns when every process has called it.
  virtual void barrier() = 0;

  // ---- Sums that complete later (gradient buckets, overlapped with backward) ------------------
  // Starts an in-place sum of data over all processes; data must stay untouched until wait_all().
  virtual void start_sum(float* data, int64_t count) = 0;
  // Lets started sums advance (MPI moves non-blocking collectives on only inside MPI calls).
  virtual void progress() {}
  // Completes every started sum.
  virtual void wait_all() = 0;

  // Ends every process of the run at once: for a failure that could not be shared (the others
  // may be waiting inside a collective).
  virtual void abort(int status) = 0;

  // Whether raise_together() has thrown: every process then failed at the same point and the run
  // can end in order (mpi.hpp: MpiEnvironment::finish).
  bool failed_together() const { return failed_together_; }
  void set_failed_together() { failed_together_ = true; }

 private:
  bool failed_together_ = false;
};

// A run of one process.
class SingleProcess : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void sum(float*, int64_t) override {}
  void sum(double*, int64_t) override {}
  void sum(int64_t*, int64_t) override {}
  void broadcast(void*, int64_t, int) override {}
  void all_gather(const void* mine, int64_t bytes, void* all) override {
    if (bytes > 0 && mine != all) std::memmove(all, mine, static_cast<size_t>(bytes));
  }
  void barrier() override {}
  void start_sum(float*, int64_t) override {}
  void wait_all() override {}
  void abort(int status) override { std::exit(status); }
};

// ---- Helpers on top of the interface ---------------------------------------------------------

// Every process's string, in rank order.
inline std::vector<std::string> all_gather_strings(Communicator& comm, const std::string& mine) {
  const int p = comm.size();
  std::vector<int64_t> lengths(static_cast<size_t>(p));
  const int64_t length = static_cast<int64_t>(mine.size());
  comm.all_gather(&length, sizeof length, lengths.data());
  std::vector<std::string> all(static_cast<size_t>(p));
  for (int r = 0; r < p; ++r) {
    std::string& s = all[static_cast<size_t>(r)];
    if (r == comm.rank()) s = mine;
    else s.resize(static_cast<size_t>(lengths[static_cast<size_t>(r)]));
    if (!s.empty()) comm.broadcast(s.data(), static_cast<int64_t>(s.size()), r);
  }
  return all;
}

// Process root's string on every process.
inline std::string broadcast_string(Communicator& comm, const std::string& text, int root = 0) {
  int64_t length = static_cast<int64_t>(text.size());
  comm.broadcast(&length, sizeof length, root);
  std::string out = comm.rank() == root ? text : std::string(static_cast<size_t>(length), '\0');
  if (length > 0) comm.broadcast(out.data(), length, root);
  return out;
}

// Every process passes what went wrong on it (empty: nothing). When anything went wrong
// anywhere, every process throws the same Error, naming each failing process and its message;
// otherwise all return. A single process throws its own message as it is.
inline void raise_together(Communicator& comm, const std::string& problem) {
  if (comm.size() == 1) {
    if (!problem.empty()) throw Error(problem);
    return;
  }
  const std::vector<std::string> problems = all_gather_strings(comm, problem);
  std::string message;
  for (int r = 0; r < comm.size(); ++r) {
    const std::string& p = problems[static_cast<size_t>(r)];
    if (!p.empty()) message += (message.empty() ? "" : "; ") + comm.describe(r) + ": " + p;
  }
  if (message.empty()) return;
  comm.set_failed_together();
  throw Error(message);
}

// Runs fn on every process; when it throws on any of them, every process throws (raise_together).
// With one process fn's own exception goes through unchanged.
template <typename Fn>
auto run_together(Communicator& comm, Fn&& fn) -> decltype(fn()) {
  if (comm.size() == 1) return fn();
  std::string problem;
  if constexpr (std::is_void_v<decltype(fn())>) {
    try {
      fn();
    } catch (const std::exception& e) {
      problem = e.what();
      if (problem.empty()) problem = "failed";
    }
    raise_together(comm, problem);
  } else {
    std::optional<decltype(fn())> result;
    try {
      result.emplace(fn());
    } catch (const std::exception& e) {
      problem = e.what();
      if (problem.empty()) problem = "failed";
    }
    raise_together(comm, problem);
    return std::move(*result);
  }
}

// Process root's values of these tensors on every process (shapes must agree: check_same first).
inline void broadcast_parameters(Communicator& comm, const ParameterList& params, int root = 0) {
  for (Parameter* p : params)
    if (p->value.size() > 0)
      comm.broadcast(p->value.data(), p->value.size() * static_cast<int64_t>(sizeof(float)), root);
}

// A 64-bit fingerprint of a tensor's bits (not cryptographic: it detects accidents).
inline uint64_t fingerprint(const float* data, int64_t count) {
  uint64_t h = mix64(static_cast<uint64_t>(count) + 0x51ED2701ull);
  int64_t i = 0;
  for (; i + 1 < count; i += 2) {
    uint64_t word;
    std::memcpy(&word, data + i, sizeof word);
    h = mix64(h ^ word) + 0x9E3779B97F4A7C15ull;
  }
  if (i < count) {
    uint32_t last;
    std::memcpy(&last, data + i, sizeof last);
    h = mix64(h ^ last);
  }
  return h;
}

// Every process passes a description of something that must be the same everywhere, as lines
// (e.g. one per setting). A process whose lines differ from rank 0's reports its first differing
// line next to rank 0's; then raise_together. `what` names the thing ("settings").
inline void check_same(Communicator& comm, const std::vector<std::string>& lines, const std::string& what) {
  if (comm.size() == 1) return;
  std::string joined;
  for (const std::string& l : lines) joined += l + '\n';
  const std::string reference = broadcast_string(comm, joined);
  std::string problem;
  if (joined != reference) {
    std::vector<std::string> theirs;
    size_t start = 0;
    for (size_t end; (end = reference.find('\n', start)) != std::string::npos; start = end + 1)
      theirs.push_back(reference.substr(start, end - start));
    size_t i = 0;
    while (i < lines.size() && i < theirs.size() && lines[i] == theirs[i]) ++i;
    const std::string mine_line = i < lines.size() ? lines[i] : "(nothing)";
    const std::string their_line = i < theirs.size() ? theirs[i] : "(nothing)";
    problem = what + " differ from rank 0's: " + mine_line + " here, " + their_line + " on rank 0";
  }
  raise_together(comm, problem);
}

}  // namespace eigennet::distributed
