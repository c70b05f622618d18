#!/usr/bin/env bash
# Stop the single-node Slurm started by scripts/slurm_up.sh: every daemon it started, by the PID
# it recorded (never by process name). State stays in $PF_SLURM_DIR (default /tmp/pf-slurm);
# `--purge` also removes it and the /etc/slurm/slurm.conf symlink.
set -uo pipefail

S="${PF_SLURM_DIR:-/tmp/pf-slurm}"
stop() {  # name pidfile
  local pid
  [ -f "$2" ] || return 0
  pid="$(cat "$2")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    echo "slurm_down: stopped $1 ($pid)"
  fi
  rm -f "$2"
}
stop slurmd "$S/run/slurmd.pid"
stop slurmctld "$S/run/slurmctld.pid"
stop slurmdbd "$S/run/slurmdbd.pid"
stop mariadbd "$S/mysql/mariadbd.pid"
stop munged "$S/run/munged.pid"
if [ "${1:-}" = "--purge" ]; then
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$S/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
  rm -rf "$S"
  echo "slurm_down: removed $S"
fi
