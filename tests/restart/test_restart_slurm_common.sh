# Shared by the test_restart_slurm*.sh scripts (not a test by itself): the
# restart_lib.sh model and np=2 reference, a real single-node Slurm
# (tests/slurm/slurm_env.sh), `shardq submit` and the checks every Slurm
# restart test ends with.
#   LAYERS=N; . test_restart_slurm_common.sh; sq_rss_setup NAME || exit $?
# Needs SHARDQ_BIN and SHARDQ_SOURCE_DIR; skips (77) when Slurm cannot start.
RSS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${SHARDQ_SOURCE_DIR:?set SHARDQ_SOURCE_DIR to the source tree}"
. "$RSS_DIR/restart_lib.sh"
export SHARDQ_SBATCH_TEMPLATE="$SHARDQ_SOURCE_DIR/slurm/shardq.sbatch.in"
. "$SHARDQ_SOURCE_DIR/tests/slurm/slurm_env.sh"

# sq_rss_setup NAME: Slurm up first (cheap to skip), then model + reference.
sq_rss_setup() {
  sq_slurm_start || return $?
  sq_rs_setup "$1"
  local rc=$?
  if [ $rc -ne 0 ]; then
    sq_slurm_stop
    return $rc
  fi
  trap 'sq_slurm_stop; if [ $fails -eq 0 ] && [ -z "${SQ_KEEP:-}" ]; then rm -rf "$W"; else echo "kept $W" >&2; fi' EXIT
  CK="$W/ck"
  OUT="$W/out"
}

# sq_rss_submit TIME MARGIN: submit the np=2 quantize of the test model into
# OUT with checkpoints in CK; sets ID. The job inherits this environment
# (sbatch exports it), SHARDQ_TEST_LAYER_SLEEP included.
sq_rss_submit() {
  # shellcheck disable=SC2046
  if ! "$SHARDQ_BIN" submit --nodes 1 --ntasks-per-node $NP --time "$1" --signal-margin "$2" \
      --checkpoint-dir "$CK" -- $(qargs) --out "$OUT" >"$W/submit.out" 2>&1; then
    cat "$W/submit.out" >&2
    fail "shardq submit failed"
    return 1
  fi
  ID=$(cat "$CK/slurm_job_id")
  echo "submitted job $ID (--time $1, --signal-margin $2) at $(elapsed) s"
}

# sq_rss_state: the job's squeue state ("" once it has left the queue).
sq_rss_state() { squeue -h -j "$ID" -o %T 2>/dev/null; }

# sq_rss_wait_commit ABOVE SECS: 0 once the job is RUNNING and the journal
# has more than ABOVE committed layers (layers_done counts from 1; -1 none).
sq_rss_wait_commit() {
  local above=$1 n=$(($2 * 5)) t=0
  while [ $t -lt $n ]; do
    [ "$(sq_rss_state)" = RUNNING ] && [ "$(layers_done "$CK")" -gt "$above" ] 2>/dev/null && return 0
    sleep 0.2
    t=$((t + 1))
  done
  return 1
}

# sq_rss_wait_restarts K SECS: 0 once Slurm shows Restarts=K or more.
sq_rss_wait_restarts() {
  local k=$1 n=$(($2 * 5)) t=0 r
  while [ $t -lt $n ]; do
    r=$(sq_slurm_job_field "$ID" Restarts)
    [ -n "$r" ] && [ "$r" -ge "$k" ] && return 0
    sleep 0.2
    t=$((t + 1))
  done
  return 1
}

# sq_rss_finish_checks WHAT RESTARTS SECS: wait for the job to leave the queue,
# then Slurm must say COMPLETED, ExitCode 0:0 and Restarts=RESTARTS; the log
# must show one start per run with SLURM_RESTART_COUNT=0..RESTARTS in order;
# the output must equal the reference byte for byte (cmp of every file).
sq_rss_finish_checks() {
  local what=$1 want=$2 secs=$3
  if ! sq_slurm_wait_gone "$ID" "$secs"; then
    fail "$what: job $ID still active after $secs s: $(squeue -h -j "$ID" -o '%T %r')"
    scancel "$ID"
  fi
  local state restarts exitc
  state=$(sq_slurm_job_field "$ID" JobState)
  restarts=$(sq_slurm_job_field "$ID" Restarts)
  exitc=$(sq_slurm_job_field "$ID" ExitCode)
  echo "$what: job $ID JobState=$state Restarts=$restarts ExitCode=$exitc at $(elapsed) s"
  [ "$state" = COMPLETED ] || fail "$what: JobState=$state, want COMPLETED"
  [ "$restarts" = "$want" ] || fail "$what: Restarts=$restarts, want $want"
  [ "$exitc" = 0:0 ] || fail "$what: ExitCode=$exitc, want 0:0"
  LOG="$CK/slurm-$ID.out"
  local counts expect
  counts=$(sed -n 's/^shardq: job .* run [0-9]* on .*(SLURM_RESTART_COUNT=\([0-9]*\)).*/\1/p' "$LOG" | tr '\n' ' ')
  expect=$(seq 0 "$want" | tr '\n' ' ')
  [ "$counts" = "$expect" ] || fail "$what: the log shows SLURM_RESTART_COUNT '$counts', want '$expect'"
  same_as_ref "$OUT" "$what" && echo "$what: output identical to the reference (cmp of every file)"
}

# sq_rss_report NAME: on failure print the job log and the daemons' logs; exit.
sq_rss_report() {
  if [ $fails -ne 0 ]; then
    [ -n "${LOG:-}" ] && [ -f "$LOG" ] && { echo "----- $LOG" >&2; cat "$LOG" >&2; }
    sq_slurm_dump_logs
  fi
  sq_rs_finish "$1"
}
