# A real single-node Slurm cluster for tests: a private munged, slurmctld and
# slurmd, all configured, logging and keeping state under one temp dir, on
# ports picked from the PID so that two test runs do not collide.
#
#   . tests/slurm/slurm_env.sh
#   sq_slurm_start || exit $?     # 0 up and idle; 77 cannot run here (says why)
#   ... sbatch/squeue/scontrol (SLURM_CONF is exported) ...
#   sq_slurm_stop                 # also run by the EXIT trap that start installs
#   sq_slurm_wait_gone ID SECS    # wait until squeue no longer lists ID as active
#
# Needs root (slurmd runs jobs as any user; munged runs as user munge). Facts
# used here (no systemd, cred_expire, ports) are in /work/shared/ENVIRONMENT.md.

SQ_SLURM_DIR=""
SQ_SLURM_MUNGE_PID=""

sq_slurm_log() { echo "slurm_env: $*" >&2; }

# Print the daemons' logs (on failure).
sq_slurm_dump_logs() {
  [ -n "$SQ_SLURM_DIR" ] || return 0
  for f in "$SQ_SLURM_DIR"/log/*.log "$SQ_SLURM_DIR"/munge/munged.log; do
    [ -f "$f" ] || continue
    echo "----- $f (last 30 lines)" >&2
    tail -n 30 "$f" >&2
  done
}

sq_slurm_stop() {
  [ -n "$SQ_SLURM_DIR" ] || return 0
  if [ -n "${SLURM_CONF:-}" ]; then scontrol shutdown >/dev/null 2>&1; fi
  # Wait (up to 5 s) for our daemons to exit, then kill what is left by pid.
  local t=0 pidf pid
  while [ $t -lt 25 ]; do
    local alive=0
    for pidf in "$SQ_SLURM_DIR"/run/slurmctld.pid "$SQ_SLURM_DIR"/run/slurmd.pid; do
      [ -f "$pidf" ] && pid=$(cat "$pidf") && kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ $alive -eq 0 ] && break
    sleep 0.2
    t=$((t + 1))
  done
  for pidf in "$SQ_SLURM_DIR"/run/slurmctld.pid "$SQ_SLURM_DIR"/run/slurmd.pid; do
    [ -f "$pidf" ] && pid=$(cat "$pidf") && kill -9 "$pid" 2>/dev/null
  done
  if [ -f "$SQ_SLURM_DIR/munge/munged.pid" ]; then
    kill "$(cat "$SQ_SLURM_DIR/munge/munged.pid")" 2>/dev/null
  fi
  if [ -z "${SQ_SLURM_KEEP:-}" ]; then rm -rf "$SQ_SLURM_DIR"; else sq_slurm_log "kept $SQ_SLURM_DIR"; fi
  SQ_SLURM_DIR=""
}

# Start everything; returns 77 (skip) with a reason when this machine cannot.
sq_slurm_start() {
  local b
  for b in slurmctld slurmd munged sbatch squeue scontrol scancel; do
    if ! command -v "$b" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$b" ]; then
      sq_slurm_log "SKIP: $b is not installed (apt-get install slurm-wlm slurmctld slurmd slurm-client munge)"
      return 77
    fi
  done
  if [ "$(id -u)" -ne 0 ]; then
    sq_slurm_log "SKIP: needs root to run slurmd and munged"
    return 77
  fi
  if [ ! -r /etc/munge/munge.key ]; then
    sq_slurm_log "SKIP: /etc/munge/munge.key is missing (the munge package creates it)"
    return 77
  fi
  SQ_SLURM_DIR=$(mktemp -d "${TMPDIR:-/tmp}/shardq-slurm.XXXXXX") || return 1
  chmod 755 "$SQ_SLURM_DIR"
  trap 'sq_slurm_stop' EXIT
  mkdir -p "$SQ_SLURM_DIR"/{state,spool,log,run,tmp}
  install -d -o munge -g munge -m 0755 "$SQ_SLURM_DIR/munge"
  local sock="$SQ_SLURM_DIR/munge/munge.socket"
  if ! runuser -u munge -- /usr/sbin/munged --socket="$sock" --pid-file="$SQ_SLURM_DIR/munge/munged.pid" \
      --log-file="$SQ_SLURM_DIR/munge/munged.log" --seed-file="$SQ_SLURM_DIR/munge/munged.seed" \
      --key-file=/etc/munge/munge.key; then
    sq_slurm_dump_logs
    sq_slurm_log "SKIP: munged did not start"
    sq_slurm_stop
    return 77
  fi
  local mem port
  mem=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
  port=$((20000 + ($$ % 10000) * 2))
  local cpus
  cpus=$(nproc)
  # Two clusters on one machine (ctest -j) must not share job ids: slurmstepd's
  # PMIx plugin makes TmpFS/spmix_appdir_<uid>_<job>.<step> and fails the
  # step ("File exists") if another cluster's job of the same id has it. Own
  # TmpFS and job ids from the port (unique per running test) avoid both.
  local first_job=$((port * 100))
  export SLURM_CONF="$SQ_SLURM_DIR/slurm.conf"
  cat >"$SLURM_CONF" <<EOF
ClusterName=shardqtest
SlurmctldHost=localhost
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10,socket=$sock
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=pmix
JobRequeue=1
MinJobAge=600
KillWait=5
MailProg=/bin/true
ReturnToService=2
StateSaveLocation=$SQ_SLURM_DIR/state
SlurmdSpoolDir=$SQ_SLURM_DIR/spool
SlurmctldPidFile=$SQ_SLURM_DIR/run/slurmctld.pid
SlurmdPidFile=$SQ_SLURM_DIR/run/slurmd.pid
SlurmctldLogFile=$SQ_SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SQ_SLURM_DIR/log/slurmd.log
TmpFS=$SQ_SLURM_DIR/tmp
FirstJobId=$first_job
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  if ! /usr/sbin/slurmctld -f "$SLURM_CONF" || ! /usr/sbin/slurmd -f "$SLURM_CONF" -N localhost; then
    sq_slurm_dump_logs
    sq_slurm_log "SKIP: slurmctld/slurmd did not start (logs above)"
    sq_slurm_stop
    return 77
  fi
  # Idle within ~1 s normally; give it 20 s on a loaded machine.
  local t=0 state=""
  while [ $t -lt 100 ]; do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null)
    case "$state" in idle*) sq_slurm_log "cluster up in $SQ_SLURM_DIR (port $port), node idle"; return 0 ;; esac
    sleep 0.2
    t=$((t + 1))
  done
  sq_slurm_dump_logs
  sq_slurm_log "SKIP: node not idle after 20 s (state '$state', logs above)"
  sq_slurm_stop
  return 77
}

# sq_slurm_wait_gone ID SECS: 0 once squeue lists no pending/running/completing
# job ID (polled every 0.2 s), 1 at the deadline.
sq_slurm_wait_gone() {
  local id=$1 n=$(($2 * 5)) t=0 st
  while [ $t -lt $n ]; do
    st=$(squeue -h -j "$id" -o %T 2>/dev/null)
    case "$st" in PENDING | RUNNING | COMPLETING | REQUEUED | REQUEUE_HOLD | REQUEUE_FED | CONFIGURING | SUSPENDED | STOPPED | RESIZING | SIGNALING) ;; *) return 0 ;; esac
    sleep 0.2
    t=$((t + 1))
  done
  return 1
}

# sq_slurm_wait_state ID STATE SECS: 0 once scontrol shows JobState=STATE.
sq_slurm_wait_state() {
  local id=$1 want=$2 n=$(($3 * 5)) t=0
  while [ $t -lt $n ]; do
    scontrol show job "$id" 2>/dev/null | grep -q "JobState=$want " && return 0
    sleep 0.2
    t=$((t + 1))
  done
  return 1
}

# sq_slurm_job_field ID FIELD: the value of FIELD= in scontrol show job.
sq_slurm_job_field() {
  scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}
