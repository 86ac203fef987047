#!/bin/bash
# Every fail point x {rank 0, last rank}, SHARDQ_FAILPOINT_MODE=exit (the rank
# _exits 137 as if SIGKILLed; Open MPI then ends the job) armed from layer 1
# (SHARDQ_FAILPOINT_LAYER) so that layer 0 is committed first: the job must
# die, then `--resume` must finish with output byte-identical (cmp of every
# file) to an uninterrupted np=2 run without a checkpoint dir.
DIR=$(cd "$(dirname "$0")" && pwd)
. "$DIR/restart_lib.sh"
sq_rs_setup failpoints || exit $?
for fp in load hessian reduce solve write share before-journal after-journal; do
  for r in 0 $((NP - 1)); do
    case_="$fp:$r"
    out="$W/o-$fp-$r" ck="$W/ck-$fp-$r"
    SHARDQ_FAILPOINT="$fp:$r" SHARDQ_FAILPOINT_MODE=exit SHARDQ_FAILPOINT_LAYER=1 \
      run_q "$out" --checkpoint-dir "$ck"
    rc=$?
    done_=$(layers_done "$ck")
    if [ $rc -eq 0 ]; then fail "$case_: the job did not die"; continue; fi
    # Layer 0 was committed; the killed layer (1) was not, except after-journal.
    want=1
    [ "$fp" = after-journal ] && want=2
    [ "$done_" = "$want" ] || fail "$case_: $done_ layers committed after the failure, want $want"
    [ -f "$out/model.safetensors.index.json" ] && fail "$case_: an index was written by the failed run"
    resume_ok "$out" "$ck" "$case_" && echo "$case_: died (rc $rc, $done_ committed), resumed, identical at $(elapsed) s"
  done
done
sq_rs_finish test_restart_failpoints
