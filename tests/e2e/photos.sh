# predict and detect_faces on photos: four FER-2013 test faces (tests/fixtures/faces) pasted into
# a 640x480 picture at known places, a picture without faces, and a face crop. Uses the models
# committed in weights/ (the 7-class ensemble and the BlazeFace detector).
#   sh photos.sh BIN_DIR TOOL PROJECT_DIR WORK_DIR
set -u
BIN=$(cd "$1" && pwd)
TOOL=$2
PROJECT=$3
WORK=$4
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 2
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
FACES=$PROJECT/tests/fixtures/faces
W=$PROJECT/weights
MODEL="$W/emotions_7class.safetensors,$W/emotions_7class_seed7.safetensors"
# The pasted squares (x y side), in the order of the faces below.
"$TOOL" photo photo.png "$FACES/happy_PublicTest_10886374.jpg" 30 40 200 \
  "$FACES/surprise_PublicTest_12186725.jpg" 300 30 150 "$FACES/fear_PublicTest_10150476.jpg" 470 250 140 \
  "$FACES/angry_PublicTest_11832974.jpg" 210 280 170 || exit 2
"$TOOL" photo empty.png || exit 2

# status NAME EXPECTED: the exit status of the last run
status() {
  [ "$(cat "$1.status")" -eq "$2" ] || fail "$1: exit status $(cat "$1.status"), expected $2: $(cat "$1.err")"
}
run() {
  name=$1
  shift
  "$@" >"$name.out" 2>"$name.err"
  echo $? >"$name.status"
}

