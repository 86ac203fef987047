#!/bin/bash
# README's first command: install the dependencies, build shardq, synthesize a
# small Llama model (6 layers, hidden 256), quantize it W4A16 (group 128) with
# GPTQ and with RTN, and report size, time, perplexity and KL for both. GPTQ
# must beat RTN on KL to the original; the script checks and says so.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${SHARDQ_BUILD_DIR:-build}
if [ -z "${SHARDQ_SKIP_DEPS:-}" ]; then bash .ci/install-deps; fi
cmake -S . -B "$BUILD" >/dev/null
cmake --build "$BUILD" -j2 --target shardq
BIN=$BUILD/coordinator/shardq
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shardq-quickstart.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

echo "== synthesize a Llama-architecture model (6 layers, hidden 256, bf16) in $WORK/model"
"$BIN" synth --out "$WORK/model" --layers 6 --hidden 256 --heads 8 --kv-heads 4 \
  --intermediate 688 --vocab 1024 --calib-samples 64 --calib-seq-len 128 --eval-samples 16 -q

field() { sed -n "s/.*\"$1\": \([-0-9.e+]*\).*/\1/p" <<<"$2"; }
declare -A KL PPL SEC SIZE
for m in gptq rtn; do
  echo "== quantize W4A16 (int4 symmetric, group 128) with $m"
  t0=$(date +%s.%N)
  "$BIN" quantize --model "$WORK/model" --calib "$WORK/model/calib.safetensors" \
    --out "$WORK/$m" --scheme W4A16 --group 128 --method "$m" -q
  t1=$(date +%s.%N)
  SEC[$m]=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  SIZE[$m]=$(du -sb "$WORK/$m"/*.safetensors | awk '{s+=$1} END{printf "%.2f", s/1048576}')
  J=$("$BIN" eval --model "$WORK/model" --quantized "$WORK/$m" --data "$WORK/model/eval.safetensors" --json)
  KL[$m]=$(field kl_mean "$J"); PPL[$m]=$(field ppl_quantized "$J"); BASE=$(field ppl_model "$J")
done
ORIG=$(du -sb "$WORK/model"/model*.safetensors | awk '{s+=$1} END{printf "%.2f", s/1048576}')
echo
printf "%-10s %10s %10s %12s %12s\n" model "size MiB" "time s" perplexity "KL mean"
printf "%-10s %10s %10s %12.4f %12s\n" original "$ORIG" - "$BASE" -
for m in gptq rtn; do
  printf "%-10s %10s %10s %12.4f %12.6f\n" "$m" "${SIZE[$m]}" "${SEC[$m]}" "${PPL[$m]}" "${KL[$m]}"
done
echo "(synthetic weights and uniform random tokens: perplexities are large; compare the rows)"
if awk -v g="${KL[gptq]}" -v r="${KL[rtn]}" 'BEGIN{exit !(g < r)}'; then
  echo "OK: GPTQ beats RTN on KL to the original (${KL[gptq]} < ${KL[rtn]})"
else
  echo "FAIL: GPTQ KL ${KL[gptq]} is not below RTN KL ${KL[rtn]}"; exit 1
fi
