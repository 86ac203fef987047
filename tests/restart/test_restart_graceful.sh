#!/bin/bash
# Graceful stop: SIGUSR1 to mpirun (which forwards it to every rank) once the
# first layer is committed: the job stops after a commit with exit 75 and
# fewer than all layers committed, no index written; `--resume` finishes and
# the output equals the uninterrupted np=2 reference byte for byte. Then the
# same with SIGTERM sent to the ranks themselves.
DIR=$(cd "$(dirname "$0")" && pwd)
. "$DIR/restart_lib.sh"
sq_rs_setup graceful || exit $?
# wait_done CKPT N SECS: until at least N layers are committed.
wait_done() {
  local t=0
  while [ $t -lt $(($3 * 20)) ]; do
    [ "$(layers_done "$1")" -ge "$2" ] 2>/dev/null && return 0
    sleep 0.05
    t=$((t + 1))
  done
  return 1
}
for how in usr1-mpirun term-ranks; do
  out="$W/o-$how" ck="$W/ck-$how"
  SHARDQ_TEST_LAYER_SLEEP=1 start_q "$out" --checkpoint-dir "$ck"
  mp=$MP
  if ! wait_done "$ck" 1 30; then fail "$how: no layer committed within 30 s"; kill "$mp"; wait "$mp"; continue; fi
  if [ $how = usr1-mpirun ]; then
    kill -USR1 "$mp"
  else
    for p in $(pgrep -P "$mp"); do kill -TERM "$p"; done # the ranks: children of this mpirun
  fi
  wait "$mp"
  rc=$?
  done_=$(layers_done "$ck")
  [ $rc -eq 75 ] || fail "$how: exit code $rc, want 75: $(tail -n 3 "$out.log" | tr '\n' ' ')"
  [ "$done_" -ge 1 ] && [ "$done_" -lt $LAYERS ] || fail "$how: $done_ layers committed, want 1..$((LAYERS - 1))"
  [ -f "$out/model.safetensors.index.json" ] && fail "$how: the stopped run wrote an index"
  grep -q "stopped at a safe point" "$out.log" || fail "$how: the log does not say it stopped: $(cat "$out.log")"
  echo "$how: exit $rc after $done_ committed layer(s) at $(elapsed) s"
  resume_ok "$out" "$ck" "$how" && echo "$how: resumed, identical at $(elapsed) s"
done
sq_rs_finish test_restart_graceful
