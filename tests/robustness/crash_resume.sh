# Crash safety: training runs are killed (SIGKILL) at random moments, during training and while
# the checkpoint or model file is being written; after every kill the checkpoint must load, and
# after resuming (--resume) to the end, the final weights and history must be bit-identical to
# those of an uninterrupted run with the same seed and thread count. Fine-tuning with 8 kills,
# the frozen mode (cached features) and distillation with
# an averaged model with 4 each. ROBUSTNESS_SEED=N repeats a kill schedule.
. "$(dirname "$0")/common.sh"

"$TOOL" dataset data a,b,c 12 16 || exit 2

# The first kill of each mode lands in the first file the run writes: the model after epoch 1.
crash_and_resume finetune "$TRAIN --data data --mode finetune $TINY $RANDOMNESS --epochs 8" writing startup epoch checkpoint epoch writing epoch checkpoint
crash_and_resume frozen "$TRAIN --data data --mode frozen $TINY $RANDOMNESS --epochs 6" writing epoch checkpoint epoch
# Distillation from two teachers at two input sizes with a moving average of the weights (whose
# state is in the checkpoint).
# shellcheck disable=SC2086
run teacher32 "$TRAIN" --data data --mode finetune $TINY --epochs 1 --out teacher32
# shellcheck disable=SC2086
run teacher40 "$TRAIN" --data data --mode finetune $TINY --epochs 1 --size 40 --out teacher40
crash_and_resume distill "$TRAIN --data data --mode finetune $TINY $RANDOMNESS --epochs 6 --ema-decay 0.9
  --teacher teacher32/model.safetensors,teacher40/model.safetensors --distill-weight 0.7" writing epoch checkpoint epoch
finish
