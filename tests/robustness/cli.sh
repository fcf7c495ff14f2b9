# Command-line hygiene of every example program: unknown flags, missing values, values out of
# range or not numbers, missing or nonexistent paths each give a message on stderr that names the
# flag (or path) and a non-zero status; --help exits 0 and lists every flag the program declares.
SOURCES=$(cd "$(dirname "$0")/../../examples" && pwd)
. "$(dirname "$0")/common.sh"

"$TOOL" dataset data a,b 3 16 || exit 2
"$TOOL" weights base.safetensors 0.35 || exit 2
"$TOOL" image face.png 16 16 || exit 2
# A classifier file for evaluate and predict: one epoch on the tiny dataset.
# shellcheck disable=SC2086
run model "$TRAIN" --data data --out model --mode frozen $TINY --epochs 1
expect_status model 0
MODEL=model/model.safetensors

# rejected NAME STATUS TEXT PROGRAM ARGS...: the program exits with STATUS and TEXT on stderr.
rejected() {
  name=$1
  want=$2
  text=$3
  shift 3
  run "$name" "$@"
  expect_status "$name" "$want"
  expect_in "$name.err" "$text" "$name"
}

for program in train_emotions evaluate predict extract_features average_weights; do
  binary=$BIN/$program
  # --help: exit 0, every declared flag listed, nothing on stderr.
  run "${program}_help" "$binary" --help
  expect_status "${program}_help" 0
  if [ -s "${program}_help.err" ]; then fail "$program --help wrote to stderr"; else pass; fi
  flags=$(grep -o 'p\.\(option\|flag\|choice\)("[a-z0-9-]*"' "$SOURCES/$program.cpp" | sed 's/.*("//; s/"$//')
  count=0
  for flag in $flags --help; do
    case $flag in --help) ;; *) flag=--$flag ;; esac
    count=$((count + 1))
    if grep -q -- "^  $flag\( \|$\)" "${program}_help.out"; then pass; else
      fail "$program --help does not list $flag"
    fi
  done
  echo "$program --help lists all $count flags"
  # A help text that states its own default gets no second "(default: ...)".
  doubled=$(grep -c '(default:.*(default:' "${program}_help.out")
  if [ "$doubled" -eq 0 ]; then pass; else fail "$program --help: $doubled lines with two defaults"; fi
  run "${program}_h" "$binary" -h
  expect_status "${program}_h" 0

  rejected "${program}_unknown" 2 "$program: unknown flag --bogus" "$binary" --bogus
  rejected "${program}_unknown_inline" 2 "$program: unknown flag --bogus" "$binary" --bogus=1
  rejected "${program}_single_dash" 2 "$program: unknown flag -t" "$binary" -t 1
  rejected "${program}_missing_value" 2 "$program: --threads needs a value (N)" "$binary" --threads
  rejected "${program}_value_is_flag" 2 "$program: --threads needs a value (N)" "$binary" --threads --help
  rejected "${program}_range_high" 2 "$program: --threads: 2000 is outside [0, 1024]" "$binary" --threads 2000
  rejected "${program}_range_low" 2 "$program: --threads: -1 is outside [0, 1024]" "$binary" --threads -1
  rejected "${program}_not_integer" 2 "$program: --threads: 'two' is not an integer" "$binary" --threads two
  rejected "${program}_trailing" 2 "$program: --threads: '2x' is not an integer" "$binary" --threads 2x
  rejected "${program}_empty" 2 "$program: --threads: '' is not an integer" "$binary" --threads=
  rejected "${program}_overflow" 2 "$program: --threads: '99999999999999999999' is not an integer" "$binary" \
    --threads 99999999999999999999
  if [ "$program" = extract_features ]; then
    rejected "${program}_flag_value" 2 "$program: --threads: 'yes' is not an integer" "$binary" --threads=yes
  elif [ "$program" = average_weights ]; then
    rejected "${program}_flag_value" 2 "$program: --greedy takes no value" "$binary" --greedy=yes
  else
    rejected "${program}_flag_value" 2 "$program: --tta-flip takes no value" "$binary" --tta-flip=yes
  fi
