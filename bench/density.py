#!/usr/bin/env python3
"""SiteLink density benchmark: many agent sessions on one relay (issue 17's yardstick).

  python3 bench/density.py [--quick] [--sessions N] [--processes P] [--probes K]

Starts the Release relay (src/SiteLink.Relay) as a process on loopback and N agent sessions spread over P load-generator
processes (bench/SiteLink.Bench `sessions`: the SDK with its default options, session i binding the in-process echo
endpoint d{i}). All sessions come from 127.0.0.1, standing for N customers: the relay's per-address and per-token caps
are raised to N (every other limit is the default). Reports:
  - the relay's resident memory before the sessions and with all N connected and idle: KiB per idle session;
  - the time for all N to connect and bind, and the load generators' memory;
  - K connections through K randomly chosen sessions (a tcp cloud endpoint each), 64 KiB each way, bytes compared;
  - the relay restarted (SIGTERM, then started again on the same port with the same certificate): the time until all
    N are connected again, the peak rate of sessions the relay saw arriving (its session count sampled every 100 ms,
    the largest rise over one second), the failed connection attempts the agents counted, and the K probes again.
Writes bench/results/density-latest.md (density-quick.md with --quick; also printed). Loopback only; every process is
stopped at the end.
"""
import argparse
import datetime
import json
import os
import random
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELAY = os.path.join(ROOT, "src/SiteLink.Relay/bin/Release/net10.0/SiteLink.Relay.dll")
HELPER = os.path.join(ROOT, "bench/SiteLink.Bench/bin/Release/net10.0/SiteLink.Bench.dll")
TOKEN = "density-token-" + os.urandom(12).hex()
KEY = "density-admin-key-" + os.urandom(12).hex()

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="400 sessions, 20 probes (a smoke test)")
parser.add_argument("--sessions", type=int)
parser.add_argument("--processes", type=int)
parser.add_argument("--probes", type=int)
parser.add_argument("--root", help="run the Release binaries of another checkout (an A/B against an older build)")
parser.add_argument("--gcdump", help="write a gcdump of the relay with every session connected here (dotnet-gcdump on PATH)")
ARGS = parser.parse_args()
if ARGS.root:
    RELAY = os.path.join(os.path.abspath(ARGS.root), "src/SiteLink.Relay/bin/Release/net10.0/SiteLink.Relay.dll")
    HELPER = os.path.join(os.path.abspath(ARGS.root), "bench/SiteLink.Bench/bin/Release/net10.0/SiteLink.Bench.dll")
SESSIONS = ARGS.sessions or (400 if ARGS.quick else 10000)
PROCESSES = ARGS.processes or (2 if ARGS.quick else 4)
PROBES = min(ARGS.probes or (20 if ARGS.quick else 200), SESSIONS)
SETTLE_S = 5 if ARGS.quick else 15
LABEL = "quick" if ARGS.quick or ARGS.root or ARGS.sessions else "latest"

INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE

work = tempfile.mkdtemp(prefix="sitelink-density-")
group = benchlib.ProcessGroup(work)


def log(message):
    print(message, flush=True)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def status(admin):
    request = urllib.request.Request(admin + "/v1/status", headers={"Authorization": "Bearer " + KEY})
    with urllib.request.urlopen(request, context=INSECURE, timeout=10) as response:
        return json.loads(response.read())


def start_relay(config_path, name):
    relay = group.start(name, ["dotnet", RELAY, "--config", config_path])
    pin = group.wait_log(name, r"pin it in agents\): ([0-9A-F]{64})", timeout=120).group(1)
    admin = group.wait_log(name, r"Admin API on (https://127\.0\.0\.1:\d+)/", timeout=120).group(1)
    return relay, pin, admin


class SessionSampler:
    """Samples the relay's session count every 100 ms: the peak arrival rate is the largest rise over one second."""

    def __init__(self, admin):
        self.admin, self.samples, self.stop = admin, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.samples.append((time.time(), status(self.admin)["sessions"]))
            except OSError:
                pass
            self.stop.wait(0.1)

    def finish(self):
        self.stop.set()
        self.thread.join()
        peak = 0
        for i, (t, count) in enumerate(self.samples):
            earlier = [c for (u, c) in self.samples[:i] if t - u >= 1.0]
            if earlier:
                peak = max(peak, count - earlier[-1])
        return peak


