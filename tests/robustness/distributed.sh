# Data-parallel training of train_emotions under mpirun (scripts/mpirun.sh: as root, and with
# more processes than cores): a process killed with SIGKILL ends the whole run within a bounded
# time with a non-zero status and leaves the last checkpoint intact; resuming continues the run
# exactly (same number of processes: bit-identical to an uninterrupted run; another number: the
# same result as an uninterrupted run with that number); settings, data or weights that differ
# between processes stop every process with a message naming the process and the problem.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
MPIRUN="sh $HERE/../../scripts/mpirun.sh"
LIMIT=60  # seconds: a run that has not ended by then hangs

"$TOOL" dataset data a,b,c 12 16 || exit 2
FLAGS="--data data $TINY --batch-size 8"

# mpirun_bounded NAME MPIRUN_ARGS...: runs mpirun with per-process output in NAME.ranks/ (and
# mpirun's own in NAME.out/.err), killing it after LIMIT seconds; sets $status (124: it hung).
mpirun_bounded() {
  name=$1
  shift
  rm -rf "$name.ranks"
  $MPIRUN --output-filename "$name.ranks" "$@" > "$name.out" 2> "$name.err" &
  bounded_wait "$!"
}
# bounded_wait PID: waits for PID (an mpirun), at most LIMIT seconds; sets $status.
bounded_wait() {
  waited_pid=$1
  deadline=$(($(date +%s) + LIMIT))
  while kill -0 "$waited_pid" 2> /dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.1; done
  if kill -0 "$waited_pid" 2> /dev/null; then
    kill -9 "$waited_pid" 2> /dev/null
    wait "$waited_pid" 2> /dev/null
    status=124
  else
    wait "$waited_pid"
    status=$?
  fi
}
# rank_err NAME RANK: the stderr of process RANK of the run NAME.
rank_err() {
  echo "$1.ranks/1/rank.$2/stderr"
}

# ---- Settings, data and weights that differ between processes: every process says so ----------
# MPMD: mpirun A : B starts process 0 as A and process 1 as B.
expect_shared_error() {
  name=$1
  text=$2
  if [ "$status" -eq 124 ]; then fail "$name: the run hung"; return; fi
  if [ "$status" -ne 0 ]; then pass; else fail "$name: exit status 0"; fi
  for rank in 0 1; do expect_in "$(rank_err "$name" $rank)" "$text" "$name (rank $rank)"; done
  expect_in "$(rank_err "$name" 0)" "rank 1 of 2" "$name names the process"
}
mpirun_bounded settings -np 1 "$TRAIN" $FLAGS --epochs 2 --out settings : -np 1 "$TRAIN" $FLAGS --epochs 3 --out settings
expect_shared_error settings "the settings differ from rank 0's: --epochs 3 here, --epochs 2 on rank 0"

mpirun_bounded missing_data -np 1 "$TRAIN" $FLAGS --out missing : -np 1 "$TRAIN" $FLAGS --data not_here --out missing
expect_shared_error missing_data "--data: 'not_here' is not a directory"

"$TOOL" dataset fewer a,b,c 11 16 > /dev/null || exit 2
mpirun_bounded other_data -np 1 "$TRAIN" $FLAGS --out other : -np 1 "$TRAIN" $FLAGS --data fewer --out other
expect_shared_error other_data "the settings differ from rank 0's: data: 33 images"

"$TOOL" weights weights.safetensors 0.35 || exit 2
head -c 4000 weights.safetensors > truncated.safetensors
mpirun_bounded weights -np 1 "$TRAIN" $FLAGS --weights weights.safetensors --out w : \
  -np 1 "$TRAIN" $FLAGS --weights truncated.safetensors --out w
expect_shared_error weights "truncated.safetensors"