done

# ---- train_emotions ------------------------------------------------------------------------------
T=$TRAIN
rejected train_lr_text 2 "train_emotions: --lr: 'fast' is not a number" "$T" --lr fast
rejected train_lr_nan 2 "train_emotions: --lr: 'nan' is not a number" "$T" --lr nan
rejected train_lr_inf 2 "train_emotions: --lr: inf is outside [0, 10]" "$T" --lr inf
rejected train_lr_negative 2 "train_emotions: --lr: -0.1 is outside [0, 10]" "$T" --lr -0.1
rejected train_epochs_zero 2 "train_emotions: --epochs: 0 is outside [1, 100000]" "$T" --epochs 0
rejected train_batch_zero 2 "train_emotions: --batch-size: 0 is outside [1, 4096]" "$T" --batch-size 0
rejected train_size_small 2 "train_emotions: --size: 16 is outside [32, 512]" "$T" --size 16
rejected train_dropout 2 "train_emotions: --dropout: 1 is outside [0, 0.95]" "$T" --dropout 1
rejected train_mode 2 "train_emotions: --mode: 'fast' is not one of frozen|finetune" "$T" --mode fast
rejected train_recipe 2 "train_emotions: --recipe: 'good' is not one of study|best|none" "$T" --recipe good
rejected train_recipe_missing 2 "train_emotions: --recipe needs a value" "$T" --recipe
rejected train_out_missing 2 "train_emotions: --out needs a value (DIR)" "$T" --out --epochs 1
rejected train_positional 2 "train_emotions: unexpected argument 'data'" "$T" data
rejected train_data_missing 2 "train_emotions: --data: 'no_such_dir' is not a directory" "$T" --data no_such_dir
rejected train_data_file 2 "train_emotions: --data: 'face.png' is not a directory" "$T" --data face.png
rejected train_weights_missing 2 "train_emotions: --weights: 'no_such.safetensors' is not a file" \
  "$T" --data data --weights no_such.safetensors
rejected train_weights_auto 2 "train_emotions: --weights auto: no ImageNet file for alpha 0.5" \
  "$T" --data data --alpha 0.5 --weights auto
rejected train_finetune_from 2 "train_emotions: --finetune-from needs --mode finetune" "$T" --finetune-from block_3
# shellcheck disable=SC2086
rejected train_finetune_block 1 "no layer or block named 'block_99'" \
  "$T" --data data --out bad_block $TINY --mode finetune --finetune-from block_99 --epochs 1
if [ -e no_such_dir ] || [ -e bad_block/checkpoint.safetensors ]; then fail "a rejected run left outputs"; else pass; fi

# ---- evaluate ------------------------------------------------------------------------------------
E=$EVALUATE
rejected evaluate_no_neutral_model 2 "evaluate: --no-neutral chooses the project's 6-class network; it does not go with --model" \
  "$E" --model "$MODEL" --no-neutral --data data
rejected evaluate_no_data 2 "evaluate: --data is required" "$E" --model "$MODEL"
rejected evaluate_model_missing 2 "evaluate: --model: 'no_such.safetensors' does not exist" \
  "$E" --model no_such.safetensors --data data
rejected evaluate_data_missing 2 "evaluate: --data: 'no_such_dir' is not a directory" \
  "$E" --model "$MODEL" --data no_such_dir
rejected evaluate_batch 2 "evaluate: --batch-size: 0 is outside [1, 4096]" "$E" --batch-size 0
rejected evaluate_not_model 1 "'face.png'" "$E" --model face.png --data data
rejected evaluate_weights_not_classifier 1 "is not an eigennet classifier" "$E" --model base.safetensors --data data
run evaluate_ok "$E" --model "$MODEL" --data data --out evaluation --threads 1
expect_status evaluate_ok 0

