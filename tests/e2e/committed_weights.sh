# The trained models committed in weights/ load and classify FER-2013 test faces far above chance:
# each model and each ensemble of weights/README.md on the first 50 test images per class, with
# test-time flip, as the README evaluates them; and evaluate and predict without --model use the
# 7-class distilled network (as accurate as the ensemble on the test split; weights/README.md),
# with --no-neutral the 6-class one.
#   sh committed_weights.sh BIN_DIR PROJECT_DIR SHARED_DIR WORK_DIR   (exit 77 = skipped: no FER-2013)
set -u
BIN=$(cd "$1" && pwd)
PROJECT=$2
SHARED=$3
WORK=$4
TEST=$SHARED/data/fer2013/test
if [ ! -d "$TEST" ]; then
  echo "skipped: FER-2013 is not in $SHARED"
  exit 77
fi
rm -rf "$WORK" && mkdir -p "$WORK" || exit 2
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
W=$PROJECT/weights
# NAME MODELS CLASSES: evaluate MODELS (comma-separated) on the slice; accuracy >= 0.5
# (chance: 1/7 or 1/6; the full test split gives 0.67-0.76).
check() {
  name=$1
  models=$2
  classes=$3
  "$BIN/evaluate" --model "$models" --data "$TEST" --max-per-class 50 --tta-flip --out "$WORK/$name" \
    >"$WORK/$name.log" 2>&1 || { fail "evaluate $name failed: $(tail -3 "$WORK/$name.log")"; return; }
  accuracy=$(sed -n 's/^  "accuracy": \([0-9.]*\),*$/\1/p' "$WORK/$name/metrics.json" | head -1)
  samples=$(sed -n 's/^  "num_samples": \([0-9]*\),*$/\1/p' "$WORK/$name/metrics.json" | head -1)
  echo "$name: accuracy $accuracy on $samples images"
  [ "$samples" -eq $((50 * classes)) ] || fail "$name: $samples images evaluated, expected $((50 * classes))"
  awk -v a="$accuracy" 'BEGIN { exit !(a >= 0.5) }' || fail "$name: accuracy $accuracy on the slice is below 0.5"
}
check 7class "$W/emotions_7class.safetensors" 7
check 6class "$W/emotions_6class.safetensors" 6
check 7class_seed7 "$W/emotions_7class_seed7.safetensors" 7
check 6class_seed7 "$W/emotions_6class_seed7.safetensors" 6
check 7class_ensemble "$W/emotions_7class.safetensors,$W/emotions_7class_seed7.safetensors" 7
check 6class_112 "$W/emotions_6class_112.safetensors" 6
check 6class_112_seed7 "$W/emotions_6class_112_seed7.safetensors" 6
check 6class_ensemble "$W/emotions_6class.safetensors,$W/emotions_6class_seed7.safetensors,$W/emotions_6class_112.safetensors,$W/emotions_6class_112_seed7.safetensors" 6
# The distilled 7-class student (issue 16): predict's default.
check 7class_distilled "$W/emotions_7class_distilled.safetensors" 7
# The distilled 6-class student (112x112, started from the 7-class student): the committed
# one-network 6-class model, as accurate as the 6-class ensemble on the test split.
check 6class_distilled "$W/emotions_6class_distilled.safetensors" 6

# evaluate without --model, from a directory outside the project: the project's 7-class network,
# with --no-neutral the 6-class one (the same reports as naming them).
for variant in 7class 6class; do
  flag=""
  [ "$variant" = 6class ] && flag="--no-neutral"
  # shellcheck disable=SC2086
  (cd "$WORK" && "$BIN/evaluate" $flag --data "$TEST" --max-per-class 20 --out "$WORK/default_$variant") \
    >"$WORK/default_$variant.log" 2>&1 || fail "evaluate $flag without --model failed: $(tail -3 "$WORK/default_$variant.log")"
  "$BIN/evaluate" --model "$W/emotions_${variant}_distilled.safetensors" --data "$TEST" --max-per-class 20 \
    --out "$WORK/named_$variant" >"$WORK/named_$variant.log" 2>&1 || fail "evaluate of the $variant network failed"
  # The reports' first lines name the models (by file name); the rest must match.
  if [ "$(tail -n +2 "$WORK/default_$variant/report.txt")" != "$(tail -n +2 "$WORK/named_$variant/report.txt")" ] ||
    [ ! -s "$WORK/named_$variant/report.txt" ]; then
    fail "evaluate $flag without --model differs from the $variant network"
  fi
done

# predict without --model, from a directory outside the project: the project's 7-class network.
image=$TEST/happy/$(ls "$TEST/happy" | head -1)
(cd "$WORK" && "$BIN/predict" --json "$image") >"$WORK/predict.json" 2>"$WORK/predict.err" ||
  fail "predict without --model failed: $(cat "$WORK/predict.err")"
[ "$(grep -o '"[a-z]*":[0-9][0-9.e-]*' "$WORK/predict.json" | wc -l)" -eq 7 ] ||
  fail "predict without --model should print 7 probabilities: $(cat "$WORK/predict.json")"
"$BIN/predict" --json --model "$W/emotions_7class_distilled.safetensors" "$image" \
  >"$WORK/predict_distilled.json" 2>&1 || fail "predict with the distilled network failed"
cmp -s "$WORK/predict.json" "$WORK/predict_distilled.json" ||
  fail "predict without --model differs from the distilled network: $(cat "$WORK/predict.json" "$WORK/predict_distilled.json")"
# --no-neutral: the project's 6-class network, the same output as naming it.
(cd "$WORK" && "$BIN/predict" --json --no-neutral "$image") >"$WORK/predict6.json" 2>"$WORK/predict6.err" ||
  fail "predict --no-neutral failed: $(cat "$WORK/predict6.err")"
[ "$(grep -o '"[a-z]*":[0-9][0-9.e-]*' "$WORK/predict6.json" | wc -l)" -eq 6 ] ||
  fail "predict --no-neutral should print 6 probabilities: $(cat "$WORK/predict6.json")"
grep -q '"neutral"' "$WORK/predict6.json" && fail "predict --no-neutral printed a neutral class: $(cat "$WORK/predict6.json")"
"$BIN/predict" --json --model "$W/emotions_6class_distilled.safetensors" "$image" \
  >"$WORK/predict6_named.json" 2>&1 || fail "predict with the 6-class network failed"
cmp -s "$WORK/predict6.json" "$WORK/predict6_named.json" ||
  fail "predict --no-neutral differs from the 6-class network: $(cat "$WORK/predict6.json" "$WORK/predict6_named.json")"

if [ "$failures" -gt 0 ]; then exit 1; fi
echo "passed"
