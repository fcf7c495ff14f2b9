# Write failures: an output directory that cannot be written (read-only, as a user other than
# root), a file-size limit that makes the checkpoint write fail midway (as a full disk would),
# and output paths that are not what they should be. Training must stop with a message naming
# the path and a non-zero status, and the previous checkpoint must stay intact and loadable.
. "$(dirname "$0")/common.sh"

"$TOOL" dataset data a,b,c 12 16 || exit 2
flags="--data data --mode finetune $TINY --epochs 3"

# A checkpoint after epoch 1: the run is killed once it reports the first epoch.
# shellcheck disable=SC2086
"$TRAIN" $flags --out out > first.out 2> first.err &
pid=$!
while kill -0 "$pid" 2> /dev/null && ! grep -q '^epoch 1/' first.out; do sleep 0.01; done
kill -9 "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
if [ "$(epochs_done out/checkpoint.safetensors)" != 1 ]; then
  echo "setup failed: no checkpoint after epoch 1" >&2
  cat first.err >&2
  exit 2
fi
cp out/checkpoint.safetensors saved_checkpoint.safetensors
cp out/model.safetensors saved_model.safetensors

# expect_checkpoint_intact WHAT
expect_checkpoint_intact() {
  if cmp -s out/checkpoint.safetensors saved_checkpoint.safetensors; then pass; else
    fail "$1: the checkpoint changed"
  fi
  expect_loadable out/checkpoint.safetensors "$1"
  set -- out/*.tmp.*
  if [ -e "$1" ]; then fail "temporary files left behind: $*"; else pass; fi
}

# ---- 1. Read-only output directory ------------------------------------------------------------
as_user=""
if [ "$(id -u)" -eq 0 ]; then
  # Root ignores permissions: run as nobody (the work directory must be readable by it).
  if setpriv --reuid=nobody --regid=nogroup --clear-groups true 2> /dev/null; then
    as_user="setpriv --reuid=nobody --regid=nogroup --clear-groups"
  elif setpriv --reuid=65534 --regid=65534 --clear-groups true 2> /dev/null; then
    as_user="setpriv --reuid=65534 --regid=65534 --clear-groups"
  else
    as_user=none
  fi
fi
if [ "$as_user" != none ] && [ -n "$as_user" ] && ! $as_user test -r data/a/img_000.png; then
  as_user=none  # e.g. a build directory inside a private home
fi
if [ "$as_user" = none ]; then
  echo "skipped the read-only directory checks: cannot run as an unprivileged user who can read $WORK"
else
  chmod a-w out
  # shellcheck disable=SC2086
  run readonly $as_user "$TRAIN" $flags --out out --resume
  expect_status readonly 1
  expect_in readonly.err "cannot write to the output directory 'out'" "read-only directory"
  expect_in readonly.err "Permission denied" "read-only directory"
  expect_checkpoint_intact "read-only directory"
  # evaluate writes its report into --out.
  # shellcheck disable=SC2086
  run readonly_evaluate $as_user "$EVALUATE" --model saved_model.safetensors --data data --out out --threads 1
  expect_status readonly_evaluate 1
  expect_in readonly_evaluate.err "out/report.txt" "evaluate into a read-only directory"
  expect_in readonly_evaluate.err "Permission denied" "evaluate into a read-only directory"
  chmod u+w out
fi

# ---- 2. The checkpoint write fails midway (file size limit, like a full disk) -------------------
# The limit (5000 blocks: 2.5 or 5 MB, depending on the shell's block size) lets the model file
# (2.3 MB) through and stops the checkpoint (6.8 MB); SIGXFSZ is ignored so that write() fails
# with EFBIG instead of killing the process.
run limited sh -c "trap '' XFSZ; ulimit -f 5000 && exec \"\$0\" \"\$@\"" "$TRAIN" $flags --out out --resume
expect_status limited 1
expect_in limited.err "out/checkpoint.safetensors" "file size limit"
expect_in limited.err "File too large" "file size limit"
expect_checkpoint_intact "file size limit"
# Without the limit the run resumes from the intact checkpoint and ends where an uninterrupted run
# ends.
# shellcheck disable=SC2086
run resumed "$TRAIN" $flags --out out --resume
expect_status resumed 0
# shellcheck disable=SC2086
run reference "$TRAIN" $flags --out reference
expect_status reference 0
if "$TOOL" compare reference/checkpoint.safetensors out/checkpoint.safetensors --exact --skip history \
     > compare.out 2>&1; then pass; else
  fail "resumed after a failed write: the final checkpoint differs from an uninterrupted run's"
  cat compare.out >&2
fi

# ---- 3. Output paths that are not directories or regular files ----------------------------------
echo "not a directory" > plain_file
# shellcheck disable=SC2086
run out_is_file "$TRAIN" $flags --out plain_file
expect_status out_is_file 2
expect_in out_is_file.err "--out: 'plain_file' exists and is not a directory" "--out is a file"
run evaluate_out_is_file "$EVALUATE" --model saved_model.safetensors --data data --out plain_file --threads 1
expect_status evaluate_out_is_file 2
expect_in evaluate_out_is_file.err "--out: 'plain_file' exists and is not a directory" "evaluate --out is a file"
# An atomic write renames over its target: a FIFO (or, as root, /dev/null) must be refused, not
# replaced by a regular file.
mkfifo fifo
"$TOOL" weights base.safetensors 0.35 || exit 2
run extract_fifo "$EXTRACT" --weights base.safetensors --alpha 0.35 --size 32 --threads 1 --out fifo data/a
expect_status extract_fifo 1
expect_in extract_fifo.err "cannot write 'fifo': it exists and is not a regular file" "extract_features --out FIFO"
if [ -p fifo ]; then pass; else fail "extract_features replaced the FIFO"; fi
finish
