#!/usr/bin/env python3
"""SiteLink admin API benchmark: latency of the control plane's REST API under 50 concurrent clients.

  python3 bench/admin_api.py [--quick] [--runs N] [--store sqlite|postgres|both]

Starts the Release relay (src/SiteLink.Relay) as a process on loopback with its admin API on (ports picked by the
relay), its store a SQLite file in a temporary folder and/or a real PostgreSQL (Debian's, initdb into a temporary
folder, postgres on a free loopback port; skipped when not installed), seeds 100 tenants with 10 authtokens each and
10 agent sessions (the standalone agent, `sitelink-agent`), then drives it with wrk (Debian's), 50 connections on 2
threads, with a full-access admin key:
  - read:   GET /v1/tokens?tenant=tNNN&limit=100   (a page of one tenant's tokens, from the applied state)
  - sessions: GET /v1/sessions                      (every session, with its RTT read from the kernel)
  - write:  POST /v1/tokens                         (a new token each request: a store transaction, applied before the
                                                     answer, and an audit entry)
Each scenario runs --runs times (default 3); the table gives the median run's req/s, p50 and p99. Writes
bench/results/admin-api-<label>.md (also printed). Every process is stopped at the end.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import urllib.request

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELAY = os.path.join(ROOT, "src/SiteLink.Relay/bin/Release/net10.0/SiteLink.Relay.dll")
AGENT = os.path.join(ROOT, "samples/ConsoleAgent/bin/Release/net10.0/sitelink-agent.dll")
KEY = "bench-admin-key-0123456789abcdefghijklmnopqrstuv"
AGENTS = 10

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="2 s runs, one each (a smoke test; numbers not meaningful)")
parser.add_argument("--runs", type=int, default=3)
parser.add_argument("--store", default="both", choices=["sqlite", "postgres", "both"])
parser.add_argument("--label")
ARGS = parser.parse_args()
DURATION = "2s" if ARGS.quick else "10s"
RUNS = 1 if ARGS.quick else ARGS.runs
LABEL = ARGS.label or ("quick" if ARGS.quick else "latest")

# The relay's own development certificate on loopback: the bench talks to nothing else.
INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE


def call(base, method, path, body=None):
    request = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=INSECURE, timeout=30) as response:
        text = response.read()
        return json.loads(text) if text else None


def start_postgres(group, work):
    versions = sorted((d for d in os.listdir("/usr/lib/postgresql") if d.isdigit()), key=int) if os.path.isdir("/usr/lib/postgresql") else []
    if not versions:
        return None
    bin_dir = f"/usr/lib/postgresql/{versions[-1]}/bin"
    data = os.path.join(work, "pgdata")
    as_root = os.geteuid() == 0
    wrap = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(work, "postgres")
    subprocess.run(wrap + [f"{bin_dir}/initdb", "-D", data, "-U", "sitelink", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = benchlib.free_port()
    group.start("postgres", wrap + [f"{bin_dir}/postgres", "-D", data, "-h", "127.0.0.1", "-p", str(port), "-k", work])
    group.wait_log("postgres", "ready to accept connections")
    return f"Host=127.0.0.1;Port={port};Username=sitelink;Database=postgres"


def wrk(url, script=None):
    args = ["wrk", "-t2", "-c50", f"-d{DURATION}", "--latency", "-H", "Authorization: Bearer " + KEY]
    if script:
        args += ["-s", script]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=120).stdout

    def millis(text):
        value, unit = float(text[:-2] if text.endswith(("ms", "us")) else text[:-1]), text[-2:] if text.endswith(("ms", "us")) else text[-1:]
        return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    p50 = millis(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = millis(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rate": rate, "p50": p50, "p99": p99, "errors": int(non2xx.group(1)) if non2xx else 0}


def scenario(name, url, script=None):
    runs = [wrk(url, script) for _ in range(RUNS)]
    median = sorted(runs, key=lambda r: r["p50"])[len(runs) // 2]
    print(f"  {name}: {median['rate']:.0f} req/s, p50 {median['p50']:.2f} ms, p99 {median['p99']:.2f} ms, non-2xx {median['errors']}"
          f"  (p50 of runs: {', '.join('%.2f' % r['p50'] for r in runs)})", flush=True)
    return median


def bench_store(store, work):
    group = benchlib.ProcessGroup(work)
    try:
        if store == "postgres":
            connection = start_postgres(group, work)
            if connection is None:
                print("  postgres: not installed, skipped")
                return None
            store_config = {"Provider": "postgres", "ConnectionString": connection}
        else:
            store_config = {"Path": os.path.join(work, "relay.db")}
        config = os.path.join(work, "relay.json")
        with open(config, "w") as f:
            json.dump({"Logging": {"LogLevel": {"Default": "Warning", "SiteLink.Relay.Hosting": "Information"}},
                       "Relay": {"RelayId": "bench", "AgentListen": "127.0.0.1:0",
                                 "Tls": {"DevelopmentCertificatePath": os.path.join(work, "relay.pfx")},
                                 "Admin": {"Listen": "127.0.0.1:0", "Keys": [{"Name": "bench", "Key": KEY, "Scope": "full"}]},
                                 "Store": store_config,
                                 "Limits": {"MaxSessionsPerToken": 64}}}, f)
        group.start("relay", ["dotnet", RELAY, "--config", config])
        base = group.wait_log("relay", r"Admin API on (https://127\.0\.0\.1:\d+)/").group(1)
        agent_url = group.wait_log("relay", r"listening for agents on (https://127\.0\.0\.1:\d+)/").group(1)
        pin = group.wait_log("relay", r"pin it in agents\): ([0-9A-F]{64})").group(1)
        secrets = []
        for t in range(100):
            call(base, "POST", "/v1/tenants", {"id": f"t{t:03d}"})
            for k in range(10):
                created = call(base, "POST", "/v1/tokens", {"name": f"t{t:03d}-k{k}", "tenant": f"t{t:03d}", "allow": ["*"]})
                if t == 0:
                    secrets.append(created["secret"])
        call(base, "POST", "/v1/tenants", {"id": "bench"})
        for a in range(AGENTS):
            group.start(f"agent{a}", ["dotnet", AGENT, "--relay", agent_url, "--pin", pin, "--endpoint", f"svc{a}=127.0.0.1:9"],
                        env={"SITELINK_AUTHTOKEN": secrets[a % len(secrets)]})
        for a in range(AGENTS):
            group.wait_log(f"agent{a}", f"Endpoint 'svc{a}' bound")
        sessions = len(call(base, "GET", "/v1/sessions")["items"])
        print(f"  {store}: 100 tenants, 1,000 tokens, {sessions} sessions", flush=True)
        writes = os.path.join(work, "writes.lua")
        with open(writes, "w") as f:
            # wrk.format with no headers of its own keeps those of -H (the admin key) and adds the content type.
            f.write('local n = 0\n'
                    'wrk.headers["Content-Type"] = "application/json"\n'
                    # Names unique across threads and runs (wrk's math.random is not seeded: every run would repeat them).
                    'local threads = 0\n'
                    'function setup(thread) threads = threads + 1; thread:set("tid", string.format("%d-%d", os.time(), threads)) end\n'
                    'request = function()\n'
                    '  n = n + 1\n'
                    '  return wrk.format("POST", "/v1/tokens", nil,\n'
                    '    string.format(\'{"name":"w-%s-%d","tenant":"bench","allow":["*"]}\', tid, n))\n'
                    'end\n')
        return {
            "read": scenario("read  GET /v1/tokens?tenant", base + "/v1/tokens?tenant=t042&limit=100"),
            "sessions": scenario("read  GET /v1/sessions", base + "/v1/sessions"),
            "write": scenario("write POST /v1/tokens", base + "/v1/tokens", writes),
        }
    finally:
        group.stop_all()


def main():
    for path in (RELAY, AGENT):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: build first (dotnet build SiteLink.Sdk.sln -c Release)")
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (sudo apt-get install wrk)")
    stores = ["sqlite", "postgres"] if ARGS.store == "both" else [ARGS.store]
    results = {}
    for store in stores:
        work = tempfile.mkdtemp(prefix=f"sitelink-admin-bench-{store}-")
        os.chmod(work, 0o755)
        try:
            results[store] = bench_store(store, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    lines = [f"# Admin API latency ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, `python3 bench/admin_api.py{' --quick' if ARGS.quick else ''}`)", "",
             f"wrk, 50 connections on 2 threads, {DURATION} per run, median of {RUNS} run(s) (by p50); relay and wrk on one 2-core machine, loopback, HTTPS.", "",
             "| store | scenario | req/s | p50 (ms) | p99 (ms) | non-2xx |", "|---|---|---:|---:|---:|---:|"]
    for store, result in results.items():
        if result is None:
            continue
        for name, r in result.items():
            lines.append(f"| {store} | {name} | {r['rate']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['errors']} |")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    with open(os.path.join(ROOT, f"bench/results/admin-api-{LABEL}.md"), "w") as f:
        f.write(text)
    print(text)


main()
