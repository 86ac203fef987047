#!/usr/bin/env bash
# Set up, build and run the whole test suite (README's test command).
#   bash tests/run.sh                 gcc build with CUDA when nvcc is present, all labels
#   SHARDQ_SANITIZE=1 bash tests/run.sh   clang ASan+UBSan build, plus the fuzz targets
# Extra arguments go to ctest (e.g. -L unit). The last line is ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps

cmake_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ "${SHARDQ_SANITIZE:-0}" = 1 ]; then
  build=build-sanitize
  # CUDA objects are not instrumented; the CPU path is what the sanitizers check.
  cmake_args+=(-DCMAKE_C_COMPILER=clang -DSHARDQ_SANITIZE=ON -DSHARDQ_FUZZ=ON -DSHARDQ_CUDA=OFF)
else
  build=build
fi
cmake -S . -B "$build" "${cmake_args[@]}" >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
cmake --build "$build" -j"$(nproc)" 2>&1 | grep -E "warning|error|Error" || true
cmake --build "$build" -j"$(nproc)" >/dev/null
cd "$build"
set +e
ctest --output-on-failure --timeout 900 -j2 "$@" 2>&1 | tee ctest.log
rc=${PIPESTATUS[0]}
set -e
# ctest lists skipped tests after its summary; repeat the summary as the last line.
grep -E "tests passed|No tests were found" ctest.log | tail -n 1
exit "$rc"
