#!/bin/sh
# Data-parallel training on this machine, configurations interleaved round after round (the
# machine is shared: only ratios measured side by side mean something), then the scaling model
# of README.md ("Training on several machines") from the one-process measurement and from the
# quiet machine's step time (MODEL_COMPUTE_MS, default 178.0: README.md's speed table).
#   benchmarks/data_parallel.sh [build-dir] [rounds]     (default: build, 3 rounds)
# Needs bench_data_parallel (cmake -DEIGENNET_BUILD_BENCHMARKS=ON, MPI found; then
# cmake --build BUILD --target bench_data_parallel). Configurations, same global batch of 32:
#   one    1 process x 2 threads
#   two    2 processes x 1 thread, gradient buckets summed during backward (overlap)
#   after  2 processes x 1 thread, every bucket summed after backward (no overlap)
#   sync   as two, with synchronized BatchNorm
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../build}
rounds=${2:-3}
bench=$build/benchmarks/bench_data_parallel
[ -x "$bench" ] || { echo "missing $bench (build the target bench_data_parallel)" >&2; exit 2; }
mpirun="sh $here/../scripts/mpirun.sh"
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit: $(git -C "$here" rev-parse --short HEAD 2> /dev/null || echo '?')"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
common="--alpha 1.0 --size 96 --batch 32 --steps 12 --warmup 3"
round=1
while [ "$round" -le "$rounds" ]; do
  echo "round $round, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=2 "$bench" $common --threads 2 > "$out/one.$round"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $mpirun -np 2 "$bench" $common --threads 1 > "$out/two.$round"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $mpirun -np 2 "$bench" $common --threads 1 --no-overlap > "$out/after.$round"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $mpirun -np 2 "$bench" $common --threads 1 --sync-bn > "$out/sync.$round"
  round=$((round + 1))
done

/usr/bin/python3 - "$out" "$rounds" << 'EOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
runs = {}
for name in ("one", "two", "after", "sync"):
    runs[name] = [json.loads(next(l for l in open(f"{out}/{name}.{r}") if l.startswith("{"))) for r in range(1, rounds + 1)]
def med(name, key):
    return statistics.median(r[key] for r in runs[name])
def ratio(a, b, key):  # per round, then the median: each round's pair ran side by side
    return statistics.median(x[key] / y[key] for x, y in zip(runs[a], runs[b]))
print(f"\nMobileNetV2 1.0, 96x96, global batch 32; medians over {rounds} rounds")
print(f"{'configuration':52} {'step ms':>8} {'images/s':>9} {'forward':>8} {'backward':>9} {'skew ms':>8} {'exposed ms':>11}")
labels = {"one": "1 process x 2 threads", "two": "2 processes x 1 thread, overlap",
          "after": "2 processes x 1 thread, sums after backward", "sync": "2 processes x 1 thread, overlap, SyncBatchNorm"}
for name, label in labels.items():
    print(f"{label:52} {med(name, 'step_ms'):8.1f} {med(name, 'images_per_s'):9.1f} {med(name, 'forward_ms'):8.1f} "
          f"{med(name, 'backward_ms'):9.1f} {med(name, 'skew_ms'):8.2f} {med(name, 'exposed_ms'):11.2f}")
per_round = ", ".join("%.2f" % (x["images_per_s"] / y["images_per_s"]) for x, y in zip(runs["two"], runs["one"]))
print(f"images/s, 2 processes x 1 thread / 1 process x 2 threads: {ratio('two', 'one', 'images_per_s'):.2f}x "
      f"(per round: {per_round})")
print(f"images/s, SyncBatchNorm / per-process statistics: {ratio('sync', 'two', 'images_per_s'):.2f}x")
allreduce = med("two", "allreduce_ms")
print(f"gradient {runs['two'][0]['gradient_mb']:.2f} MB; one blocking allreduce of it between the 2 processes: "
      f"{allreduce:.2f} ms (median)")
print(f"gradient exchange per step not hidden by backward: overlap {med('two', 'exposed_ms'):.2f} ms, sums after "
      f"backward {med('after', 'exposed_ms'):.2f} ms: overlap hides "
      f"{100 * (1 - med('two', 'exposed_ms') / med('after', 'exposed_ms')):.0f}% of it")
print(f"backward timeline (fraction of backward -> fraction of gradient bytes final): {runs['one'][0]['ready']}")
EOF

echo
echo "scaling model (README.md, 'Training on several machines'), from the one-process measurement of the last round:"
grep '^#' "$out/one.$rounds"
# The same with the quiet machine's step time of README.md's speed table (MODEL_COMPUTE_MS).
model_ms=${MODEL_COMPUTE_MS:-178.0}
echo
echo "the same model with a step of $model_ms ms (compute only; backward scaled alike):"
# shellcheck disable=SC2086
OMP_NUM_THREADS=2 "$bench" $common --threads 2 --steps 3 --model-compute-ms "$model_ms" | grep '^#'
