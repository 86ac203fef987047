#!/bin/bash
# `scontrol requeue ID` mid-run on a real Slurm. Slurm sends SIGTERM to the
# batch script and to the job's tasks, SIGKILL KillWait (5 s) later, and puts
# the job back in the queue itself. Two cases, each compared byte for byte
# (cmp of every file) with the uninterrupted np=2 reference:
#  graceful: layers pause 2 s after their commit (SHARDQ_TEST_LAYER_SLEEP), so
#    shardq reaches its next safe point well within KillWait and exits 75; two
#    requeues, each right after a commit of the current run; the job completes
#    with Restarts=2.
#  killed: layers pause 9 s after their commit and the requeue comes right
#    after a commit, so the ranks cannot reach the next safe point before
#    Slurm's SIGKILL; the next run resumes from the last commit; Restarts=1.
# The log must show SLURM_RESTART_COUNT=0..N, one per run.
DIR=$(cd "$(dirname "$0")" && pwd)
. "$DIR/test_restart_slurm_common.sh"
LAYERS=3 # (after restart_lib.sh, which sets it) a run per requeue and one more
sq_rss_setup slurm-requeue || exit $?

# requeue_case NAME SLEEP REQUEUES: submit, `scontrol requeue` REQUEUES times,
# each as soon as the running run has committed a layer of its own.
requeue_case() {
  local name=$1 k base=0 t0
  export SHARDQ_TEST_LAYER_SLEEP=$2
  CK="$W/ck-$name"
  OUT="$W/out-$name"
  t0=$(elapsed)
  sq_rss_submit 00:10:00 60 || return
  for k in $(seq 1 "$3"); do
    if ! sq_rss_wait_commit "$base" 120; then
      fail "$name: no new commit within 120 s (layers done $(layers_done "$CK"), job $(sq_rss_state))"
      return
    fi
    scontrol requeue "$ID" || fail "$name: scontrol requeue $ID failed"
    echo "$name: scontrol requeue #$k after $(layers_done "$CK") committed layer(s) at $(elapsed) s"
    sq_rss_wait_restarts "$k" 120 || fail "$name: Slurm never showed Restarts=$k"
    # Restarts counts at once; the old run may still commit while it stops
    # (COMPLETING). Once the job is PENDING again that run is gone (a requeued
    # job waits ~cred_expire before it may start) and its last commit counts.
    sq_slurm_wait_state "$ID" PENDING 60 || fail "$name: job $ID not PENDING after the requeue"
    base=$(layers_done "$CK")
    echo "$name: back in the queue (Restarts=$k) with $base committed layer(s) at $(elapsed) s"
  done
  sq_rss_finish_checks "$name" "$3" 180
  local n
  n=$(grep -c "got SIGTERM" "$LOG")
  [ "$n" -ge "$3" ] || fail "$name: the batch script logged $n SIGTERMs, want >= $3"
  n=$(grep -c "stopped at a safe point after layer" "$LOG")
  case $name in
    graceful) [ "$n" = "$3" ] || fail "$name: $n runs stopped at a safe point (exit 75), want $3" ;;
    killed) [ "$n" = 0 ] || fail "$name: $n runs stopped at a safe point, want 0 (killed by Slurm)" ;;
  esac
  # The batch script must not requeue a job that Slurm is already requeueing.
  grep -q "scontrol requeue $ID failed" "$LOG" && fail "$name: the batch script's own requeue failed"
  echo "$name: done in $(awk -v a="$t0" -v b="$(elapsed)" 'BEGIN { printf "%.1f", b - a }') s"
  if [ $fails -ne 0 ]; then
    echo "----- $LOG" >&2
    cat "$LOG" >&2
  fi
}

requeue_case graceful 2 2
requeue_case killed 9 1
LOG=""
sq_rss_report test_restart_slurm_requeue
