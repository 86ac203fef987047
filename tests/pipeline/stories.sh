#!/bin/bash
# stories260K (a real pretrained model) on TinyStories: fp32 perplexity must be
# the reference's 5.7585, and quantized perplexity at or below the reference
# figures of ../shared/testdata/README.md (measured with an independent fp32
# implementation of the reference GPTQ / RTN).
#   stories.sh fp32 | gptq | rtn
set -u
D=${SHARDQ_TESTDATA:-}
if [ -z "$D" ] || [ ! -f "$D/stories260K/model.safetensors" ] || [ ! -f "$D/tinystories/eval.safetensors" ]; then
  echo "skip: stories260K / tinystories test data not found (SHARDQ_TESTDATA=$D)"; exit 77
fi
BIN=${SHARDQ_BIN:?SHARDQ_BIN not set}
export OPENBLAS_NUM_THREADS=1
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
M=$D/stories260K; C=$D/tinystories/calib.safetensors; E=$D/tinystories/eval.safetensors
# field NAME JSON -> value
field() { sed -n "s/.*\"$1\": \([-0-9.e+]*\).*/\1/p" <<<"$2"; }
check_le() { # value limit label
  if awk -v a="$1" -v b="$2" 'BEGIN{exit !(a <= b)}'; then echo "ok: $3 $1 <= $2";
  else echo "FAIL: $3 $1 > $2"; exit 1; fi
}
case "$1" in
  fp32)
    J=$("$BIN" eval --model "$M" --data "$E" --json) || exit 1
    P=$(field ppl_model "$J"); echo "fp32 PPL $P (reference 5.7585)"
    awk -v p="$P" 'BEGIN{d=p-5.7585; if (d<0) d=-d; exit !(d <= 0.001)}' || { echo "FAIL: fp32 PPL $P != 5.7585"; exit 1; }
    ;;
  gptq)
    "$BIN" quantize --model "$M" --calib "$C" --out "$TMP/q" --scheme W4A16 --method gptq --group 0 -q 2>/dev/null || exit 1
    J=$("$BIN" eval --model "$M" --quantized "$TMP/q" --data "$E" --json) || exit 1
    echo "$J"
    check_le "$(field ppl_quantized "$J")" 6.3536 "GPTQ 4-bit sym per-channel PPL (reference 6.3526)"
    ;;
  rtn)
    "$BIN" quantize --model "$M" --calib "$C" --out "$TMP/q" --scheme W4A16 --method rtn --group 0 -q 2>/dev/null || exit 1
    J=$("$BIN" eval --model "$M" --quantized "$TMP/q" --data "$E" --json) || exit 1
    echo "$J"
    check_le "$(field ppl_quantized "$J")" 6.8141 "RTN 4-bit sym per-channel PPL (reference 6.8131)"
    ;;
  *) echo "usage: stories.sh fp32|gptq|rtn"; exit 2 ;;
esac
exit 0