# ---- A process killed during an epoch ----------------------------------------------------------
# kill_a_process NAME RANK COMMAND...: starts the run, kills process RANK with SIGKILL at a random
# moment of the epoch after the first one it completes, and checks that the whole run ends
# within LIMIT seconds with a non-zero status and an intact checkpoint. Sets $epochs_after_kill.
kill_a_process() {
  name=$1
  victim=$2
  shift 2
  before=$(epochs_done "$name/checkpoint.safetensors")  # epochs the checkpoint counts at the start
  $MPIRUN "$@" > "$name.out" 2> "$name.err" &
  launcher=$!
  # The victim is looked up before the epoch starts (mpirun's children are the processes; Open
  # MPI tells each its rank in the environment): on a fast machine the few epochs left after a
  # resume can end while the lookup would run.
  pid=""
  while [ -z "$pid" ] && kill -0 "$launcher" 2> /dev/null; do
    for child in $(ps -o pid= --ppid "$launcher"); do
      if tr '\0' '\n' < "/proc/$child/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$victim"; then pid=$child; fi
    done
    [ -n "$pid" ] || sleep 0.01
  done
  # An epoch has ended when the checkpoint counts one more than at the start (stdout, which
  # mpirun forwards late under load, let the first kill land as late as epoch 5 of 6).
  while kill -0 "$launcher" 2> /dev/null; do
    done_now=$(epochs_done "$name/checkpoint.safetensors")
    [ "${done_now:-0}" -le "${before:-0}" ] || break
    sleep 0.01
  done
  sleep "$(random "$epoch_time")"
  if [ -z "$pid" ] || ! kill -9 "$pid" 2> /dev/null; then
    bounded_wait "$launcher"
    fail "$name: no process $victim to kill (the run had ended with status $status)"
    return
  fi
  killed_at=$(now)
  bounded_wait "$launcher"
  took=$(awk -v a="$killed_at" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$status" -eq 124 ]; then fail "$name: the run did not end within ${LIMIT}s of the kill"; return; fi
  if [ "$status" -ne 0 ]; then pass; else fail "$name: exit status 0 after a process was killed"; fi
  epochs_after_kill=$(epochs_done "$name/checkpoint.safetensors")
  expect_loadable "$name/checkpoint.safetensors" "$name: checkpoint after the kill"
  echo "$name: process $victim killed during epoch $((${epochs_after_kill:-0} + 1)); the run ended ${took}s later" \
       "with status $status; checkpoint after epoch ${epochs_after_kill:-none}"
}

# Fine-tuning with synchronized BatchNorm, 2 processes; killed (process 1, then process 0) and
# resumed with 2: bit-identical to the uninterrupted run.
TUNE="$FLAGS --mode finetune $RANDOMNESS --sync-bn --epochs 6"
mpirun_bounded ref_tune -np 2 "$TRAIN" $TUNE --out ref_tune
expect_status ref_tune 0
epoch_time=$(awk -F, 'NR > 1 { s += $7; n++ } END { printf "%.3f", n ? s / n : 0.2 }' ref_tune/log.csv)
kill_a_process tune 1 -np 2 "$TRAIN" $TUNE --out tune
kill_a_process tune 0 -np 2 "$TRAIN" $TUNE --out tune --resume
expect_in tune.err "resumed from tune/checkpoint.safetensors" "the resumed run restored the checkpoint"
mpirun_bounded tune_final -np 2 "$TRAIN" $TUNE --out tune --resume
expect_status tune_final 0
if "$TOOL" compare ref_tune/checkpoint.safetensors tune/checkpoint.safetensors --exact --skip history > compare_tune.out 2>&1
then pass; else fail "fine-tuning, killed twice and resumed: the final checkpoint differs from the uninterrupted run's"
  sed 's/^/    /' compare_tune.out >&2
fi
if cmp -s ref_tune/model.safetensors tune/model.safetensors; then pass; else fail "fine-tuning: model.safetensors differs"; fi
cut -d, -f1-6 ref_tune/log.csv > ref_tune.csv
cut -d, -f1-6 tune/log.csv > tune.csv
if cmp -s ref_tune.csv tune.csv; then pass; else fail "fine-tuning: log.csv differs"; diff ref_tune.csv tune.csv >&2; fi

# The frozen base (cached features) and its head, 2 processes, killed and resumed with 4: the
# same result as an uninterrupted run with 4. (A different number of processes sums in another
# order; training the head is well-conditioned, so the difference stays at rounding level, while
# fine-tuning MobileNetV2 amplifies rounding to differences of the size of the updates, as it does
# between two thread counts of one process: tests/test_distributed.cpp measures it.)
FROZEN="$FLAGS --mode frozen $RANDOMNESS --sync-bn --epochs 8"
mpirun_bounded ref_frozen -np 4 "$TRAIN" $FROZEN --out ref_frozen
expect_status ref_frozen 0
epoch_time=$(awk -F, 'NR > 1 { s += $7; n++ } END { printf "%.3f", n ? s / n : 0.2 }' ref_frozen/log.csv)
kill_a_process frozen 1 -np 2 "$TRAIN" $FROZEN --out frozen
mpirun_bounded frozen_final -np 4 "$TRAIN" $FROZEN --out frozen --resume
expect_status frozen_final 0
expect_in "$(rank_err frozen_final 0)" "resumed from frozen/checkpoint.safetensors after epoch" "frozen: resumed with 4"
if "$TOOL" compare ref_frozen/checkpoint.safetensors frozen/checkpoint.safetensors --tolerance 1e-6 --skip history \
     > compare_frozen.out 2>&1; then pass; else
  fail "frozen, 2 processes killed and resumed with 4: the final checkpoint differs from an uninterrupted run with 4"
  sed 's/^/    /' compare_frozen.out >&2
fi
tail -1 compare_frozen.out
if grep -q "test accuracy" "frozen_final.ranks/1/rank.0/stdout" &&
   [ "$(grep "test accuracy" ref_frozen.ranks/1/rank.0/stdout)" = "$(grep "test accuracy" frozen_final.ranks/1/rank.0/stdout)" ]
then pass; else fail "frozen: the test report differs from the uninterrupted run's"; fi
finish
