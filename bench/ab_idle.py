#!/usr/bin/env python3
"""A/B of what an idle tunnelled connection costs with a Stream call each (protocol version 1) and multiplexed (2).

  python3 bench/ab_idle.py [ROUNDS] [--connections N]

Per round and side (alternating ABBA), a fresh relay (Relay:Limits:Multiplexing off or on) and sitelink-agent serving
the harness's echo upstream; then the bench helper's idle scenario, as bench/run.py runs it: N connections (10,000)
opened 256 at a time, each echoing a byte, relay and agent RSS read 5 s after the last opened, then a byte through
each again. Prints KiB per connection (relay + agent) per run and the medians. Loopback only; processes stopped.
"""
import os
import re
import signal
import statistics
import subprocess
import sys

ROUNDS = next((int(a) for a in sys.argv[1:] if a.isdigit()), 2)
CONNECTIONS = int(sys.argv[sys.argv.index("--connections") + 1]) if "--connections" in sys.argv else 10000
sys.argv = [sys.argv[0]]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ab_mux  # noqa: E402
import benchlib  # noqa: E402
harness = ab_mux.harness


def main():
    echo = harness.free_port()
    harness.start("echo-server", ["dotnet", harness.HELPER, "echo-server", str(echo)])
    harness.wait_port(echo)
    upstreams = {"echo": echo}
    sides = {"v1 (Stream call per connection)": False, "v2 (multiplexed)": True}
    results = {name: [] for name in sides}
    for round_number in range(ROUNDS):
        order = list(sides) if round_number % 2 == 0 else list(reversed(sides))
        for name in order:
            processes = []
            tag = f"{'v2' if sides[name] else 'v1'}-{round_number}"
            public = ab_mux.start_side(tag, upstreams, sides[name], endpoints=("echo",), processes=processes)
            relay, agent = processes
            benchlib.wait_echo(public["echo"])
            result = subprocess.run(["dotnet", harness.HELPER, "idle", str(public["echo"]), str(CONNECTIONS), "5:5", str(relay.pid), str(agent.pid)],
                                    capture_output=True, text=True, timeout=600)
            match = re.search(r"idle (\d+) ok (\d+) rss (\d+):(\d+) (\d+):(\d+)", result.stdout)
            if not match:
                raise RuntimeError(f"idle failed: {result.stdout} {result.stderr}")
            count, ok, r0, r1, a0, a1 = map(int, match.groups())
            per = ((r1 - r0) + (a1 - a0)) / count
            results[name].append(per)
            harness.log(f"round {round_number + 1} {name}: {ok} of {count} carried a byte; relay {r0 // 1024} -> {r1 // 1024} MiB, "
                        f"agent {a0 // 1024} -> {a1 // 1024} MiB: {per:.1f} KiB per connection")
            for process in processes:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
    for name, values in results.items():
        harness.log(f"{name}: median {statistics.median(values):.1f} KiB per idle connection (relay + agent), runs "
                    + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    try:
        main()
    finally:
        harness.stop_all()
