#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, on loopback: munge, slurmctld and slurmd,
# a partition `forgeml` with this host's CPUs, and a partition `held` that is down (a job
# sent there waits in Slurm's queue: what the cancel tests need). For the launch tests
# (tests/train/test_slurm_loopback.py): `forgeml launch --on slurm --submit` then runs
# under a real controller instead of stand-ins. Needs root (the daemons) and Debian's
# slurmctld, slurmd, slurm-client and munge packages (.ci/run installs them).
#
#   scripts/slurm_loopback.sh          # start (or find running); prints the partition
#   scripts/slurm_loopback.sh stop
set -euo pipefail
STATE=${FORGEML_SLURM_DIR:-/tmp/forgeml-slurm}
CONF=/etc/slurm/slurm.conf
mkdir -p "$STATE"
exec 9>"$STATE/.lock"  # one caller at a time (test workers start it side by side)
flock 9

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
[ -s /etc/munge/munge.key ] || mungekey --create --force
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged  # as its own user

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
  slurmctld -i
fi
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  if sinfo -h -p forgeml -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
    echo forgeml
    exit 0
  fi
  sleep 1
done
echo "slurm did not come up; logs in $STATE/log" >&2
tail -20 "$STATE"/log/*.log >&2 || true
exit 1
