# Shared by the checkpoint-restart scripts: a tiny synthetic model, the
# reference output of an uninterrupted np=2 run (no checkpoint dir), and
# helpers to run, resume and compare.
#   . restart_lib.sh; sq_rs_setup NAME || exit $?
# Needs SHARDQ_BIN; SHARDQ_MPIRUN (default mpirun).
set -u
: "${SHARDQ_BIN:?set SHARDQ_BIN to the shardq executable}"
MPIRUN=${SHARDQ_MPIRUN:-mpirun}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export SHARDQ_COMM_TIMEOUT=${SHARDQ_COMM_TIMEOUT:-20}
# OpenBLAS's results depend on its thread count, which follows the CPU
# affinity: mpirun binds each rank to a core (1 thread), srun under
# TaskPlugin=task/none does not (2 threads), and the outputs then differ in
# the last bits. Pin it so that every run here (and the Slurm job, which
# inherits this environment) computes the same bits as the reference.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
NP=2
LAYERS=3
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# The quantize arguments, without --out.
qargs() { echo --model "$W/m" --calib "${CALIB:-$W/m/calib.safetensors}" --scheme W4A16 --group 32 -q; }

# run_q OUT [quantize args...]: np=2 quantize into OUT; stdout+stderr to OUT.log.
run_q() {
  local out=$1
  shift
  # shellcheck disable=SC2046
  "$MPIRUN" -np $NP --oversubscribe "$SHARDQ_BIN" quantize $(qargs) --out "$out" "$@" >"$out.log" 2>&1
}

# start_q OUT [quantize args...]: run_q in the background; MP = mpirun's pid
# (the subshell execs mpirun, so signals sent to MP reach mpirun itself).
start_q() {
  local out=$1
  shift
  # shellcheck disable=SC2046
  ( exec "$MPIRUN" -np $NP --oversubscribe "$SHARDQ_BIN" quantize $(qargs) --out "$out" "$@" >"$out.log" 2>&1 ) &
  MP=$!
}

sq_rs_setup() {
  if ! command -v "$MPIRUN" >/dev/null 2>&1; then echo "SKIP: no $MPIRUN" >&2; return 77; fi
  W=$(mktemp -d "${TMPDIR:-/tmp}/shardq-restart-$1.XXXXXX") || return 1
  trap 'if [ $fails -eq 0 ] && [ -z "${SQ_KEEP:-}" ]; then rm -rf "$W"; else echo "kept $W" >&2; fi' EXIT
  "$SHARDQ_BIN" synth --out "$W/m" --layers $LAYERS --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 \
    --vocab 256 --shards 2 --calib-samples 8 --calib-seq-len 16 --eval-samples 0 -q || return 1
  if ! run_q "$W/ref"; then
    cat "$W/ref.log" >&2
    echo "the reference run failed" >&2
    return 1
  fi
}

# same_as_ref OUT WHAT: every file of OUT equals the reference's, same names.
same_as_ref() {
  local out=$1 what=$2 a b f
  a=$(cd "$W/ref" && find . -type f | sort)
  b=$(cd "$out" && find . -type f | sort)
  if [ "$a" != "$b" ]; then
    fail "$what: files differ from the reference: $(diff <(echo "$a") <(echo "$b") | tr '\n' ' ')"
    return 1
  fi
  for f in $a; do
    if ! cmp -s "$W/ref/$f" "$out/$f"; then
      fail "$what: $f differs from the reference"
      return 1
    fi
  done
  return 0
}

# layers_done CKPT: committed layers per `shardq status --json` (-1 if none).
layers_done() {
  local v
  v=$("$SHARDQ_BIN" status "$1" --json 2>/dev/null | sed -n 's/.*"layers_done": *\([0-9]*\).*/\1/p')
  echo "${v:--1}"
}

# resume_ok OUT CKPT WHAT: rerun with --resume; must succeed and match.
resume_ok() {
  if ! run_q "$1" --checkpoint-dir "$2" --resume; then
    fail "$3: the resumed run failed: $(tail -n 3 "$1.log" | tr '\n' ' ')"
    return 1
  fi
  same_as_ref "$1" "$3"
}

sq_rs_finish() {
  if [ $fails -ne 0 ]; then
    echo "$1: $fails check(s) failed (work dir $W)" >&2
    exit 1
  fi
  echo "$1: all checks passed in $(elapsed) s"
  exit 0
}
