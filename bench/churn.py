#!/usr/bin/env python3
"""SiteLink churn benchmark: many short connections through one agent session (issue 17: memory flat under churn).

  python3 bench/churn.py [--quick] [--connections N] [--checkpoint K] [--concurrency C] [--bytes B] [--root DIR]

Starts the Release relay (src/SiteLink.Relay) and one standalone agent (samples/ConsoleAgent, `sitelink-agent`) as
processes on loopback, every limit at its default, with one tcp cloud endpoint to an echo upstream (the helper's
echo-server). Then N short connections through the cloud endpoint (the helper's `churn`, C at once): each connects,
sends B random bytes, reads them back and compares, half-closes, waits for the echo's end of stream, and closes.
After every K connections the load pauses (none open), settles, and the relay's and the agent's resident memory
(VmRSS) are read. Reports the series, both processes' RSS at the end against their value after the first K
(target: within 10 %), connections/s (pauses excluded), the CPU seconds relay + agent spent per 1,000 connections,
and failures (must be 0).
Writes bench/results/churn-latest.md (churn-quick.md with --quick or any size argument; also printed). Loopback only;
every process is stopped at the end.
"""
import argparse
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="5,000 connections, a checkpoint every 1,000 (a smoke test)")
parser.add_argument("--connections", type=int)
parser.add_argument("--checkpoint", type=int)
parser.add_argument("--concurrency", type=int, default=16)
parser.add_argument("--bytes", type=int, default=512)
parser.add_argument("--root", help="run the Release binaries of another checkout (an A/B against an older build)")
ARGS = parser.parse_args()
BUILD = os.path.abspath(ARGS.root) if ARGS.root else ROOT
RELAY = os.path.join(BUILD, "src/SiteLink.Relay/bin/Release/net10.0/SiteLink.Relay.dll")
AGENT = os.path.join(BUILD, "samples/ConsoleAgent/bin/Release/net10.0/sitelink-agent.dll")
# The load generator is always this checkout's helper.
HELPER = os.path.join(ROOT, "bench/SiteLink.Bench/bin/Release/net10.0/SiteLink.Bench.dll")
CONNECTIONS = ARGS.connections or (5000 if ARGS.quick else 100000)
CHECKPOINT = ARGS.checkpoint or (1000 if ARGS.quick else 10000)
SETTLE_S = 1 if ARGS.quick else 2
LABEL = "quick" if ARGS.quick or ARGS.connections or ARGS.checkpoint or ARGS.root else "latest"
TOKEN = "churn-token-" + os.urandom(12).hex()
TARGET = 0.10  # RSS at the end within 10 % of its value after the first checkpoint

work = tempfile.mkdtemp(prefix="sitelink-churn-")
group = benchlib.ProcessGroup(work)


