#!/bin/sh
# The main job: installs the dependencies (Debian 12), builds the example programs in Release
# mode, and runs the study's protocol on FER-2013 (MobileNetV2 alpha 1.0 at 96x96 with the frozen
# ImageNet base, cached features, GlobalMaxPooling -> Dense 128 ReLU -> Dropout 0.4 -> Dense N,
# Adam), first with 7 classes, then with 6 (neutral removed). Reports, confusion matrices,
# training curves and metrics.json go to runs/study_7class and runs/study_6class.
# Extra arguments are passed to train_emotions (e.g. --data DIR, --epochs N).
set -eu
cd "$(dirname "$0")/.."
scripts/install_deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DEIGENNET_BUILD_EXAMPLES=ON -DEIGENNET_BUILD_TESTS=OFF \
  -DEIGENNET_BUILD_BENCHMARKS=OFF
cmake --build build -j "$(nproc)" --target train_emotions
build/examples/train_emotions --recipe study --out runs/study_7class "$@"
build/examples/train_emotions --recipe study --exclude neutral --out runs/study_6class "$@"
