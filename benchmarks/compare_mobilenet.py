#!/usr/bin/python3
"""Compares eigennet with PyTorch end to end on MobileNetV2 + Dense(7): training steps at 96x96
batch 32 (alpha 1.0 and 0.35), inference batches at the same sizes, and one 96x96 and one 224x224
image. eigennet's inference runs the model compiled for inference (compile_for_inference).

Timing: both sides run as persistent processes in --serve mode (bench_mobilenet and
bench_mobilenet_torch.py). For each configuration both build the model and run the warm-up
steps (untimed), then the script alternates A B A B ...: one measurement batch of `--steps`
steps of ours, then one of PyTorch's, for `--rounds` rounds, and reports the median step time
of each and the ratio torch / ours (> 1: eigennet is faster). With --steps > 1 the first step
of each batch (after a pause and the other tools' turns: cold caches and, on a shared VM,
worker threads that wait for their virtual CPU) is also reported on its own. Inference configurations also
run PyTorch "frozen" (torch.jit.optimize_for_inference: BatchNorm folded, oneDNN weights
prepacked), PyTorch's CPU inference fast path, as a third tool in the alternation (A B C).
With --before-build-dir, a second eigennet build (e.g. of an earlier commit) joins the
alternation as "before", so that before / after ratios come from the same run; a configuration
that build does not know is left out for it.

Memory: peak resident memory (VmHWM) of a fresh process per configuration and tool, running
one warm-up and one timed step, so that peaks of different configurations do not mix. The
base column is the process's resident memory before any model exists (for PyTorch: after
`import torch`).

Usage: /usr/bin/python3 benchmarks/compare_mobilenet.py --build-dir build-bench [--configs all]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from bench_common import BENCH_DIR, Server, find_binary, settle

CONFIGS = ("train_a1.00_96_b32", "infer_a1.00_96_b32", "train_a0.35_96_b32", "infer_a0.35_96_b32",
           "infer_a1.00_96_b1", "infer_a1.00_224_b1")


def memory_run(argv, env):
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", default=os.path.join(BENCH_DIR, "..", "build"),
                        help="CMake build directory with bench_mobilenet (default: <repo>/build)")
    parser.add_argument("--configs", default="all", help=f"comma-separated subset of {', '.join(CONFIGS)}")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration and tool")
    parser.add_argument("--rounds", type=int, default=5, help="A B alternations per configuration")
    parser.add_argument("--steps", type=int, default=1, help="steps per measurement batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--no-frozen", action="store_true", help="skip PyTorch's frozen inference variant")
    parser.add_argument("--save", metavar="FILE", help="also write every raw JSON reply to FILE")
    parser.add_argument("--before-build-dir", metavar="DIR",
                        help="also run DIR's bench_mobilenet, interleaved, as 'before' (e.g. a build of main)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="compare the CPU time of the timing thread instead of wall time; meaningful with "
                             "--threads 1 only, where it excludes the time other processes take on a busy machine")
    parser.add_argument("--ours-args", default="", help="extra arguments for our bench_mobilenet (e.g. --plain-inference)")
    args = parser.parse_args()
    configs = CONFIGS if args.configs == "all" else tuple(args.configs.split(","))
    for c in configs:
        if c not in CONFIGS:
            sys.exit(f"compare_mobilenet: unknown configuration '{c}' (known: {', '.join(CONFIGS)})")
    ours_bin = find_binary(args.build_dir, "bench_mobilenet")
    if ours_bin is None:
        sys.exit(f"compare_mobilenet: bench_mobilenet not found in {args.build_dir} (build the 'benchmarks' target)")
    torch_script = os.path.join(BENCH_DIR, "bench_mobilenet_torch.py")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    threads = ["--threads", str(args.threads)]

    saved = []
    times = {}  # (config, tool) -> list of step times in ms
    first_step = {}  # (config, tool) -> the first step of each measurement batch, in ms
    params = {}
    servers = {"ours": Server("bench_mobilenet", [ours_bin, "--serve"] + threads + args.ours_args.split(), env),
               "torch": Server("bench_mobilenet_torch.py", [sys.executable, torch_script, "--serve"] + threads, env)}
    if args.before_build_dir:
        before_bin = find_binary(args.before_build_dir, "bench_mobilenet")
        if before_bin is None:
            sys.exit(f"compare_mobilenet: bench_mobilenet not found in {args.before_build_dir}")
        servers["before"] = Server("bench_mobilenet (before)", [before_bin, "--serve"] + threads, env)
    try:
        for c in configs:
            # (tool, server, command suffix): ours, PyTorch eager, and for inference PyTorch frozen.
            tools = [("ours", servers["ours"], ""), ("torch", servers["torch"], "")]
            if c.startswith("infer") and not args.no_frozen:
                tools.append(("frozen", servers["torch"], " frozen"))
            if "before" in servers:
                tools.insert(1, ("before", servers["before"], ""))
            for tool, server, suffix in list(tools):
                try:
                    reply = server.ask(f"setup {c} {args.warmup}{suffix}")
                except RuntimeError:
                    if tool != "before":
                        raise
                    tools.remove((tool, server, suffix))  # an older build without this configuration
                    continue
                params[(c, tool)] = reply["params"]
                settle(0.1)
            for r in range(args.rounds):
                for tool, server, suffix in tools:  # A B (C) A B (C) ...
                    reply = server.ask(f"run {c} {args.steps}{suffix}")
                    reply["round"] = r
                    saved.append(reply)
                    step_ms = reply["cpu_times_ms" if args.cpu_time else "times_ms"]
                    times.setdefault((c, tool), []).extend(step_ms)
                    first_step.setdefault((c, tool), []).append(step_ms[0])
                    settle(0.1)
            for tool, server, suffix in tools:
                server.ask(f"free {c}{suffix}")
    finally:
        for server in servers.values():
            server.close()

    memory = {}
    if not args.no_memory:
        for c in configs:
            one = ["--config", c, "--warmup", "1", "--steps", "1", "--jsonl"] + threads
            memory[(c, "ours")] = memory_run([ours_bin] + one, env)
            memory[(c, "torch")] = memory_run([sys.executable, torch_script] + one, env)
            saved += [memory[(c, "ours")], memory[(c, "torch")]]

    if args.save:
        with open(args.save, "w") as f:
            for reply in saved:
                f.write(json.dumps(reply) + "\n")

    if args.cpu_time and args.threads != 1:
        print("compare_mobilenet: --cpu-time with more than one thread counts only the timing thread's time")
    print(f"{'CPU time of the timing thread' if args.cpu_time else 'wall time'}: "
          f"MobileNetV2 + Dense(7), eigennet vs PyTorch (channels_last), {args.threads} threads; median of "
          f"{args.rounds} x {args.steps} steps each, interleaved A B A B after {args.warmup} warm-up steps; "
          f"torch = PyTorch eager, speedup = torch ms / our ms (> 1: eigennet faster); min = fastest single step; "
          f"frozen = PyTorch inference through torch.jit.optimize_for_inference, vs frozen = frozen ms / our ms"
          + ("; before = the --before-build-dir build, interleaved too, vs before = before ms / our ms"
             if "before" in servers else ""))
    print(f"{'config':20s} {'params':>9s} {'ours ms':>9s} {'torch ms':>9s} {'speedup':>8s} {'ours min':>9s} "
          f"{'torch min':>9s} {'frozen ms':>9s} {'vs frozen':>9s} {'ours img/s':>10s} {'torch img/s':>11s} "
          f"{'ours peak MiB':>13s} {'torch peak MiB':>14s}" + (f" {'before ms':>9s} {'vs before':>9s}" if "before" in servers else ""))
    for c in configs:
        batch = 1 if c.endswith("_b1") else 32
        ours, theirs = statistics.median(times[(c, "ours")]), statistics.median(times[(c, "torch")])
        mem = {}
        for tool in ("ours", "torch"):
            m = memory.get((c, tool))
            mem[tool] = f"{m['peak_rss_mib']:.0f} (base {m['base_rss_mib']:.0f})" if m else "-"
        note = "" if params[(c, "ours")] == params[(c, "torch")] else "  PARAMETER COUNTS DIFFER"
        frozen = statistics.median(times[(c, "frozen")]) if (c, "frozen") in times else None
        frozen_cols = f"{frozen:9.1f} {frozen / ours:9.2f}" if frozen else f"{'-':>9s} {'-':>9s}"
        print(f"{c:20s} {params[(c, 'ours')]:9d} {ours:9.1f} {theirs:9.1f} {theirs / ours:8.2f} "
              f"{min(times[(c, 'ours')]):9.1f} {min(times[(c, 'torch')]):9.1f} {frozen_cols} "
              f"{1e3 * batch / ours:10.1f} "
              f"{1e3 * batch / theirs:11.1f} {mem['ours']:>13s} {mem['torch']:>14s}"
              + (f" {statistics.median(times[(c, 'before')]):9.1f} {statistics.median(times[(c, 'before')]) / ours:9.2f}"
                 if (c, "before") in times else (f" {'-':>9s} {'-':>9s}" if "before" in servers else ""))
              + f"{note}")
        if note:
            print(f"  eigennet {params[(c, 'ours')]} vs PyTorch {params[(c, 'torch')]} trainable parameters")
    if args.steps > 1:
        # The first step of each batch follows a pause of 0.1 s and the other tools' turns: on a
        # shared VM a thread woken from sleep may wait for its virtual CPU, which a step of a few
        # milliseconds feels in full. Shown apart; the table above is every step's median.
        print(f"first step of each batch only (after the pause; median of {args.rounds}):")
        for c in configs:
            ours = statistics.median(first_step[(c, "ours")])
            cols = f"  {c:20s} ours {ours:7.1f} ms   torch {statistics.median(first_step[(c, 'torch')]):7.1f} ms"
            if (c, "frozen") in first_step:
                frozen = statistics.median(first_step[(c, "frozen")])
                cols += f"   frozen {frozen:7.1f} ms   vs frozen {frozen / ours:5.2f}"
            print(cols)
    return 0


if __name__ == "__main__":
    sys.exit(main())
