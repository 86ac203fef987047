#!/bin/bash
# A REAL Slurm time limit (no simulated signal): `shardq submit --time
# 00:01:00 --signal-margin 45`, so slurmctld itself sends the batch script
# SIGUSR1 (--signal=B:USR1@45) before the limit. The quantize is slowed with
# SHARDQ_TEST_LAYER_SLEEP so that one run cannot finish in a minute (3 layers
# x >= 36 s). Each run must stop at a safe point (exit 75 after a commit),
# requeue itself before Slurm kills it, and the job must finish COMPLETED after
# >= 2 restarts with output byte-identical to the uninterrupted np=2 reference.
#
# Timing (measured on slurmctld 22.05 here): the time-limit check, which also
# sends the warning, runs every 30 s, and the warning is due as soon as
# now + margin + 30 >= end, i.e. at the first check after the start; it came
# 15-27 s into each run, and again after every requeue. A layer that lasts
# 36 s after its commit therefore always sees the warning during its first
# layer: every run commits exactly one layer and ends after ~40 s, well before
# the 60 s limit (the kill comes on a check at >= 60 s). The warning reaches
# the last run too; that run has nothing left and completes.
DIR=$(cd "$(dirname "$0")" && pwd)
. "$DIR/test_restart_slurm_common.sh"
LAYERS=3 # (after restart_lib.sh, which sets it) one layer per run
sq_rss_setup slurm-timelimit || exit $?
export SHARDQ_TEST_LAYER_SLEEP=${SQ_TEST_LAYER_SLEEP:-36}

sq_rss_submit 00:01:00 45 || sq_rss_report test_restart_slurm_timelimit
# Nothing is sent by this test: it only watches. Up to 3 runs of ~40 s, 2
# requeues of ~15 s and scheduling: 240 s is a generous bound.
sq_rss_finish_checks timelimit 2 240
sq_rss_report_runs() {
  local n
  n=$(grep -c "got SIGUSR1" "$LOG")
  [ "$n" -ge 2 ] || fail "the log shows $n SIGUSR1 warnings from Slurm, want >= 2"
  n=$(grep -c "stopped at a safe point after layer" "$LOG")
  [ "$n" = 2 ] || fail "the log shows $n stops at a safe point (exit 75), want 2"
  n=$(grep -c "requeueing job $ID" "$LOG")
  [ "$n" = 2 ] || fail "the log shows $n self-requeues, want 2"
  grep -q "DUE TO TIME LIMIT\|TIMEOUT" "$LOG" && fail "a run hit the time limit"
  # The runs' lengths, from the start lines and the requeue/done lines.
  grep -E "^shardq: (job .* run|stopped at a safe point:|done at)" "$LOG" | sed 's/, checkpoint dir.*//'
}
[ -f "${LOG:-/}" ] && sq_rss_report_runs
sq_rss_report test_restart_slurm_timelimit
