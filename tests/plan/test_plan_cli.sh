#!/bin/sh
# `shardq plan` end to end: --help, text and JSON output on real configs, the
# over-memory warning, and usage errors (exit 2) for bad flags.
set -u
BIN=${SHARDQ_BIN:?SHARDQ_BIN not set}
SRC=${SHARDQ_SOURCE_DIR:?SHARDQ_SOURCE_DIR not set}
CFG=$SRC/tests/assets/configs
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; fi; }
out=$(mktemp); trap 'rm -f "$out"' EXIT

"$BIN" plan --help >"$out"; check "help exit 0" "[ $? -eq 0 ]"
check "help names --ranks" "grep -q -- '--ranks N' '$out'"

"$BIN" plan --model "$CFG/Llama-3.1-8B" --ranks 4 --layers >"$out"; check "text exit 0" "[ $? -eq 0 ]"
check "text has busiest" "grep -q '^busiest rank' '$out'"
check "text has 4 rank rows" "[ \$(grep -cE '^ +[0-3] +[0-9]+-[0-9]+ ' '$out') -eq 4 ]"
check "layer table has 32 rows" "[ \$(grep -cE '^ +[0-9]+ +no ' '$out') -eq 32 ]"

"$BIN" plan --model "$CFG/DeepSeek-V3/config.json" --ranks 16 --json --samples 64 >"$out"
check "json exit 0" "[ $? -eq 0 ]"
if command -v python3 >/dev/null 2>&1; then
  check "json parses, 16 ranks, modules" "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d[\"rank\"])==16; assert sum(r[\"modules\"] for r in d[\"rank\"])==d[\"modules\"]==45032' '$out'"
fi

"$BIN" plan --model "$CFG/Llama-3.1-405B" --ranks 2 --gpu-mem 1GiB >"$out" 2>/dev/null
check "over-memory still exit 0" "[ $? -eq 0 ]"
check "over-memory warning" "grep -q 'exceeds --gpu-mem' '$out'"

"$BIN" plan --model "$CFG/Llama-3.1-8B" --ranks 0 >/dev/null 2>&1; check "ranks 0 -> 2" "[ $? -eq 2 ]"
"$BIN" plan --model "$CFG/Llama-3.1-8B" --ranks 4 --gpu-mem 80XB >/dev/null 2>&1; check "bad size -> 2" "[ $? -eq 2 ]"
"$BIN" plan --ranks 4 >/dev/null 2>&1; check "no model -> 2" "[ $? -eq 2 ]"
"$BIN" plan --model /nonexistent --ranks 4 >/dev/null 2>"$out"; check "missing model -> 1" "[ $? -eq 1 ]"
exit $fail