def wait_sessions(admin, count, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if status(admin)["sessions"] >= count:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def last_status(name):
    """The load generator's last status line: (connected, bound, failed attempts)."""
    with open(group.log_path(name)) as f:
        lines = [l.split() for l in f if l.startswith("status ")]
    if not lines:
        return (0, 0, 0)
    parts = lines[-1]
    return int(parts[3]), int(parts[5]), int(parts[7])


def probe(port):
    payload = os.urandom(64 * 1024)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.settimeout(30)
            sender = threading.Thread(target=lambda: (client.sendall(payload), client.shutdown(socket.SHUT_WR)))
            sender.start()
            received = bytearray()
            while True:
                chunk = client.recv(65536)
                if not chunk:
                    break
                received += chunk
            sender.join()
            return bytes(received) == payload
    except OSError:
        return False


def probe_all(ports):
    results = [False] * len(ports)
    gate = threading.Semaphore(20)

    def one(i):
        with gate:
            results[i] = probe(ports[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(ports))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(results)


def main():
    started = time.time()
    log(f"== SiteLink density: {SESSIONS} sessions in {PROCESSES} processes, {PROBES} probes; work dir {work}")
    agent_port, admin_port, *probe_ports = benchlib.free_ports(PROBES + 2)
    chosen = random.sample(range(SESSIONS), PROBES)
    config = {
        "Logging": {"LogLevel": {"Default": "Warning", "SiteLink.Relay.Hosting": "Information"}},
        "Relay": {
            "RelayId": "density-relay",
            "AgentListen": f"127.0.0.1:{agent_port}",
            "Tls": {"DevelopmentCertificatePath": os.path.join(work, "relay.pfx")},
            "Tokens": [{"Name": "density", "Token": TOKEN, "Tenant": "density", "Allow": ["d*"]}],
            "CloudEndpoints": [{"Name": f"c{k}", "Listen": f"127.0.0.1:{port}", "Tenant": "density", "Endpoint": f"d{i}"}
                               for k, (i, port) in enumerate(zip(chosen, probe_ports))],
            # One address and one token stand for N customers here: their caps are N; every other limit is the default.
            "Limits": {"MaxSessionsPerToken": SESSIONS + 100, "MaxAgentConnectionsPerIp": SESSIONS + 100,
                       "MaxPendingHellosPerIp": SESSIONS + 100, "MaxAgentConnections": SESSIONS + 1000},
            "Admin": {"Listen": f"127.0.0.1:{admin_port}", "Keys": [{"Name": "bench", "Key": KEY, "Scope": "full"}]},
            "Store": {"Path": os.path.join(work, "relay.db")},
        },
    }
    config_path = os.path.join(work, "relay.json")
    with open(config_path, "w") as f:
        json.dump(config, f)

    relay, pin, admin = start_relay(config_path, "relay")
    time.sleep(3)
    relay_before = rss_kib(relay.pid)

    log(f"-- connecting {SESSIONS} sessions")
    sampler = SessionSampler(admin)
    generators = []
    per = SESSIONS // PROCESSES
    launch = time.time()
    for p in range(PROCESSES):
        first = p * per
        count = per if p < PROCESSES - 1 else SESSIONS - first
        name = f"sessions-{p}"
        out = open(group.log_path(name), "w")
        process = subprocess.Popen(["dotnet", HELPER, "sessions", f"https://127.0.0.1:{agent_port}", pin, TOKEN, str(first), str(count)],
                                   stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, cwd=work, start_new_session=True)
        group.processes.append((name, process))
        generators.append((name, process))
    connect_ms = [int(group.wait_log(name, r"connected \d+ in (\d+) ms", timeout=1800).group(1)) for name, _ in generators]
    all_connected_s = time.time() - launch
    first_peak = sampler.finish()
    time.sleep(SETTLE_S)
    relay_after = rss_kib(relay.pid)
    generators_kib = sum(rss_kib(p.pid) for _, p in generators)
    sessions_seen = status(admin)["sessions"]
    per_session = (relay_after - relay_before) / SESSIONS
    log(f"   all connected in {all_connected_s:.1f} s; relay {relay_before / 1024:.0f} -> {relay_after / 1024:.0f} MiB: {per_session:.1f} KiB per session")

    if ARGS.gcdump:
        subprocess.run(["dotnet-gcdump", "collect", "-p", str(relay.pid), "-o", ARGS.gcdump], check=True, capture_output=True, timeout=600)

    log(f"-- {PROBES} probes through randomly chosen sessions")
    probes_ok = probe_all(probe_ports)

    log("-- restarting the relay")
    failed_before = sum(last_status(name)[2] for name, _ in generators)
    relay.send_signal(signal.SIGTERM)
    relay.wait(timeout=60)
    relay2, _, admin = start_relay(config_path, "relay-restarted")
    restarted = time.time()
    sampler = SessionSampler(admin)
    reconnected = wait_sessions(admin, SESSIONS, timeout=1800)
    reconnect_s = time.time() - restarted
    peak = sampler.finish()
    # The agents' own view: every session connected with its endpoint bound again.
    deadline = time.time() + 120
    while time.time() < deadline and sum(last_status(name)[1] for name, _ in generators) < SESSIONS:
        time.sleep(0.5)
    bound_after = sum(last_status(name)[1] for name, _ in generators)
    failed_after = sum(last_status(name)[2] for name, _ in generators) - failed_before
    probes_after = probe_all(probe_ports)
    relay_restarted_kib = rss_kib(relay2.pid)

    for _, process in generators:
        try:
            process.stdin.close()
        except OSError:
            pass

    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"# SiteLink density — {now:%Y-%m-%d %H:%M} UTC (`python3 bench/density.py{' --quick' if ARGS.quick else ''}`)",
        "",
        f"{SESSIONS} agent sessions (SDK defaults; each binds one in-process echo endpoint) in {PROCESSES} load-generator processes, "
        f"one relay (Release, TLS, default limits but the per-address and per-token caps, raised to {SESSIONS} since one address and one "
        f"token stand for {SESSIONS} customers); {os.cpu_count()} cores; took {time.time() - started:.0f} s.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| relay RSS before the sessions / with all {SESSIONS} connected and idle ({SETTLE_S} s after) | {relay_before / 1024:.0f} / {relay_after / 1024:.0f} MiB |",
        f"| **relay RSS per idle session** | **{per_session:.1f} KiB** (target ≤ 48 KiB) |",
        f"| sessions the relay counted | {sessions_seen} |",
        f"| time for all {SESSIONS} to connect and bind (load generators started together, 64 connecting at a time each) | {all_connected_s:.1f} s (per process: {', '.join(f'{ms / 1000:.1f}' for ms in connect_ms)} s) |",
        f"| peak arrival rate while connecting (rise of the relay's session count over 1 s) | {first_peak} sessions/s |",
        f"| load generators' RSS (all {PROCESSES} processes) | {generators_kib / 1024:.0f} MiB ({generators_kib / SESSIONS:.1f} KiB per session) |",
        f"| connections through {PROBES} randomly chosen sessions, 64 KiB each way, bytes compared | {probes_ok} of {PROBES} intact |",
        f"| relay restart (SIGTERM, start again): time until all {SESSIONS} connected again | {'%.1f s' % reconnect_s if reconnected else 'not all within 30 min'} |",
        f"| peak arrival rate after the restart (the herd, spread by the agents' jittered backoff) | {peak} sessions/s |",
        f"| failed connection attempts the agents counted during the restart | {failed_after} |",
        f"| sessions connected with their endpoint bound again (the agents' view) | {bound_after} of {SESSIONS} |",
        f"| the {PROBES} probes again after the restart | {probes_after} of {PROBES} intact |",
        f"| restarted relay's RSS with all sessions back | {relay_restarted_kib / 1024:.0f} MiB |",
        "",
    ]
    table = "\n".join(lines)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench/results", f"density-{LABEL}.md"), "w") as f:
        f.write(table)
    print(table)
    ok = probes_ok == PROBES and probes_after == PROBES and reconnected and bound_after == SESSIONS
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        code = main()
    except Exception as error:  # report, then still stop every process
        log(f"density benchmark failed: {error}")
        code = 1
    finally:
        group.stop_all()
    sys.exit(code)
