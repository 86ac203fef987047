#!/bin/bash
# `shardq submit --dry-run` prints a batch script with the lines Slurm needs for
# checkpoint-restart (--requeue, --signal=B:USR1@margin, --output in CKPT), the
# resources asked for, a quantize command line that survives shell quoting, and
# no leftover placeholders; bad flags are usage errors (exit 2). No Slurm needed.
set -u
: "${SHARDQ_BIN:?set SHARDQ_BIN}"
: "${SHARDQ_SOURCE_DIR:?set SHARDQ_SOURCE_DIR}"
export SHARDQ_SBATCH_TEMPLATE="$SHARDQ_SOURCE_DIR/slurm/shardq.sbatch.in"
unset SHARDQ_SUBMIT_COMMAND
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/shardq-dryrun.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
CK="$TMP/ck"

"$SHARDQ_BIN" submit --help >"$TMP/help" || fail "submit --help exited $?"
grep -q -- "--signal-margin" "$TMP/help" || fail "--help does not document --signal-margin"

"$SHARDQ_BIN" submit --nodes 3 --ntasks-per-node 8 --gpus-per-node 8 --time 1-02:00:00 --partition gpu \
  --checkpoint-dir "$CK" --signal-margin 600 --dry-run -- --model /m --scheme W4A16 --out "/o dir/it's" \
  >"$TMP/script" 2>"$TMP/err" || fail "dry run exited $?: $(cat "$TMP/err")"
S="$TMP/script"
for line in "#SBATCH --requeue" "#SBATCH --signal=B:USR1@600" "#SBATCH --nodes=3" "#SBATCH --ntasks-per-node=8" \
  "#SBATCH --gpus-per-node=8" "#SBATCH --time=1-02:00:00" "#SBATCH --partition=gpu" \
  "#SBATCH --output=$CK/slurm-%j.out"; do
  grep -qxF -- "$line" "$S" || fail "script lacks the line '$line'"
done
grep -q "{{" "$S" && fail "script has an unfilled placeholder: $(grep -n '{{' "$S")"
head -n 1 "$S" | grep -qx '#!/bin/bash' || fail "script does not start with #!/bin/bash"
bash -n "$S" || fail "script is not valid bash"
[ -e "$CK" ] && fail "--dry-run created $CK"
# The command line, run through the shell, must give back the exact arguments.
cmd=$(grep -E "^srun --mpi=pmix .* quantize " "$S" | sed 's/ &$//')
[ -n "$cmd" ] || fail "no 'srun --mpi=pmix ... quantize' line"
args=$(eval "printf '%s\n' ${cmd#srun --mpi=pmix }")
want=$(printf '%s\n' "$SHARDQ_BIN" quantize --model /m --scheme W4A16 --out "/o dir/it's" --checkpoint-dir "$CK" --resume)
[ "$(readlink -f "$(echo "$args" | head -n 1)")" = "$(readlink -f "$SHARDQ_BIN")" ] || fail "job runs $(echo "$args" | head -n 1)"
[ "$(echo "$args" | tail -n +2)" = "$(echo "$want" | tail -n +2)" ] || fail "job arguments: '$args', want '$want'"

# No GPUs, no partition: no such lines.
"$SHARDQ_BIN" submit --nodes 1 --time 30 --checkpoint-dir "$CK" --dry-run -- --model m >"$TMP/s2" || fail "cpu dry run"
grep -q -- "--gpus-per-node\|--partition" "$TMP/s2" && fail "a CPU job without partition got gpu/partition lines"
grep -qxF "#SBATCH --signal=B:USR1@300" "$TMP/s2" || fail "default signal margin is not 300"

# Usage errors exit 2 and say what is wrong.
expect_usage() { # WHAT ARGS...
  local what=$1
  shift
  "$SHARDQ_BIN" submit "$@" >/dev/null 2>"$TMP/uerr"
  local rc=$?
  [ $rc -eq 2 ] || fail "$what: exit $rc, want 2"
}
expect_usage "no --time" --nodes 1 --checkpoint-dir "$CK" --dry-run -- --model m
expect_usage "bad --time" --nodes 1 --time 1:xx --checkpoint-dir "$CK" --dry-run -- --model m
expect_usage "margin >= time" --nodes 1 --time 00:05:00 --signal-margin 300 --checkpoint-dir "$CK" --dry-run -- --model m
expect_usage "--resume after --" --nodes 1 --time 10 --checkpoint-dir "$CK" --dry-run -- --model m --resume
expect_usage "no quantize args" --nodes 1 --time 10 --checkpoint-dir "$CK" --dry-run --
expect_usage "space in ckpt" --nodes 1 --time 10 --checkpoint-dir "$TMP/a b" --dry-run -- --model m
expect_usage "nodes 0" --nodes 0 --time 10 --checkpoint-dir "$CK" --dry-run -- --model m
[ -e "$TMP/a b" ] && fail "a rejected --checkpoint-dir was created"

if [ $fails -ne 0 ]; then
  echo "----- script" >&2
  cat "$S" >&2
  echo "test_submit_dryrun: $fails check(s) failed" >&2
  exit 1
fi
echo "test_submit_dryrun: all checks passed"
