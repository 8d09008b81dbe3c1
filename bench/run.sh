#!/usr/bin/env bash
# SiteLink benchmark harness: one command, from a fresh clone (the data path, then the admin API: bench/admin_api.py,
# then density: bench/density.py, then churn: bench/churn.py).
#   bench/run.sh          full run (about 12 minutes): every scenario, every path, median of 5 runs taken round-robin
#   bench/run.sh --quick  a small version of each scenario (about 1-2 minutes), as CI's smoke test
# Installs what it needs from Debian packages if missing, starts every process itself on loopback with ports it
# picks, stops everything when done, and writes bench/results/latest.md (quick.md for --quick; also printed).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in iperf3 wrk nginx haproxy ssh ssh-keygen python3 tinyproxy redis-server redis-benchmark; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
[ -x /usr/sbin/sshd ] || need+=(sshd)
# The database rows start their own PostgreSQL cluster: initdb, postgres and pgbench from /usr/lib/postgresql/<version>/bin
# (pgbench is in postgresql-<version> on Debian 12, in postgresql-contrib on older releases).
compgen -G "/usr/lib/postgresql/*/bin/pgbench" >/dev/null || need+=(postgresql)
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing: ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq iperf3 wrk nginx-light haproxy openssh-server openssh-client python3 tinyproxy \
    postgresql postgresql-contrib redis-server redis-tools >/dev/null
fi

echo "== building (Release)"
dotnet build src/SiteLink.Relay -c Release -v quiet -nologo >/dev/null
dotnet build samples/ConsoleAgent -c Release -v quiet -nologo >/dev/null
dotnet build bench/SiteLink.Bench -c Release -v quiet -nologo >/dev/null

# 10,000 idle connections need descriptors on every side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

python3 bench/run.py "$@"

# The control plane: admin API latency under 50 concurrent clients (bench/results/admin-api-latest.md, or -quick.md).
admin_args=()
for arg in "$@"; do
  [ "$arg" = "--quick" ] && admin_args+=(--quick)
done
python3 bench/admin_api.py "${admin_args[@]}"

# Density: thousands of agent sessions on one relay, memory per idle session, connect and reconnect herds
# (bench/results/density-latest.md, or -quick.md).
python3 bench/density.py "${admin_args[@]}"

# Churn: 100,000 short connections through one agent session, relay and agent memory every 10,000
# (bench/results/churn-latest.md, or -quick.md: 5,000 connections).
python3 bench/churn.py "${admin_args[@]}"

# Issue 17's targets against this run's figures, appended to latest.md (quick.md).
exec python3 bench/targets.py "${admin_args[@]}"
