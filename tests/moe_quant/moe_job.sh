#!/usr/bin/env bash
# `shardq quantize` / `shardq eval` on a MoE checkpoint end to end: synthesize
# ARCH, quantize with GPTQ at np=1 and np=2 and with RTN at np=2, check the
# tensor set and that the two rank counts agree (test_moe_job check), that
# `shardq eval` gives GPTQ a lower KL to the original than RTN (and KL 0 for
# the model against itself), that the summary reports tokens per expert, and
# that --moe-routed-only still quantizes every expert.
# usage: moe_job.sh TEST_MOE_JOB SHARDQ ARCH
set -euo pipefail
job=$1 shardq=$2 arch=$3
mpirun=${SHARDQ_MPIRUN:-mpirun}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/shardq-moe-job-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$job" synth "$tmp/in" "$arch"
q() { # np out method [flags...]
  local np=$1 out=$2 method=$3
  shift 3
  "$mpirun" -np "$np" --oversubscribe "$shardq" quantize --model "$tmp/in" \
    --calib "$tmp/in/calib.safetensors" --out "$tmp/$out" --scheme W4A16 --group 32 \
    --method "$method" --batch 3 "$@" 2> "$tmp/$out.log" || { cat "$tmp/$out.log"; exit 1; }
}
q 1 np1 gptq
q 2 np2 gptq
q 2 rtn rtn
grep -q "tokens/expert (min/median/max)" "$tmp/np2.log" ||
  { echo "FAIL: no tokens-per-expert summary"; cat "$tmp/np2.log"; exit 1; }
grep -E "^[0-9]+ +moe " "$tmp/np2.log"
"$job" check "$tmp/in" "$tmp/np1" "$tmp/np2"
q 2 routed gptq --moe-routed-only
"$job" tensors "$tmp/in" "$tmp/routed"
kl() { "$shardq" eval --model "$tmp/in" --quantized "$1" --data "$tmp/in/eval.safetensors" 2>&1 |
         sed -n 's/.*per token: mean \([0-9.eE+-]*\).*/\1/p' | head -1; }
k0=$(kl "$tmp/in")
[ "$k0" = "0.000000" ] || { echo "FAIL: KL of the model against itself is '$k0'"; exit 1; }
kg=$(kl "$tmp/np2")
kr=$(kl "$tmp/rtn")
echo "KL(original || quantized) mean: gptq $kg, rtn $kr"
awk -v g="$kg" -v r="$kr" 'BEGIN { exit !(g != "" && r != "" && g + 0 < r + 0) }' ||
  { echo "FAIL: GPTQ KL '$kg' is not below RTN KL '$kr'"; exit 1; }
echo "moe job $arch: ok"
