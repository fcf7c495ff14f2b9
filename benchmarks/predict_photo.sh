#!/bin/sh
# Wall time of whole `predict` runs on one photo, as a user runs it (process start, loading the
# classifiers and the detector, decoding, detection, cropping, classification, printing), for
# several command lines run in interleaved rounds (A B C A B C ...) so that the machine's load
# affects them alike. Prints the median and the quartiles of each, and its ratio to the first.
#
#   benchmarks/predict_photo.sh [-n ROUNDS] PHOTO 'PREDICT [FLAGS]' ['PREDICT [FLAGS]' ...]
#
# e.g. the default detector, one pass, no detection, and the predict of an older build:
#   benchmarks/predict_photo.sh photo.jpg build/examples/predict 'build/examples/predict --fast-detect' \
#     'build/examples/predict --no-detect' old/build/examples/predict
# A 640x480 photo with one face: tests/tools/robustness_tool photo (see tests/e2e/photos.sh).
set -eu
rounds=21
while [ $# -gt 0 ]; do
  case "$1" in
    -n) rounds=$2; shift 2 ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || { sed -n '2,13p' "$0"; exit 2; }
photo=$1
shift
[ -f "$photo" ] || { echo "predict_photo.sh: photo '$photo' not found" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
i=0
for command in "$@"; do
  # One warm-up run (page cache), which also checks that the command works.
  $command "$photo" >"$work/out$i" 2>&1 || { echo "predict_photo.sh: '$command' failed:" >&2; cat "$work/out$i" >&2; exit 1; }
  i=$((i + 1))
done
r=0
while [ $r -lt "$rounds" ]; do
  i=0
  for command in "$@"; do
    start=$(date +%s%N)
    $command "$photo" >/dev/null 2>&1
    end=$(date +%s%N)
    echo $(((end - start) / 1000)) >>"$work/times$i"
    i=$((i + 1))
  done
  r=$((r + 1))
done
echo "predict on $photo, $rounds interleaved rounds, $(nproc) cores; wall time median (quartiles):"
i=0
first=
for command in "$@"; do
  stats=$(sort -n "$work/times$i" | awk '{v[NR] = $1} END {
    q = int((NR + 3) / 4); m = int((NR + 1) / 2); t = NR + 1 - q;
    printf "%d %d %d", v[m], v[q], v[t] }')
  median=${stats%% *}
  [ -n "$first" ] || first=$median
  echo "$stats" | awk -v f="$first" -v name="$command" \
    '{printf "  %7.1f ms (%5.1f-%5.1f)  %5.2fx of the first  %s\n", $1 / 1000, $2 / 1000, $3 / 1000, $1 / f, name}'
  i=$((i + 1))
done
