#!/usr/bin/env bash
# compat test: an independent consumer (compressed-tensors + transformers from the
# package index) loads what `shardq quantize` writes. For each scheme: quantize
# stories260K with --dump-dequant, `shardq eval --json`, then check_compat.py.
#   bash tests/compat/run_compat.sh VENV_DIR WORK_DIR
# Env: SHARDQ_BIN, SHARDQ_TESTDATA. Exit 0 pass, 1 fail, 77 skipped (no test data,
# or the package index unreachable).
set -euo pipefail
venv=${1:?usage: run_compat.sh VENV_DIR WORK_DIR}
work=${2:?usage: run_compat.sh VENV_DIR WORK_DIR}
here=$(cd "$(dirname "$0")" && pwd)
td=${SHARDQ_TESTDATA:-}
model=$td/stories260K calib=$td/tinystories/calib.safetensors data=$td/tinystories/eval.safetensors
if [ -z "$td" ] || [ ! -f "$model/model.safetensors" ] || [ ! -f "$data" ]; then
  echo "SKIP: test data absent (SHARDQ_TESTDATA=$td)"; exit 77
fi
rc=0; bash "$here/setup_venv.sh" "$venv" || rc=$?
[ $rc -eq 0 ] || exit $rc
py=$venv/bin/python
mkdir -p "$work"
export TRANSFORMERS_OFFLINE=1 HF_HUB_OFFLINE=1 PYTHONWARNINGS=ignore

# name | quantize flags | PPL check. compressed-tensors requires in_features to
# be a multiple of group_size (forward_helpers.py); stories260K has in_features
# 64 and 172 (gcd 4), so its group-128 checkpoints cannot load there: that case
# runs last as a known incompatibility (reported, not failed).
cases=(
  "w4a16_gptq_channel|--scheme W4A16 --method gptq --group 0|ppl"
  "w4a16_asym_gptq_channel|--scheme W4A16_ASYM --method gptq --group 0|ppl"
  "w8a8_rtn|--scheme W8A8 --method rtn|"
  "fp8_dynamic_rtn|--scheme FP8_DYNAMIC --method rtn|"
)
fail=0
for c in "${cases[@]}" "w4a16_gptq_g128|--scheme W4A16 --method gptq --group 128|known"; do
  IFS='|' read -r name flags mode <<<"$c"
  out=$work/$name
  rm -rf "$out" "$out.dq.safetensors"
  echo "== $name: shardq quantize $flags"
  # shellcheck disable=SC2086
  "$SHARDQ_BIN" quantize -q --model "$model" --calib "$calib" --out "$out" $flags \
      --dump-dequant "$out.dq.safetensors" >"$out.quantize.log" 2>&1 ||
    { echo "FAIL $name: shardq quantize failed:"; tail -5 "$out.quantize.log"; fail=1; continue; }
  args=(--model "$model" --quantized "$out" --dequant "$out.dq.safetensors")
  if [ "$mode" = ppl ]; then
    "$SHARDQ_BIN" eval --model "$model" --quantized "$out" --data "$data" --json >"$out.eval.json" 2>/dev/null ||
      { echo "FAIL $name: shardq eval failed"; fail=1; continue; }
    echo "shardq eval: $(cat "$out.eval.json")"
    args+=(--data "$data" --shardq-json "$out.eval.json")
  fi
  if [ "$mode" = known ]; then
    if "$py" "$here/check_compat.py" "${args[@]}" >"$out.check.log" 2>&1; then
      echo "NOTE $name: now loads in compressed-tensors (the known incompatibility is gone)"
      grep -E "^(PASS|FAIL)" "$out.check.log" || true
    else
      echo "KNOWN $name: compressed-tensors rejects it: $(grep -m1 -E 'divisible|divisble' "$out.check.log" || tail -1 "$out.check.log")"
    fi
    continue
  fi
  "$py" "$here/check_compat.py" "${args[@]}" 2>"$out.check.err" || { fail=1; tail -5 "$out.check.err"; }
done
[ $fail -eq 0 ] && echo "compat: all checks passed" || echo "compat: FAILED"
exit $fail
