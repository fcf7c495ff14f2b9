# Edge inputs at the program level: 1x1 and 4000x3000 images, corrupt, truncated, empty and
# non-image files (skipped with a warning naming each file, and counted), batches of 1, a last
# batch smaller than the others, a batch larger than the data, classes with one or two images
# (missing from the validation and test splits), an empty class folder, folders without images,
# and train/test folders with different classes.
. "$(dirname "$0")/common.sh"

# ---- A dataset with odd files ---------------------------------------------------------------------
"$TOOL" dataset mixed a,b,c 12 16 || exit 2
"$TOOL" image mixed/a/zz_tiny.png 1 1 128 || exit 2
"$TOOL" image mixed/b/zz_large.png 4000 3000 90 || exit 2
printf 'this is not an image' > mixed/c/zz_corrupt.png
head -c 60 mixed/a/img_000.png > mixed/a/zz_truncated.png
: > mixed/b/zz_empty.png
echo "notes" > mixed/c/notes.txt
echo "hidden" > mixed/a/.DS_Store
skipped_files="mixed/c/zz_corrupt.png mixed/a/zz_truncated.png mixed/b/zz_empty.png mixed/c/notes.txt"

# expect_skipped NAME: NAME.err names each bad file and the count; the hidden file is not tried.
expect_skipped() {
  for file in $skipped_files; do expect_in "$1.err" "skipping '$file'" "$1: skipped file"; done
  expect_in "$1.err" "skipped 4 of 42 files in 'mixed'" "$1: skip count"
  expect_not_in "$1.err" ".DS_Store" "$1: hidden file"
}

# Train: 32 training images (a: 13, b: 13, c: 12 minus validation and test).
# shellcheck disable=SC2086
run train_mixed "$TRAIN" --data mixed --out out_mixed --mode finetune $TINY --batch-size 5 --epochs 1
expect_status train_mixed 0
expect_skipped train_mixed
expect_in train_mixed.err "2 of 38 images in 'mixed' were resized to the stored size 16x16" "mixed sizes"
expect_in train_mixed.out "1 epochs of 7 batches of 5" "last batch of 2"
expect_in out_mixed/metrics.json '"skipped_files": 4' "metrics.json skip count"
expect_loadable out_mixed/checkpoint.safetensors "trained on odd files"
MODEL=out_mixed/model.safetensors

run evaluate_mixed "$EVALUATE" --model "$MODEL" --data mixed --out eval_mixed --threads 1 --batch-size 1
expect_status evaluate_mixed 0
expect_skipped evaluate_mixed
expect_in eval_mixed/metrics.json '"skipped_files": 4' "evaluate metrics.json skip count"
expect_in eval_mixed/report.txt "38" "evaluate: every readable image counted"

# The 1x1 picture is a face crop; the 4000x3000 one (a bar on noise) is searched for faces, holds
# none (exit status 3), and is classified whole with --no-detect.
run predict_sizes "$PREDICT" --model "$MODEL" --threads 1 mixed/a/zz_tiny.png mixed/b/zz_large.png
expect_status predict_sizes 3
expect_in predict_sizes.out "mixed/a/zz_tiny.png: " "predict 1x1"
expect_in predict_sizes.out "mixed/b/zz_large.png: 0 faces" "predict 4000x3000"
expect_in predict_sizes.out "no face found" "predict 4000x3000"
run predict_whole "$PREDICT" --model "$MODEL" --threads 1 --no-detect mixed/a/zz_tiny.png mixed/b/zz_large.png
expect_status predict_whole 0
expect_in predict_whole.out "mixed/b/zz_large.png: " "predict --no-detect 4000x3000"
run predict_bad "$PREDICT" --model "$MODEL" --threads 1 mixed/c/zz_corrupt.png mixed/a/img_001.png \
  mixed/a/zz_truncated.png mixed/b/zz_empty.png
expect_status predict_bad 1
expect_in predict_bad.err "predict: 'mixed/c/zz_corrupt.png': not an image file of a supported format" "predict corrupt"
expect_in predict_bad.err "predict: 'mixed/a/zz_truncated.png': " "predict truncated"
expect_in predict_bad.err "predict: 'mixed/b/zz_empty.png': empty file" "predict empty"
expect_in predict_bad.out "mixed/a/img_001.png: " "predict goes on after a bad file"

"$TOOL" weights base.safetensors 0.35 || exit 2
run extract_bad "$EXTRACT" --weights base.safetensors --alpha 0.35 --size 32 --threads 1 --out f.npy mixed/a
expect_status extract_bad 1
expect_in extract_bad.err "mixed/a/zz_truncated.png" "extract_features names the unreadable file"
run extract_sizes "$EXTRACT" --weights base.safetensors --alpha 0.35 --size 32 --threads 1 --batch-size 1 \
  --out sizes.npy mixed/a/zz_tiny.png mixed/b/zz_large.png
expect_status extract_sizes 0

