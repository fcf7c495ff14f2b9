# Non-finite training: AdamW with --lr 4 --weight-decay 1 multiplies every weight by (1 - 4) = -3
# per step, so the parameters grow by 3^step and overflow float32 after a few epochs (a large
# plain learning rate does not diverge reliably: BatchNorm makes most weights scale-invariant).
# The run must stop with a non-zero status and a message naming the step and the parameter, and
# the checkpoint of the last good epoch must stay finite and loadable.
. "$(dirname "$0")/common.sh"

"$TOOL" dataset data a,b,c 12 16 || exit 2
# shellcheck disable=SC2086
run diverge "$TRAIN" --data data --out out --mode finetune $TINY --optimizer adamw --lr 4 --weight-decay 1 \
  --epochs 12
expect_status diverge 1
expect_in diverge.err "training diverged:" "divergence message"
expect_in diverge.err "the last good checkpoint is kept" "divergence message"
# The message names a parameter ('layer/tensor') or the optimizer's state of one
# ('optimizer/layer/tensor/v': Adam's second moment may overflow first) and the step; the step
# lies after the epochs the checkpoint holds.
message=$(grep "training diverged:" diverge.err)
parameter=$(echo "$message" | sed -n "s/.*'\([A-Za-z0-9_/]*\/[A-Za-z_]*\)'.*/\1/p")
step=$(echo "$message" | sed -n 's/.* step \([0-9][0-9]*\) (epoch \([0-9][0-9]*\)).*/\1/p')
epoch=$(echo "$message" | sed -n 's/.* step \([0-9][0-9]*\) (epoch \([0-9][0-9]*\)).*/\2/p')
if [ -n "$parameter" ]; then pass; else fail "the message names no parameter: $message"; fi
if [ -n "$step" ] && [ -n "$epoch" ]; then pass; else fail "the message names no step and epoch: $message"; fi
echo "stopped: $message"

if [ -e out/checkpoint.safetensors ]; then
  expect_loadable out/checkpoint.safetensors "checkpoint after divergence"
  done_epochs=$(epochs_done out/checkpoint.safetensors)
  # 30 training images in batches of 4: 8 steps per epoch.
  if [ "${done_epochs:-0}" -ge 1 ] && [ "${epoch:-0}" -eq $((done_epochs + 1)) ] &&
     [ "${step:-0}" -ge $((done_epochs * 8)) ] && [ "${step:-0}" -lt $(((done_epochs + 1) * 8)) ]; then pass; else
    fail "checkpoint after epoch $done_epochs, but the run stopped at step $step (epoch $epoch)"
  fi
  expect_loadable out/model.safetensors "best model after divergence"
  lines=$(wc -l < out/log.csv)
  if [ "$lines" -eq $((done_epochs + 1)) ]; then pass; else fail "log.csv has $lines lines for $done_epochs epochs"; fi
else
  fail "no checkpoint: the run diverged in its first epoch (the test expects one good epoch)"
fi
finish
