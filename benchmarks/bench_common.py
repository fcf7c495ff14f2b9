"""Helpers shared by the Python benchmark scripts: timing, MobileNetV2's depthwise shapes,
JSON lines, peak memory, and a driver for the benchmark programs' --serve mode."""

import json
import math
import os
import statistics
import subprocess
import sys
import time

# MobileNetV2's table (Sandler et al., Table 2): expansion t, channels c, repeats n, stride s.
MOBILENET_V2_TABLE = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1)]

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

# glibc's malloc gives large freed blocks back to the kernel (munmap, trimming) and maps them anew,
# so a PyTorch training step, which frees and allocates its activations and gradients every step,
# pays page faults and page zeroing on every step. On the AMD EPYC machine of 5 December
# PyTorch's MobileNetV2 training step (96x96, batch 32, 2 threads) took 383-511 ms (medians of 4
# processes) with glibc's defaults and 139-179 ms with these tunables; PyTorch's own performance
# advice for CPUs is an allocator that keeps freed memory (jemalloc, tcmalloc). The PyTorch
# benchmarks run with them so that eigennet (which allocates nothing per step) is compared with
# PyTorch at its best; BENCH_TORCH_DEFAULT_MALLOC=1 keeps glibc's defaults.
TORCH_MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295"


def reexec_with_tuned_malloc():
    """Restarts this Python script with TORCH_MALLOC_TUNABLES (they act only from a process's start),
    unless GLIBC_TUNABLES is set already or BENCH_TORCH_DEFAULT_MALLOC=1. Call it before importing torch."""
    if "GLIBC_TUNABLES" in os.environ or os.environ.get("BENCH_TORCH_DEFAULT_MALLOC") == "1":
        return
    os.environ["GLIBC_TUNABLES"] = TORCH_MALLOC_TUNABLES
    os.execv(sys.executable, [sys.executable] + sys.argv)


def make_divisible(value, divisor=8):
    """Keras' / the paper's channel rounding: nearest multiple, never below divisor or 90% of value."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def depthwise_shapes(which="all", alpha=1.0):
    """Distinct depthwise layers of MobileNetV2 as dicts (config, batch, h, w, c, stride, layers),
    at 96x96 batch 32 ("train") and 224x224 batch 1 ("infer"), in model order."""
    shapes = []
    for config, size, batch in (("train", 96, 32), ("infer", 224, 1)):
        if which not in ("all", config):
            continue
        size = (size + 1) // 2  # Conv1, stride 2, SAME
        channels = make_divisible(32 * alpha)
        for t, c, n, s in MOBILENET_V2_TABLE:
            out_channels = make_divisible(int(c * alpha))
            for i in range(n):
                stride = s if i == 0 else 1
                key = dict(config=config, batch=batch, h=size, w=size, c=channels * t, stride=stride)
                for existing in shapes:
                    if all(existing[k] == v for k, v in key.items()):
                        existing["layers"] += 1
                        break
                else:
                    shapes.append(dict(key, layers=1))
                size = (size + stride - 1) // stride
                channels = out_channels
    return shapes


def same_padding(size, stride, kernel=3):
    """TensorFlow's SAME padding (before, after) along one axis: the extra row goes after."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def time_calls(fn, samples=7, min_sample_s=0.002, warmup=2):
    """Median and minimum seconds per call of fn(): `warmup` untimed calls, then a calls-per-sample
    count chosen so one sample lasts >= min_sample_s, then `samples` samples (as bench_util.hpp)."""
    for _ in range(warmup):
        fn()
    calls = 1
    while True:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_sample_s or calls >= (1 << 20):
            break
        grow = 1.2 * min_sample_s / elapsed if elapsed > 0 else 16.0
        calls = max(calls * 2, math.ceil(calls * min(grow, 64.0)))
    per_call = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        per_call.append((time.perf_counter() - start) / calls)
    return dict(median_s=statistics.median(per_call), min_s=min(per_call), samples=samples, calls_per_sample=calls)


def status_mib(field):
    """A memory figure of this process from /proc/self/status in MiB ("VmHWM" = peak resident
    memory, "VmRSS" = current), or -1."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return -1.0


def peak_rss_mib():
    return status_mib("VmHWM")


def print_json(obj):
    print(json.dumps(obj), flush=True)


def serve_loop(handler):
    """Reads commands from stdin; handler(words) returns a dict printed as one JSON line."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        try:
            print_json(handler(words))
        except Exception as e:  # report and keep serving: the driver decides what to do
            print_json({"error": f"{type(e).__name__}: {e}"})


class Server:
    """A benchmark program started in --serve mode: one command in, one JSON line out."""

    def __init__(self, name, argv, env=None):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     env=env)

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} exited (status {self.proc.poll()}) on '{command}'")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {reply['error']} (command '{command}')")
        return reply

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout=60)


def find_binary(build_dir, name):
    """Path of a benchmark program in build_dir (build_dir/benchmarks/name or build_dir/name), or None."""
    for path in (os.path.join(build_dir, "benchmarks", name), os.path.join(build_dir, name)):
        if os.access(path, os.X_OK):
            return path
    return None


def settle(seconds=0.05):
    """Pause between tools so idle worker threads of the previous one (OpenMP, pthreadpool spin
    for a while after each parallel region) stop spinning before the next measurement starts."""
    time.sleep(seconds)
