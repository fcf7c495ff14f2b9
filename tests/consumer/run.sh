# The library consumed as a user would: `cmake --install` into a temporary prefix, then a separate
# project (tests/consumer) finds it with find_package(eigennet), builds the quickstart, the
# fit() example and a JPEG/PNG decoder, and runs them; the same project again through
# add_subdirectory; and a consumer
# that asks only for the neural-network part (COMPONENTS nn) configures and builds without stb,
# while asking for everything without stb fails with a message that names the missing library.
#   sh run.sh SOURCE_DIR WORK_DIR
set -u
SOURCE=$(cd "$1" && pwd)
WORK=$2
rm -rf "$WORK" && mkdir -p "$WORK" || exit 2
WORK=$(cd "$WORK" && pwd)
CONSUMER=$SOURCE/tests/consumer
DIGITS=/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
# -O1: these builds prove that the package works, not how fast it runs.
flags="-DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE=-O1"
jobs=$(nproc)
# A 16-bit grayscale PNG decoded as RGB (DecodeOptions' default).
PICTURE_PNG=$SOURCE/tests/fixtures/images/gray16.png
PICTURE_PNG_SIZE=23x15x3

# run_programs DIR: the quickstart fits its batch; train_digits reaches 95% (when the data exist).
run_programs() {
  "$1/quickstart" > "$1/quickstart.out" 2>&1 || fail "$1: quickstart failed: $(tail -3 "$1/quickstart.out")"
  "$1/decode_picture" "$SOURCE/tests/fixtures/faces/happy_PublicTest_10886374.jpg" "$PICTURE_PNG" \
    > "$1/decode.out" 2>&1 || fail "$1: decode_picture failed: $(cat "$1/decode.out")"
  grep -q "happy_PublicTest_10886374.jpg: 48x48x3$" "$1/decode.out" || fail "$1: decode_picture: $(cat "$1/decode.out")"
  grep -q "$(basename "$PICTURE_PNG"): ${PICTURE_PNG_SIZE}$" "$1/decode.out" || fail "$1: decode_picture: $(cat "$1/decode.out")"
  if [ -f "$DIGITS" ]; then
    (cd "$1" && OMP_NUM_THREADS=2 ./train_digits --epochs 40 --out digits > digits.out 2>&1) ||
      fail "$1: train_digits failed: $(tail -3 "$1/digits.out")"
    grep "test accuracy" "$1/digits.out"
  fi
}

# 1. Install (header-only: configuring and installing builds nothing), then find_package.
cmake -S "$SOURCE" -B "$WORK/library" -DEIGENNET_BUILD_TESTS=OFF -DEIGENNET_BUILD_EXAMPLES=OFF \
  -DEIGENNET_BUILD_BENCHMARKS=OFF > "$WORK/library.log" 2>&1 || fail "configuring eigennet: $(tail -5 "$WORK/library.log")"
cmake --install "$WORK/library" --prefix "$WORK/prefix" >> "$WORK/library.log" 2>&1 ||
  fail "cmake --install: $(tail -5 "$WORK/library.log")"
[ -f "$WORK/prefix/include/eigennet/eigennet.hpp" ] || fail "the headers were not installed"
if cmake -S "$CONSUMER" -B "$WORK/installed" $flags -DCMAKE_PREFIX_PATH="$WORK/prefix" > "$WORK/installed.log" 2>&1 &&
   cmake --build "$WORK/installed" -j "$jobs" >> "$WORK/installed.log" 2>&1; then
  run_programs "$WORK/installed"
else
  fail "find_package consumer: $(grep -m 5 -i 'error' "$WORK/installed.log")"
fi

# 2. add_subdirectory.
if cmake -S "$CONSUMER" -B "$WORK/subdirectory" $flags -DEIGENNET_SOURCE_DIR="$SOURCE" > "$WORK/subdirectory.log" 2>&1 &&
   cmake --build "$WORK/subdirectory" -j "$jobs" >> "$WORK/subdirectory.log" 2>&1; then
  run_programs "$WORK/subdirectory"
else
  fail "add_subdirectory consumer: $(grep -m 5 -i 'error' "$WORK/subdirectory.log")"
fi

# 3. Without stb (hidden from CMake's search): COMPONENTS nn configures and builds; the whole
# library is refused with a message naming stb.
hide="-DCMAKE_IGNORE_PATH=/usr/include/stb;/usr/local/include/stb"
if cmake -S "$CONSUMER/nn_only" -B "$WORK/nn_only" $flags -DCMAKE_PREFIX_PATH="$WORK/prefix" "$hide" \
     > "$WORK/nn_only.log" 2>&1 && cmake --build "$WORK/nn_only" -j "$jobs" >> "$WORK/nn_only.log" 2>&1; then
  echo "COMPONENTS nn: configured and built without stb"
else
  fail "COMPONENTS nn consumer without stb: $(grep -m 5 -i 'error' "$WORK/nn_only.log")"
fi
if cmake -S "$CONSUMER" -B "$WORK/no_stb" $flags -DCMAKE_PREFIX_PATH="$WORK/prefix" "$hide" > "$WORK/no_stb.log" 2>&1; then
  fail "find_package(eigennet) without stb configured"
elif grep -q "stb_image.h was not found" "$WORK/no_stb.log"; then
  echo "without stb, find_package(eigennet) says: $(grep -m 1 -o 'stb_image.h was not found[^.]*' "$WORK/no_stb.log")"
else
  fail "without stb the error does not name it: $(tail -5 "$WORK/no_stb.log")"
fi

if [ "$failures" -gt 0 ]; then exit 1; fi
echo "passed"
