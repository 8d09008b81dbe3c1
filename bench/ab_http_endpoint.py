#!/usr/bin/env python3
"""A/B of the http cloud endpoint's keep-alive rate against the tcp endpoint's, between two Release builds.

  python3 bench/ab_http_endpoint.py BEFORE_DIR AFTER_DIR

Each DIR is a repository root with src/SiteLink.Relay and samples/ConsoleAgent built in Release (e.g. a
`git worktree add --detach /tmp/before <commit>` built there). Each side runs its own relay (a tcp and an http cloud
endpoint to the same internal endpoint) and standalone agent; one nginx on loopback is the upstream of both. After a
warm-up, 5 rounds alternate the sides (ABBA), each measuring wrk -t2 -c50 -d5s keep-alive on the tcp endpoint then the
http one; prints every round and the medians. Loopback only; every process is stopped at the end.
"""
import json, os, re, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib
work = tempfile.mkdtemp(prefix="sitelink-ab-")
g = benchlib.ProcessGroup(work)
TOKEN = "ab-token-0123456789abcdefghijklmnop"
try:
    http = benchlib.free_port()
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(f"""daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx-error.log warn;
events {{ worker_connections 20000; }}
http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 300s; client_body_temp_path {work}/b; proxy_temp_path {work}/p; fastcgi_temp_path {work}/f; uwsgi_temp_path {work}/u; scgi_temp_path {work}/s;
  server {{ listen 127.0.0.1:{http}; location / {{ return 200 "hello from the internal service\\n"; }} }} }}
""")
    g.start("nginx", ["nginx", "-c", f"{work}/nginx.conf", "-p", work]); benchlib.wait_port(http)
    sides = {}
    for side, root in (("before", os.path.abspath(sys.argv[1])), ("after", os.path.abspath(sys.argv[2]))):
        tcp, hep = benchlib.free_port(), benchlib.free_port()
        cfg = {"Logging": {"LogLevel": {"Default": "Warning"}}, "Relay": {"RelayId": side, "AgentListen": "127.0.0.1:0",
               "Tls": {"DevelopmentCertificatePath": f"{work}/{side}.pfx"},
               "Tokens": [{"Name": "t", "Token": TOKEN, "Tenant": "t", "Allow": ["*"]}],
               "CloudEndpoints": [{"Name": "tcp", "Listen": f"127.0.0.1:{tcp}", "Tenant": "t", "Endpoint": "http", "MaxConnections": 20000, "MaxConnectionsPerClientIp": 20000},
                                  {"Name": "hep", "Protocol": "http", "Listen": f"127.0.0.1:{hep}", "Hostnames": ["127.0.0.1"], "Tenant": "t", "Endpoint": "http", "MaxConnections": 20000, "MaxConnectionsPerClientIp": 20000}]}}
        json.dump(cfg, open(f"{work}/{side}.json", "w"))
        g.start(f"relay-{side}", ["dotnet", f"{root}/src/SiteLink.Relay/bin/Release/net10.0/SiteLink.Relay.dll", "--config", f"{work}/{side}.json"])
        url = g.wait_log(f"relay-{side}", r"listening for agents on (https://127\.0\.0\.1:\d+)/").group(1)
        pin = g.wait_log(f"relay-{side}", r"pin it in agents\): ([0-9A-F]{64})").group(1)
        g.start(f"agent-{side}", ["dotnet", f"{root}/samples/ConsoleAgent/bin/Release/net10.0/sitelink-agent.dll", "--relay", url, "--pin", pin,
                                  "--Logging:LogLevel:Default", "Warning", "--endpoint", f"http=127.0.0.1:{http}"], env={"SITELINK_AUTHTOKEN": TOKEN})
        time.sleep(3)
        sides[side] = (tcp, hep)
    def rate(port):
        out = subprocess.run(["wrk", "-t2", "-c50", "-d5s", f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for side, (tcp, hep) in sides.items():  # warm-up
        rate(tcp); rate(hep)
    results = {s: [] for s in sides}
    for r in range(5):
        for side, (tcp, hep) in (sides.items() if r % 2 == 0 else reversed(list(sides.items()))):
            t, h = rate(tcp), rate(hep)
            results[side].append((t, h, h / t))
            print(f"round {r+1} {side}: tcp {t:.0f} http {h:.0f} ratio {h/t:.3f}", flush=True)
    for side, rows in results.items():
        ratios = sorted(x[2] for x in rows); hs = sorted(x[1] for x in rows)
        print(f"{side}: median http {hs[2]:.0f} req/s, median ratio {ratios[2]:.3f} (ratios {', '.join('%.3f' % x for x in ratios)})")
finally:
    g.stop_all()
