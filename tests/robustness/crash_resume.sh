# Crash safety: training runs are killed (SIGKILL) at random moments, during training and while
# the checkpoint or model file is being written; after every kill the checkpoint must load, and
# after resuming (--resume) to the end, the final weights and history must be bit-identical to
# those of an uninterrupted run with the same seed and thread count. Fine-tuning with 8 kills,
# the frozen mode (cached features) with 4. ROBUSTNESS_SEED=N repeats a kill schedule.
. "$(dirname "$0")/common.sh"

SEED=${ROBUSTNESS_SEED:-$(($(date +%s) % 100000))}
echo "kill schedule seed $SEED (set ROBUSTNESS_SEED to repeat it)"
random_counter=0
# random MAX: a number in [0, MAX) drawn from the seed.
random() {
  random_counter=$((random_counter + 1))
  awk -v s="$SEED" -v k="$random_counter" -v m="$1" 'BEGIN { srand(s * 1000 + k); printf "%.3f", rand() * m }'
}

"$TOOL" dataset data a,b,c 12 16 || exit 2

# crash_and_resume MODE EPOCHS KILL...: trains MODE for EPOCHS, killing the run once per KILL:
#   startup     a random moment in the first ~epoch of the process (loading, model, features)
#   epoch       a random moment within one epoch after the process finished its first epoch
#               (so that every such kill lets the run progress)
#   writing     as soon as the process starts writing a file (model or checkpoint)
#   checkpoint  as soon as the process starts writing the checkpoint
crash_and_resume() {
  mode=$1
  epochs=$2
  shift 2
  schedule=$*
  flags="--data data --mode $mode $TINY $RANDOMNESS --epochs $epochs"
  ref=ref_$mode
  out=run_$mode
  # shellcheck disable=SC2086
  run "$ref" "$TRAIN" $flags --out "$ref"
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
    "$TRAIN" $flags --out "$out" --resume > "$log.out" 2> "$log.err" &
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
    echo "$mode: kill $kills ($kind) $state; checkpoint after epoch $previous_epochs of $epochs"
  done
  # shellcheck disable=SC2086
  run "$out.final" "$TRAIN" $flags --out "$out" --resume
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
  if "$TOOL" compare "$ref/checkpoint.safetensors" "$out/checkpoint.safetensors" --exact --skip training/history \
       > compare.out 2>&1; then pass; else
    fail "$mode: the final checkpoint differs from the uninterrupted run's:"
    sed 's/^/    /' compare.out >&2
  fi
  # log.csv without the wall-time column
  cut -d, -f1-6 "$ref/log.csv" > ref_log.csv
  cut -d, -f1-6 "$out/log.csv" > run_log.csv
  if cmp -s ref_log.csv run_log.csv; then pass; else fail "$mode: log.csv differs"; diff ref_log.csv run_log.csv >&2; fi
  if cmp -s "$ref/report.txt" "$out/report.txt"; then pass; else fail "$mode: report.txt differs"; fi
  set -- "$out"/*.tmp.*
  if [ -e "$1" ]; then fail "$mode: temporary files left behind: $*"; else pass; fi
}

# The first kill of each mode lands in the first file the run writes: the model after epoch 1.
crash_and_resume finetune 8 writing startup epoch checkpoint epoch writing epoch checkpoint
crash_and_resume frozen 6 writing epoch checkpoint epoch
finish
