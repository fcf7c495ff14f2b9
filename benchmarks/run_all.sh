#!/usr/bin/env bash
# Builds the benchmarks (Release) and runs every one of them, writing all output to stdout.
#   benchmarks/run_all.sh [build-dir]        (default build dir: <repo>/build-bench)
# Environment: PYTHON (default /usr/bin/python3, which has torch), THREADS (default 2), BEFORE (a
# build directory of an earlier eigennet, e.g. of main, whose bench_mobilenet then joins the
# end-to-end alternation as "before").
# About a minute on a quiet 2-core machine plus the build; see benchmarks/README.md for each tool.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
build="${1:-$repo/build-bench}"
python="${PYTHON:-/usr/bin/python3}"
threads="${THREADS:-2}"
before=()
[[ -n "${BEFORE:-}" ]] && before=(--before-build-dir "$BEFORE")

section() { printf '\n==== %s ====\n' "$*"; }
run() {  # prints the command, runs it, prints how long it took
  local start=$SECONDS
  printf '$ %s\n' "$*"
  "$@"
  printf '(%ds)\n' $((SECONDS - start))
}

section "machine"
commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit: $commit"
echo "cpu: $cpu, $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

section "build (Release) in $build"
configure=(-S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DEIGENNET_BUILD_BENCHMARKS=ON)
# A fresh directory gets only the benchmarks; an existing one keeps its own options.
[[ -f "$build/CMakeCache.txt" ]] || configure+=(-DEIGENNET_BUILD_TESTS=OFF -DEIGENNET_BUILD_EXAMPLES=OFF)
configure_log="$(cmake "${configure[@]}" 2>&1)" || { echo "$configure_log"; exit 1; }
grep 'benchmarks:' <<<"$configure_log" || true
run cmake --build "$build" --target benchmarks -j 2
bin="$build/benchmarks"

export OMP_NUM_THREADS="$threads" PYTHONDONTWRITEBYTECODE=1

section "eigennet 1x1 convolutions next to the FMA peak (bench_pointwise)"
run "$bin/bench_pointwise" --threads "$threads"

section "eigennet depthwise kernels (bench_depthwise)"
run "$bin/bench_depthwise" --threads "$threads"

if [[ -x "$bin/bench_depthwise_xnnpack" ]]; then
  section "XNNPACK depthwise forward, checked against eigennet (bench_depthwise_xnnpack)"
  run "$bin/bench_depthwise_xnnpack"
fi

section "depthwise: eigennet vs PyTorch vs XNNPACK, interleaved (compare_depthwise.py)"
run "$python" "$here/compare_depthwise.py" --build-dir "$build" --threads "$threads"

section "MobileNetV2 end to end: eigennet vs PyTorch, interleaved, and peak memory (compare_mobilenet.py)"
# Five consecutive steps per turn: the median is of steady steps (a stream of camera frames, an
# evaluation); the first step after each pause is printed apart.
run "$python" "$here/compare_mobilenet.py" --build-dir "$build" --threads "$threads" --rounds 9 --steps 5 "${before[@]}"

section "waking the worker threads after a pause (bench_wake): what the first step after each pause pays"
run "$bin/bench_wake" --threads "$threads"

section "image decoding: eigennet (libjpeg-turbo, libpng) vs stb_image, interleaved (bench_decode)"
run "$bin/bench_decode"

section "where a training step goes (bench_mobilenet --profile)"
run "$bin/bench_mobilenet" --config train_a1.00_96_b32 --warmup 1 --steps 1 --profile --profile-steps 10 --threads "$threads"

section "where an inference batch goes, step by step of the compiled net (bench_mobilenet --profile)"
run "$bin/bench_mobilenet" --config infer_a1.00_96_b32 --warmup 2 --steps 1 --profile --profile-steps 20 --threads "$threads"

section "done"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
