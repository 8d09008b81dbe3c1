#!/usr/bin/env bash
# High-availability drills: kill -9 under load (bench/ha_drill.py). Builds in Release first. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build src/SiteLink.Relay -c Release -v quiet -nologo >/dev/null
dotnet build samples/ConsoleAgent -c Release -v quiet -nologo >/dev/null
dotnet build bench/SiteLink.Bench -c Release -v quiet -nologo >/dev/null
exec python3 bench/ha_drill.py "$@"