# Ensembles (comma-separated --model). A model with itself averages equal probabilities: the same
# report. A second model (another seed) and one with other classes, for the checks below.
run evaluate_self_ensemble "$E" --model "$MODEL,$MODEL" --data data --out evaluation_self --threads 1
expect_status evaluate_self_ensemble 0
if [ "$(tail -n +2 evaluation/report.txt)" = "$(tail -n +2 evaluation_self/report.txt)" ]; then pass; else
  fail "an ensemble of a model with itself reports different numbers than the model"
fi
expect_in evaluation_self/metrics.json '"models"' "evaluate ensemble metrics.json"
# shellcheck disable=SC2086
run model_b "$TRAIN" --data data --out model_b --mode frozen $TINY --epochs 1 --seed 8
expect_status model_b 0
MODEL_B=model_b/model.safetensors
"$TOOL" dataset data3 a,b,c 3 16 || exit 2
# shellcheck disable=SC2086
run model_c "$TRAIN" --data data3 --out model_c --mode frozen $TINY --epochs 1
expect_status model_c 0
rejected evaluate_ensemble_classes 1 "the models of an ensemble must have the same classes in the same order" \
  "$E" --model "$MODEL,model_c/model.safetensors" --data data
rejected evaluate_ensemble_missing 2 "evaluate: --model: 'no_such.safetensors' does not exist" \
  "$E" --model "$MODEL,no_such.safetensors" --data data
rejected evaluate_ensemble_empty 2 "evaluate: --model: no file given" "$E" --model , --data data
run evaluate_ensemble "$E" --model "$MODEL,$MODEL_B" --data data --out evaluation_ensemble --threads 1
expect_status evaluate_ensemble 0
expect_in evaluate_ensemble.out "model.safetensors + model.safetensors on data" "evaluate ensemble title"

# ---- average_weights -----------------------------------------------------------------------------
A=$BIN/average_weights
rejected average_one_model 2 "average_weights: --model: give at least two classifier files" \
  "$A" --model "$MODEL" --data data --out avg.safetensors
rejected average_missing 2 "average_weights: --model: 'no_such.safetensors' is not a file" \
  "$A" --model "$MODEL,no_such.safetensors" --data data --out avg.safetensors
rejected average_no_out 2 "average_weights: --out is required" "$A" --model "$MODEL,$MODEL_B" --data data
rejected average_classes 1 "'model_c/model.safetensors' is a different network from 'model/model.safetensors'" \
  "$A" --model "$MODEL,model_c/model.safetensors" --data data --out avg.safetensors
rejected average_not_classifier 1 "is not an eigennet classifier" \
  "$A" --model "$MODEL,base.safetensors" --data data --out avg.safetensors
if [ -e avg.safetensors ]; then fail "a rejected average_weights run wrote avg.safetensors"; else pass; fi
run average_ok "$A" --model "$MODEL,$MODEL_B" --data data --out avg.safetensors --threads 1
expect_status average_ok 0
expect_in average_ok.out "uniform soup of 2: validation" "average_weights"
expect_loadable avg.safetensors "average_weights"
run average_greedy "$A" --greedy --model "$MODEL,$MODEL_B" --data data --out greedy.safetensors --threads 1
expect_status average_greedy 0
expect_in average_greedy.out "greedy soup of" "average_weights --greedy"
expect_loadable greedy.safetensors "average_weights --greedy"
# The average is a classifier like any other: evaluate reads it.
run average_evaluate "$E" --model avg.safetensors --data data --out evaluation_avg --threads 1
expect_status average_evaluate 0

# ---- predict -------------------------------------------------------------------------------------
P=$PREDICT
rejected predict_no_images 2 "predict: no images given" "$P" --model "$MODEL"
rejected predict_no_neutral_model 2 "predict: --no-neutral chooses the project's 6-class network; it does not go with --model" \
  "$P" --model "$MODEL" --no-neutral face.png
rejected predict_model_missing 2 "predict: --model: 'no_such.safetensors' does not exist" \
  "$P" --model no_such.safetensors face.png
