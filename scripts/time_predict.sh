#!/bin/sh
# Wall time of `predict` on one face with each of several models, runs interleaved (A B C A B C
# ...) so that the machine's load affects them alike; prints the median per model and its ratio
# to the first. Each run is a whole invocation, as a user runs it: start, load the model files,
# read and resize the image, the network(s), print (predict as it is, without --tta-flip).
#
#   scripts/time_predict.sh [-n RUNS] [-t THREADS] IMAGE MODEL[,MODEL...] [MODEL[,MODEL...] ...]
#
# e.g. the 7-class ensemble against the distilled single network:
#   scripts/time_predict.sh ../shared/data/fer2013/test/happy/PublicTest_10130075.jpg \
#     weights/emotions_7class.safetensors,weights/emotions_7class_seed7.safetensors \
#     weights/emotions_7class_distilled.safetensors
set -eu
runs=21
threads=1
while [ $# -gt 0 ]; do
  case "$1" in
    -n) runs=$2; shift 2 ;;
    -t) threads=$2; shift 2 ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || { sed -n '2,13p' "$0"; exit 2; }
image=$1
shift
predict=${PREDICT:-build/examples/predict}
[ -x "$predict" ] || { echo "time_predict.sh: $predict not found (build it, or set PREDICT)" >&2; exit 1; }
[ -f "$image" ] || { echo "time_predict.sh: image '$image' not found" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
i=0
for model in "$@"; do
  # One warm-up run (page cache), which also checks that the command works.
  "$predict" --threads "$threads" --model "$model" "$image" >"$work/out$i" 2>&1 ||
    { echo "time_predict.sh: predict failed with --model $model:" >&2; cat "$work/out$i" >&2; exit 1; }
  i=$((i + 1))
done
r=0
while [ $r -lt "$runs" ]; do
  i=0
  for model in "$@"; do
    start=$(date +%s%N)
    "$predict" --threads "$threads" --model "$model" "$image" >/dev/null 2>&1
    end=$(date +%s%N)
    echo $(((end - start) / 1000)) >>"$work/times$i"
    i=$((i + 1))
  done
  r=$((r + 1))
done
echo "predict on one image ($image), $runs interleaved runs each, --threads $threads; medians:"
i=0
first=
for model in "$@"; do
  median=$(sort -n "$work/times$i" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
  [ -n "$first" ] || first=$median
  awk -v m="$median" -v f="$first" -v name="$model" \
    'BEGIN {printf "  %8.1f ms  %5.2fx of the first  %s\n", m / 1000, m / f, name}'
  i=$((i + 1))
done
