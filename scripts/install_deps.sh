#!/bin/sh
# Installs eigennet's build and test dependencies from Debian 12 packages. Idempotent: packages
# already present are skipped. Run as root (or with sudo available).
# Usage: scripts/install_deps.sh [--all] [PACKAGE...]
set -eu

# python3-sklearn: only for its 8x8 digits file, the data of the fit() example and its test.
# libopenmpi-dev, openmpi-bin: data-parallel training over MPI (optional for the library; CI
# builds and runs its tests).
packages="build-essential cmake libeigen3-dev libstb-dev doctest-dev libomp-dev clang libclang-rt-14-dev zlib1g-dev
  python3-sklearn libjpeg62-turbo-dev libpng-dev libopenmpi-dev openmpi-bin"
if [ "${1:-}" = "--all" ]; then
  # Benchmarks and PyTorch reference fixtures (clang for the fuzzers is in the default set: CI fuzzes);
  # python3-onnx for tools/convert_blazeface.py and the BlazeFace fixtures, python3-sklearn and
  # python3-scipy for the face detector's benchmark photos (with the machine's npm); Pillow, jpegtran
  # and cjpeg for the image-decoding fixtures (tests/fixtures/make_image_fixtures.py); libspng for
  # bench_decode's PNG comparison.
  packages="$packages libbenchmark-dev libxnnpack-dev libpthreadpool-dev python3-torch python3-numpy hyperfine"
  packages="$packages python3-onnx python3-sklearn python3-scipy python3-pil libjpeg-turbo-progs libspng-dev"
  shift
fi
# Further package names may follow (e.g. scripts/install_deps.sh --all valgrind).
packages="$packages $*"

missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "install_deps: all packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo > /dev/null 2>&1; then
    echo "install_deps: these Debian packages are missing:$missing" >&2
    echo "install_deps: installing them needs root, and sudo is not available. Run this script as root," >&2
    echo "  or ask an administrator to run: apt-get install$missing" >&2
    exit 1
  fi
  SUDO="sudo"
fi
echo "install_deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "install_deps: apt-get update failed; trying the install anyway" >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
