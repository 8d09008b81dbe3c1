#!/usr/bin/env python3
"""High-availability drills (issue 13): kill -9 under load, and count what the clients saw.

pool: one relay, three `sitelink-agent --pool` processes serving the same endpoint name (an echo service), and a
load of short connections (connect, 64 bytes each way, verified, close) from several client threads. After a few
seconds one agent is killed with SIGKILL. Reported: connections before/after, failed client connections, and the time
from the kill until the last failure (after it, every connection succeeded until the end).

replicas: two relay processes with the same configuration (tokens, endpoint, certificate) behind haproxy (TCP mode,
health-checked every 200 ms, redispatch on a failed connect), one `sitelink-agent` connected to both (RelayUrls), the
same load through haproxy, and one relay killed with SIGKILL.

Each drill fails (exit 1) when a connection failed before the kill, or when failures go on to the end.

Run: bench/ha_drill.sh (builds in Release first). Loopback only; every process stops by itself.
"""

import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELAY = os.path.join(ROOT, "src/SiteLink.Relay/bin/Release/net10.0/SiteLink.Relay.dll")
AGENT = os.path.join(ROOT, "samples/ConsoleAgent/bin/Release/net10.0/sitelink-agent.dll")
HELPER = os.path.join(ROOT, "bench/SiteLink.Bench/bin/Release/net10.0/SiteLink.Bench.dll")
TOKEN = "drill-token-" + os.urandom(12).hex()
QUICK = "--quick" in sys.argv
BEFORE_S = 3 if QUICK else 5
AFTER_S = 4 if QUICK else 10
THREADS = 8

work = tempfile.mkdtemp(prefix="sitelink-drill-")
group = benchlib.ProcessGroup(work)


wait_log = group.wait_log


def one_connection(port):
    """A short connection through the pool: None when 64 random bytes came back intact, else what went wrong."""
    payload = os.urandom(64)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.settimeout(3)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            received = b""
            while len(received) < len(payload):
                chunk = s.recv(4096)
                if not chunk:
                    break
                received += chunk
            return None if received == payload else f"{len(received)} of {len(payload)} bytes came back"
    except OSError as e:
        return f"{type(e).__name__}: {e}"


failures = []


def load(port, until, results):
    while time.time() < until:
        started = time.time()
        failure = one_connection(port)
        # Counted when it ended: one in flight at the kill belongs to the kill.
        ended = time.time()
        results.append((ended, failure is None))
        if failure is not None:
            failures.append((ended, f"{failure} (started {1000 * (ended - started):.0f} ms before it ended)"))


def start_relay(name, agent_port, public, certificate):
    config = {
        "Logging": {"LogLevel": {"Default": "Warning", "SiteLink.Relay": "Information"}},
        "Relay": {
            "RelayId": name,
            "AgentListen": f"127.0.0.1:{agent_port}",
            "Tls": {"DevelopmentCertificatePath": certificate},
            "Tokens": [{"Name": "drill", "Token": TOKEN, "Tenant": "drill", "Allow": ["*"]}],
            "CloudEndpoints": [{"Name": "pool", "Listen": f"127.0.0.1:{public}", "Tenant": "drill", "Endpoint": "pool",
                                "MaxConnectionsPerClientIp": 4096}],
        },
    }
    path = os.path.join(work, f"{name}.json")
    with open(path, "w") as f:
        json.dump(config, f)
    process = group.start(name, ["dotnet", RELAY, "--config", path])
    pin = wait_log(name, r"pin it in agents\): ([0-9A-F]{64})").group(1)
    return process, pin


def start_agent(name, relay_ports, pin, echo, pool=False):
    args = ["dotnet", AGENT, "--relay", f"https://127.0.0.1:{relay_ports[0]}", "--pin", pin,
            "--endpoint", f"pool=127.0.0.1:{echo}", "--SiteLink:ClientId", name]
    for i, port in enumerate(relay_ports[1:]):
        args += [f"--SiteLink:RelayUrls:{i}", f"https://127.0.0.1:{port}"]
    if pool:
        args.append("--pool")
    return group.start(name, args, env={"SITELINK_AUTHTOKEN": TOKEN})