def log(message):
    print(message, flush=True)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    started = time.time()
    log(f"== SiteLink churn: {CONNECTIONS} connections, {ARGS.concurrency} at once, {ARGS.bytes} bytes each, "
        f"a checkpoint every {CHECKPOINT}; work dir {work}")
    agent_port, public_port, echo_port = benchlib.free_ports(3)
    group.start("echo-server", ["dotnet", HELPER, "echo-server", str(echo_port)])
    benchlib.wait_port(echo_port)
    config = {
        "Logging": {"LogLevel": {"Default": "Warning"}},
        "Relay": {
            "RelayId": "churn-relay",
            "AgentListen": f"127.0.0.1:{agent_port}",
            "Tls": {"DevelopmentCertificatePath": os.path.join(work, "relay.pfx")},
            "Tokens": [{"Name": "churn", "Token": TOKEN, "Tenant": "churn", "Allow": ["*"]}],
            "CloudEndpoints": [{"Name": "echo", "Listen": f"127.0.0.1:{public_port}", "Tenant": "churn", "Endpoint": "echo"}],
        },
    }
    with open(os.path.join(work, "relay.json"), "w") as f:
        json.dump(config, f)
    relay = group.start("relay", ["dotnet", RELAY, "--config", os.path.join(work, "relay.json")])
    pin = group.wait_log("relay", r"pin it in agents\): ([0-9A-F]{64})", timeout=120).group(1)
    agent = group.start("agent", ["dotnet", AGENT, "--relay", f"https://127.0.0.1:{agent_port}", "--pin", pin, "--no-proxy",
                                  "--Logging:LogLevel:Default", "Warning", "--endpoint", f"echo=127.0.0.1:{echo_port}"],
                        env={"SITELINK_AUTHTOKEN": TOKEN})
    benchlib.wait_echo(public_port)
    time.sleep(SETTLE_S)

    log(f"-- {CONNECTIONS} short connections through the relay's tcp cloud endpoint")
    cpu_before = cpu_seconds(relay.pid) + cpu_seconds(agent.pid)
    churn_log = group.log_path("churn")
    with open(churn_log, "w") as out:
        code = subprocess.run(["dotnet", HELPER, "churn", str(public_port), str(CONNECTIONS), str(ARGS.concurrency), str(ARGS.bytes),
                               str(CHECKPOINT), str(SETTLE_S), str(relay.pid), str(agent.pid)],
                              stdout=out, stderr=subprocess.STDOUT, cwd=work, timeout=3600).returncode
    cpu_spent = cpu_seconds(relay.pid) + cpu_seconds(agent.pid) - cpu_before
    with open(churn_log) as f:
        output = f.read()
    print(output, end="", flush=True)
    baseline = re.search(r"^rss 0 (\d+) (\d+)", output, re.M)
    checkpoints = [(int(n), int(ok), int(failed), float(seconds), int(relay_kib), int(agent_kib))
                   for n, ok, failed, seconds, relay_kib, agent_kib in
                   re.findall(r"^checkpoint (\d+) ok (\d+) failed (\d+) seconds ([\d.]+) rss (\d+) (\d+)", output, re.M)]
    summary = re.search(r"^churn (\d+) ok (\d+) failed (\d+) seconds ([\d.]+) conn/s (\d+)", output, re.M)
    if not baseline or not checkpoints or not summary:
        raise RuntimeError(f"the churn helper exited {code} without its report; see {churn_log}")
    failures = re.findall(r"^failure (.*)$", output, re.M)
    relay_alive, agent_alive = relay.poll() is None, agent.poll() is None

    total, ok, failed, seconds, rate = int(summary.group(1)), int(summary.group(2)), int(summary.group(3)), float(summary.group(4)), int(summary.group(5))
    first, last = checkpoints[0], checkpoints[-1]
    relay_ratio, agent_ratio = last[4] / first[4], last[5] / first[5]

    def verdict(ratio):
        return "met" if abs(ratio - 1) <= TARGET else "not met"

    now = datetime.datetime.now(datetime.timezone.utc)
    quick = " --quick" if ARGS.quick else ""
    lines = [
        f"# SiteLink churn — {now:%Y-%m-%d %H:%M} UTC (`python3 bench/churn.py{quick}`)",
        "",
        f"{total:,} short connections through one relay (Release, TLS, default limits) and one `sitelink-agent` session "
        f"(Release, default options) to an echo upstream, {ARGS.concurrency} at once: each connects to the tcp cloud endpoint, "
        f"sends {ARGS.bytes} random bytes, reads them back and compares, half-closes, waits for the end of the echo's stream "
        f"and closes. Every {CHECKPOINT:,} connections the load pauses (none open) for {SETTLE_S} s and the relay's and "
        f"the agent's VmRSS are read; {os.cpu_count()} cores; took {time.time() - started:.0f} s.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| connections | {total:,}: {ok:,} verified, **{failed} failed** (target 0) |",
        f"| connections/s (pauses excluded) | {rate:,} ({seconds:.1f} s) |",
        f"| CPU seconds relay + agent per 1,000 connections | {cpu_spent / total * 1000:.2f} ({cpu_spent:.1f} s in all) |",
        f"| relay RSS before / after {first[0]:,} / after {last[0]:,} | {int(baseline.group(1)) / 1024:.1f} / {first[4] / 1024:.1f} / {last[4] / 1024:.1f} MiB |",
        f"| **relay RSS after {last[0]:,} against after {first[0]:,}** | **{relay_ratio:.3f}** (target within ±{TARGET:.0%}: {verdict(relay_ratio)}) |",
        f"| agent RSS before / after {first[0]:,} / after {last[0]:,} | {int(baseline.group(2)) / 1024:.1f} / {first[5] / 1024:.1f} / {last[5] / 1024:.1f} MiB |",
        f"| **agent RSS after {last[0]:,} against after {first[0]:,}** | **{agent_ratio:.3f}** (target within ±{TARGET:.0%}: {verdict(agent_ratio)}) |",
        f"| relay and agent still running at the end | {'yes' if relay_alive and agent_alive else 'NO'} |",
        "",
        "| connections | relay RSS, MiB | agent RSS, MiB | relay / first checkpoint | agent / first checkpoint | failed so far | connections/s since the last checkpoint |",
        "|---|---|---|---|---|---|---|",
    ]
    previous_n, previous_s = 0, 0.0
    for n, _, failed_so_far, elapsed, relay_kib, agent_kib in checkpoints:
        interval = elapsed - previous_s
        lines.append(f"| {n:,} | {relay_kib / 1024:.1f} | {agent_kib / 1024:.1f} | {relay_kib / first[4]:.3f} | {agent_kib / first[5]:.3f} "
                     f"| {failed_so_far} | {(n - previous_n) / interval if interval > 0 else 0:,.0f} |")
        previous_n, previous_s = n, elapsed
    if failures:
        lines += ["", "First failures: " + "; ".join(failures)]
    lines.append("")
    table = "\n".join(lines)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results", f"churn-{LABEL}.md"), "w") as f:
        f.write(table)
    print(table)
    return 0 if failed == 0 and code == 0 and relay_alive and agent_alive else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        code = main()
    except Exception as error:  # report, then still stop every process
        log(f"churn benchmark failed: {error}")
        code = 1
    finally:
        group.stop_all()
    sys.exit(code)
