#!/bin/sh
# Installs eigennet's build and test dependencies from Debian 12 packages. Idempotent: packages
# already present are skipped. Run as root (or with sudo available).
set -eu

packages="build-essential cmake libeigen3-dev libstb-dev doctest-dev libomp-dev clang libclang-rt-14-dev"
if [ "${1:-}" = "--all" ]; then
  # Benchmarks and PyTorch reference fixtures (clang for the fuzzers is in the default set: CI fuzzes);
  # python3-onnx for tools/convert_blazeface.py and the BlazeFace fixtures, python3-sklearn and
  # python3-scipy (and npm) for the face detector's benchmark photos.
  packages="$packages libbenchmark-dev libxnnpack-dev libpthreadpool-dev python3-torch python3-numpy hyperfine"
  packages="$packages python3-onnx python3-sklearn python3-scipy python3-pil npm"
fi

missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "install_deps: all packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install_deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || echo "install_deps: apt-get update failed; trying the install anyway" >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
