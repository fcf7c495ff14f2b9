# The fit() example end to end: train_digits on scikit-learn's 8x8 digits must reach 95% held-out
# accuracy (its exit status says so), and a run stopped after a few epochs and resumed must end
# bit-identical to an uninterrupted one.
#   sh digits.sh TRAIN_DIGITS ROBUSTNESS_TOOL WORK_DIR      (exit 77 = skipped: no digits file)
set -u
TRAIN=$1
TOOL=$2
WORK=$3
DATA=/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz
if [ ! -f "$DATA" ]; then
  echo "skipped: $DATA is absent (Debian package python3-sklearn)"
  exit 77
fi
rm -rf "$WORK" && mkdir -p "$WORK" || exit 2
cd "$WORK" || exit 2
OMP_NUM_THREADS=1
OMP_WAIT_POLICY=passive
export OMP_NUM_THREADS OMP_WAIT_POLICY
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

"$TRAIN" --data "$DATA" --out whole --epochs 40 > whole.out 2> whole.err ||
  fail "train_digits failed (status $?): $(tail -3 whole.err) $(tail -3 whole.out)"
grep "test accuracy" whole.out
# The same run in two parts: 10 epochs, then resumed to 40.
"$TRAIN" --data "$DATA" --out parts --epochs 10 > part1.out 2> part1.err || true
"$TRAIN" --data "$DATA" --out parts --epochs 40 --resume > part2.out 2> part2.err ||
  fail "the resumed run failed: $(tail -3 part2.err)"
grep -q "resumed from parts/checkpoint.safetensors after epoch 10" part2.err || fail "no resume message: $(cat part2.err)"
"$TOOL" compare whole/checkpoint.safetensors parts/checkpoint.safetensors --exact --skip history > compare.out 2>&1 ||
  fail "resumed run differs from the uninterrupted one: $(cat compare.out)"
cmp -s whole/model.safetensors parts/model.safetensors || fail "the best models differ"
# Bad input: a damaged file is named.
printf '1,2,3\n' > bad.csv
"$TRAIN" --data bad.csv --out bad > bad.out 2> bad.err && fail "a bad data file was accepted"
grep -q "'bad.csv' line 1" bad.err || fail "the error does not name the file and line: $(cat bad.err)"

if [ "$failures" -gt 0 ]; then exit 1; fi
echo "passed"