def wait_binds(relay, count, public):
    """Until the relay logged `count` binds of 'pool' and 30 connections in a row got through."""
    deadline = time.time() + 60
    while True:
        with open(group.log_path(relay)) as f:
            if len(re.findall(r"bound 'pool'", f.read())) >= count and all(one_connection(public) is None for _ in range(30)):
                return
        if time.time() > deadline:
            raise RuntimeError(f"'pool' was not bound {count} time(s) at {relay}; see {work}")
        time.sleep(0.2)


def drill(title, public, victim, what):
    """Short connections from THREADS threads through `public`; SIGKILL `victim` after BEFORE_S; report."""
    results = []
    until = time.time() + BEFORE_S + AFTER_S
    threads = [threading.Thread(target=load, args=(public, until, results)) for _ in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(BEFORE_S)
    killed_at = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    for t in threads:
        t.join()

    before = [r for r in results if r[0] < killed_at]
    after = [r for r in results if r[0] >= killed_at]
    failed_before = sum(1 for t, ok in before if not ok)
    failed_after = [t for t, ok in after if not ok]
    recovery_ms = (max(failed_after) - killed_at) * 1000 if failed_after else 0.0
    print(f"{title}")
    print(f"  ended before the kill: {len(before)} connections in {BEFORE_S} s ({len(before) / BEFORE_S:.0f}/s), {failed_before} failed")
    print(f"  kill -9 of {what}; ended in the {AFTER_S} s after: {len(after)} connections ({len(after) / AFTER_S:.0f}/s), {len(failed_after)} failed (in flight at the kill, or sent to the dead one before it was known dead)")
    print(f"  time from the kill to the last failed connection: {recovery_ms:.0f} ms; every connection after it succeeded")
    for at, why in sorted(failures):
        print(f"    failed, ended {1000 * (at - killed_at):+.0f} ms from the kill: {why}")
    failures.clear()
    sys.stdout.flush()
    ok = failed_before == 0 and len(after) > 0 and recovery_ms < (AFTER_S - 1) * 1000
    return ok


def pool_drill(echo):
    agent_port, public = benchlib.free_port(), benchlib.free_port()
    _, pin = start_relay("relay", agent_port, public, os.path.join(work, "relay.pfx"))
    agents = [start_agent(f"drill-agent-{i + 1}", [agent_port], pin, echo, pool=True) for i in range(3)]
    wait_binds("relay", 3, public)
    return drill(f"pool drill: 3 agents (--pool) on one relay, {THREADS} client threads of short connections (64 bytes echoed and checked)",
                 public, agents[0], "agent 1 of 3")


def replica_drill(echo):
    haproxy = next((p for p in ("/usr/sbin/haproxy", "/usr/bin/haproxy") if os.path.exists(p)), None)
    if haproxy is None:
        raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
    certificate = os.path.join(work, "replicas.pfx")
    ports = [(benchlib.free_port(), benchlib.free_port()) for _ in range(2)]
    # One after the other: the first writes the development certificate, the second loads it (one pin for both).
    relays = []
    for i, (agent_port, public) in enumerate(ports):
        relays.append(start_relay(f"replica-{'ab'[i]}", agent_port, public, certificate))
    start_agent("drill-agent-replicas", [p[0] for p in ports], relays[0][1], echo)
    for i, (_, public) in enumerate(ports):
        wait_binds(f"replica-{'ab'[i]}", 1, public)
    front = benchlib.free_port()
    cfg = os.path.join(work, "haproxy.cfg")
    servers = "\n".join(f"    server replica-{'ab'[i]} 127.0.0.1:{public} check inter 200ms fall 1 rise 2" for i, (_, public) in enumerate(ports))
    with open(cfg, "w") as f:
        f.write(f"""global
    log stderr format raw local0 notice
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend public
    bind 127.0.0.1:{front}
    default_backend replicas
backend replicas
    balance roundrobin
    option redispatch
    retries 2
{servers}
""")
    group.start("haproxy", [haproxy, "-f", cfg, "-db"])
    benchlib.wait_port(front)
    time.sleep(1)
    return drill(f"replica drill: 2 relay processes behind haproxy (tcp, health-checked), 1 agent connected to both, {THREADS} client threads",
                 front, relays[0][0], "relay replica A of 2")


def main():
    try:
        echo = benchlib.free_port()
        group.start("echo-server", ["dotnet", HELPER, "echo-server", str(echo)])
        benchlib.wait_port(echo)
        ok = pool_drill(echo)
        ok = replica_drill(echo) and ok
    finally:
        group.stop_all()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
