# End to end on a slice of FER-2013: train_emotions (the study's frozen-base protocol with the
# alpha 0.35 ImageNet weights) on 100 images per class, then evaluate and predict on its model.
# The test accuracy must beat chance (1/7) by a clear margin, and the outputs must be complete.
#   sh fer_slice.sh BIN_DIR SHARED_DIR WORK_DIR        (exit 77 = skipped: no FER-2013)
set -u
BIN=$1
SHARED=$2
WORK=$3
DATA=$SHARED/data/fer2013
WEIGHTS=$SHARED/weights/mobilenetv2_0.35_224_imagenet_notop.safetensors
if [ ! -d "$DATA/train" ] || [ ! -f "$WEIGHTS" ]; then
  echo "skipped: FER-2013 or the ImageNet weights are not in $SHARED"
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

"$BIN/train_emotions" --recipe study --alpha 0.35 --weights "$WEIGHTS" --max-per-class 100 --epochs 15 \
  --data "$DATA" --out "$WORK/run" --quiet >"$WORK/train.log" 2>&1 || fail "train_emotions failed: $(tail -5 "$WORK/train.log")"
for f in model.safetensors checkpoint.safetensors log.csv report.txt metrics.json confusion_matrix.png \
  training_curves.png; do
  [ -s "$WORK/run/$f" ] || fail "train_emotions did not write $f"
done
# "accuracy": 0.31..., the first top-level accuracy in metrics.json.
accuracy=$(sed -n 's/^  "accuracy": \([0-9.]*\),*$/\1/p' "$WORK/run/metrics.json" | head -1)
echo "test accuracy on the slice: $accuracy (chance 0.143)"
awk -v a="$accuracy" 'BEGIN { exit !(a >= 0.25) }' || fail "test accuracy $accuracy does not beat chance (0.143) by a clear margin (>= 0.25)"
[ "$(wc -l <"$WORK/run/log.csv")" -eq 16 ] || fail "log.csv should hold a header and 15 epochs"

# evaluate on the test folder (a folder of class folders) reproduces the training report's numbers.
"$BIN/evaluate" --model "$WORK/run/model.safetensors" --data "$DATA/test" --max-per-class 100 --out "$WORK/eval" \
  >"$WORK/eval.log" 2>&1 || fail "evaluate failed: $(tail -5 "$WORK/eval.log")"
eval_accuracy=$(sed -n 's/^  "accuracy": \([0-9.]*\),*$/\1/p' "$WORK/eval/metrics.json" | head -1)
[ "$eval_accuracy" = "$accuracy" ] || fail "evaluate gives accuracy $eval_accuracy, training reported $accuracy"
for key in macro_f1 classes precision recall f1 support confusion_matrix; do
  grep -q "\"$key\"" "$WORK/eval/metrics.json" || fail "metrics.json lacks $key"
done

# predict prints one line per image with a known class and all probabilities.
image=$(ls "$DATA/test/happy" | head -1)
"$BIN/predict" --model "$WORK/run/model.safetensors" --json "$DATA/test/happy/$image" >"$WORK/predict.json" 2>&1 ||
  fail "predict failed"
grep -q '"label":"\(angry\|disgust\|fear\|happy\|neutral\|sad\|surprise\)"' "$WORK/predict.json" ||
  fail "predict output has no class: $(cat "$WORK/predict.json")"
[ "$(grep -o '"[a-z]*":[0-9][0-9.e-]*' "$WORK/predict.json" | wc -l)" -eq 7 ] || fail "predict should print 7 probabilities"

if [ "$failures" -gt 0 ]; then exit 1; fi
echo "passed"
