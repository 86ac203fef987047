#!/bin/bash
# Requeue protocol on a real single-node Slurm (tests/slurm/slurm_env.sh):
#  1. `shardq submit` a job whose stand-in command exits 75 on its first run
#     and 0 on the next: the batch script requeues it once, it completes.
#  2. a stand-in that waits for SIGUSR1 and then exits 75; `scancel -b -s USR1`
#     (what --signal=B:USR1@margin does before the time limit) reaches only the
#     batch shell, which must forward it: the job requeues and completes.
# The expectations come from Slurm itself (scontrol show job: JobState,
# Restarts, ExitCode) and from what the stand-ins record, not from shardq.
set -u
: "${SHARDQ_BIN:?set SHARDQ_BIN to the shardq executable}"
: "${SHARDQ_SOURCE_DIR:?set SHARDQ_SOURCE_DIR to the source tree}"
export SHARDQ_SBATCH_TEMPLATE="$SHARDQ_SOURCE_DIR/slurm/shardq.sbatch.in"
. "$SHARDQ_SOURCE_DIR/tests/slurm/slurm_env.sh"
sq_slurm_start || exit $?

fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# submit CKPT STANDIN: submit the stand-in and print the job id.
submit() {
  SHARDQ_SUBMIT_COMMAND="bash $2" "$SHARDQ_BIN" submit --nodes 1 --ntasks-per-node 1 --time 00:05:00 \
    --signal-margin 60 --checkpoint-dir "$1" -- >"$1.submit.out" 2>&1 || { cat "$1.submit.out" >&2; return 1; }
  cat "$1/slurm_job_id"
}

check_done() { # ID LOG WHAT
  local id=$1
  if ! sq_slurm_wait_gone "$id" 60; then
    fail "$3: job $id still active after 60 s: $(squeue -h -j "$id" -o '%T %r')"
    scancel "$id" 2>/dev/null
    return
  fi
  local state restarts exitc
  state=$(sq_slurm_job_field "$id" JobState)
  restarts=$(sq_slurm_job_field "$id" Restarts)
  exitc=$(sq_slurm_job_field "$id" ExitCode)
  [ "$state" = COMPLETED ] || fail "$3: JobState=$state, want COMPLETED"
  [ "$restarts" = 1 ] || fail "$3: Restarts=$restarts, want 1"
  [ "$exitc" = 0:0 ] || fail "$3: ExitCode=$exitc, want 0:0"
  echo "$3: job $id JobState=$state Restarts=$restarts ExitCode=$exitc at $(elapsed) s"
}

# --- 1: exit 75 on the first run, 0 on the second
CK1="$SQ_SLURM_DIR/ck1"
mkdir -p "$CK1"
cat >"$CK1/standin.sh" <<'STANDIN'
echo "run restart=${SLURM_RESTART_COUNT:-0}" >>"$(dirname "$0")/runs.log"
[ "${SLURM_RESTART_COUNT:-0}" = 0 ] && exit 75
exit 0
STANDIN
ID1=$(submit "$CK1" "$CK1/standin.sh") || { fail "submit 1 failed"; ID1=""; }

# --- 2: wait for USR1 (forwarded by the batch script), then exit 75
CK2="$SQ_SLURM_DIR/ck2"
mkdir -p "$CK2"
cat >"$CK2/standin.sh" <<'STANDIN'
d=$(dirname "$0")
echo "run restart=${SLURM_RESTART_COUNT:-0}" >>"$d/runs.log"
[ "${SLURM_RESTART_COUNT:-0}" != 0 ] && exit 0
trap 'echo "got USR1" >>"$d/runs.log"; exit 75' USR1
touch "$d/ready"
while :; do sleep 0.1; done
STANDIN
ID2=$(submit "$CK2" "$CK2/standin.sh") || { fail "submit 2 failed"; ID2=""; }

if [ -n "$ID1" ]; then
  check_done "$ID1" "$CK1/runs.log" "requeue-on-75"
  want=$'run restart=0\nrun restart=1'
  [ "$(cat "$CK1/runs.log" 2>/dev/null)" = "$want" ] || fail "requeue-on-75: runs.log is '$(cat "$CK1/runs.log" 2>/dev/null)'"
  grep -q "requeueing job $ID1" "$CK1/slurm-$ID1.out" || fail "requeue-on-75: the log does not say it requeued"
  # Every start logs Slurm's SLURM_RESTART_COUNT (the stand-in saw the same).
  counts=$(sed -n 's/^shardq: job .* run [0-9]* on .*(SLURM_RESTART_COUNT=\([0-9]*\)).*/\1/p' "$CK1/slurm-$ID1.out" | tr '\n' ' ')
  [ "$counts" = "0 1 " ] || fail "requeue-on-75: the log shows SLURM_RESTART_COUNT '$counts', want '0 1 '"
fi

if [ -n "$ID2" ]; then
  t=0
  while [ ! -f "$CK2/ready" ] && [ $t -lt 300 ]; do sleep 0.2; t=$((t + 1)); done
  if [ ! -f "$CK2/ready" ]; then
    fail "usr1: the stand-in never started (job $ID2: $(squeue -h -j "$ID2" -o '%T %r'))"
    scancel "$ID2"
  else
    scancel -b -s USR1 "$ID2" || fail "usr1: scancel -b -s USR1 $ID2 failed"
    check_done "$ID2" "$CK2/runs.log" "usr1-forwarded"
    want=$'run restart=0\ngot USR1\nrun restart=1'
    [ "$(cat "$CK2/runs.log" 2>/dev/null)" = "$want" ] || fail "usr1: runs.log is '$(cat "$CK2/runs.log" 2>/dev/null)'"
    grep -q "got SIGUSR1" "$CK2/slurm-$ID2.out" || fail "usr1: the batch script did not log the signal"
  fi
fi

if [ $fails -ne 0 ]; then
  for f in "$CK1"/slurm-*.out "$CK2"/slurm-*.out; do [ -f "$f" ] && { echo "----- $f" >&2; cat "$f" >&2; }; done
  sq_slurm_dump_logs
  echo "test_slurm_requeue: $fails check(s) failed" >&2
  exit 1
fi
echo "test_slurm_requeue: all checks passed in $(elapsed) s"
