# The library's fit() itself, through tests/tools/fit_tool (a small CNN on generated data with the
# standard callbacks), not through train_emotions: crash safety (SIGKILL at random moments, while
# writing, resume to the end bit-identical to an uninterrupted run), a checkpoint write that fails
# midway, divergence, determinism, refused resumes and early stopping across a resume.
. "$(dirname "$0")/common.sh"

FIT=$(dirname "$TOOL")/fit_tool
if [ ! -x "$FIT" ]; then
  echo "missing program $FIT (build fit_tool first)" >&2
  exit 2
fi
FLAGS="$FIT --threads 1 --epochs 6"

# ---- Crash safety ------------------------------------------------------------------------------
# 30 short epochs (~0.1 s each): enough left to kill eight times on a loaded machine.
crash_and_resume fit "$FIT --threads 1 --epochs 30 --items 960" writing startup epoch checkpoint epoch writing epoch checkpoint

# ---- Determinism: same seed, same bits; another seed, other weights ---------------------------
for copy in a b; do
  run "same_$copy" $FLAGS --out "same_$copy"
  expect_status "same_$copy" 0
done
if "$TOOL" compare same_a/checkpoint.safetensors same_b/checkpoint.safetensors --exact --skip history \
     > compare_same.out 2>&1; then pass; else fail "two runs with the same seed differ"; cat compare_same.out >&2; fi
run other_seed $FLAGS --seed 8 --out other_seed
if "$TOOL" compare same_a/checkpoint.safetensors other_seed/checkpoint.safetensors --tolerance 1e-3 --skip history \
     > compare_seed.out 2>&1; then fail "another seed gives the same weights within 1e-3"; else pass; fi

# ---- Refused resumes: different settings, not a checkpoint, a truncated one ----------------------
cp same_a/checkpoint.safetensors saved.safetensors
run refused_lr $FLAGS --out same_a --resume --lr 0.002
expect_status refused_lr 1
expect_in refused_lr.err "cannot resume from 'same_a/checkpoint.safetensors': it was written by a run with different settings" "different lr"
expect_in refused_lr.err "--lr: 0.003 in the checkpoint, 0.002 now" "different lr"
if cmp -s same_a/checkpoint.safetensors saved.safetensors; then pass; else fail "a refused resume changed the checkpoint"; fi
mkdir -p not_checkpoint truncated
cp same_a/model.safetensors not_checkpoint/checkpoint.safetensors
run not_checkpoint $FLAGS --out not_checkpoint --resume
expect_status not_checkpoint 1
expect_in not_checkpoint.err "'not_checkpoint/checkpoint.safetensors': it is not a training checkpoint" "model as checkpoint"
head -c 3000 saved.safetensors > truncated/checkpoint.safetensors
run truncated $FLAGS --out truncated --resume
expect_status truncated 1
expect_in truncated.err "truncated/checkpoint.safetensors" "truncated checkpoint"

# ---- A checkpoint write that fails midway (file size limit, like a full disk) -------------------
# A checkpoint after epoch 2 or later: the run is killed once it reports epoch 2 (4x the items, so
# that the kill lands well before the end).
LIMITED="$FLAGS --items 1920"
$LIMITED --out limited > limited_first.out 2> limited_first.err &
pid=$!
while kill -0 "$pid" 2> /dev/null && ! grep -q '^epoch 2/' limited_first.out; do sleep 0.01; done
kill -9 "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
cp limited/checkpoint.safetensors limited_saved.safetensors
# 8 blocks (4 or 8 KB, by the shell's block size) let the model file (2 KB) through and stop the
# checkpoint (6 KB); SIGXFSZ is ignored so that write() fails with EFBIG instead.
run limited sh -c "trap '' XFSZ; ulimit -f 8 && exec \"\$0\" \"\$@\"" $LIMITED --out limited --resume
expect_status limited 1
expect_in limited.err "File too large" "file size limit"
if cmp -s limited/checkpoint.safetensors limited_saved.safetensors; then pass; else
  fail "file size limit: the checkpoint changed"
fi
set -- limited/*.tmp.*
if [ -e "$1" ]; then fail "temporary files left behind: $*"; else pass; fi
run limited_resumed $LIMITED --out limited --resume
expect_status limited_resumed 0
run limited_reference $LIMITED --out limited_reference
if "$TOOL" compare limited_reference/checkpoint.safetensors limited/checkpoint.safetensors --exact --skip history \
     > compare_limited.out 2>&1; then pass; else
  fail "resumed after a failed write: the final checkpoint differs from an uninterrupted run's"
  cat compare_limited.out >&2
fi

# ---- Divergence: AdamW with lr 4 and weight decay 1 multiplies every weight by -3 per step ------
run diverge $FIT --threads 1 --epochs 12 --lr 4 --weight-decay 1 --out diverge
expect_status diverge 1
expect_in diverge.err "training diverged:" "divergence message"
message=$(grep "training diverged:" diverge.err)
step=$(echo "$message" | sed -n 's/.* step \([0-9][0-9]*\) (epoch \([0-9][0-9]*\)).*/\1/p')
parameter=$(echo "$message" | sed -n "s/.*'\([A-Za-z0-9_]*\/[A-Za-z_]*\)'.*/\1/p")
if [ -n "$step" ] && [ -n "$parameter" ]; then pass; else fail "the message names no step or parameter: $message"; fi
if [ -e diverge/checkpoint.safetensors ]; then
  expect_loadable diverge/checkpoint.safetensors "checkpoint after divergence"
  done_epochs=$(epochs_done diverge/checkpoint.safetensors)
  # 480 items in batches of 16: 30 steps per epoch; the step lies in the epoch after the checkpoint.
  if [ "${step:-0}" -ge $((done_epochs * 30)) ] && [ "${step:-0}" -lt $(((done_epochs + 1) * 30)) ]; then pass; else
    fail "checkpoint after epoch $done_epochs, but the run stopped at step $step"
  fi
fi
echo "stopped: $message"

# ---- Early stopping: a resumed run that had run out of patience trains no further ---------------
run early $FIT --threads 1 --epochs 40 --patience 2 --lr 0.05 --out early
expect_status early 0
expect_in early.out "early stopping: no improvement of val_accuracy for 2 epochs" "early stopping"
stopped_at=$(epochs_done early/checkpoint.safetensors)
if [ "${stopped_at:-40}" -lt 40 ]; then pass; else fail "early stopping did not stop before epoch 40"; fi
cp early/checkpoint.safetensors early_saved.safetensors
run early_again $FIT --threads 1 --epochs 40 --patience 2 --lr 0.05 --out early --resume
expect_status early_again 0
expect_in early_again.out "early stopping" "early stopping after resume"
if cmp -s early/checkpoint.safetensors early_saved.safetensors; then pass; else
  fail "a resumed run that had stopped early trained again"
fi
finish
