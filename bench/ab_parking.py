#!/usr/bin/env python3
"""A/B of what parked streams buy, between two Release builds: new connections to a fresh agent and under load.

  python3 bench/ab_parking.py BEFORE_DIR AFTER_DIR [ROUNDS] [--wan]

Each DIR is a repository root with src/SiteLink.Relay and samples/ConsoleAgent built in Release. Each side runs its
own relay (a tcp cloud endpoint) and, per round, a freshly started standalone agent serving one nginx on loopback.
Per round and side (alternating ABBA): 1 s after the agent bound its endpoint, a burst of 20 new connections at once,
each a GET with Connection: close (the burst's median and slowest request, in ms: what an idle agent's first clients
see); then wrk -t2 -c20 -d5s with a new connection per request (requests/s and p50: the steady state, where parking
has grown). --wan puts the harness's delay line (10 ms each way) between each agent and its relay, where a connection
that finds nothing parked pays the OpenStream round trip. Prints every round and the medians. Loopback only; every process is stopped at the end.
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib

work = tempfile.mkdtemp(prefix="sitelink-ab-parking-")
g = benchlib.ProcessGroup(work)
TOKEN = "ab-token-0123456789abcdefghijklmnop"
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3].isdigit() else 6
WAN = "--wan" in sys.argv
HELPER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench/SiteLink.Bench/bin/Release/net10.0/SiteLink.Bench.dll")


def burst(port, count=20):
    times = [0.0] * count
    start = threading.Barrier(count)

    def one(i):
        start.wait()
        began = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        if not data.startswith(b"HTTP/1.1 200"):
            raise RuntimeError("a burst request failed")
        times[i] = (time.perf_counter() - began) * 1000

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statistics.median(times), max(times)


def wrk_close(port):
    out = subprocess.run(["wrk", "-t2", "-c20", "-d5s", "--latency", "-H", "Connection: close", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"50%\s+([\d.]+)(us|ms|s)", out).groups()
    return rps, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


try:
    http = benchlib.free_port()
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(f"""daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx-error.log warn;
events {{ worker_connections 20000; }}
http {{ access_log off; client_body_temp_path {work}/b; proxy_temp_path {work}/p; fastcgi_temp_path {work}/f; uwsgi_temp_path {work}/u; scgi_temp_path {work}/s;
  server {{ listen 127.0.0.1:{http}; location / {{ return 200 "hello from the internal service\\n"; }} }} }}
""")
    g.start("nginx", ["nginx", "-c", f"{work}/nginx.conf", "-p", work])
    benchlib.wait_port(http)
    sides = {}
    for side, root in (("before", os.path.abspath(sys.argv[1])), ("after", os.path.abspath(sys.argv[2]))):
        tcp = benchlib.free_port()
        cfg = {"Logging": {"LogLevel": {"Default": "Warning"}}, "Relay": {"RelayId": side, "AgentListen": "127.0.0.1:0",
               "Tls": {"DevelopmentCertificatePath": f"{work}/{side}.pfx"},
               "Tokens": [{"Name": "t", "Token": TOKEN, "Tenant": "t", "Allow": ["*"]}],
               "CloudEndpoints": [{"Name": "tcp", "Listen": f"127.0.0.1:{tcp}", "Tenant": "t", "Endpoint": "http",
                                   "MaxConnections": 20000, "MaxConnectionsPerClientIp": 20000}]}}
        with open(f"{work}/{side}.json", "w") as f:
            json.dump(cfg, f)
        g.start(f"relay-{side}", ["dotnet", f"{root}/src/SiteLink.Relay/bin/Release/net10.0/SiteLink.Relay.dll", "--config", f"{work}/{side}.json"])
        url = g.wait_log(f"relay-{side}", r"listening for agents on (https://127\.0\.0\.1:\d+)/").group(1)
        pin = g.wait_log(f"relay-{side}", r"pin it in agents\): ([0-9A-F]{64})").group(1)
        if WAN:
            line = benchlib.free_port()
            g.start(f"wan-{side}", ["dotnet", HELPER, "delay-proxy", str(line), url.rsplit(":", 1)[1], "10"])
            benchlib.wait_port(line)
            url = f"https://127.0.0.1:{line}"
        sides[side] = (root, url, pin, tcp)

    def fresh_agent(side, run):
        root, url, pin, tcp = sides[side]
        name = f"agent-{side}-{run}"
        agent = g.start(name, ["dotnet", f"{root}/samples/ConsoleAgent/bin/Release/net10.0/sitelink-agent.dll", "--relay", url, "--pin", pin,
                               "--no-proxy", "--endpoint", f"http=127.0.0.1:{http}"], env={"SITELINK_AUTHTOKEN": TOKEN})
        g.wait_log(name, r"Endpoint 'http' bound")
        time.sleep(1)
        return agent

    results = {s: [] for s in sides}
    order = list(sides)
    for r in range(ROUNDS + 1):
        for side in (order if r % 2 == 0 else list(reversed(order))):
            agent = fresh_agent(side, r)
            tcp = sides[side][3]
            first = burst(tcp)
            rps, p50 = wrk_close(tcp)
            agent.terminate()
            agent.wait(timeout=30)
            if r == 0:
                continue  # warm-up round
            results[side].append((first[0], first[1], rps, p50))
            print(f"round {r} {side}: fresh-agent burst of 20: median {first[0]:.1f} ms, slowest {first[1]:.1f} ms; "
                  f"wrk c=20 new connections {rps:.0f} req/s, p50 {p50:.2f} ms", flush=True)
    for side, rows in results.items():
        med = [statistics.median(x[i] for x in rows) for i in range(4)]
        print(f"{side}: burst median {med[0]:.1f} ms, burst slowest {med[1]:.1f} ms, new connections {med[2]:.0f} req/s, p50 {med[3]:.2f} ms (medians of {len(rows)} rounds)")
finally:
    g.stop_all()
