#!/bin/bash
# `shardq quantize` under mpirun: faults and the real model.
#   dist.sh fail_error  SHARDQ_FAILPOINT=solve:1 (an error on rank 1): the job
#                       exits non-zero within 20 s and rank 0 prints rank 1's
#                       error "rank 1 (host): fail point 'solve' ..."
#   dist.sh fail_exit   rank 1 dies (exit 137) at 'share': non-zero within 20 s
#   dist.sh fail_hang   rank 2 hangs at 'reduce': the others' deadline
#                       (SHARDQ_COMM_TIMEOUT=2) ends the job within 20 s
#   dist.sh stories     stories260K (skipped without ../shared/testdata) at
#                       np = 1 and 2: perplexity of the two outputs within 0.1%
set -u
BIN=${SHARDQ_BIN:?SHARDQ_BIN not set}
MPIRUN=${SHARDQ_MPIRUN:-mpirun}
export OPENBLAS_NUM_THREADS=1
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
synth() {
  "$BIN" synth --out "$TMP/m" --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 \
    --vocab 256 --calib-samples 16 --calib-seq-len 32 --eval-samples 2 -q || fail synth
}
# expect_fail NP LIMIT_S REGEX: run quantize on NP ranks, expect a non-zero exit
# within LIMIT_S seconds and REGEX in the output.
expect_fail() {
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout 60 "$MPIRUN" -np "$1" --oversubscribe "$BIN" quantize --model "$TMP/m" \
    --calib "$TMP/m/calib.safetensors" --out "$TMP/o" --group 32 -q >"$TMP/log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  cat "$TMP/log"
  [ $rc -ne 0 ] || fail "the job succeeded"
  [ $rc -ne 124 ] || fail "the job hung (killed by timeout after 60 s)"
  awk -v a="$t0" -v b="$t1" -v l="$2" 'BEGIN{exit !(b - a < l)}' ||
    fail "the job took $(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}') s (limit $2 s)"
  grep -Eq "$3" "$TMP/log" || fail "no line matching '$3'"
  [ ! -f "$TMP/o/model.safetensors.index.json" ] || fail "a failed job wrote the index"
  echo "ok: exit $rc in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s"
}
case "$1" in
  fail_error)
    synth
    SHARDQ_FAILPOINT=solve:1 expect_fail 3 20 \
      "shardq quantize: error: rank 1 \([^)]+\): fail point 'solve' triggered on rank 1"
    # rank 0 alone prints the error
    [ "$(grep -c 'error:' "$TMP/log")" = 1 ] || fail "the error was printed more than once"
    ;;
  fail_exit)
    synth
    SHARDQ_FAILPOINT=share:1 SHARDQ_FAILPOINT_MODE=exit SHARDQ_COMM_TIMEOUT=5 \
      expect_fail 2 20 "fail point 'share': exiting with 137"
    ;;
  fail_hang)
    synth
    SHARDQ_FAILPOINT=reduce:2 SHARDQ_FAILPOINT_MODE=hang SHARDQ_COMM_TIMEOUT=2 \
      expect_fail 3 20 "timed out after 2 s"
    ;;
  stories)
    D=${SHARDQ_TESTDATA:-}
    if [ -z "$D" ] || [ ! -f "$D/stories260K/model.safetensors" ] || [ ! -f "$D/tinystories/eval.safetensors" ]; then
      echo "skip: stories260K / tinystories test data not found (SHARDQ_TESTDATA=$D)"; exit 77
    fi
    M=$D/stories260K; C=$D/tinystories/calib.safetensors; E=$D/tinystories/eval.safetensors
    field() { sed -n "s/.*\"$1\": \([-0-9.e+]*\).*/\1/p" <<<"$2"; }
    for np in 1 2; do
      "$MPIRUN" -np $np --oversubscribe "$BIN" quantize --model "$M" --calib "$C" \
        --out "$TMP/q$np" --scheme W4A16 --method gptq --group 0 -q 2>"$TMP/log$np" ||
        { cat "$TMP/log$np"; fail "quantize np=$np"; }
      J=$("$BIN" eval --model "$M" --quantized "$TMP/q$np" --data "$E" --json) || fail "eval np=$np"
      P[$np]=$(field ppl_quantized "$J")
      echo "np=$np: perplexity ${P[$np]}"
    done
    awk -v a="${P[1]}" -v b="${P[2]}" 'BEGIN{d=(b-a)/a; if (d<0) d=-d; exit !(a > 0 && d <= 0.001)}' ||
      fail "perplexity np=2 ${P[2]} vs np=1 ${P[1]}: more than 0.1% apart"
    ls "$TMP/q2" | grep -q "rank00001" || fail "np=2 wrote no shard of rank 1"
    ;;
  *) echo "usage: dist.sh fail_error|fail_exit|fail_hang|stories"; exit 2 ;;
esac
echo "ok"
