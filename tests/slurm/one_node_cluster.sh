#!/usr/bin/env bash
# A one-node SLURM 22.05 cluster on this machine (Debian's slurm-wlm + munge, accounting through
# slurmdbd and MariaDB), for the SLURM tests (tests/test_slurm_cluster.py) and CI. It needs root
# and apt; no systemd and no cgroup delegation (a container is fine):
#   bash tests/slurm/one_node_cluster.sh          # install (if needed), configure, start, check
#   bash tests/slurm/one_node_cluster.sh stop     # stop the daemons it started (by their pid files)
# Accounting is on by default: submitit polls job states with `sacct`; without it every poll logs
# "Bypassing sacct error" and a job that dies without writing its result (scancel, node failure)
# is never seen as finished. WITH_DBD=0 skips it.
set -euo pipefail
WITH_DBD=${WITH_DBD:-1}
CPUS=${CPUS:-$(nproc)}
MEM_MB=${MEM_MB:-20000}

pidof_file() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && cat "$1"; }

stop() {
  # Reverse order; each by the pid its daemon wrote, never by name.
  for f in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid /run/munge/munged.pid; do
    if p=$(pidof_file "$f"); then echo "stopping $f ($p)"; kill "$p"; fi
  done
  sleep 3
  for f in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid /run/munge/munged.pid; do
    if p=$(pidof_file "$f"); then echo "still running: $f ($p)"; fi
  done
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

# 1. Packages (postinst cannot start services here: policy-rc.d denies it, no systemd).
pkgs="slurm-wlm munge"; [ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
if ! dpkg -s $pkgs >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs
fi

# 2. munge: key (the package's postinst usually made one), then the daemon as user munge.
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge; chown munge:munge /run/munge /var/log/munge /var/lib/munge
pidof_file /run/munge/munged.pid >/dev/null || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null && echo "munge ok"

# 3. Accounting: MariaDB started by hand (no systemd), then slurmdbd.
mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /etc/slurm
ACCT="AccountingStorageType=accounting_storage/none"
if [ "$WITH_DBD" = 1 ]; then
  mkdir -p /run/mysqld; chown mysql:mysql /run/mysqld
  if ! pidof_file /run/mysqld/mysqld.pid >/dev/null; then
    nohup /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
      --socket=/run/mysqld/mysqld.sock > /var/log/slurm/mariadb.log 2>&1 &
    for _ in $(seq 30); do mysqladmin ping >/dev/null 2>&1 && break; sleep 1; done
  fi
  mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<'CONF'
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmdbpass
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
  pidof_file /run/slurmdbd.pid >/dev/null || /usr/sbin/slurmdbd
  sleep 2
  ACCT=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost\nAccountingStoragePort=6819'
fi

# 4. slurm.conf: no cgroup plugins at all (proctrack/linuxproc, task/none), so neither systemd
# nor a writable cgroup hierarchy is needed; no GPUs (no GresTypes / gres.conf).
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=vilt
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$ACCT
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
KillWait=30
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

# 5. Daemons. The node is named localhost but the host is not: slurmd -N localhost.
# slurmd under nice 19: job steps inherit its niceness (the machine runs timing benchmarks).
pidof_file /run/slurmctld.pid >/dev/null || /usr/sbin/slurmctld
pidof_file /run/slurmd.pid >/dev/null || nice -n 19 /usr/sbin/slurmd -N localhost
sleep 3
scontrol update nodename=localhost state=resume 2>/dev/null || true

# 6. Checks.
sinfo
srun -N1 hostname
if [ "$WITH_DBD" = 1 ]; then sleep 2; sacct -X --format=JobID,JobName,State,ExitCode | tail -3; fi
