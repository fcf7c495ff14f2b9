#!/usr/bin/python3
"""Compares eigennet's depthwise kernels with PyTorch (oneDNN) and XNNPACK on MobileNetV2's
depthwise shapes, in one run.

The three tools run as persistent processes in --serve mode (bench_depthwise,
bench_depthwise_xnnpack, bench_depthwise_torch.py), so start-up and imports are excluded and
the measurements interleave per shape and direction: ours, PyTorch, XNNPACK 1 thread,
XNNPACK 2 threads, then the next direction or shape. Each answer is a median over samples
(see bench_util.hpp); with --rounds R > 1 the whole sequence repeats and the median of the
rounds is shown.

Speedup = their time / our time (> 1: eigennet is faster). %DRAM, %L3 and %L2 are our effective
bandwidth (minimum bytes / time) as a fraction of the triad bandwidth bench_depthwise measures
at start; %L3 for working sets that fit in half the L3, %L2 for those that fit in the cores' L2.

Usage: /usr/bin/python3 benchmarks/compare_depthwise.py --build-dir build-bench [--config train|infer|all]
"""

import argparse
import json
import os
import subprocess
import sys

from bench_common import BENCH_DIR, Server, find_binary, settle

DIRECTIONS = ("fwd", "bwd_input", "bwd_weight")


