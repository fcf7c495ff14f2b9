# Resume semantics: --resume continues only a checkpoint written with the same settings; one from
# different settings, a file that is not a checkpoint, and a damaged checkpoint are refused with
# a message naming the file (and the differing flag), a non-zero status and the file untouched.
. "$(dirname "$0")/common.sh"

"$TOOL" dataset data a,b,c 12 16 || exit 2
"$TOOL" dataset other_data a,b,c 12 16 3 || exit 2
flags="--data data --mode finetune $TINY --epochs 2"
# shellcheck disable=SC2086
run first "$TRAIN" $flags --out out
expect_status first 0
cp out/checkpoint.safetensors saved.safetensors

# refused NAME EXPECTED_TEXT EXTRA_FLAGS...: resuming with changed flags fails, naming the change.
refused() {
  name=$1
  text=$2
  shift 2
  # shellcheck disable=SC2086
  run "$name" "$TRAIN" $flags --out out --resume "$@"
  expect_status "$name" 1
  expect_in "$name.err" \
    "cannot resume from 'out/checkpoint.safetensors': it was written by a run with different settings" "$name"
  expect_in "$name.err" "$text" "$name"
  if cmp -s out/checkpoint.safetensors saved.safetensors; then pass; else fail "$name: the checkpoint changed"; fi
}
refused lr "--lr: 0.001 in the checkpoint, 0.002 now" --lr 0.002
refused epochs "--epochs: 2 in the checkpoint, 3 now" --epochs 3
refused seed "--seed: 7 in the checkpoint, 8 now" --seed 8
refused batch "--batch-size: 4 in the checkpoint, 8 now" --batch-size 8
refused alpha "--alpha: 0.35 in the checkpoint, 0.5 now" --alpha 0.5
refused mode "--mode: finetune in the checkpoint, frozen now" --mode frozen
refused classes "--classes: '' in the checkpoint, a,b now" --classes a,b
refused data "--data:" --data other_data
refused augment "--augment-flip" --augment-flip 0.5
# A learning rate that differs beyond the 6th significant digit is a different run too.
refused lr_digits "--lr: 0.001 in the checkpoint, 0.0010000001" --lr 0.0010000001

# Distillation and weight averaging are part of a run's settings: resuming with other teachers
# (other files, or the same file with other contents), another temperature or weight, or another
# (or no) average is refused.
# shellcheck disable=SC2086
run teacher_big "$TRAIN" $flags --size 40 --out big
expect_status teacher_big 0
cp out/model.safetensors teacher.safetensors
# With mixup and cutmix: the teachers (32x32 and 40x40) read the mixed images.
mix="--mixup 0.4 --cutmix 1.0 --mix-probability 0.75"
kd_flags="$flags --teacher teacher.safetensors,big/model.safetensors --distill-temperature 2 --ema-decay 0.9 $mix"
# shellcheck disable=SC2086
run kd "$TRAIN" $kd_flags --out kd
expect_status kd 0
expect_in kd.out "  teachers: " "per-epoch teacher cost"
expect_in kd.out "training without them" "teacher time apart"
cp kd/checkpoint.safetensors kd_saved.safetensors
kd_refused() {
  name=$1
  text=$2
  shift 2
  run "$name" "$TRAIN" "$@" --out kd --resume
  expect_status "$name" 1
  expect_in "$name.err" "it was written by a run with different settings" "$name"
  expect_in "$name.err" "$text" "$name"
  if cmp -s kd/checkpoint.safetensors kd_saved.safetensors; then pass; else fail "$name: the checkpoint changed"; fi
}
# shellcheck disable=SC2086
kd_refused kd_fewer_teachers "--teacher: teacher.safetensors (fnv1a64 " $flags --teacher teacher.safetensors \
  --distill-temperature 2 --ema-decay 0.9 $mix
cp big/model.safetensors teacher.safetensors  # same name, other contents
# shellcheck disable=SC2086
kd_refused kd_changed_teacher "--teacher: teacher.safetensors (fnv1a64 " $kd_flags
cp out/model.safetensors teacher.safetensors
# shellcheck disable=SC2086
kd_refused kd_temperature "--distill-temperature: 2 in the checkpoint, 3 now" $kd_flags --distill-temperature 3
# shellcheck disable=SC2086
kd_refused kd_ema "--ema-decay: 0.9 in the checkpoint, 0.8 now" $kd_flags --ema-decay 0.8
# shellcheck disable=SC2086
kd_refused kd_no_ema "--ema-decay: 0.9 in the checkpoint, absent now" $flags \
  --teacher teacher.safetensors,big/model.safetensors --distill-temperature 2 $mix
# shellcheck disable=SC2086
kd_refused kd_no_teacher "--teacher: teacher.safetensors" $flags --ema-decay 0.9 $mix
# shellcheck disable=SC2086
kd_refused kd_mixup "--mixup: 0.4 in the checkpoint, 0.2 now" $kd_flags --mixup 0.2
# shellcheck disable=SC2086
kd_refused kd_no_mixing "--mixup: 0.4 in the checkpoint, absent now" $flags \
  --teacher teacher.safetensors,big/model.safetensors --distill-temperature 2 --ema-decay 0.9
# shellcheck disable=SC2086
run kd_same "$TRAIN" $kd_flags --out kd --resume
expect_status kd_same 0
if cmp -s kd/checkpoint.safetensors kd_saved.safetensors; then pass; else fail "kd_same: the checkpoint changed"; fi

# Same settings: nothing left to train, the run only reports (exit 0), checkpoint unchanged.
# shellcheck disable=SC2086
run same "$TRAIN" $flags --out out --resume
expect_status same 0
expect_in same.err "resumed from out/checkpoint.safetensors after epoch 2" "resume with the same settings"
if cmp -s out/checkpoint.safetensors saved.safetensors; then pass; else fail "same settings: the checkpoint changed"; fi

# A model file is not a checkpoint.
mkdir -p not_checkpoint
cp out/model.safetensors not_checkpoint/checkpoint.safetensors
# shellcheck disable=SC2086
run not_checkpoint "$TRAIN" $flags --out not_checkpoint --resume
expect_status not_checkpoint 1
expect_in not_checkpoint.err "'not_checkpoint/checkpoint.safetensors': it is not a training checkpoint" \
  "model as checkpoint"

# A truncated checkpoint (e.g. copied while incomplete) is refused, naming the file.
mkdir -p truncated
head -c 100000 saved.safetensors > truncated/checkpoint.safetensors
# shellcheck disable=SC2086
run truncated "$TRAIN" $flags --out truncated --resume
expect_status truncated 1
expect_in truncated.err "truncated/checkpoint.safetensors" "truncated checkpoint"

# Without --resume an existing checkpoint is not silently continued: the run starts over and
# ends with the same weights as the first run.
# shellcheck disable=SC2086
run restart "$TRAIN" $flags --out out
expect_status restart 0
if "$TOOL" compare out/checkpoint.safetensors saved.safetensors --exact --skip history > compare.out 2>&1
then pass; else fail "a fresh run into the same --out differs from the first run"; cat compare.out >&2; fi
finish
