#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the test suite and for
# trying profiles/slurm without a cluster:
#
#   sudo bash scripts/local_slurm.sh start    # install (Debian slurm-wlm + munge) if needed, configure, start
#   sudo bash scripts/local_slurm.sh stop     # cancel its jobs, stop only the daemons this script started
#   bash scripts/local_slurm.sh status        # exit 0 if the daemons this script started are up
#
# One node with every core, 90% of the memory and fake GPUs (GRES on character
# devices, so --gpus requests schedule; CUDA cannot run on them). No systemd,
# no cgroups, no accounting database: use `--slurm-status-command squeue`
# (finished jobs stay visible to squeue for MinJobAge = 300 s).
# Knobs: LOCAL_SLURM_FAKE_GPUS (default 2), LOCAL_SLURM_STATE (pid files,
# default /tmp/edsam-local-slurm). Exit 3 from `start`: the packages cannot be
# installed here (the test suite skips its cluster tests and says why).
set -euo pipefail

STATE="${LOCAL_SLURM_STATE:-/tmp/edsam-local-slurm}"
NGPU="${LOCAL_SLURM_FAKE_GPUS:-2}"
NODE="$(hostname -s)"
FAKEGPU_DIR=/var/lib/slurm/fakegpu
LOGDIR=/var/log/slurm

log() { echo "[local_slurm] $*"; }
die() { echo "[local_slurm] ERROR: $*" >&2; exit "${2:-1}"; }

# alive PIDFILE COMM: the pid in the file runs the expected program
alive() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }
wait_for() {  # wait_for SECONDS CMD...
  local t="$1"; shift
  for _ in $(seq $((t * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  return 1
}

install_packages() {
  local missing=()
  for p in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "no apt-get: cannot install ${missing[*]}" 3
  log "installing ${missing[*]}"
  # keep the packages' postinst scripts from starting daemons we did not ask for
  local policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy=1
  fi
  local ok=0
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$STATE/apt.log" 2>&1 || ok=$?
  [ "$policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$ok" = 0 ] || die "apt-get could not install ${missing[*]} (see $STATE/apt.log)" 3
}

start_munge() {
  [ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if ! alive /run/munge/munged.pid munged; then
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 test -s /run/munge/munged.pid || die "munged did not start"
    cp /run/munge/munged.pid "$STATE/munged.pid"
  fi
  wait_for 10 bash -c 'munge -n | unmunge' || die "munge round trip failed"
}

write_config() {
  local cpus mem gres="" grestypes=""
  cpus="$(nproc)"; mem=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 * 90 / 100 ))
  getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >> /etc/hosts
  mkdir -p /etc/slurm "$LOGDIR" /var/lib/slurm/slurmctld /var/lib/slurm/slurmd "$FAKEGPU_DIR"
  if [ "$NGPU" -gt 0 ]; then
    gres=" Gres=gpu:fake:$NGPU"; grestypes="GresTypes=gpu"
    for i in $(seq 0 $((NGPU - 1))); do  # GRES needs a device file: /dev/null's numbers
      [ -c "$FAKEGPU_DIR/gpu$i" ] || mknod -m 666 "$FAKEGPU_DIR/gpu$i" c 1 3
    done
    printf 'AutoDetect=off\nNodeName=%s Name=gpu Type=fake File=%s/gpu[0-%d]\n' "$NODE" "$FAKEGPU_DIR" $((NGPU - 1)) \
      > /etc/slurm/gres.conf
  else
    : > /etc/slurm/gres.conf
  fi
  cat > /etc/slurm/slurm.conf <<EOF
# written by edsam scripts/local_slurm.sh: one node, no cgroups, no accounting
ClusterName=edsamlocal
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
KillWait=5
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
$grestypes
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem$gres State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  chmod 644 /etc/slurm/slurm.conf /etc/slurm/gres.conf
}

start_daemon() {  # start_daemon NAME: slurmctld or slurmd
  alive "$STATE/$1.pid" "$1" && return 0
  alive "/run/$1.pid" "$1" && die "a $1 this script did not start is running; stop it first"
  rm -f "/run/$1.pid"
  "$1"
  wait_for 30 test -s "/run/$1.pid" || die "$1 did not start (see $LOGDIR/$1.log)"
  cp "/run/$1.pid" "$STATE/$1.pid"
  log "started $1 (pid $(cat "$STATE/$1.pid"))"
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)" 3
  mkdir -p "$STATE"
  install_packages
  start_munge
  if ! alive "$STATE/slurmctld.pid" slurmctld; then write_config; fi
  start_daemon slurmctld
  wait_for 30 scontrol ping || die "slurmctld is not answering"
  start_daemon slurmd
  for _ in $(seq 120); do
    case "$(sinfo -h -n "$NODE" -o '%T' | head -1)" in
      idle|mixed|allocated) log "cluster up: node $NODE, fake GPUs: $NGPU"; return 0 ;;
      *drain*|*down*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.25
  done
  die "node $NODE did not come up (see $LOGDIR/slurmctld.log)"
}

stop_one() {  # stop_one NAME: only a pid this script recorded, only if it still runs NAME
  local f="$STATE/$1.pid" pid
  alive "$f" "$1" || { rm -f "$f"; return 0; }
  pid="$(cat "$f")"; kill "$pid"
  for _ in $(seq 80); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
  [ -d "/proc/$pid" ] && kill -9 "$pid"
  rm -f "$f"; log "stopped $1 (pid $pid)"
}

stop() {
  if alive "$STATE/slurmctld.pid" slurmctld && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
    scancel --full $(squeue -h -o %i) 2>/dev/null || true
    wait_for 20 bash -c '[ -z "$(squeue -h -t R,CG -o %i)" ]' || true
  fi
  stop_one slurmd; stop_one slurmctld; stop_one munged
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) alive "$STATE/slurmctld.pid" slurmctld && alive "$STATE/slurmd.pid" slurmd ;;  # 0: ours and up
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
