# Shared by the robustness tests; sourced by each script, which is run as
#   sh SCRIPT.sh BIN_DIR ROBUSTNESS_TOOL WORK_DIR
# BIN_DIR holds the example programs, WORK_DIR is emptied and used for data and outputs.
set -u
if [ $# -ne 3 ]; then
  echo "usage: sh $0 BIN_DIR ROBUSTNESS_TOOL WORK_DIR" >&2
  exit 2
fi
absolute() {
  case $1 in
    /*) echo "$1" ;;
    *) echo "$(pwd)/$1" ;;
  esac
}
BIN=$(absolute "$1")
TOOL=$(absolute "$2")
WORK=$(absolute "$3")
TRAIN=$BIN/train_emotions
EVALUATE=$BIN/evaluate
PREDICT=$BIN/predict
EXTRACT=$BIN/extract_features
for program in "$TRAIN" "$EVALUATE" "$PREDICT" "$EXTRACT" "$TOOL"; do
  if [ ! -x "$program" ]; then
    echo "missing program $program (build the examples and robustness_tool first)" >&2
    exit 2
  fi
done
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK" || exit 2
# One thread per process unless a test says otherwise; idle OpenMP workers must not spin on a
# shared machine.
OMP_NUM_THREADS=1
OMP_WAIT_POLICY=passive
export OMP_NUM_THREADS OMP_WAIT_POLICY

# A tiny model: every training run of these tests takes a second or less.
TINY="--recipe none --alpha 0.35 --size 32 --weights none --batch-size 4 --threads 1 --seed 7 --quiet"
# Every source of randomness in training: augmentation, dropout, shuffling; and a schedule.
RANDOMNESS="--augment-flip 0.5 --augment-shift 0.1 --augment-rotate 10 --augment-scale 0.1 --augment-brightness 0.1
  --augment-contrast 0.1 --hidden 16 --dropout 0.3 --label-smoothing 0.1 --optimizer adamw --weight-decay 0.01
  --schedule cosine --warmup-epochs 1"

failures=0
checks=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
pass() {
  checks=$((checks + 1))
}
finish() {
  if [ "$failures" -gt 0 ]; then
    echo "$failures of $((checks + failures)) checks failed" >&2
    exit 1
  fi
  echo "all $checks checks passed"
  exit 0
}

# run NAME COMMAND...: runs COMMAND with stdout in NAME.out and stderr in NAME.err; sets $status.
run() {
  run_name=$1
  shift
  "$@" > "$run_name.out" 2> "$run_name.err"
  status=$?
}

# expect_status NAME WANT: the last run's status is WANT ("nonzero" for any failure).
expect_status() {
  if [ "$2" = nonzero ]; then
    if [ "$status" -ne 0 ]; then pass; else fail "$1: exit status 0, expected a failure"; fi
  elif [ "$status" -eq "$2" ]; then
    pass
  else
    fail "$1: exit status $status, expected $2; stderr:"
    sed 's/^/    /' "$1.err" >&2
  fi
}

# expect_in FILE TEXT WHAT: FILE contains TEXT (a fixed string).
expect_in() {
  if grep -F -q -- "$2" "$1"; then
    pass
  else
    fail "$3: '$2' not found in $1:"
    sed 's/^/    /' "$1" >&2
  fi
}

# expect_not_in FILE TEXT WHAT
expect_not_in() {
  if grep -F -q -- "$2" "$1"; then
    fail "$3: '$2' found in $1"
  else
    pass
  fi
}

# expect_loadable FILE WHAT: FILE is a complete classifier/checkpoint with finite tensors.
expect_loadable() {
  if "$TOOL" check "$1" > check.out 2>&1; then
    pass
  else
    fail "$2: $1 does not load: $(cat check.out)"
  fi
}

# epochs_done FILE: the epoch count a checkpoint records.
epochs_done() {
  "$TOOL" check "$1" 2> /dev/null | sed -n 's/.*epochs_done=\([0-9]*\).*/\1/p'
}

# now: seconds since the epoch, with fractions (for durations).
now() {
  date +%s.%N
}
