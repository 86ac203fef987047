#!/bin/bash
# Distributed `shardq quantize` benchmark: a synthetic Llama model quantized
# (GPTQ W4A16, group 128) at np = 1, 2, 4 ranks under mpirun; prints per rank
# the seconds per layer, peak RSS and checkpoint bytes read, as the job itself
# reports them ("rank r: ..." lines of its summary).
# Correctness checked while it runs: every run succeeds and writes its index,
# and the bytes read add up: every Linear weight byte is read once across the
# job, so  Σ_r bytes_r(np) - bytes_0(np=1) = (np - 1) · (embedding table +
# the layers' norms), the parts every rank reads (a formula, not a figure the
# job prints).
#   bench/bench_dist.sh [BUILD_DIR]   (default build-dist); env LAYERS, HIDDEN,
#   INTER, SAMPLES, SEQ to change the model and the calibration set.
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SHARDQ_BIN:-$HERE/${1:-build-dist}/coordinator/shardq}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
L=${LAYERS:-4} H=${HIDDEN:-256} I=${INTER:-688} V=${VOCAB:-1024} S=${SAMPLES:-32} T=${SEQ:-64}
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$BIN" synth --out "$TMP/m" --layers "$L" --hidden "$H" --heads 8 --kv-heads 4 --intermediate "$I" \
  --vocab "$V" --calib-samples "$S" --calib-seq-len "$T" --eval-samples 2 -q || fail synth
SHARED=$(( (V * H + 2 * H * L) * 2 ))  # bf16 embedding table + 2 norms per layer
echo "model: $L layers, hidden $H, intermediate $I, vocab $V (bf16); calib $S x $T tokens"
printf "%-4s %-5s %8s %14s %12s %10s %s\n" np rank samples "bytes read" "peak RSS" "wall s" "s/layer"
BASE=
for np in 1 2 4; do
  t0=$(date +%s.%N)
  mpirun -np $np --oversubscribe "$BIN" quantize --model "$TMP/m" --calib "$TMP/m/calib.safetensors" \
    --out "$TMP/o$np" -q 2>"$TMP/log$np" || { cat "$TMP/log$np"; fail "np=$np"; }
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
  [ -f "$TMP/o$np/model.safetensors.index.json" ] || fail "np=$np wrote no index"
  sum=0
  while read -r _ r _ samples _ _ _ bytes _ _ _ _ rss unit _ rest; do
    r=${r%:}; samples=${samples%,}
    printf "%-4s %-5s %8s %14s %12s %10s %s\n" $np "$r" "$samples" "$bytes" "$rss $unit" "$wall" "$rest"
    sum=$((sum + bytes))
    [ "$np" = 1 ] && BASE=$bytes
  done < <(grep '^rank [0-9]*:' "$TMP/log$np" | sed 's/,//g')
  expect=$((BASE + (np - 1) * SHARED))
  [ "$sum" = "$expect" ] || fail "np=$np: ranks read $sum bytes in all, expected $expect"
  echo "     np=$np: $sum bytes read in all = np=1's $BASE + $((np - 1)) x $SHARED shared (ok)"
done