rejected predict_model_flag 2 "predict: --model needs a value (FILE[,FILE...])" "$P" --model --json face.png
rejected predict_image_missing 1 "predict: 'no_such.png': cannot open file" "$P" --model "$MODEL" no_such.png
rejected predict_image_directory 1 "predict: 'data'" "$P" --model "$MODEL" data
run predict_ok "$P" --model "$MODEL" --json --threads 1 face.png
expect_status predict_ok 0
expect_in predict_ok.out '"image":"face.png"' "predict --json"
# An ensemble's probabilities are the mean of its members' (to float rounding).
probability() { sed 's/.*"probabilities":{"a":\([^,]*\),.*/\1/' "$1"; }
run predict_b "$P" --model "$MODEL_B" --json --threads 1 face.png
run predict_ensemble "$P" --model "$MODEL,$MODEL_B" --json --threads 1 face.png
expect_status predict_ensemble 0
if awk -v a="$(probability predict_ok.out)" -v b="$(probability predict_b.out)" \
  -v e="$(probability predict_ensemble.out)" 'BEGIN { d = e - (a + b) / 2; exit !(d < 1e-6 && d > -1e-6 && a != b) }'; then
  pass
else
  fail "predict ensemble: p(a) = $(probability predict_ensemble.out), members $(probability predict_ok.out) and $(probability predict_b.out)"
fi
rejected predict_ensemble_classes 1 "the models of an ensemble must have the same classes in the same order" \
  "$P" --model "$MODEL,model_c/model.safetensors" face.png

# predict without --model looks for the project's classifier in weights/ here, beside the program and
# in its install prefix; a copy of the program with nothing around it names every place it looked.
mkdir -p moved/bin
cp "$P" moved/bin/predict
run predict_moved sh -c "cd moved && exec bin/predict face.png"
expect_status predict_moved 2
expect_in predict_moved.err "no --model given, and the project's classifier (emotions_7class_distilled.safetensors) is in none of: weights, " "moved predict"
expect_in predict_moved.err "/moved/bin/weights, " "moved predict"
expect_in predict_moved.err "/moved/share/eigennet/weights" "moved predict"
mkdir -p moved/share/eigennet/weights
cp "$MODEL" moved/share/eigennet/weights/emotions_7class_distilled.safetensors
cp face.png moved/face.png
run predict_installed sh -c "cd / && exec \"$WORK/moved/bin/predict\" --threads 1 \"$WORK/moved/face.png\""
expect_status predict_installed 0
expect_in predict_installed.out "face.png: " "predict with the model in share/eigennet/weights"

# scripts/install_deps.sh as a user who is not root and has no sudo: a clear message, not exit 127.
# Its PATH holds only the tools it needs (no sudo, even where one is installed: it would prompt).
as_user=""
if [ "$(id -u)" -ne 0 ]; then as_user=env; elif setpriv --reuid=65534 --regid=65534 --clear-groups true 2> /dev/null; then
  as_user="setpriv --reuid=65534 --regid=65534 --clear-groups"
fi
mkdir -p no_sudo_bin
for tool in dpkg-query grep id; do ln -sf "$(command -v "$tool")" "no_sudo_bin/$tool"; done
if [ -n "$as_user" ] && $as_user test -r "$SOURCES/../scripts/install_deps.sh"; then
  run deps_no_sudo $as_user env PATH="$WORK/no_sudo_bin" /bin/sh "$SOURCES/../scripts/install_deps.sh" \
    eigennet-no-such-package
  expect_status deps_no_sudo 1
  expect_in deps_no_sudo.err "installing them needs root, and sudo is not available" "install_deps without sudo"
  expect_in deps_no_sudo.err "apt-get install" "install_deps without sudo"
else
  echo "skipped the install_deps check: no unprivileged user can read the script"
fi

# ---- train_emotions: teachers and starting weights ------------------------------------------------
"$TOOL" dataset data3 a,b,c 3 16 || exit 2
rejected teacher_missing 2 "train_emotions: --teacher: 'no_such.safetensors' is not a file" \
  "$TRAIN" --data data --mode finetune --teacher no_such.safetensors $TINY --out t
