#!/bin/bash
# Command-line contract of quantize / eval: --help, refusing to write over the
# input or into a non-empty directory, a missing calibration tensor.
set -u
BIN=${SHARDQ_BIN:?SHARDQ_BIN not set}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$BIN" quantize --help | grep -q -- "--calib" || fail "quantize --help"
"$BIN" eval --help | grep -q -- "--quantized" || fail "eval --help"
"$BIN" synth --out "$TMP/m" --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 \
  --vocab 128 --calib-samples 4 --calib-seq-len 16 --eval-samples 2 -q || fail synth
"$BIN" quantize --model "$TMP/m" --calib "$TMP/m/calib.safetensors" --out "$TMP/m" -q 2>"$TMP/err" && fail "--out == --model accepted"
grep -q "input model directory" "$TMP/err" || fail "message for --out == --model: $(cat "$TMP/err")"
mkdir -p "$TMP/full"; echo x >"$TMP/full/f"
"$BIN" quantize --model "$TMP/m" --calib "$TMP/m/calib.safetensors" --out "$TMP/full" -q 2>"$TMP/err" && fail "non-empty --out accepted"
grep -q -- "--force" "$TMP/err" || fail "message for non-empty --out: $(cat "$TMP/err")"
"$BIN" quantize --model "$TMP/m" --calib "$TMP/m/config.json" --out "$TMP/o" -q 2>"$TMP/err" && fail "bad calib accepted"
grep -q "config.json" "$TMP/err" || fail "message for a bad calibration file: $(cat "$TMP/err")"
"$BIN" quantize --model "$TMP/m" --calib "$TMP/m/calib.safetensors" --out "$TMP/full" --force -q 2>/dev/null || fail "--force"
[ -f "$TMP/full/model.safetensors.index.json" ] || fail "--force output has no index"
"$BIN" eval --model "$TMP/m" --data "$TMP/m/eval.safetensors" >/dev/null || fail "single-model eval"
echo "ok"
