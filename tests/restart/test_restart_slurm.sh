#!/bin/bash
# Checkpoint-restart through a real Slurm (tests/slurm/slurm_env.sh): `shardq
# submit` a tiny quantize job (2 ranks, srun --mpi=pmix), and each time a new
# layer is committed send the batch script Slurm's warning signal
# (`scancel -b -s USR1`, what --signal=B:USR1@margin does before a time limit)
# until the job has restarted twice: each time the script forwards it, shardq
# stops after a commit with exit 75, the script requeues the job, and the next
# run resumes. At the end Slurm says COMPLETED with Restarts=2, the log shows
# SLURM_RESTART_COUNT=0, 1, 2 at the runs' starts, and the output equals the uninterrupted np=2
# reference (run with mpirun outside Slurm) byte for byte.
DIR=$(cd "$(dirname "$0")" && pwd)
: "${SHARDQ_SOURCE_DIR:?set SHARDQ_SOURCE_DIR to the source tree}"
. "$DIR/restart_lib.sh"
export SHARDQ_SBATCH_TEMPLATE="$SHARDQ_SOURCE_DIR/slurm/shardq.sbatch.in"
. "$SHARDQ_SOURCE_DIR/tests/slurm/slurm_env.sh"
LAYERS=6 # a run stops after its first commit twice, then finishes the rest
sq_rs_setup slurm || exit $?
sq_slurm_start || exit $?
trap 'sq_slurm_stop; if [ $fails -eq 0 ] && [ -z "${SQ_KEEP:-}" ]; then rm -rf "$W"; else echo "kept $W" >&2; fi' EXIT

CK="$W/ck"
OUT="$W/out"
export SHARDQ_TEST_LAYER_SLEEP=6 # > 6 s a layer: the script holds a warning until 10 s into a run
# shellcheck disable=SC2046
if ! "$SHARDQ_BIN" submit --nodes 1 --ntasks-per-node $NP --time 00:10:00 --signal-margin 60 \
    --checkpoint-dir "$CK" -- $(qargs) --out "$OUT" >"$W/submit.out" 2>&1; then
  cat "$W/submit.out" >&2
  fail "submit failed"
  sq_rs_finish test_restart_slurm
fi
ID=$(cat "$CK/slurm_job_id")
echo "submitted job $ID at $(elapsed) s"

signals=0 base=0
for k in 1 2; do
  # Wait until this run has committed a layer of its own, then warn it.
  t=0
  while [ $t -lt 600 ]; do # 600 x 0.2 s
    d=$(layers_done "$CK")
    [ "$(squeue -h -j "$ID" -o %T 2>/dev/null)" = RUNNING ] && [ "$d" -gt "$base" ] 2>/dev/null && break
    sleep 0.2
    t=$((t + 1))
  done
  [ $t -lt 600 ] || break
  scancel -b -s USR1 "$ID" || fail "scancel -b -s USR1 $ID failed"
  signals=$k
  echo "USR1 #$k after $d committed layer(s) at $(elapsed) s"
  # The run stops after a commit and requeues itself: Restarts becomes k.
  t=0
  while [ "$(sq_slurm_job_field "$ID" Restarts)" != "$k" ] && [ $t -lt 450 ]; do sleep 0.2; t=$((t + 1)); done
  base=$(layers_done "$CK")
  echo "requeued (Restarts=$k) with $base committed layer(s) at $(elapsed) s"
done
[ $signals -eq 2 ] || fail "sent $signals USR1 signals, want 2 (layers done $(layers_done "$CK"))"
if ! sq_slurm_wait_gone "$ID" 180; then
  fail "job $ID still active after 180 s: $(squeue -h -j "$ID" -o '%T %r')"
  scancel "$ID"
fi
state=$(sq_slurm_job_field "$ID" JobState)
restarts=$(sq_slurm_job_field "$ID" Restarts)
exitc=$(sq_slurm_job_field "$ID" ExitCode)
echo "job $ID: JobState=$state Restarts=$restarts ExitCode=$exitc at $(elapsed) s"
[ "$state" = COMPLETED ] || fail "JobState=$state, want COMPLETED"
[ "$restarts" = 2 ] || fail "Restarts=$restarts, want 2"
LOG="$CK/slurm-$ID.out"
# One start line per run, carrying Slurm's SLURM_RESTART_COUNT: 0, 1, 2.
counts=$(sed -n 's/^shardq: job .* run [0-9]* on .*(SLURM_RESTART_COUNT=\([0-9]*\)).*/\1/p' "$LOG" | tr '\n' ' ')
[ "$counts" = "0 1 2 " ] || fail "the log shows SLURM_RESTART_COUNT '$counts', want '0 1 2 '"
[ "$(grep -c 'requeueing job' "$LOG")" = 2 ] || fail "the log does not show 2 requeues"
same_as_ref "$OUT" "slurm" && echo "output identical to the reference"
if [ $fails -ne 0 ]; then
  echo "----- $LOG" >&2
  cat "$LOG" >&2
  sq_slurm_dump_logs
fi
sq_rs_finish test_restart_slurm