# Every pasted face is found once: the centre of exactly one classified crop lies in each pasted
# square, and the crop's side is within 25% of the square's.
run photo "$BIN/predict" --model "$MODEL" --json photo.png
status photo 0
faces=$(grep -o '"crop":\[[^]]*\]' photo.out | wc -l)
[ "$faces" -eq 4 ] || fail "predict found $faces faces in photo.png, expected 4: $(cat photo.out)"
for square in "30 40 200" "300 30 150" "470 250 140" "210 280 170"; do
  matches=$(grep -o '"crop":\[[^]]*\]' photo.out | tr -d '"crop:[]' | tr ',' ' ' | awk -v s="$square" '
    BEGIN { split(s, q, " ") }
    { cx = $1 + $3 / 2; cy = $2 + $4 / 2
      if (cx > q[1] && cx < q[1] + q[3] && cy > q[2] && cy < q[2] + q[3] && $3 > 0.75 * q[3] && $3 < 1.25 * q[3]) n++ }
    END { print n + 0 }')
  [ "$matches" -eq 1 ] || fail "the face pasted at $square: $matches crops match it: $(cat photo.out)"
done
grep -q '^{"image":"photo.png","faces":\[{"box":\[' photo.out || fail "predict --json format: $(cat photo.out)"
grep -q '"score":0\.[0-9]*,"label":"[a-z]*","probabilities":{"angry":' photo.out ||
  fail "predict --json: each face has a score, a label and probabilities: $(cat photo.out)"
# A face crop is classified whole; and each face the classifier is sure of on its own crop
# (probability >= 0.5) gets the same label through detect -> crop -> classify.
run crop "$BIN/predict" --model "$MODEL" --json "$FACES/happy_PublicTest_10886374.jpg"
status crop 0
grep -q '"box":\[0,0,48,48\],"crop":\[0,0,48,48\],"score":null,"label":"[a-z]*"' crop.out ||
  fail "a face crop is classified whole: $(cat crop.out)"
sed 's/},{"box"/}\n{"box"/g' photo.out >faces.txt
sure=0
for pasted in "happy_PublicTest_10886374.jpg 30 40 200" "surprise_PublicTest_12186725.jpg 300 30 150" \
  "fear_PublicTest_10150476.jpg 470 250 140" "angry_PublicTest_11832974.jpg 210 280 170"; do
  set -- $pasted
  "$BIN/predict" --model "$MODEL" --json "$FACES/$1" >own.out 2>&1 || fail "predict $1: $(cat own.out)"
  own=$(sed -n 's/.*"label":"\([a-z]*\)".*/\1/p' own.out)
  p=$(sed -n "s/.*\"$own\":\([0-9.e-]*\).*/\1/p" own.out)
  found=$(tr -d '"' <faces.txt | awk -F'[][,:]' -v x="$2" -v y="$3" -v s="$4" '
    { for (i = 1; i <= NF; i++) if ($i == "crop") { cx = $(i + 2) + $(i + 4) / 2; cy = $(i + 3) + $(i + 5) / 2 }
      for (i = 1; i <= NF; i++) if ($i == "label") label = $(i + 1)
      if (cx > x && cx < x + s && cy > y && cy < y + s) print label }')
  echo "$1: $own ($p) on its crop, $found through detection"
  if awk -v p="$p" 'BEGIN { exit !(p >= 0.5) }'; then
    sure=$((sure + 1))
    [ "$found" = "$own" ] || fail "$1: $own ($p) on its crop, '$found' through detection"
  fi
done
[ "$sure" -ge 1 ] || fail "no face of the test is classified with probability >= 0.5 on its crop"

# Text output: one line per face.
run photo_text "$BIN/predict" --model "$MODEL" photo.png
status photo_text 0
grep -q '^photo.png: 4 faces$' photo_text.out || fail "predict text: $(head -3 photo_text.out)"
[ "$(grep -c '^  face [1-4]: [a-z]* (' photo_text.out)" -eq 4 ] || fail "predict text: $(cat photo_text.out)"

# No face: said, distinct exit status; other pictures still printed.
run empty "$BIN/predict" --model "$MODEL" --json empty.png photo.png
status empty 3
grep -q '^{"image":"empty.png","faces":\[\]}$' empty.out || fail "a picture without faces: $(cat empty.out)"
[ "$(grep -c '"image":"photo.png"' empty.out)" -eq 1 ] || fail "the next picture after one without faces: $(cat empty.out)"
run empty_text "$BIN/predict" --model "$MODEL" empty.png
status empty_text 3
grep -q "no face found" empty_text.out || fail "predict text without faces: $(cat empty_text.out)"

# --no-detect: the whole picture is one face.
run whole "$BIN/predict" --model "$MODEL" --json --no-detect photo.png
status whole 0
grep -q '"faces":\[{"box":\[0,0,640,480\],"crop":\[0,0,640,480\],"score":null,' whole.out ||
  fail "--no-detect: $(cat whole.out)"

# --annotate writes the picture (readable again) and takes one picture only.
run annotate "$BIN/predict" --model "$MODEL" --annotate annotated.png photo.png
status annotate 0
run annotated "$BIN/predict" --model "$MODEL" --json --no-detect annotated.png
status annotated 0
grep -q '"box":\[0,0,640,480\]' annotated.out || fail "--annotate wrote no 640x480 picture: $(cat annotated.err)"
run annotate_two "$BIN/predict" --model "$MODEL" --annotate two.png photo.png empty.png
status annotate_two 2
grep -q "annotate draws one picture; 2 were given" annotate_two.err || fail "--annotate with 2 pictures: $(cat annotate_two.err)"

# detect_faces: the same faces, and the same exit status without any.
run detect "$BIN/detect_faces" --json photo.png
status detect 0
[ "$(grep -o '"crop":' detect.out | wc -l)" -eq 4 ] || fail "detect_faces: $(cat detect.out)"
run detect_empty "$BIN/detect_faces" empty.png
status detect_empty 3

# evaluate --detect: each photo by its best face; a photo without a face is skipped and named.
mkdir -p data/surprise data/angry
"$TOOL" photo data/surprise/one.png "$FACES/surprise_PublicTest_12186725.jpg" 200 100 180 || exit 2
"$TOOL" photo data/angry/one.png "$FACES/angry_PublicTest_11832974.jpg" 300 200 200 || exit 2
cp empty.png data/angry/none.png
cp "$FACES/angry_PublicTest_11832974.jpg" data/angry/crop.jpg
run evaluate "$BIN/evaluate" --model "$MODEL" --data data --detect --out eval
status evaluate 0
grep -q "'data/angry/none.png': no face found" evaluate.err || fail "evaluate --detect: $(cat evaluate.err)"
grep -q '"num_samples": 3' eval/metrics.json || fail "evaluate --detect: $(cat eval/metrics.json)"
grep -q '"skipped_files": 1' eval/metrics.json || fail "evaluate --detect: $(cat eval/metrics.json)"
grep -q '"detect": true' eval/metrics.json || fail "evaluate --detect: $(cat eval/metrics.json)"

# extract_features --detect: one row per picture (its best face); a picture without one stops it.
"$TOOL" weights base.safetensors 0.35 || exit 2
run features "$BIN/extract_features" --weights base.safetensors --alpha 0.35 --size 32 --detect --out f.npy \
  data/surprise/one.png data/angry/crop.jpg
status features 0
grep -q "wrote f.npy: \[2, 1280\] float32" features.out || fail "extract_features --detect: $(cat features.out features.err)"
run features_none "$BIN/extract_features" --weights base.safetensors --alpha 0.35 --size 32 --detect --out g.npy \
  data/surprise/one.png empty.png
status features_none 1
grep -q "'empty.png': no face found (--detect needs one in every picture)" features_none.err ||
  fail "extract_features --detect without a face: $(cat features_none.err)"
[ ! -e g.npy ] || fail "extract_features --detect wrote g.npy although a picture had no face"

if [ "$failures" -gt 0 ]; then exit 1; fi
echo "passed"