rejected teacher_frozen 2 "train_emotions: --teacher needs --mode finetune" \
  "$TRAIN" --data data --mode frozen --teacher "$MODEL" $TINY --out t
# shellcheck disable=SC2086
rejected teacher_classes 1 "--teacher: 'model/model.safetensors' predicts the classes (a, b) but this run trains (a, b, c)" \
  "$TRAIN" --data data3 --mode finetune --teacher "$MODEL" $TINY --out t
rejected init_missing 2 "train_emotions: --init-from: 'no_such.safetensors' is not a file" \
  "$TRAIN" --data data --mode finetune --init-from no_such.safetensors $TINY --out t
# shellcheck disable=SC2086
rejected init_alpha 1 "--init-from: 'model/model.safetensors' is a network with alpha 0.35, max pooling, hidden 128 but this one has alpha 0.5, max pooling, hidden 128" \
  "$TRAIN" --data data --mode finetune --init-from "$MODEL" $TINY --alpha 0.5 --out t
# shellcheck disable=SC2086
rejected init_classes 1 "--init-from: 'model/model.safetensors' predicts the classes (a, b) but this network predicts (a, b, c): 'c' is not among them" \
  "$TRAIN" --data data3 --mode finetune --init-from "$MODEL" $TINY --out t
# Another input size is fine (the weights do not depend on it), and so are fewer classes.
# shellcheck disable=SC2086
run init_size "$TRAIN" --data data --mode finetune --init-from "$MODEL" $TINY --size 40 --epochs 1 --out init_size
expect_status init_size 0
# shellcheck disable=SC2086
run model3 "$TRAIN" --data data3 --out model3 --mode frozen $TINY --epochs 1
expect_status model3 0
# shellcheck disable=SC2086
run init_fewer "$TRAIN" --data data --mode finetune --init-from model3/model.safetensors $TINY --epochs 1 --out init_fewer
expect_status init_fewer 0
rejected ema_range 2 "train_emotions: --ema-decay: 1 is outside [0, 0.999999]" "$TRAIN" --ema-decay 1
rejected cutmix_frozen 2 "train_emotions: --cutmix needs --mode finetune" "$TRAIN" --data data --mode frozen --cutmix 1 $TINY --out t
rejected mix_probability 2 "train_emotions: --mix-probability: 2 is outside [0, 1]" "$TRAIN" --mix-probability 2

# ---- extract_features ----------------------------------------------------------------------------
X=$EXTRACT
rejected extract_no_weights 2 "extract_features: --weights is required" "$X" --out f.npy face.png
rejected extract_no_out 2 "extract_features: --out is required" "$X" --weights base.safetensors face.png
rejected extract_no_images 2 "extract_features: no images given" "$X" --weights base.safetensors --out f.npy
rejected extract_weights_missing 2 "extract_features: --weights: 'no_such.safetensors' does not exist" \
  "$X" --weights no_such.safetensors --out f.npy face.png
rejected extract_alpha 2 "extract_features: --alpha: 'wide' is not a number" "$X" --alpha wide
rejected extract_pool 2 "extract_features: --pool: 'sum' is not one of avg|max" "$X" --pool sum
rejected extract_image_missing 1 "'no_such.png' does not exist" \
  "$X" --weights base.safetensors --alpha 0.35 --size 32 --out f.npy no_such.png
rejected extract_wrong_alpha 1 "base.safetensors" \
  "$X" --weights base.safetensors --alpha 1.0 --size 32 --out f.npy face.png
if [ -e f.npy ]; then fail "a rejected extract_features run wrote f.npy"; else pass; fi
run extract_ok "$X" --weights base.safetensors --alpha 0.35 --size 32 --threads 1 --out f.npy face.png data
expect_status extract_ok 0
expect_in extract_ok.out "wrote f.npy: [7, " "extract_features"
finish
