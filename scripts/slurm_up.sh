#!/usr/bin/env bash
# Start a single-node Slurm cluster on localhost, with accounting (slurmdbd + MariaDB), for the
# harness's Slurm launcher and tests/test_slurm.py. Follows shared/reference/ecosystem.md §5:
# - munged on its DEFAULT socket /run/munge/munge.socket.2 (slurmdbd's persistent connections
#   ignore AuthInfo=socket=... and use the compiled-in default);
# - slurmdbd + MariaDB, so that a job that dies hard makes submitit raise instead of hanging in
#   job.result() (without sacct every state is UNKNOWN);
# - all state, logs and configs in a scratch dir ($PF_SLURM_DIR, default /tmp/pf-slurm);
#   /etc/slurm/slurm.conf is a symlink to the scratch config so that plain `sinfo`/`sbatch` work.
# Idempotent: when the cluster already answers, it does nothing. Needs root (apt-get, daemons).
# Stop it with: bash scripts/slurm_down.sh
set -euo pipefail

S="${PF_SLURM_DIR:-/tmp/pf-slurm}"
CLUSTER=pf
export SLURM_CONF="$S/slurm.conf"

log() { echo "slurm_up: $*"; }

if [ "$(id -u)" != 0 ]; then
  echo "slurm_up: needs root (installs packages and starts daemons)" >&2
  exit 2
fi

if command -v sinfo >/dev/null 2>&1 && [ -f "$SLURM_CONF" ] \
   && timeout 10 sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)' \
   && timeout 10 sacctmgr -n show cluster format=cluster 2>/dev/null | grep -qw "$CLUSTER"; then
  log "already up (SLURM_CONF=$SLURM_CONF). Stop it with: bash scripts/slurm_down.sh"
  exit 0
fi

# ---- packages (only what is missing) ------------------------------------------------------
need=()
for b in slurmctld slurmd sinfo munged slurmdbd mariadbd; do
  command -v "$b" >/dev/null 2>&1 || need+=("$b")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing Slurm, munge, slurmdbd, MariaDB (missing: ${need[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
  apt-get install -y -qq --no-install-recommends slurmdbd mariadb-server >/dev/null
fi

mkdir -p "$S"/{state,spool,log,mysql/data,run}
chmod 755 "$S"

# ---- munge on its default socket ----------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile=/etc/munge/munge.key --force; \
  else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "starting munged (socket /run/munge/munge.socket.2)"
  runuser -u munge -- munged --pid-file=/run/munge/pf-munged.pid --log-file=/var/log/munge/pf-munged.log \
    --seed-file=/var/lib/munge/munge.seed
  for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  cp /run/munge/pf-munged.pid "$S/run/munged.pid"  # only a munged we started is stopped by slurm_down
fi

# ---- MariaDB for slurmdbd (its own datadir/socket/port, bound to 127.0.0.1) ---------------
MYSOCK="$S/mysql/mysqld.sock"
DBPASS_FILE="$S/dbpass"
[ -s "$DBPASS_FILE" ] || { head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$DBPASS_FILE"; chmod 600 "$DBPASS_FILE"; }
DBPASS="$(cat "$DBPASS_FILE")"
chown -R mysql:mysql "$S/mysql"
if [ ! -d "$S/mysql/data/mysql" ]; then
  log "initialising MariaDB in $S/mysql/data"
  mariadb-install-db --user=mysql --datadir="$S/mysql/data" --auth-root-authentication-method=socket >"$S/log/mariadb-install.log" 2>&1
fi
if ! mariadb-admin --socket="$MYSOCK" -u root ping >/dev/null 2>&1; then
  log "starting mariadbd (127.0.0.1:3307)"
  setsid nohup mariadbd --user=mysql --datadir="$S/mysql/data" --socket="$MYSOCK" --port=3307 \
    --bind-address=127.0.0.1 --pid-file="$S/mysql/mariadbd.pid" --log-error="$S/mysql/mariadb.log" \
    --skip-name-resolve >/dev/null 2>&1 </dev/null &
  for _ in $(seq 300); do mariadb-admin --socket="$MYSOCK" -u root ping >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb-admin --socket="$MYSOCK" -u root ping >/dev/null 2>&1 \
    || { echo "slurm_up: MariaDB did not start; see $S/mysql/mariadb.log" >&2; exit 1; }
fi
mariadb --socket="$MYSOCK" -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# ---- configs ------------------------------------------------------------------------------
CPUS="$(nproc)"
MEM_MB="$(awk '/MemTotal/ {print int($2 / 1024 * 0.85)}' /proc/meminfo)"
cat >"$S/slurm.conf" <<EOF
# written by scripts/slurm_up.sh
ClusterName=$CLUSTER
SlurmctldHost=localhost
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
NodeName=localhost CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$S/slurmdbd.conf" <<EOF
# written by scripts/slurm_up.sh
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$S/run/slurmdbd.pid
LogFile=$S/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$S/slurmdbd.conf"
mkdir -p /etc/slurm
if [ ! -e /etc/slurm/slurm.conf ] || [ "$(readlink /etc/slurm/slurm.conf)" = "$S/slurm.conf" ]; then
  ln -sfn "$S/slurm.conf" /etc/slurm/slurm.conf
else
  log "note: /etc/slurm/slurm.conf exists and is not ours; clients need SLURM_CONF=$S/slurm.conf"
fi

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# ---- daemons: slurmdbd, cluster record, slurmctld, slurmd ---------------------------------
if ! alive "$S/run/slurmdbd.pid"; then
  log "starting slurmdbd"
  slurmdbd
  for _ in $(seq 100); do sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 0.1; done
fi
if ! sacctmgr -n show cluster format=cluster 2>/dev/null | grep -qw "$CLUSTER"; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if ! alive "$S/run/slurmctld.pid"; then
  log "starting slurmctld"
  slurmctld -f "$S/slurm.conf"
fi
if ! alive "$S/run/slurmd.pid"; then
  log "starting slurmd"
  slurmd -f "$S/slurm.conf" -N localhost
fi

for _ in $(seq 150); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    log "up: $(sinfo -h -o '%P %D %T %c' | head -1) (SLURM_CONF=$SLURM_CONF, logs in $S/log)"
    log "stop it with: bash scripts/slurm_down.sh"
    exit 0
  fi
  sleep 0.2
done
echo "slurm_up: the node did not become idle in 30 s; see $S/log/slurmctld.log and $S/log/slurmd.log" >&2
exit 1
