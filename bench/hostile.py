#!/usr/bin/env python3
"""SiteLink hostile-agent harness: what a relay does to an attacker, and what the attack costs everyone else.

  python3 bench/hostile.py [--relay-dir DIR] [--label NAME] [--quick] [--only a,b,...] [--build]

DIR is a repository root whose Release build of src/SiteLink.Relay and samples/ConsoleAgent is attacked (default:
this repository), so an older checkout can be measured with this harness. The hostile clients are commands of this
repository's bench helper (bench/SiteLink.Bench, `attack NAME ...`), built here in Release.

For every attack the harness starts a fresh relay (separate process, loopback only, ports picked by the relay: port 0)
with two tenants: "evil" (token A) and "good" (token B), cloud endpoints "evil-echo" and "good-echo"; a good standalone
agent (token B) serving good-echo -> an echo server; then runs the attacker, bound to another loopback address
(127.0.0.2 by default) so that the relay's per-address limits act as they would across hosts. It measures:
  - relay RSS before / peak / after (VmRSS sampled every 100 ms; "after" is 5 s after the attacker exited),
  - relay CPU seconds (utime + stime) while the attack ran,
  - relay log lines (stdout + stderr, logging at Warning) while the attack ran and settled,
  - the good agent's echo latency: 1-byte round trips through good-echo every ~20 ms on one persistent connection
    (max, p99, failures),
  - what the relay did to the attacker (the attacker's own report: statuses, closes, GOAWAY, counts).
Each attack stops by itself; one whose relay passes 4 GiB RSS is stopped early. Every process is stopped at the end
(also on SIGTERM or Ctrl-C). Writes bench/results/hostile-<label>.md (also printed).
"""
import argparse
import collections
import datetime
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import benchlib

BENCH_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(BENCH_ROOT, "bench/SiteLink.Bench/bin/Release/net10.0/SiteLink.Bench.dll")
RSS_LIMIT_KIB = 4 * 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SETTLE_S = 5

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--relay-dir", default=BENCH_ROOT, help="repository root whose Release relay and agent are attacked")
parser.add_argument("--label", help="results go to bench/results/hostile-LABEL.md (default: latest, or quick with --quick)")
parser.add_argument("--quick", action="store_true", help="short attacks (a smoke test; numbers not meaningful)")
parser.add_argument("--only", help="comma-separated attack names to run")
parser.add_argument("--attacker-ip", default="127.0.0.2", help="loopback address the attacker's sockets are bound to")
parser.add_argument("--build", action="store_true", help="also build the relay and agent of --relay-dir in Release")
ARGS = parser.parse_args()
QUICK = ARGS.quick
LABEL = ARGS.label or ("quick" if QUICK else "latest")
RELAY_DIR = os.path.abspath(ARGS.relay_dir)
RELAY = os.path.join(RELAY_DIR, "src/SiteLink.Relay/bin/Release/net10.0/SiteLink.Relay.dll")
AGENT = os.path.join(RELAY_DIR, "samples/ConsoleAgent/bin/Release/net10.0/sitelink-agent.dll")
# Random tokens: the hardened relay refuses weak ones off loopback and warns about them on loopback.
TOKEN_EVIL = "evil-" + os.urandom(16).hex()
TOKEN_GOOD = "good-" + os.urandom(16).hex()

work = tempfile.mkdtemp(prefix="sitelink-hostile-")
group = benchlib.ProcessGroup(work)
start, stop_all = group.start, group.stop_all
free_port, wait_port = benchlib.free_port, benchlib.wait_port


def log(message):
    print(message, file=sys.stderr, flush=True)


def stop(process, grace=10):
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def read_log(name):
    with open(group.log_path(name), errors="replace") as f:
        return f.read()


