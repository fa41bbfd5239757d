#!/usr/bin/env bash
# Start a real single-node Slurm cluster on this machine (as root), for testing the batch
# templates: munge with a fresh key, slurmctld and slurmd, one partition "debug" whose node
# offers at least 8 CPU slots whatever the core count. Needs Debian's slurm-wlm and munge
# (installed here if apt-get exists).
# Idempotent: a running cluster is left as it is.
set -euo pipefail

if sinfo -h >/dev/null 2>&1; then
    echo "slurm: already running"; exit 0
fi
if ! command -v slurmctld >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi

host=$(hostname)
cpus=$(nproc)
# The node claims at least 8 CPUs (config_overrides: slurmd takes the configured count), so the
# shipped templates' task counts run as shipped on a small machine, without --overcommit.
slots=$(( cpus < 8 ? 8 : cpus ))
mkdir -p /etc/munge /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force

cat > /etc/slurm/slurm.conf <<CONF
ClusterName=hpcrt-local
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=pmi2
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmdParameters=config_overrides
NodeName=${host} CPUs=${slots} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF

slurmctld
slurmd
for _ in $(seq 30); do
    if sinfo -h -o %T 2>/dev/null | grep -q -E "idle|mix|alloc"; then
        echo "slurm: cluster up on ${host} (${slots} CPU slots on ${cpus} cores, partition debug)"; exit 0
    fi
    sleep 1
done
echo "slurm: the cluster did not come up; see /var/log/slurm/" >&2
exit 1
