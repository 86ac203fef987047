#!/bin/bash
# Damage and changed inputs are detected on --resume. A job is stopped after
# layer 1 commits (fail point after-journal from layer 1), then:
#  - a changed calibration file: refused, the message names the calibration
#    file, and the checkpoint dir is byte-for-byte and name-for-name untouched;
#  - the newest state file corrupted (one byte flipped): the resume falls back
#    one generation (redoes layer 1) and the output is still byte-identical;
#  - the newest state file deleted, on a fresh stopped job: the same;
#  - --checkpoint-dir with an existing journal but no --resume: refused.
DIR=$(cd "$(dirname "$0")" && pwd)
. "$DIR/restart_lib.sh"
sq_rs_setup detect || exit $?
stopped_job() { # OUT CKPT: a job killed right after layer 1 committed
  SHARDQ_FAILPOINT=after-journal:0 SHARDQ_FAILPOINT_MODE=exit SHARDQ_FAILPOINT_LAYER=1 \
    run_q "$1" --checkpoint-dir "$2"
  [ "$(layers_done "$2")" = 2 ] || fail "setup: $(layers_done "$2") layers committed, want 2"
}
snap() { (cd "$1" && find . -type f -printf '%p %s %T@\n' | sort && find . -type f -exec md5sum {} + | sort); }

out="$W/o-calib" ck="$W/ck-calib"
stopped_job "$out" "$ck"
cp "$W/m/calib.safetensors" "$W/calib2.safetensors"
printf '\001' | dd of="$W/calib2.safetensors" bs=1 seek=200 conv=notrunc status=none
before=$(snap "$ck")
if CALIB="$W/calib2.safetensors" run_q "$out" --checkpoint-dir "$ck" --resume; then
  fail "calib: a changed calibration file was accepted"
fi
grep -q "calibration file changed" "$out.log" && grep -q "calib2.safetensors" "$out.log" ||
  fail "calib: the message does not name the calibration file: $(cat "$out.log")"
[ "$before" = "$(snap "$ck")" ] || fail "calib: the checkpoint dir changed on a refused resume"
echo "calib: refused: $(grep -o 'cannot resume: calibration file changed[^(]*' "$out.log" | head -n 1)"
if run_q "$out" --checkpoint-dir "$ck"; then fail "no-resume: an existing journal was reused without --resume"; fi
grep -q -- "--resume" "$out.log" || fail "no-resume: message: $(cat "$out.log")"
resume_ok "$out" "$ck" "calib (original file)" && echo "calib: resumed with the original file, identical"

out="$W/o-corrupt" ck="$W/ck-corrupt"
stopped_job "$out" "$ck"
newest=$(ls "$ck"/state-rank00001-layer*.h5 | sort | tail -n 1)
sz=$(stat -c %s "$newest")
printf '\377' | dd of="$newest" bs=1 seek=$((sz - 100)) conv=notrunc status=none
resume_ok "$out" "$ck" "corrupt" && echo "corrupt: resumed, identical"
grep -q "fell back one generation" "$out.log" || fail "corrupt: the log does not say it fell back: $(cat "$out.log")"
grep -q "$(basename "$newest")" "$out.log" || fail "corrupt: the log does not name $(basename "$newest")"

out="$W/o-deleted" ck="$W/ck-deleted"
stopped_job "$out" "$ck"
newest=$(ls "$ck"/state-rank00000-layer*.h5 | sort | tail -n 1)
rm -f "$newest"
resume_ok "$out" "$ck" "deleted" && echo "deleted $(basename "$newest"): resumed, identical"
grep -q "fell back one generation" "$out.log" || fail "deleted: the log does not say it fell back"
sq_rs_finish test_restart_detect