# ---- Batch sizes ------------------------------------------------------------------------------------
"$TOOL" dataset plain a,b,c 12 16 || exit 2
# shellcheck disable=SC2086
run batch_one "$TRAIN" --data plain --out out_batch1 --mode finetune $TINY --batch-size 1 --epochs 1
expect_status batch_one 0
expect_in batch_one.out "1 epochs of 30 batches of 1" "batch of 1"
expect_loadable out_batch1/checkpoint.safetensors "batch of 1"
# shellcheck disable=SC2086
run batch_frozen "$TRAIN" --data plain --out out_frozen --mode frozen $TINY --batch-size 7 --eval-batch-size 2 \
  --epochs 2
expect_status batch_frozen 0
expect_in batch_frozen.out "2 epochs of 5 batches of 7" "frozen, last batch of 2"
# shellcheck disable=SC2086
run batch_large "$TRAIN" --data plain --out out_large --mode finetune $TINY --batch-size 64 --eval-batch-size 2 \
  --epochs 2
expect_status batch_large 0
expect_in batch_large.out "2 epochs of 1 batches of 64" "one batch smaller than the batch size"
expect_loadable out_large/checkpoint.safetensors "batch larger than the data"

# ---- Classes with one and two images ----------------------------------------------------------------
"$TOOL" dataset small a,b 12 16 || exit 2
"$TOOL" dataset small_extra solo 1 16 || exit 2
"$TOOL" dataset small_extra2 duo 2 16 || exit 2
mv small_extra/solo small/solo
mv small_extra2/duo small/duo
# shellcheck disable=SC2086
run small_classes "$TRAIN" --data small --out out_small --mode finetune $TINY --epochs 1
expect_status small_classes 0
# Split table: class, train, val, test, total.
if grep -q '^solo  *1  *0  *0  *1$' small_classes.out && grep -q '^duo  *2  *0  *0  *2$' small_classes.out; then
  pass
else
  fail "classes with 1 and 2 images should be in train only:"
  sed 's/^/    /' small_classes.out >&2
fi
expect_in out_small/report.txt "solo" "the report lists a class without test images"
expect_not_in out_small/report.txt "nan" "no NaN in the report"
expect_not_in out_small/metrics.json "nan" "no NaN in metrics.json"
run evaluate_small "$EVALUATE" --model out_small/model.safetensors --data small --out eval_small --threads 1
expect_status evaluate_small 0

# ---- Folders that cannot be used ----------------------------------------------------------------------
"$TOOL" dataset empty_class a,b 4 16 || exit 2
mkdir empty_class/c
# shellcheck disable=SC2086
run empty_class "$TRAIN" --data empty_class --out out_empty $TINY --epochs 1
expect_status empty_class 1
expect_in empty_class.err "class folder 'empty_class/c' is empty" "empty class folder"
run evaluate_empty_class "$EVALUATE" --model "$MODEL" --data empty_class --out eval_empty --threads 1
expect_status evaluate_empty_class 1
expect_in evaluate_empty_class.err "class folder 'empty_class/c' is empty" "evaluate: empty class folder"

mkdir -p texts/a texts/b
echo one > texts/a/1.txt
echo two > texts/b/2.jpg
# shellcheck disable=SC2086
run texts "$TRAIN" --data texts --out out_texts $TINY --epochs 1
expect_status texts 1
expect_in texts.err "image folder 'texts': none of the 2 files is a readable image" "folder of non-images"

"$TOOL" dataset partly a 4 16 || exit 2
mkdir partly/b
echo text > partly/b/readme.txt
# shellcheck disable=SC2086
run partly "$TRAIN" --data partly --out out_partly $TINY --epochs 1
expect_status partly 1
expect_in partly.err "skipping 'partly/b/readme.txt'" "class of non-images: the file"
expect_in partly.err "class folder 'partly/b' has no readable images" "class of non-images"

mkdir no_classes
echo x > no_classes/file.png
# shellcheck disable=SC2086
run no_classes "$TRAIN" --data no_classes --out out_none $TINY --epochs 1
expect_status no_classes 1
expect_in no_classes.err "image folder 'no_classes' has no class sub-folders" "no class folders"

"$TOOL" dataset split/train a,b,c 6 16 || exit 2
"$TOOL" dataset split/test a,b 2 16 || exit 2
# shellcheck disable=SC2086
run split_classes "$TRAIN" --data split --out out_split $TINY --epochs 1
expect_status split_classes 1
expect_in split_classes.err "the classes of 'split/test' (a, b) differ from those of 'split/train' (a, b, c)" \
  "train/test with different classes"

# A 1x1 image first sets the stored size: loading says so.
"$TOOL" dataset tiny_first a,b 6 16 || exit 2
"$TOOL" image tiny_first/a/000.png 1 1 || exit 2
# shellcheck disable=SC2086
run tiny_first "$TRAIN" --data tiny_first --out out_tiny_first $TINY --epochs 1
expect_status tiny_first 0
expect_in tiny_first.err "12 of 13 images in 'tiny_first' were resized to the stored size 1x1" "1x1 image first"
finish