def wait_log(name, pattern, process, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        match = re.search(pattern, read_log(name))
        if match:
            return match
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {read_log(name)[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not log {pattern!r}; see {os.path.join(work, name + '.log')}")


wait_echo = benchlib.wait_echo


# ---------------------------------------------------------------------------------------------------------------
# One relay with its agents, fresh for every attack
# ---------------------------------------------------------------------------------------------------------------

class Stand:
    """Echo servers, a relay and the good agent (and, when asked, an honest agent of the evil tenant)."""

    def __init__(self, tag, evil_agent=False):
        self.tag = tag
        self.own = []
        self.echo_port = free_port()
        self.evil_echo_port = free_port()
        self.own.append(start(f"{tag}-echo", ["dotnet", HELPER, "echo-server", str(self.echo_port)]))
        self.own.append(start(f"{tag}-evil-echo", ["dotnet", HELPER, "echo-server", str(self.evil_echo_port), "stats"]))
        wait_port(self.echo_port)
        wait_port(self.evil_echo_port)
        config = {
            "Logging": {"LogLevel": {"Default": "Warning"}},
            "Relay": {
                "RelayId": "hostile-bench",
                "AgentListen": "127.0.0.1:0",
                "Tls": {"DevelopmentCertificatePath": os.path.join(work, "relay.pfx")},
                "Tokens": [
                    {"Name": "evil", "Token": TOKEN_EVIL, "Tenant": "evil", "Allow": ["*"]},
                    {"Name": "good", "Token": TOKEN_GOOD, "Tenant": "good", "Allow": ["*"]},
                ],
                "CloudEndpoints": [
                    {"Name": "evil-echo", "Listen": "127.0.0.1:0", "Tenant": "evil", "Endpoint": "evil-echo"},
                    {"Name": "good-echo", "Listen": "127.0.0.1:0", "Tenant": "good", "Endpoint": "good-echo"},
                ],
            },
        }
        config_path = os.path.join(work, f"{tag}-relay.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        self.relay_log = f"{tag}-relay"
        self.relay = start(self.relay_log, ["dotnet", RELAY, "--config", config_path])
        self.own.append(self.relay)
        self.pin = wait_log(self.relay_log, r"pin it in agents\): ([0-9A-F]{64})", self.relay).group(1)
        self.agent_port = int(wait_log(self.relay_log, r"listening for agents on https://127\.0\.0\.1:(\d+)", self.relay).group(1))
        self.public = {}
        for name in ["evil-echo", "good-echo"]:
            self.public[name] = int(wait_log(self.relay_log, rf"Cloud endpoint '{name}' on tcp://127\.0\.0\.1:(\d+)", self.relay).group(1))
        self.agent(f"{tag}-good-agent", TOKEN_GOOD, {"good-echo": self.echo_port})
        if evil_agent:
            self.agent(f"{tag}-evil-agent", TOKEN_EVIL, {"evil-echo": self.evil_echo_port})
        wait_echo(self.public["good-echo"])
        if evil_agent:
            wait_echo(self.public["evil-echo"])

    def agent(self, name, token, endpoints):
        args = ["dotnet", AGENT, "--relay", f"https://127.0.0.1:{self.agent_port}", "--pin", self.pin,
                "--Logging:LogLevel:Default", "Warning"]
        for endpoint, upstream in endpoints.items():
            args += ["--endpoint", f"{endpoint}=127.0.0.1:{upstream}"]
        self.own.append(start(name, args, env={"SITELINK_AUTHTOKEN": token}))

    def log_path(self):
        return os.path.join(work, self.relay_log + ".log")

    def stop(self):
        for process in reversed(self.own):
            stop(process)


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------

def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)
    except OSError:
        return None


def count_lines(path):
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


class Sampler(threading.Thread):
    """Relay RSS every 100 ms; calls on_limit once when it passes RSS_LIMIT_KIB."""

    def __init__(self, pid, on_limit):
        super().__init__(daemon=True)
        self.pid, self.on_limit = pid, on_limit
        self.samples = []  # (time, KiB)
        self.running = True
        self.limited = False

    def run(self):
        while self.running:
            value = rss_kib(self.pid)
            if value is not None:
                self.samples.append((time.time(), value))
                if value > RSS_LIMIT_KIB and not self.limited:
                    self.limited = True
                    self.on_limit()
            time.sleep(0.1)

    def peak(self, since, until):
        values = [v for t, v in self.samples if since <= t <= until]
        return max(values) if values else None


class Prober(threading.Thread):
    """1-byte round trips through the good agent's cloud endpoint every ~20 ms, on one persistent connection."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.rtts = []      # (time sent, ms)
        self.failures = []  # (time, what)
        self.running = True

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(5)
        return s

    def run(self):
        s = None
        while self.running:
            try:
                if s is None:
                    s = self.connect()
                began = time.perf_counter()
                sent_at = time.time()
                s.sendall(b"p")
                if s.recv(1) != b"p":
                    raise OSError("no echo (connection closed)")
                self.rtts.append((sent_at, (time.perf_counter() - began) * 1000))
                time.sleep(max(0.0, 0.020 - (time.perf_counter() - began)))
            except OSError as error:
                self.failures.append((time.time(), str(error) or type(error).__name__))
                if s is not None:
                    s.close()
                    s = None
                time.sleep(0.5)
        if s is not None:
            s.close()

    def window(self, since, until):
        values = sorted(ms for t, ms in self.rtts if since <= t <= until)
        failures = [f for f in self.failures if since <= f[0] <= until]
        if not values:
            return {"count": 0, "max": None, "p99": None, "p50": None, "failures": len(failures), "failure": failures[0][1] if failures else None}
        return {"count": len(values), "max": values[-1], "p99": values[min(len(values) - 1, int(len(values) * 0.99))],
                "p50": values[len(values) // 2], "failures": len(failures), "failure": failures[0][1] if failures else None,
                "failure_at_s": [round(t - since, 1) for t, _ in failures],
                "over_100ms_at_s": [round(t - since, 1) for t, ms in self.rtts if since <= t <= until and ms > 100][:20]}


class EchoStats(threading.Thread):
    """Polls the evil echo server's "accepted N open M" lines (the upstream side of the evil agent)."""

    def __init__(self, name):
        super().__init__(daemon=True)
        self.name = name
        self.samples = []  # (time, accepted, open)
        self.running = True

    def run(self):
        while self.running:
            lines = re.findall(r"accepted (\d+) open (\d+)", read_log(self.name))
            if lines:
                accepted, open_ = map(int, lines[-1])
                self.samples.append((time.time(), accepted, open_))
            time.sleep(0.5)


def relay_log_summary(path, start_line, end_line, top=3):
    """The most frequent log entries (first line of each: level and category[event]) and one sample message of each."""
    counts = collections.Counter()
    samples = {}
    with open(path, errors="replace") as f:
        previous = None
        for number, line in enumerate(f):
            if number < start_line:
                continue
            if number >= end_line:
                break
            line = line.rstrip("\n")
            if re.match(r"^(trce|dbug|info|warn|fail|crit): ", line):
                previous = line
                counts[line] += 1
            elif previous is not None and previous not in samples and line.strip():
                samples[previous] = line.strip()[:200]
                previous = None
            elif not line.startswith(" "):
                counts[line[:120]] += 1
                previous = None
    return [(entry, n, samples.get(entry, "")) for entry, n in counts.most_common(top)]


# ---------------------------------------------------------------------------------------------------------------
# Attacks
# ---------------------------------------------------------------------------------------------------------------

def attacks():
    q = QUICK
    return [
        # name, attack command, seconds it should take (the harness kills it after this + 60 s), extra args, needs the evil agent
        ("control-no-read", "control-no-read", 6 if q else 12, lambda s: ["--seconds", "6" if q else "12"], False),
        ("unbind-big", "unbind-big", 60, lambda s: ["--seconds", "60", "--count", "500" if q else "3000", "--length", "60000"], False),
        ("pending-hellos", "pending-hellos", 6 if q else 12, lambda s: ["--seconds", "6" if q else "12", "--connections", "6", "--count", "20000" if q else "100000"], False),
        ("parked-data (1 conn)", "parked-data", 6 if q else 12, lambda s: ["--seconds", "6" if q else "12", "--streams", "32", "--mib", "8", "--connections", "1"], False),
        ("parked-data (8 conns)", "parked-data", 6 if q else 12, lambda s: ["--seconds", "6" if q else "12", "--streams", "32", "--mib", "8", "--connections", "8"], False),
        ("silent-public", "silent-public", 15 if q else 70, lambda s: ["--seconds", "15" if q else "70", "--count", "2000", "--port", str(s.public["evil-echo"])], True),
        ("idle-tls", "idle-tls", 15 if q else 60, lambda s: ["--seconds", "15" if q else "60", "--count", "2000", "--port", str(s.agent_port)], False),
        ("rapid-reset", "rapid-reset", 10 if q else 30, lambda s: ["--seconds", "10" if q else "30", "--count", "20000" if q else "100000", "--port", str(s.agent_port)], False),
        # Not in the original list: rapid reset by an attacker that opens a new connection whenever one is closed.
        ("rapid-reset (reconnecting)", "rapid-reset", 10, lambda s: ["--seconds", "5" if q else "10", "--count", "100000000", "--reconnect", "1", "--port", str(s.agent_port)], False),
        ("auth-fail", "auth-fail", 10 if q else 40, lambda s: ["--seconds", "10" if q else "40", "--count", "5000" if q else "20000", "--connections", "4"], False),
        ("parked-reset-leak", "parked-reset-leak", 10, lambda s: ["--streams", "32"], False),
    ]


def run_attack(title, command, seconds, extra, evil_agent):
    log(f"== {title}")
    tag = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    stand = Stand(tag, evil_agent)
    attacker = None
    try:
        pid = stand.relay.pid
        killed_for_rss = []

        def on_limit():
            killed_for_rss.append(time.time())
            if attacker is not None and attacker.poll() is None:
                os.killpg(attacker.pid, signal.SIGKILL)

        sampler = Sampler(pid, on_limit)
        prober = Prober(stand.public["good-echo"])
        echo_stats = EchoStats(f"{tag}-evil-echo")
        sampler.start()
        prober.start()
        echo_stats.start()
        time.sleep(5)  # warm-up, then a quiet moment: the probe's latency before the attack
        quiet = prober.window(time.time() - 3, time.time())
        rss_before = rss_kib(pid)
        cpu_before = cpu_seconds(pid)
        lines_before = count_lines(stand.log_path())
        load_before = os.getloadavg()[0]
        began = time.time()
        args = ["dotnet", HELPER, "attack", command, "--relay", f"https://127.0.0.1:{stand.agent_port}",
                "--token", TOKEN_EVIL, "--source", ARGS.attacker_ip] + extra(stand)
        attacker = start(f"{tag}-attacker", args)
        try:
            attacker.wait(timeout=seconds + 60)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            stop(attacker, grace=2)
        ended = time.time()
        relay_alive = stand.relay.poll() is None
        time.sleep(SETTLE_S)
        # CPU, log lines and the good agent's latency count the attack and the settling after it: a relay may still
        # be working through what the attacker left in its buffers.
        cpu_during = cpu_seconds(pid)
        rss_after = rss_kib(pid)
        lines_after = count_lines(stand.log_path())
        sampler.running = prober.running = echo_stats.running = False
        sampler.join()
        prober.join(timeout=6)
        echo_stats.join()

        output = read_log(f"{tag}-attacker")
        match = re.search(r"^RESULT (\{.*\})$", output, re.M)
        result = json.loads(match.group(1)) if match else {"error": output.strip()[-600:] or "no output"}
        if timed_out:
            result["harness"] = f"killed after {seconds + 60} s"
        if killed_for_rss:
            result["harness"] = f"killed: relay RSS passed {RSS_LIMIT_KIB // 1024 // 1024} GiB after {killed_for_rss[0] - began:.1f} s"
        if evil_agent and echo_stats.samples:
            during = [s for s in echo_stats.samples if began <= s[0] <= ended]
            at_end = [s for s in during if s[0] <= began + seconds - 2] or during
            result["upstream_accepted"] = max(s[1] for s in echo_stats.samples) - (echo_stats.samples[0][1] if echo_stats.samples[0][0] < began else 0)
            result["upstream_open_peak"] = max((s[2] for s in during), default=0)
            result["upstream_open_near_end"] = at_end[-1][2] if at_end else 0
        return {
            "title": title,
            "rss_before": rss_before, "rss_peak": sampler.peak(began, ended + SETTLE_S), "rss_after": rss_after,
            "cpu": (cpu_during - cpu_before) if cpu_during is not None and cpu_before is not None else None,
            "duration": ended - began,
            "log_lines": lines_after - lines_before,
            "log_top": relay_log_summary(stand.log_path(), lines_before, lines_after),
            "probe": prober.window(began, ended + SETTLE_S), "quiet": quiet,
            "relay_alive": relay_alive,
            "load": [load_before, os.getloadavg()[0]],
            "result": result,
        }
    finally:
        if attacker is not None:
            stop(attacker, grace=2)
        stand.stop()


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

def mib(kib):
    return "—" if kib is None else f"{kib / 1024:.0f}"


def ms(value):
    return "—" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def statuses(counts):
    return ", ".join(f"{k} {v}" for k, v in (counts or {}).items()) or "none"


def verdict(title, r):
    """One cell: what the relay did to the attacker."""
    if "error" in r:
        return f"attacker failed: {r['error'][:200]}"
    text = ""
    name = title.split(" ")[0]
    if name == "control-no-read":
        text = (f"{r['outcome']}" + (f" after {r['ended_after_s']:.1f} s" if "ended_after_s" in r else "")
                + f"; {r['heartbeats_sent']:,} heartbeats sent, last write at {r['last_write_s']:.1f} s")
    elif name == "unbind-big":
        text = (f"{r['unbinds_sent']:,} Unbinds sent, {r['unbind_results']:,} UnbindResults back, "
                f"**{r['unbind_result_bytes'] / 1048576:.1f} MiB echoed** ({r['bind_id_chars_echoed']:,} bind-id chars); {r['outcome']}")
    elif name == "pending-hellos":
        text = (f"{r['calls_started']:,} calls started, {r['headers_sent']:,} reached the relay; "
                f"**unanswered at the relay (no Hello, no status): peak {r['held_at_relay_peak']:,}**, {r['held_at_relay_at_end']:,} at the end; "
                f"queued in client (relay's stream limit) {r['queued_in_client_at_end']:,}; ended: {statuses(r['ended_by_status'])}; "
                f"{r['connections_opened']} TCP connections")
    elif name == "parked-data":
        text = (f"{r['written_mib']} MiB accepted into {r.get('connections', 1)} conn(s); writes: {statuses(r['write_outcomes'])}; "
                f"calls at end: {statuses(r['calls_at_end'])}; control: {r['control_status']}")
    elif name == "silent-public":
        closed = f"closed by relay {r['closed']:,} ({statuses(r.get('closed_how'))}"
        if r["closed"]:
            closed += f", after {r['close_after_s_min']:.2f}–{r['close_after_s_max']:.2f} s"
        closed += ")"
        text = (f"{r['tcp_connected']:,}/{r['attempted']:,} TCP connects ok; {closed}; **open at end {r['open_at_end']:,}**; "
                f"upstream connections seen by the echo server: {r.get('upstream_accepted', '?')}, open near the end {r.get('upstream_open_near_end', '?')}")
        if r["connect_failed"]:
            text += f"; connect failed: {statuses(r['connect_failed'])}"
    elif name == "idle-tls":
        closed = f"closed by relay {r['closed']:,}"
        if r["closed"]:
            closed += f" ({statuses(r['closed_how'])}; after {r['close_after_s_min']:.1f}/{r['close_after_s_median']:.1f}/{r['close_after_s_max']:.1f} s min/median/max)"
        text = (f"{r['tcp_connected']:,}/{r['attempted']:,} TCP, **{r['tls_established']:,} TLS established**; {closed}; "
                f"**open at end {r['open_at_end']:,}**")
        if r["failures"]:
            text += f"; failures: {statuses(r['failures'])}"
    elif name == "rapid-reset" and "connections" in r:
        text = (f"**{r['pairs_sent']:,} HEADERS+RST pairs sent over {r['connections']:,} connections** in {r['elapsed_s']:.1f} s; "
                f"connections ended by: {statuses(r['connections_stopped_by'])}; failed connects: {statuses(r['failed_connects'])}")
    elif name == "rapid-reset":
        text = f"**{r['pairs_sent']:,} HEADERS+RST pairs sent** in {r['sending_stopped_s']:.1f} s; stopped by: {r['stopped_because']}"
        if r["goaway"]:
            text += f"; GOAWAY {'; '.join(r['goaway'])[:160]} after {r['goaway_after_s']:.2f} s ({r['pairs_sent_before_goaway']:,} pairs)"
        text += f"; connection {r['closed']}" + (f" at {r['closed_after_s']:.1f} s" if r["closed_after_s"] >= 0 else "")
        text += f"; {r['response_headers']:,} responses, RST from relay: {statuses(r['rst_from_server'])}"
    elif name == "auth-fail":
        text = (f"{r['calls_answered']:,}/{r['calls_started']:,} calls answered in {r['elapsed_s']:.1f} s ({r['calls_per_s']:,.0f}/s): "
                f"{statuses(r['ended_by_status'])}; {r['connections_opened']} TCP connections")
    elif name == "parked-reset-leak":
        text = (f"round 1 (32 parked): {statuses(r['round1'])}; reset all; round 2: {statuses(r['round2'])}: "
                f"**{r['round2_resource_exhausted']} RESOURCE_EXHAUSTED**; control: {r['control_status']}")
    else:
        text = json.dumps(r)
    if "harness" in r:
        text += f"; **{r['harness']}**"
    return text


def render(rows, elapsed, measured):
    lines = [
        f"# SiteLink hostile-agent bench ({LABEL}) — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Relay and agent: `{RELAY_DIR}` (Release: {measured}); attacker: bench helper `attack`, bound to {ARGS.attacker_ip}. "
        f"Mode: {'quick (smoke test; numbers not meaningful)' if QUICK else 'full'}; {os.cpu_count()} cores; took {elapsed:.0f} s. "
        "A fresh relay and good agent for every attack. RSS in MiB (before / peak / after, after = 5 s after the attacker "
        "exited); s = the attacker's wall time; CPU = relay CPU seconds, log lines = relay stdout+stderr lines (Warning "
        "level) and good echo = 1-byte round trips through the good agent every ~20 ms (max / p99 in ms, failed probes; "
        "quiet p99 before the attack in brackets), all three from the attack's start to 5 s after the attacker exited.",
        "",
        "| attack | s | relay RSS MiB | relay CPU s | log lines | good echo max / p99 ms (quiet p99), failed | what the relay did to the attacker |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "failed" in row:
            lines.append(f"| {row['title']} | — | — | — | — | — | harness failed: {row['failed']} |")
            continue
        p, q = row["probe"], row["quiet"]
        probe = f"{ms(p['max'])} / {ms(p['p99'])} ({ms(q['p99'])}), {p['failures']}"
        if p["failures"]:
            probe = f"**{probe}** ({p['failure']})"
        rss = f"{mib(row['rss_before'])} / {mib(row['rss_peak'])} / {mib(row['rss_after'])}"
        what = verdict(row["title"], row["result"])
        if not row["relay_alive"]:
            what = "**relay process died**; " + what
        cpu = "—" if row["cpu"] is None else f"{row['cpu']:.1f}"
        lines.append(f"| {row['title']} | {row['duration']:.0f} | {rss} | {cpu} | {row['log_lines']:,} | {probe} | {what} |")
    lines += ["", "## Details", ""]
    for row in rows:
        if "failed" in row:
            continue
        lines.append(f"- **{row['title']}** (machine load average {row['load'][0]:.1f} before, {row['load'][1]:.1f} after): attacker report `{json.dumps(row['result'], separators=(',', ':'))}`")
        for entry, n, sample in row["log_top"]:
            lines.append(f"  - log ×{n:,}: `{entry[:150]}`" + (f" — `{sample[:180]}`" if sample else ""))
        p = row["probe"]
        if p.get("failure_at_s") or p.get("over_100ms_at_s"):
            lines.append(f"  - good echo: {p['count']} probes, p50 {ms(p['p50'])} ms; failed probes at {p.get('failure_at_s')} s, "
                         f"probes over 100 ms at {p.get('over_100ms_at_s')} s after the attack started (attacker exited at {row['duration']:.1f} s)")
    lines.append("")
    return "\n".join(lines)


def snapshot():
    """Copies the relay's and the agent's build output, so a rebuild of --relay-dir during the run changes nothing
    measured; returns a description of what is measured (commit, local changes, the relay DLL's hash)."""
    global RELAY, AGENT
    for name in ["relay", "agent"]:
        source = os.path.dirname(RELAY if name == "relay" else AGENT)
        target = os.path.join(work, name + "-bin")
        shutil.copytree(source, target)
    with open(os.path.join(work, "relay-bin", os.path.basename(RELAY)), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    built = datetime.datetime.fromtimestamp(os.path.getmtime(RELAY), datetime.timezone.utc)
    RELAY = os.path.join(work, "relay-bin", os.path.basename(RELAY))
    AGENT = os.path.join(work, "agent-bin", os.path.basename(AGENT))
    git = lambda *a: subprocess.run(["git", "-C", RELAY_DIR, *a], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "?"
    changed = git("status", "--short", "--", "src", "samples", "protos").splitlines()
    local = f", with {len(changed)} uncommitted change(s) under src/ samples/ protos/" if changed else ""
    return f"commit {commit}{local}; SiteLink.Relay.dll sha256 {digest}…, built {built:%Y-%m-%d %H:%M} UTC"


def build():
    log("== building the bench helper (Release)")
    subprocess.run(["dotnet", "build", os.path.join(BENCH_ROOT, "bench/SiteLink.Bench"), "-c", "Release", "-v", "quiet", "-nologo"],
                   check=True, stdout=subprocess.DEVNULL)
    if ARGS.build:
        for project in ["src/SiteLink.Relay", "samples/ConsoleAgent"]:
            log(f"== building {RELAY_DIR}/{project} (Release)")
            subprocess.run(["dotnet", "build", os.path.join(RELAY_DIR, project), "-c", "Release", "-v", "quiet", "-nologo"],
                           check=True, stdout=subprocess.DEVNULL)
    for path in [RELAY, AGENT, HELPER]:
        if not os.path.exists(path):
            raise RuntimeError(f"{path} is missing: build it in Release (or pass --build)")


def main():
    started = time.time()
    # 2,000+ sockets per attacker, relay and agent: children inherit the raised limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    build()
    measured = snapshot()
    log(f"== measuring {measured}")
    log(f"== SiteLink hostile bench ({'quick' if QUICK else 'full'}), relay from {RELAY_DIR}; work dir {work}")
    only = set(ARGS.only.split(",")) if ARGS.only else None
    rows = []
    for title, command, seconds, extra, evil_agent in attacks():
        if only and title.split(" ")[0] not in only and title not in only:
            continue
        try:
            row = run_attack(title, command, seconds, extra, evil_agent)
        except Exception as error:  # one attack failing must not lose the others
            log(f"   failed: {error}")
            row = {"title": title, "failed": str(error)[:300]}
        rows.append(row)
        if "failed" not in row:
            log(f"   RSS {mib(row['rss_before'])}/{mib(row['rss_peak'])}/{mib(row['rss_after'])} MiB, CPU {row['cpu']:.1f} s, "
                f"log lines {row['log_lines']}, probe max {ms(row['probe']['max'])} ms, failures {row['probe']['failures']}")
    table = render(rows, time.time() - started, measured)
    os.makedirs(os.path.join(BENCH_ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(BENCH_ROOT, "bench/results", f"hostile-{LABEL}.md"), "w") as f:
        f.write(table)
    print(table)
    return 0 if all("failed" not in r for r in rows) else 1


if __name__ == "__main__":
    # Ctrl-C or a kill of the harness still stops every process it started (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        code = main()
    except Exception as error:
        log(f"hostile bench failed: {error}")
        code = 1
    finally:
        stop_all()
    sys.exit(code)
