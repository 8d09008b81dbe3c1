#!/usr/bin/env python3
"""A/B of the multiplexed data call (protocol version 2) against a Stream call per connection (version 1), same build.

  python3 bench/ab_mux.py [ROUNDS] [--duration S]

Starts the harness's upstreams (iperf3, nginx, redis, PostgreSQL loaded by pgbench -i) and two relays from this
repository's Release build — one with Relay:Limits:Multiplexing on (the default), one with it off — each with its own
sitelink-agent serving the same upstreams. Per round and side (alternating ABBA) it runs the data-path rows of
bench/run.py: iperf3 one connection both ways and 64 connections, wrk keep-alive c=50 and new connection per request
c=20, redis-benchmark GET c=50 with and without -P 16, pgbench -c 8. Prints every round and the medians with the ratio
(v2 against v1, above 1.00 better). Loopback only; every process is stopped at the end.
"""
import json
import os
import statistics
import sys

ROUNDS = next((int(a) for a in sys.argv[1:] if a.isdigit()), 4)
DURATION = 3
if "--duration" in sys.argv:
    DURATION = int(sys.argv[sys.argv.index("--duration") + 1])
# The harness reads its own flags at import: make it a full (not --quick) harness with this script's duration.
sys.argv = [sys.argv[0]]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as harness  # noqa: E402

harness.DURATION = DURATION
log = harness.log


def start_side(name, upstreams, multiplexing, endpoints=("iperf", "http", "redis", "postgres"), processes=None):
    """A relay (Multiplexing on or off) and a sitelink-agent serving `endpoints`; their processes are added to `processes`."""
    agent_port = harness.free_port()
    public = {e: harness.free_port() for e in endpoints}
    config = {
        "Logging": {"LogLevel": {"Default": "Warning"}},
        "Relay": {
            "RelayId": f"ab-{name}",
            "AgentListen": f"127.0.0.1:{agent_port}",
            "Tls": {"DevelopmentCertificatePath": os.path.join(harness.work, f"{name}.pfx")},
            "Tokens": [{"Name": "bench", "Token": harness.TOKEN, "Tenant": "bench", "Allow": ["*"]}],
            "CloudEndpoints": [{"Name": e, "Listen": f"127.0.0.1:{p}", "Tenant": "bench", "Endpoint": e,
                                "MaxConnections": 20000, "MaxConnectionsPerClientIp": 20000} for e, p in public.items()],
            "Limits": {"MaxConcurrentStreamsPerSession": 20000, "MaxPendingStreamsPerSession": 2048, "Multiplexing": multiplexing},
        },
    }
    path = os.path.join(harness.work, f"{name}.json")
    with open(path, "w") as f:
        json.dump(config, f)
    relay = harness.start(f"relay-{name}", ["dotnet", harness.RELAY, "--config", path])
    pin = harness.wait_log(f"relay-{name}", r"pin it in agents\): ([0-9A-F]{64})").group(1)
    args = ["dotnet", harness.AGENT, "--relay", f"https://127.0.0.1:{agent_port}", "--pin", pin, "--no-proxy",
            "--Logging:LogLevel:Default", "Warning", "--SiteLink:MaxConcurrentConnections", "20000",
            "--SiteLink:MaxConcurrentConnectionsPerEndpoint", "20000"]
    for e in endpoints:
        args += ["--endpoint", f"{e}=127.0.0.1:{upstreams[e]}"]
    agent = harness.start(f"agent-{name}", args, env={"SITELINK_AUTHTOKEN": harness.TOKEN})
    if processes is not None:
        processes += [relay, agent]
    if "http" in public:
        harness.wait_http(public["http"])
    return public


def main():
    upstreams = harness.start_upstreams()
    sides = {"v1 (Stream call per connection)": start_side("v1", upstreams, False),
             "v2 (multiplexed)": start_side("v2", upstreams, True)}
    redis_plain, redis_pipelined = harness.redis_get(), harness.redis_get(16)
    measures = [
        ("one connection, upload (iperf3), Gbit/s", True, lambda p: harness.iperf(p["iperf"])),
        ("one connection, download (iperf3 -R), Gbit/s", True, lambda p: harness.iperf(p["iperf"], reverse=True)),
        ("64 connections (iperf3 -P 64), Gbit/s", True, lambda p: harness.iperf(p["iperf"], parallel=64)),
        ("keep-alive HTTP wrk c=50, req/s", True, lambda p: harness.wrk(p["http"], 50, close=False)["rps"]),
        ("keep-alive HTTP wrk c=50, p50 ms", False, lambda p: harness.wrk(p["http"], 50, close=False)["p50"]),
        ("new connection per request wrk c=20, conn/s", True, lambda p: harness.wrk(p["http"], 20, close=True)["rps"]),
        ("new connection per request wrk c=20, p50 ms", False, lambda p: harness.wrk(p["http"], 20, close=True)["p50"]),
        ("redis-benchmark GET c=50, req/s", True, redis_plain),
        ("redis-benchmark GET c=50 -P 16, req/s", True, redis_pipelined),
        ("pgbench -c 8, tps", True, lambda p: harness.pgbench(p["postgres"])["tps"]),
    ]
    names = list(sides)
    results = {title: {n: [] for n in names} for title, _, _ in measures}
    for round_number in range(ROUNDS):
        order = names if round_number % 2 == 0 else list(reversed(names))
        for title, _, measure in measures:
            for name in order:
                results[title][name].append(measure(sides[name]))
            log(f"round {round_number + 1} {title}: " + ", ".join(f"{n}: {results[title][n][-1]:.2f}" for n in names))
    log(f"\nmedians of {ROUNDS} rounds, {DURATION} s each (ABBA), ratio v2/v1 oriented so that above 1.00 is better:")
    log("| measure | " + " | ".join(names) + " | v2 vs v1 |")
    log("|---|" + "---|" * (len(names) + 1))
    for title, higher, _ in measures:
        a, b = (statistics.median(results[title][n]) for n in names)
        ratio = (b / a) if higher else (a / b)
        log(f"| {title} | " + " | ".join(f"{statistics.median(results[title][n]):.2f} ({min(results[title][n]):.2f}–{max(results[title][n]):.2f})" for n in names)
            + f" | {ratio:.2f}× |")


if __name__ == "__main__":
    try:
        main()
    finally:
        harness.stop_all()
