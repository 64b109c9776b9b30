#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, on loopback: munge, slurmctld and slurmd,
# a partition `forgeml` with this host's CPUs, and a partition `held` that is down (a job
# sent there waits in Slurm's queue: what the cancel tests need). The tests that submit
# (tests/train/test_distributed_recipe.py, test_slurm_jobs.py) start it through the
# `slurm` fixture and run under a real controller instead of stand-ins. Needs root (the
# daemons) and Debian's slurmctld, slurmd, slurm-client and munge (.ci/run installs them).
#
#   scripts/slurm_loopback.sh          # start (or find running); prints the partition
#   scripts/slurm_loopback.sh stop
set -euo pipefail
STATE=${FORGEML_SLURM_DIR:-/tmp/forgeml-slurm}
CONF=/etc/slurm/slurm.conf
mkdir -p "$STATE"
exec 9>"$STATE/.lock"  # one caller at a time (test workers start it side by side)
flock -w 150 9 || { echo "another slurm_loopback.sh held $STATE/.lock for 150 s" >&2; exit 1; }

if [ "${1:-}" = stop ]; then
  pkill -x slurmd || true
  pkill -x slurmctld || true
  exit 0
fi

if scontrol ping 2>/dev/null | grep -q "is UP" && sinfo -h -p forgeml -o %a 2>/dev/null | grep -q up \
  && sinfo -h -p held -o %a 2>/dev/null | grep -q down; then
  echo forgeml
  exit 0
fi

mkdir -p "$STATE"/{ctld,spool,log} /run/munge
chown munge:munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then  # Debian's package makes one; munged wants it its own
  mungekey --create --force && chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
# Daemons start detached from the caller: stdio to a log and no lock fd. A daemon that kept
# the caller's stdout pipe would keep a caller that reads it to EOF (the test fixture)
# waiting for the daemon's lifetime; one that kept fd 9 would hold the lock as long.
detached() { "$@" </dev/null >>"$STATE/log/start.log" 2>&1 9>&-; }
failed() { echo "$1; logs in $STATE/log" >&2; tail -n 20 "$STATE"/log/*.log >&2 || true; exit 1; }
pgrep -x munged >/dev/null || detached su -s /bin/sh munge -c /usr/sbin/munged \
  || failed "munged did not start"  # as its own user

HOST=$(hostname -s)
# The node's name must resolve without DNS (torchrun's rendezvous uses it): here, to loopback.
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts
CPUS=$(nproc)
MEMORY=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$CONF" <<CONFIG
# Written by forgeml's scripts/slurm_loopback.sh: one node, loopback, for tests.
ClusterName=forgeml
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEMORY State=UNKNOWN
PartitionName=forgeml Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
PartitionName=held Nodes=$HOST MaxTime=INFINITE State=DOWN
CONFIG

if pgrep -x slurmctld >/dev/null; then
  scontrol reconfigure
else
  detached slurmctld -i || failed "slurmctld did not start"
fi
pgrep -x slurmd >/dev/null || detached slurmd || failed "slurmd did not start"
for _ in $(seq 60); do
  if sinfo -h -p forgeml -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
    echo forgeml
    exit 0
  fi
  sleep 1
done
failed "slurm did not come up in 60 s"
