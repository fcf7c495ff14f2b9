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

SEED=${ROBUSTNESS_SEED:-$(($(date +%s) % 100000))}
random_counter=0
# random MAX: a number in [0, MAX) drawn from the seed.
random() {
  random_counter=$((random_counter + 1))
  awk -v s="$SEED" -v k="$random_counter" -v m="$1" 'BEGIN { srand(s * 1000 + k); printf "%.3f", rand() * m }'
}


# crash_and_resume LABEL COMMAND KILL...: runs COMMAND (a training program with its flags, but
# not --out or --resume) to the end in ref_LABEL, then again in run_LABEL, killing it once per KILL
# and resuming (--resume) after each kill:
#   startup     a random moment in the first ~epoch of the process (loading, model, features)
#   epoch       a random moment within one epoch after the process finished its first epoch
#               (so that every such kill lets the run progress)
#   writing     as soon as the process starts writing a file (model or checkpoint)
#   checkpoint  as soon as the process starts writing the checkpoint
crash_and_resume() {
  mode=$1
  flags=$2
  shift 2
  schedule=$*
  echo "$mode: kill schedule seed $SEED (set ROBUSTNESS_SEED to repeat it)"
  ref=ref_$mode
  out=run_$mode
  # shellcheck disable=SC2086
  run "$ref" $flags --out "$ref"
  expect_status "$ref" 0
  # One epoch's wall time, from the uninterrupted run.
  epoch_time=$(awk -F, 'NR > 1 { s += $7; n++ } END { printf "%.3f", n ? s / n : 0.2 }' "$ref/log.csv")

  kills=0
  kills_while_writing=0
  kills_before_training=0
  previous_epochs=0
  attempt=0
  for kind in $schedule; do
    attempt=$((attempt + 1))
    log=$out.attempt$attempt
    # shellcheck disable=SC2086
    $flags --out "$out" --resume > "$log.out" 2> "$log.err" &
    pid=$!
    case $kind in
      startup)
        sleep "$(random "$epoch_time")" ;;
      epoch)
        while kill -0 "$pid" 2> /dev/null && ! grep -q '^epoch ' "$log.out"; do sleep 0.01; done
        sleep "$(random "$epoch_time")" ;;
      writing|checkpoint)
        pattern='*'
        [ "$kind" = checkpoint ] && pattern=checkpoint.safetensors
        while kill -0 "$pid" 2> /dev/null; do
          set -- "$out"/$pattern.tmp."$pid".*
          [ -e "$1" ] && break
        done ;;
      *)
        echo "unknown kill kind $kind" >&2
        exit 2 ;;
    esac
    kill -9 "$pid" 2> /dev/null
    wait "$pid" 2> /dev/null
    result=$?
    if [ "$result" -eq 0 ]; then
      echo "$mode: attempt $attempt ($kind) finished before the kill"
      break
    elif [ "$result" -ne 137 ]; then
      fail "$mode: attempt $attempt exited with status $result, not killed:"
      sed 's/^/    /' "$log.err" >&2
      break
    fi
    kills=$((kills + 1))
    state="during training"
    grep -q '^training:' "$log.out" || state="before training started"
    set -- "$out"/*.tmp."$pid".*
    if [ -e "$1" ]; then
      kills_while_writing=$((kills_while_writing + 1))
      state="while writing $(basename "$1" | sed 's/\.tmp\..*//')"
    fi
    [ "$state" = "before training started" ] && kills_before_training=$((kills_before_training + 1))
    if [ -e "$out/checkpoint.safetensors" ]; then
      expect_loadable "$out/checkpoint.safetensors" "$mode: checkpoint after kill $kills"
      done_now=$(epochs_done "$out/checkpoint.safetensors")
      if [ "${done_now:-0}" -lt "$previous_epochs" ]; then
        fail "$mode: the checkpoint went back from epoch $previous_epochs to ${done_now:-?}"
      fi
      previous_epochs=${done_now:-0}
    fi
    [ -e "$out/model.safetensors" ] && expect_loadable "$out/model.safetensors" "$mode: model after kill $kills"
    echo "$mode: kill $kills ($kind) $state; checkpoint after epoch $previous_epochs"
  done
  # shellcheck disable=SC2086
  run "$out.final" $flags --out "$out" --resume
  expect_status "$out.final" 0
  echo "$mode: $kills kills ($kills_while_writing while a file was being written, $kills_before_training before" \
       "training started), $kills resumes"
  wanted=$(echo $schedule | wc -w)
  [ "$kills" -ge $((wanted - 1)) ] && pass || fail "$mode: only $kills of $wanted kills landed"
  [ "$previous_epochs" -ge 2 ] && pass || fail "$mode: the killed runs reached only epoch $previous_epochs"

  if cmp -s "$ref/model.safetensors" "$out/model.safetensors"; then pass; else
    fail "$mode: model.safetensors differs from the uninterrupted run's"
    "$TOOL" compare "$ref/model.safetensors" "$out/model.safetensors" --exact >&2
  fi
  if "$TOOL" compare "$ref/checkpoint.safetensors" "$out/checkpoint.safetensors" --exact --skip history \
       > compare.out 2>&1; then pass; else
    fail "$mode: the final checkpoint differs from the uninterrupted run's:"
    sed 's/^/    /' compare.out >&2
  fi
  # log.csv without the wall-time column
  cut -d, -f1-6 "$ref/log.csv" > ref_log.csv
  cut -d, -f1-6 "$out/log.csv" > run_log.csv
  if cmp -s ref_log.csv run_log.csv; then pass; else fail "$mode: log.csv differs"; diff ref_log.csv run_log.csv >&2; fi
  if [ -e "$ref/report.txt" ]; then
    if cmp -s "$ref/report.txt" "$out/report.txt"; then pass; else fail "$mode: report.txt differs"; fi
  fi
  set -- "$out"/*.tmp.*
  if [ -e "$1" ]; then fail "$mode: temporary files left behind: $*"; else pass; fi
}