def median_reply(replies):
    """The reply whose time is the median of the rounds (lower median for even counts)."""
    ordered = sorted(replies, key=lambda r: r["ms"])
    return ordered[(len(ordered) - 1) // 2]


def fmt(value, spec, width):
    return f"{value:{width}{spec}}" if value is not None else f"{'-':>{width}s}"


def percent(fraction):
    """A fraction as a 5-character percentage column, or '-' when absent."""
    return f"{fmt(None if fraction is None else 100 * fraction, '.0f', 4)}{' ' if fraction is None else '%'}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", default=os.path.join(BENCH_DIR, "..", "build"),
                        help="CMake build directory with the benchmark programs (default: <repo>/build)")
    parser.add_argument("--config", choices=("train", "infer", "all"), default="all")
    parser.add_argument("--samples", type=int, default=7, help="samples per measurement (median)")
    parser.add_argument("--min-sample-ms", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the interleaved sequence R times")
    parser.add_argument("--threads", type=int, default=2, help="threads for eigennet and PyTorch")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-xnnpack", action="store_true")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted |XNNPACK - eigennet|")
    parser.add_argument("--save", metavar="FILE", help="also write every raw JSON reply to FILE")
    args = parser.parse_args()

    ours_bin = find_binary(args.build_dir, "bench_depthwise")
    if ours_bin is None:
        sys.exit(f"compare_depthwise: bench_depthwise not found in {args.build_dir} (build the 'benchmarks' target)")
    xnn_bin = None if args.no_xnnpack else find_binary(args.build_dir, "bench_depthwise_xnnpack")
    if not args.no_xnnpack and xnn_bin is None:
        print("compare_depthwise: bench_depthwise_xnnpack not built (XNNPACK missing?): no XNNPACK column",
              file=sys.stderr)

    listing = subprocess.run([ours_bin, "--list-shapes", "--config", args.config], check=True, capture_output=True,
                             text=True).stdout
    shapes = [json.loads(line) for line in listing.splitlines() if line.strip()]

    timing = ["--samples", str(args.samples), "--min-sample-ms", str(args.min_sample_ms)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    servers = {"ours": Server("bench_depthwise", [ours_bin, "--serve", "--threads", str(args.threads)] + timing, env)}
    if not args.no_torch:
        servers["torch"] = Server("bench_depthwise_torch.py",
                                  [sys.executable, os.path.join(BENCH_DIR, "bench_depthwise_torch.py"), "--serve",
                                   "--threads", str(args.threads)] + timing, env)
    if xnn_bin:
        servers["xnn"] = Server("bench_depthwise_xnnpack", [xnn_bin, "--serve"] + timing, env)

    saved = []
    failures = []
    try:
        bw = servers["ours"].ask("bandwidth")
        saved.append(bw)
        # One untimed pass over the first shape: the first measurement after the triad (which
        # streams 768 MiB) came out 2-3x slow in every run, whichever tool went first.
        s = shapes[0]
        dims = f"{s['batch']} {s['h']} {s['w']} {s['c']} {s['stride']}"
        for d in DIRECTIONS:
            servers["ours"].ask(f"run {dims} {d}")
            if "torch" in servers:
                servers["torch"].ask(f"run {dims} {d}")
        if "xnn" in servers:
            servers["xnn"].ask(f"run {dims} 2")
        results = {}  # (shape index, direction, tool) -> list of replies over rounds
        for r in range(args.rounds):
            for i, s in enumerate(shapes):
                dims = f"{s['batch']} {s['h']} {s['w']} {s['c']} {s['stride']}"
                for d in DIRECTIONS:
                    queries = [("ours", f"run {dims} {d}")]
                    if "torch" in servers:
                        queries.append(("torch", f"run {dims} {d}"))
                    if "xnn" in servers and d == "fwd":
                        queries += [("xnn1", f"run {dims} 1"), ("xnn2", f"run {dims} 2")]
                    for tool, command in queries:
                        server = servers["xnn" if tool.startswith("xnn") else tool]
                        reply = server.ask(command)
                        reply.update(config=s["config"], layers=s["layers"], round=r)
                        saved.append(reply)
                        results.setdefault((i, d, tool), []).append(reply)
                        if tool.startswith("xnn") and not reply["max_abs_err"] <= args.tolerance:
                            failures.append(f"{s['config']} {dims}: XNNPACK differs from eigennet by "
                                            f"{reply['max_abs_err']:.3g}")
                        settle()
    finally:
        for server in servers.values():
            server.close()

    if args.save:
        with open(args.save, "w") as f:
            for reply in saved:
                f.write(json.dumps(reply) + "\n")

    print(f"depthwise 3x3, eigennet vs PyTorch {'(oneDNN, channels_last) ' if 'torch' in servers else ''}"
          f"vs XNNPACK, {args.threads} threads (XNNPACK: forward only, 1 and 2 threads); "
          f"median of {args.samples} samples{f', median of {args.rounds} rounds' if args.rounds > 1 else ''}")
    print(f"triad bandwidth: DRAM {bw['dram_gbs']:.1f} GB/s, L3 {bw['l3_gbs']:.1f} GB/s, L2 {bw['l2_gbs']:.1f} GB/s; "
          f"speedup = their ms / our ms (> 1: eigennet faster)")
    header = (f"{'shape (NxHxWxC stride)':26s} {'n':>2s} {'dir':10s} {'ours ms':>9s} {'torch ms':>9s} {'xnn1 ms':>9s} "
              f"{'xnn2 ms':>9s} {'vs torch':>8s} {'vs xnn1':>8s} {'vs xnn2':>8s} {'GB/s':>6s} {'%DRAM':>6s} "
              f"{'%L3':>5s} {'%L2':>5s}")
    any_noisy = False
    for config in ("train", "infer"):
        indices = [i for i, s in enumerate(shapes) if s["config"] == config]
        if not indices:
            continue
        print()
        print(header)
        totals = {}
        for i in indices:
            s = shapes[i]
            for d in DIRECTIONS:
                replies = {tool: median_reply(results[(i, d, tool)]) for tool in ("ours", "torch", "xnn1", "xnn2")
                           if (i, d, tool) in results}
                got = {tool: r["ms"] for tool, r in replies.items()}
                # Median more than twice the fastest sample: the load disturbed this measurement.
                noisy = any(r["ms"] > 2 * r["ms_min"] for r in replies.values())
                any_noisy = any_noisy or noisy
                ours = median_reply(results[(i, d, "ours")])
                for tool, ms in got.items():
                    totals.setdefault((d, tool), 0.0)
                    totals[(d, tool)] += s["layers"] * ms
                speed = {t: got[t] / got["ours"] if t in got else None for t in ("torch", "xnn1", "xnn2")}
                label = f"{config} {s['batch']}x{s['h']}x{s['w']}x{s['c']} s{s['stride']}"
                l3, l2 = (percent(ours.get(key)) for key in ("frac_l3", "frac_l2"))
                print(f"{label:26s} {s['layers']:2d} {d:10s} {got['ours']:9.4f} {fmt(got.get('torch'), '.4f', 9)} "
                      f"{fmt(got.get('xnn1'), '.4f', 9)} {fmt(got.get('xnn2'), '.4f', 9)} "
                      f"{fmt(speed['torch'], '.2f', 8)} {fmt(speed['xnn1'], '.2f', 8)} {fmt(speed['xnn2'], '.2f', 8)} "
                      f"{ours['gbs']:6.1f} {100 * ours['frac_dram']:5.0f}% "
                      f"{l3} {l2}"
                      f"{' *' if noisy else ''}")
        # All depthwise layers of the model (each shape times its layer count).
        for d in DIRECTIONS:
            t = {tool: totals.get((d, tool)) for tool in ("ours", "torch", "xnn1", "xnn2")}
            sp = {k: t[k] / t["ours"] if t[k] is not None else None for k in ("torch", "xnn1", "xnn2")}
            print(f"{config + ' all layers (sum n*ms)':29s} {d:10s} {t['ours']:9.3f} {fmt(t['torch'], '.3f', 9)} "
                  f"{fmt(t['xnn1'], '.3f', 9)} {fmt(t['xnn2'], '.3f', 9)} {fmt(sp['torch'], '.2f', 8)} "
                  f"{fmt(sp['xnn1'], '.2f', 8)} {fmt(sp['xnn2'], '.2f', 8)}")
    if any_noisy:
        print("\n* a median more than twice the fastest sample for at least one tool: the machine's load disturbed "
              "the row; rerun, or compare the ms_min fields (--save)")
    if failures:
        print("\nXNNPACK CROSS-CHECK FAILED:\n  " + "\n  ".join(failures))
        return 3
    if "xnn" in servers:
        worst = max(r["max_abs_err"] for r in saved if r.get("tool") == "xnnpack")
        print(f"\nXNNPACK cross-check: max |XNNPACK - eigennet| = {worst:.2e} over all shapes (tolerance "
              f"{args.tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
