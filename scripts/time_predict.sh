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
# The interleaved timing is benchmarks/predict_photo.sh's, one command line per model.
models=$#
for model in "$@"; do set -- "$@" "$predict --threads $threads --model $model"; done
shift "$models"
exec "$(dirname "$0")/../benchmarks/predict_photo.sh" -n "$runs" "$image" "$@"
