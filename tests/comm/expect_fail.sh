#!/bin/bash
# expect_fail.sh MAX_SECONDS REGEX -- command...
# Passes when the command (an mpirun job that must fail) exits NON-zero within
# MAX_SECONDS and its combined output matches the extended REGEX. Used by the
# fault-injection tests: a failing or hanging rank must end the whole job
# quickly, with a message that names the rank at fault.
max=$1 re=$2
shift 2
[ "$1" = "--" ] && shift
out=$(mktemp)
start=$EPOCHREALTIME
timeout -s KILL $((${max%.*} * 3)) "$@" >"$out" 2>&1
rc=$?
elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
cat "$out"
echo "expect_fail: exit code $rc after ${elapsed} s (limit ${max} s)"
ok=1
if [ "$rc" -eq 0 ]; then echo "expect_fail: FAIL: the job succeeded but should have failed"; ok=0; fi
if awk -v e="$elapsed" -v m="$max" 'BEGIN { exit !(e > m) }'; then echo "expect_fail: FAIL: took longer than $max s"; ok=0; fi
if ! grep -Eq -- "$re" "$out"; then echo "expect_fail: FAIL: output does not match /$re/"; ok=0; fi
rm -f "$out"
[ $ok = 1 ] && echo "expect_fail: PASS" && exit 0
exit 1
