#!/bin/bash
# A random rank is SIGKILLed at a random time (3 seeds; the ranks sleep
# SHARDQ_TEST_LAYER_SLEEP after each commit so the job lasts ~1.5 s): the job
# ends, `--resume` finishes, and the output equals the uninterrupted np=2
# reference byte for byte. A kill that lands after the job finished is
# reported and still compared.
DIR=$(cd "$(dirname "$0")" && pwd)
. "$DIR/restart_lib.sh"
sq_rs_setup sigkill || exit $?
# rank_pid MPIRUN_PID RANK: the pid of that rank (a child of mpirun).
rank_pid() {
  local p
  for p in $(pgrep -P "$1"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$p"
      return 0
    fi
  done
  return 1
}
for seed in 2 3 7; do # victims: rank 0, rank 1, rank 0
  RANDOM=$seed
  victim=$((RANDOM % NP))
  delay_ms=$((100 + RANDOM % 1300))
  out="$W/o-$seed" ck="$W/ck-$seed"
  SHARDQ_TEST_LAYER_SLEEP=0.5 start_q "$out" --checkpoint-dir "$ck"
  mp=$MP
  sleep "$(awk -v m=$delay_ms 'BEGIN { printf "%.3f", m / 1000 }')"
  pid=""
  for _ in $(seq 20); do pid=$(rank_pid "$mp" "$victim") && break; sleep 0.05; done
  if [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; then killed=yes; else killed="no (already done)"; fi
  wait "$mp"
  rc=$?
  done_=$(layers_done "$ck")
  echo "seed $seed: rank $victim killed at ${delay_ms} ms: $killed, rc $rc, $done_ of $LAYERS layers committed"
  if [ "$killed" = yes ] && [ $rc -eq 0 ] && [ "$done_" != "$LAYERS" ]; then
    fail "seed $seed: a rank was killed mid-run but the job exited 0"
  fi
  resume_ok "$out" "$ck" "seed $seed" && echo "seed $seed: resumed, identical at $(elapsed) s"
done
sq_rs_finish test_restart_sigkill
