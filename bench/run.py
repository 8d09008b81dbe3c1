#!/usr/bin/env python3
"""SiteLink benchmark harness (started by bench/run.sh, which installs tools and builds).

Every path carries the same traffic to the same upstreams on this machine, in one run:
  direct         client -> upstream
  sitelink       client -> relay TCP cloud endpoint -> agent (TLS, HTTP/2) -> upstream; relay and agent are the
                 shipped Release builds, separate processes
  ssh -R         client -> sshd remote forward -> ssh client -> upstream
  haproxy 2-hop  client -> haproxy -> haproxy -> upstream
Scenarios: iperf3 one connection both ways, iperf3 64 connections (with the CPU seconds per GiB moved of each path's
forwarding processes, from /proc), wrk keep-alive, wrk new connection per request, PostgreSQL (a throwaway cluster the
harness starts; pgbench -c 8 and -C after pgbench -i -s 10) and Redis (redis-server; redis-benchmark GET with 50
connections, with and without -P 16),
10,000 idle tunnelled connections (memory per connection, then a byte through each), and a WAN variant with 20 ms
round trip between agent and relay (and between ssh client and sshd) added by a delay proxy of the harness's own, and
a second agent reaching the relay through an HTTP CONNECT proxy (tinyproxy) against the agent connected directly,
and an ASP.NET Core minimal API served through SiteLink.AspNetCore against the same app forwarded from its port.
Only loopback addresses are used; every process is stopped at the end.

The one-connection rows also run over "bare gRPC", SiteLink's transport with nothing of SiteLink (the helper's
grpc-pipe-server and grpc-pipe-client: one gRPC call of 64 KiB messages one way over HTTP/2 + TLS, the relay's Kestrel
settings and the SDK's handler settings, in two processes), in the same round-robin: sitelink's fraction of that
ceiling gets a table of its own.
"""
import atexit
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "--quick" in sys.argv
DURATION = 1 if QUICK else 5
RUNS = 1 if QUICK else 5
IDLE_CONNECTIONS = 300 if QUICK else 10000
# RSS of relay and agent is read again this long after the idle connections are closed: does the memory come back?
IDLE_AFTER_CLOSE_S = 5 if QUICK else 30
WAN_ONE_WAY_MS = 10
WARM_UP_S = 1 if QUICK else 3
PGBENCH_SCALE = 1 if QUICK else 10  # pgbench -i -s: 10 is ~160 MB, 1,000,000 accounts

RELAY = os.path.join(ROOT, "src/SiteLink.Relay/bin/Release/net10.0/SiteLink.Relay.dll")
AGENT = os.path.join(ROOT, "samples/ConsoleAgent/bin/Release/net10.0/sitelink-agent.dll")
HELPER = os.path.join(ROOT, "bench/SiteLink.Bench/bin/Release/net10.0/SiteLink.Bench.dll")
TOKEN = "bench-token-" + os.urandom(12).hex()
JWT_TOKEN = ""  # set by start_sitelink: a token for the jwt-rule endpoint
POSTGRES_BIN = ""  # set by start_postgres: the newest /usr/lib/postgresql/<version>/bin

work = tempfile.mkdtemp(prefix="sitelink-bench-")
group = benchlib.ProcessGroup(work)
start, stop_all = group.start, group.stop_all
free_port, wait_port = benchlib.free_port, benchlib.wait_port


def log(message):
    print(message, flush=True)


def wait_http(port, timeout=60, headers=""):
    """Waits until GET / through the port answers 200 (for tunnels: the whole path is up)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}Connection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no HTTP answer through 127.0.0.1:{port} after {timeout} s")


wait_log = group.wait_log


# ---------------------------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------------------------

def start_upstreams():
    ports = {"iperf": free_port(), "http": free_port(), "echo": free_port(), "https": free_port()}
    start("iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(ports["iperf"])])
    # A TLS service for the tls-endpoint rows: nginx over HTTPS with a self-signed certificate for "localhost".
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", os.path.join(work, "tls.key"), "-out", os.path.join(work, "tls.crt")], check=True, capture_output=True)
    nginx_conf = os.path.join(work, "nginx.conf")
    with open(nginx_conf, "w") as f:
        f.write(f"""daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fastcgi;
  uwsgi_temp_path {work}/nginx-uwsgi;
  scgi_temp_path {work}/nginx-scgi;
  server {{
    listen 127.0.0.1:{ports["http"]};
    location / {{ return 200 "hello from the internal service\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{ports["https"]} ssl;
    ssl_certificate {work}/tls.crt;
    ssl_certificate_key {work}/tls.key;
    location / {{ return 200 "hello from the internal TLS service\\n"; }}
  }}
}}
""")
    start("nginx", ["nginx", "-c", nginx_conf, "-p", work])
    start("echo-server", ["dotnet", HELPER, "echo-server", str(ports["echo"])])
    for port in ports.values():
        wait_port(port)
    ports["postgres"] = start_postgres()
    ports["redis"] = start_redis()
    return ports


def start_postgres():
    """A throwaway PostgreSQL cluster (Debian's newest installed version) on a loopback port, loaded by pgbench -i."""
    global POSTGRES_BIN
    versions = sorted((v for v in os.listdir("/usr/lib/postgresql") if v.isdigit()), key=int)
    POSTGRES_BIN = f"/usr/lib/postgresql/{versions[-1]}/bin"
    # postgres refuses to run as root: as root, run it as Debian's postgres user (nobody if there is none), in a
    # directory of its own outside the run's work dir, which is root's alone (it holds the bench's token and keys).
    wrap, data_root = [], os.path.join(work, "postgres")
    if os.geteuid() == 0:
        user = "postgres" if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode == 0 else "nobody"
        wrap = ["runuser", "-u", user, "--"]
        data_root = tempfile.mkdtemp(prefix="sitelink-bench-postgres-")
        shutil.chown(data_root, user)
    os.makedirs(data_root, exist_ok=True)
    # The cluster is ~160 MB after pgbench -i -s 10: remove it when the harness exits (after stop_all, in finally).
    atexit.register(shutil.rmtree, data_root, True)
    data = os.path.join(data_root, "data")
    subprocess.run(wrap + [f"{POSTGRES_BIN}/initdb", "-D", data, "-U", "bench", "-E", "UTF8", "--no-locale", "--no-sync"],
                   check=True, capture_output=True)
    # Trust, but from 127.0.0.1 and the cluster's own socket directory only.
    with open(os.path.join(data, "pg_hba.conf"), "w") as f:
        f.write("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    port = free_port()
    # fsync and synchronous commit off: the rows compare network paths, not this machine's (shared) disk.
    start("postgres", wrap + [f"{POSTGRES_BIN}/postgres", "-D", data, "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                              "-c", f"unix_socket_directories={data_root}", "-c", "fsync=off", "-c", "synchronous_commit=off",
                              "-c", "full_page_writes=off"])
    wait_log("postgres", "ready to accept connections")
    log(f"-- pgbench -i -s {PGBENCH_SCALE} (directly)")
    subprocess.run([f"{POSTGRES_BIN}/pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "-i", "-s", str(PGBENCH_SCALE), "-q", "postgres"],
                   check=True, capture_output=True, timeout=600)
    return port


def start_redis():
    """redis-server on a loopback port, nothing persisted."""
    port = free_port()
    start("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", work])
    wait_port(port)
    return port


def start_sitelink(upstreams):
    agent_port = free_port()
    names = ["iperf", "http", "echo", "wan-iperf", "wan-http", "proxied-iperf", "proxied-http", "aspnet-transport", "aspnet-forward",
             "postgres", "redis"]
    public = {name: free_port() for name in names}
    config = {
        "Logging": {"LogLevel": {"Default": "Warning"}},
        "Relay": {
            "RelayId": "bench-relay",
            "AgentListen": f"127.0.0.1:{agent_port}",
            "Tls": {"DevelopmentCertificatePath": os.path.join(work, "relay.pfx")},
            "Tokens": [{"Name": "bench", "Token": TOKEN, "Tenant": "bench", "Allow": ["*"]}],
            "CloudEndpoints": [
                # The idle scenario holds 10,000 connections from one address: lift the per-endpoint caps.
                {"Name": name, "Listen": f"127.0.0.1:{port}", "Tenant": "bench", "Endpoint": name,
                 "MaxConnections": 20000, "MaxConnectionsPerClientIp": 20000}
                for name, port in public.items()
            ],
            "Limits": {"MaxConcurrentStreamsPerSession": 20000, "MaxPendingStreamsPerSession": 2048},
        },
    }
    # The same internal endpoint behind an http cloud endpoint (routed by Host, forwarded by YARP, tunnelled
    # connections kept alive between requests), to compare with the tcp one.
    public["https-tcp"] = free_port()
    config["Relay"]["CloudEndpoints"].append(
        {"Name": "https-tcp", "Listen": f"127.0.0.1:{public['https-tcp']}", "Tenant": "bench", "Endpoint": "https",
         "MaxConnections": 20000, "MaxConnectionsPerClientIp": 20000})
    # The same TLS service behind a tls cloud endpoint (routed by the ClientHello's server name, passed through).
    public["https-tls"] = free_port()
    config["Relay"]["CloudEndpoints"].append(
        {"Name": "https-tls", "Protocol": "tls", "Listen": f"127.0.0.1:{public['https-tls']}", "Hostnames": ["localhost"],
         "Tenant": "bench", "Endpoint": "https", "MaxConnections": 20000, "MaxConnectionsPerClientIp": 20000})
    # The same http endpoint with a jwt rule: every request's bearer token validated (RS256 signature, issuer, audience,
    # lifetime) against a key set the helper made, to compare with the endpoint without a policy.
    global JWT_TOKEN
    jwks = os.path.join(work, "jwks.json")
    JWT_TOKEN = subprocess.run(["dotnet", HELPER, "jwt", jwks, "https://idp.bench", "bench-api"], check=True, capture_output=True, text=True).stdout.strip()
    public["http-jwt"] = free_port()
    config["Relay"]["CloudEndpoints"].append(
        {"Name": "http-jwt", "Protocol": "http", "Listen": f"127.0.0.1:{public['http-jwt']}", "Hostnames": ["127.0.0.1"],
         "Tenant": "bench", "Endpoint": "http", "MaxConnections": 20000, "MaxConnectionsPerClientIp": 20000,
         "Policy": {"OnHttpRequest": [{"Type": "jwt", "Issuer": "https://idp.bench", "Audiences": ["bench-api"], "JwksFile": jwks}]}})
    public["http-endpoint"] = free_port()
    config["Relay"]["CloudEndpoints"].append(
        {"Name": "http-endpoint", "Protocol": "http", "Listen": f"127.0.0.1:{public['http-endpoint']}", "Hostnames": ["127.0.0.1"],
         "Tenant": "bench", "Endpoint": "http", "MaxConnections": 20000, "MaxConnectionsPerClientIp": 20000})
    with open(os.path.join(work, "relay.json"), "w") as f:
        json.dump(config, f)
    relay = start("relay", ["dotnet", RELAY, "--config", os.path.join(work, "relay.json")])
    pin = wait_log("relay", r"pin it in agents\): ([0-9A-F]{64})").group(1)

    def agent(name, relay_port, endpoints, proxy=None):
        args = ["dotnet", AGENT, "--relay", f"https://127.0.0.1:{relay_port}", "--pin", pin] + (["--proxy", proxy] if proxy else ["--no-proxy"]) + [
                "--Logging:LogLevel:Default", "Warning",
                "--SiteLink:MaxConcurrentConnections", "20000", "--SiteLink:MaxConcurrentConnectionsPerEndpoint", "20000"] + os.environ.get("SITELINK_BENCH_AGENT_ARGS", "").split()
        for endpoint, upstream in endpoints.items():
            args += ["--endpoint", f"{endpoint}=127.0.0.1:{upstream}"]
        return start(name, args, env={"SITELINK_AUTHTOKEN": TOKEN})

    main_agent = agent("agent", agent_port, {name: upstreams[name] for name in ["iperf", "http", "echo", "https", "postgres", "redis"]})
    wan_port = free_port()
    start("sitelink-wan-link", ["dotnet", HELPER, "delay-proxy", str(wan_port), str(agent_port), str(WAN_ONE_WAY_MS)])
    wait_port(wan_port)
    agent("agent-wan", wan_port, {"wan-iperf": upstreams["iperf"], "wan-http": upstreams["http"]})
    # An agent behind a corporate HTTP proxy (Debian's tinyproxy): CONNECT to the relay, TLS and HTTP/2 inside.
    proxy_port = free_port()
    with open(os.path.join(work, "tinyproxy.conf"), "w") as f:
        f.write(f"Port {proxy_port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 100\nAllow 127.0.0.1\nLogLevel Warning\nDisableViaHeader Yes\n")
    start("tinyproxy", ["tinyproxy", "-d", "-c", os.path.join(work, "tinyproxy.conf")])
    wait_port(proxy_port)
    agent("agent-proxied", agent_port, {"proxied-iperf": upstreams["iperf"], "proxied-http": upstreams["http"]}, proxy=f"http://127.0.0.1:{proxy_port}")
    wait_http(public["http"])
    wait_http(public["http-endpoint"])
    wait_http(public["http-jwt"], headers=f"Authorization: Bearer {JWT_TOKEN}\r\n")
    wait_http(public["wan-http"])
    # An ASP.NET Core minimal API served by SiteLink.AspNetCore (no port) and, for comparison, on a loopback port that
    # the same app's session forwards to.
    public["aspnet-direct"] = free_port()
    start("aspnet-app", ["dotnet", HELPER, "aspnet-app", f"https://127.0.0.1:{agent_port}", pin, TOKEN, str(public["aspnet-direct"])])
    wait_http(public["proxied-http"])
    wait_http(public["aspnet-direct"])
    wait_http(public["aspnet-transport"])
    wait_http(public["aspnet-forward"])
    public["forwarders"] = Forwarders(relay.pid, main_agent.pid)
    return public, relay.pid, main_agent.pid


def start_ssh(upstreams):
    sshd_port, wan_port = free_port(), free_port()
    forwards = {name: free_port() for name in ["iperf", "http", "wan-iperf", "wan-http", "postgres", "redis"]}
    host_key, user_key = os.path.join(work, "ssh_host_key"), os.path.join(work, "user_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", user_key], check=True)
    authorized = os.path.join(work, "authorized_keys")
    with open(user_key + ".pub") as src, open(authorized, "w") as dst:
        dst.write(src.read())
    os.chmod(authorized, 0o600)
    os.makedirs("/run/sshd", exist_ok=True)
    config = os.path.join(work, "sshd_config")
    with open(config, "w") as f:
        f.write(f"""Port {sshd_port}
ListenAddress 127.0.0.1
HostKey {host_key}
AuthorizedKeysFile {authorized}
PidFile {work}/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
GatewayPorts no
LogLevel ERROR
""")
    sshd = start("sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", config])
    wait_port(sshd_port)
    start("ssh-wan-link", ["dotnet", HELPER, "delay-proxy", str(wan_port), str(sshd_port), str(WAN_ONE_WAY_MS)])
    wait_port(wan_port)
    user = os.environ.get("USER") or subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()

    def client(name, port, remotes):
        args = ["ssh", "-N", "-i", user_key, "-p", str(port), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR"]
        for remote, upstream in remotes.items():
            args += ["-R", f"127.0.0.1:{forwards[remote]}:127.0.0.1:{upstream}"]
        return start(name, args + [f"{user}@127.0.0.1"])

    ssh = client("ssh", sshd_port, {name: upstreams[name] for name in ["iperf", "http", "postgres", "redis"]})
    client("ssh-wan", wan_port, {"wan-iperf": upstreams["iperf"], "wan-http": upstreams["http"]})
    wait_http(forwards["http"])
    wait_http(forwards["wan-http"])
    # sshd forks per client connection: its descendants (the one serving "ssh") count with it.
    forwards["forwarders"] = Forwarders(sshd.pid, ssh.pid)
    return forwards


def start_haproxy(upstreams):
    first = {name: free_port() for name in ["iperf", "http", "postgres", "redis"]}
    second = {name: free_port() for name in ["iperf", "http", "postgres", "redis"]}

    def hop(name, listens, targets):
        config = os.path.join(work, name + ".cfg")
        with open(config, "w") as f:
            f.write("global\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n")
            for service, port in listens.items():
                f.write(f"listen {service}\n  bind 127.0.0.1:{port}\n  server s1 127.0.0.1:{targets[service]}\n")
        return start(name, ["haproxy", "-db", "-f", config])

    hops = [hop("haproxy-2", second, upstreams), hop("haproxy-1", first, second)]
    # The peer of an http cloud endpoint: a reverse proxy that parses HTTP (haproxy in http mode, keeping connections to
    # its backend alive and reusing them across clients) in front of the same 2-hop path.
    first["http-proxy"] = free_port()
    config = os.path.join(work, "haproxy-http.cfg")
    with open(config, "w") as f:
        f.write("global\n  maxconn 9000\ndefaults\n  mode http\n  option http-keep-alive\n  http-reuse always\n"
                "  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n"
                f"listen http\n  bind 127.0.0.1:{first['http-proxy']}\n  server s1 127.0.0.1:{second['http']}\n")
    start("haproxy-http", ["haproxy", "-db", "-f", config])
    wait_http(first["http"])
    wait_http(first["http-proxy"])
    first["forwarders"] = Forwarders(*(h.pid for h in hops))
    return first


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------

def iperf(port, reverse=False, parallel=1):
    return iperf_received(port, reverse, parallel)["bits_per_second"] / 1e9


def iperf_received(port, reverse=False, parallel=1):
    """iperf3's end.sum_received: bits_per_second and bytes."""
    args = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(DURATION), "-J", "-P", str(parallel)]
    if reverse:
        args.append("-R")
    for attempt in range(3):
        result = subprocess.run(args, capture_output=True, text=True, timeout=DURATION + 60)
        try:
            data = json.loads(result.stdout)
            if "error" not in data:
                return data["end"]["sum_received"]
        except (json.JSONDecodeError, KeyError):
            pass
        time.sleep(1)
    raise RuntimeError(f"iperf3 through port {port} failed: {result.stdout[-500:]} {result.stderr[-500:]}")


class Forwarders:
    """The processes that forward one path's bytes (relay + agent, sshd + ssh, both haproxys), and the CPU seconds per
    GiB moved they spent in each iperf3 row (per_gib: row -> one figure per run)."""

    def __init__(self, *pids):
        self.pids = pids
        self.per_gib = {}

    def cpu_seconds(self):
        """utime + stime of each process and of all its descendants (sshd forks per connection), by pid. A process's
        /proc/<pid>/stat counts all its threads."""
        stats = {}
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": the name may hold spaces
            except (OSError, IndexError):
                continue  # not a process, or it ended
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
        found, todo = {}, list(self.pids)
        while todo:
            pid = todo.pop()
            if pid in stats and pid not in found:
                found[pid] = stats[pid][1]
                todo += [child for child, (parent, _) in stats.items() if parent == pid]
        return found


def iperf_cpu(p, row, reverse=False, parallel=1):
    """iperf() through path p; for a path with forwarding processes (p["forwarders"]), their CPU seconds per GiB moved
    (iperf3's received bytes) are kept under `row`. A process that ended during the run is not counted."""
    forwarders = p.get("forwarders")
    before = forwarders.cpu_seconds() if forwarders else {}
    received = iperf_received(p["iperf"], reverse, parallel)
    if forwarders:
        spent = sum(seconds - before.get(pid, 0) for pid, seconds in forwarders.cpu_seconds().items())
        forwarders.per_gib.setdefault(row, []).append(spent / (received["bytes"] / 2 ** 30))
    return received["bits_per_second"] / 1e9


def pgbench(port, connect_each=False):
    """The default TPC-B-like transaction, 8 clients on 2 threads, for DURATION s (-C: a new connection each)."""
    args = [f"{POSTGRES_BIN}/pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "-c", "8", "-j", "2", "-T", str(DURATION)]
    result = subprocess.run(args + (["-C"] if connect_each else []) + ["postgres"], capture_output=True, text=True, timeout=DURATION + 300)
    tps = re.search(r"^tps = ([\d.]+)", result.stdout, re.M)
    latency = re.search(r"^latency average = ([\d.]+) ms", result.stdout, re.M)
    if result.returncode != 0 or not tps or not latency:
        raise RuntimeError(f"pgbench through port {port} failed: {result.stdout[-500:]} {result.stderr[-500:]}")
    return {"tps": float(tps.group(1)), "latency": float(latency.group(1))}


def redis_get(pipeline=1):
    """A measure: redis-benchmark GET with 50 connections through a path, requests/s. It has no time limit, so -n is
    sized from the path's previous rate to last about DURATION s; a short unrecorded run gives the first rate."""
    rates = {}

    def run(port, requests):
        args = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "get", "-c", "50", "-n", str(requests), "--csv"]
        result = subprocess.run(args + (["-P", str(pipeline)] if pipeline > 1 else []), capture_output=True, text=True,
                                timeout=10 * DURATION + 120)
        rate = re.search(r'^"GET","([\d.]+)"', result.stdout, re.M)
        if not rate:
            raise RuntimeError(f"redis-benchmark through port {port} failed: {result.stdout[-500:]} {result.stderr[-500:]}")
        return float(rate.group(1))

    def measure(p):
        if p["redis"] not in rates:
            rates[p["redis"]] = run(p["redis"], 5000 * pipeline)
        rates[p["redis"]] = run(p["redis"], max(1000, int(rates[p["redis"]] * DURATION)))
        return rates[p["redis"]]
    return measure


def database_rows(paths):
    """PostgreSQL (pgbench) and Redis (redis-benchmark) rows for the main table, over the paths that forward to them."""
    paths = {name: p for name, p in paths.items() if "postgres" in p and "redis" in p}
    bench = f"pgbench -c 8 -j 2 -T {DURATION}"
    kept = interleaved(paths, lambda p: pgbench(p["postgres"]), "PostgreSQL " + bench)
    fresh = interleaved(paths, lambda p: pgbench(p["postgres"], connect_each=True), f"PostgreSQL {bench} -C")
    get = interleaved(paths, redis_get(), "Redis GET c=50")
    pipelined = interleaved(paths, redis_get(16), "Redis GET c=50 -P 16")
    return [
        (f"PostgreSQL `{bench}` (TPC-B-like): transactions/s", "tps", True, {p: [r["tps"] for r in kept[p]] for p in paths}),
        (f"PostgreSQL `{bench}`: latency average", "ms", False, {p: [r["latency"] for r in kept[p]] for p in paths}),
        (f"PostgreSQL, new connection per transaction, `{bench} -C`: transactions/s", "tps", True, {p: [r["tps"] for r in fresh[p]] for p in paths}),
        ("Redis `redis-benchmark -t get -c 50`: requests/s", "req/s", True, get),
        ("Redis `redis-benchmark -t get -c 50 -P 16`: requests/s", "req/s", True, pipelined),
    ]


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port, connections, close, threads=2, url=None, duration=None, header=None):
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration or DURATION}s", "--latency", url or f"http://127.0.0.1:{port}/"]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    if header:
        args[1:1] = ["-H", header]
    out = subprocess.run(args, capture_output=True, text=True, timeout=DURATION + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = (sum(int(x) for x in errors.groups()) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return {"rps": rps, "p50": to_ms(*p50.groups()), "p99": to_ms(*p99.groups()), "errors": failed}


def link_round_trip_ms(echo_port, samples=50):
    """Median round trip of the harness's delay line itself: its nominal 20 ms plus its own timer slop, the honest
    yardstick for "no more than one agent-relay round trip above direct"."""
    port = free_port()
    start("link-probe", ["dotnet", HELPER, "delay-proxy", str(port), str(echo_port), str(WAN_ONE_WAY_MS)])
    wait_port(port)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as probe:
        probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        probe.sendall(b"x")
        probe.recv(1)
        times = []
        for _ in range(samples):
            began = time.perf_counter()
            probe.sendall(b"x")
            if probe.recv(1) != b"x":
                raise RuntimeError("the delay line did not echo")
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def start_grpc_pipe():
    """The bare-gRPC server (the relay's stand-in: server GC, as the relay's Web SDK gives it); returns (port, pin)."""
    port = free_port()
    start("grpc-pipe-server", ["dotnet", HELPER, "grpc-pipe-server", str(port)], env={"DOTNET_gcServer": "1"})
    match = wait_log("grpc-pipe-server", r"grpc-pipe-server listening \d+ pin ([0-9A-F]{64})")
    return {"port": port, "pin": match.group(1)}


# The direction a one-connection row's bytes take inside the gRPC call that carries them: an upload (client -> upstream)
# goes relay -> agent, the server's response stream; a download goes agent -> relay, the client's request stream.
BARE_GRPC_DIRECTIONS = {"one connection, upload (iperf3)": "server-to-client", "one connection, download (iperf3 -R)": "client-to-server"}


def grpc_pipe(server, direction):
    """Gbit/s of one bare-gRPC call moving 64 KiB messages one way for DURATION s (after a 1 s unrecorded call on the
    same connection: the client process is new, the relay and agent it stands in for are not), as its receiver counts."""
    args = ["dotnet", HELPER, "grpc-pipe-client", str(server["port"]), server["pin"], direction, str(DURATION), "1"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=DURATION + 120)
    match = re.search(r"bytes/s (\d+)", result.stdout)
    if result.returncode != 0 or not match:
        raise RuntimeError(f"grpc-pipe-client {direction} failed: {result.stdout[-500:]} {result.stderr[-500:]}")
    return int(match.group(1)) * 8 / 1e9


def warm_up(paths, measure):
    """One unrecorded run per path before a scenario's measured ones: code a path has not run yet (an http endpoint's
    Kestrel, YARP and HttpClient, when only TCP ran before) is compiled and tiered up before it is measured, not during
    its first measured run."""
    for path in paths:
        log(f"-- warm-up: {path} ({WARM_UP_S} s, not recorded)")
        measure(paths[path])


def interleaved(paths, measure, title):
    """RUNS measurements of every path, round-robin (path A, B, C, A, B, C, ...): on a shared machine whose speed
    drifts, each path sees the same conditions, so the ratios between paths stay fair."""
    results = {path: [] for path in paths}
    for run in range(RUNS):
        for path, ports in paths.items():
            log(f"-- {title}: {path} (run {run + 1}/{RUNS})")
            results[path].append(measure(ports))
    return results


def cell(values, fmt):
    if not values:
        return "—"
    median = statistics.median(values)
    if len(values) == 1:
        return fmt(median)
    return f"{fmt(median)} ({fmt(min(values))}–{fmt(max(values))})"


def main():
    started = time.time()
    log(f"== SiteLink benchmark ({'quick' if QUICK else 'full'}: {DURATION} s per measurement, {RUNS} run(s)); work dir {work}")
    upstreams = start_upstreams()
    sitelink, relay_pid, agent_pid = start_sitelink(upstreams)
    ssh = start_ssh(upstreams)
    haproxy = start_haproxy(upstreams)
    bare_grpc = start_grpc_pipe()
    paths = {
        "direct": {"iperf": upstreams["iperf"], "http": upstreams["http"], "postgres": upstreams["postgres"], "redis": upstreams["redis"]},
        "sitelink": sitelink,
        "ssh -R": ssh,
        "haproxy 2-hop": haproxy,
    }
    names = list(paths)
    rows = []  # (scenario, unit, higher_is_better, {path: [values]})

    def scenario(title, unit, higher_is_better, measure):
        over, direction = dict(paths), BARE_GRPC_DIRECTIONS.get(title)
        if direction:
            # One connection: also over SiteLink's bare transport, in the same round-robin (not a column of the main table).
            over["bare gRPC"] = {"bare gRPC": bare_grpc}
        rows.append((title, unit, higher_is_better,
                     interleaved(over, lambda p: grpc_pipe(p["bare gRPC"], direction) if "bare gRPC" in p else measure(p), title)))

    scenario("one connection, upload (iperf3)", "Gbit/s", True, lambda p: iperf_cpu(p, "one connection, upload"))
    scenario("one connection, download (iperf3 -R)", "Gbit/s", True, lambda p: iperf_cpu(p, "one connection, download", reverse=True))
    scenario("64 connections (iperf3 -P 64)", "Gbit/s", True, lambda p: iperf_cpu(p, "64 connections", parallel=64))
    cpu_rows = [(row, "s/GiB", False, {name: p["forwarders"].per_gib.get(row, []) for name, p in paths.items() if "forwarders" in p})
                for row in ["one connection, upload", "one connection, download", "64 connections"]]

    http_paths = dict(paths)
    http_paths["haproxy http 2-hop"] = {"http": haproxy["http-proxy"]}
    http_paths["sitelink http endpoint"] = {"http": sitelink["http-endpoint"]}
    http_paths["sitelink http endpoint + jwt"] = {"http": sitelink["http-jwt"], "header": f"Authorization: Bearer {JWT_TOKEN}"}
    warm_up(http_paths, lambda p: wrk(p["http"], 50, close=False, duration=WARM_UP_S, header=p.get("header")))
    keepalive = interleaved(http_paths, lambda p: wrk(p["http"], 50, close=False, header=p.get("header")), "HTTP keep-alive")
    fresh = interleaved(http_paths, lambda p: wrk(p["http"], 20, close=True, header=p.get("header")), "HTTP new connection per request")
    http_endpoint_rows = [
        ("keep-alive HTTP, wrk c=50: requests/s", "req/s", True, {p: [r["rps"] for r in keepalive[p]] for p in http_paths}),
        ("keep-alive HTTP, wrk c=50: p99", "ms", False, {p: [r["p99"] for r in keepalive[p]] for p in http_paths}),
        ("new connection per request, wrk c=20: requests/s", "req/s", True, {p: [r["rps"] for r in fresh[p]] for p in http_paths}),
        ("new connection per request, wrk c=20: p99", "ms", False, {p: [r["p99"] for r in fresh[p]] for p in http_paths}),
    ]
    errors = {path: sum(r["errors"] for r in keepalive[path] + fresh[path]) for path in http_paths}
    # TLS end to end: the same HTTPS service reached through a tcp endpoint (bytes as they come) and a tls endpoint
    # (routed by server name; wrk sends SNI "localhost"), and directly.
    tls_paths = {"direct": {"url": f"https://localhost:{upstreams['https']}/"},
                 "sitelink (tcp endpoint)": {"url": f"https://localhost:{sitelink['https-tcp']}/"},
                 "sitelink tls endpoint": {"url": f"https://localhost:{sitelink['https-tls']}/"}}
    warm_up(tls_paths, lambda p: wrk(0, 50, close=False, url=p["url"], duration=WARM_UP_S))
    tls_keepalive = interleaved(tls_paths, lambda p: wrk(0, 50, close=False, url=p["url"]), "HTTPS keep-alive")
    tls_fresh = interleaved(tls_paths, lambda p: wrk(0, 20, close=True, url=p["url"]), "HTTPS new connection per request")
    tls_rows = [
        ("HTTPS keep-alive, wrk c=50: requests/s", "req/s", True, {p: [r["rps"] for r in tls_keepalive[p]] for p in tls_paths}),
        ("HTTPS keep-alive, wrk c=50: p99", "ms", False, {p: [r["p99"] for r in tls_keepalive[p]] for p in tls_paths}),
        ("HTTPS new connection (TLS handshake) per request, wrk c=20: requests/s", "req/s", True, {p: [r["rps"] for r in tls_fresh[p]] for p in tls_paths}),
        ("HTTPS new connection (TLS handshake) per request, wrk c=20: p99", "ms", False, {p: [r["p99"] for r in tls_fresh[p]] for p in tls_paths}),
    ]
    errors.update({f"{path} (https)": sum(r["errors"] for r in tls_keepalive[path] + tls_fresh[path]) for path in tls_paths})
    rows.append(("keep-alive HTTP, wrk c=50: requests/s", "req/s", True, {p: [r["rps"] for r in keepalive[p]] for p in names}))
    rows.append(("keep-alive HTTP, wrk c=50: p50", "ms", False, {p: [r["p50"] for r in keepalive[p]] for p in names}))
    rows.append(("keep-alive HTTP, wrk c=50: p99", "ms", False, {p: [r["p99"] for r in keepalive[p]] for p in names}))
    rows.append(("new connection per request, wrk c=20: connections/s", "conn/s", True, {p: [r["rps"] for r in fresh[p]] for p in names}))
    rows.append(("new connection per request, wrk c=20: p50", "ms", False, {p: [r["p50"] for r in fresh[p]] for p in names}))
    rows.append(("new connection per request, wrk c=20: p99", "ms", False, {p: [r["p99"] for r in fresh[p]] for p in names}))
    rows += database_rows(paths)

    # Behind a corporate HTTP proxy: the same endpoints served by an agent that reaches the relay through tinyproxy.
    proxy_paths = {"sitelink": paths["sitelink"], "sitelink via HTTP proxy": {"iperf": sitelink["proxied-iperf"], "http": sitelink["proxied-http"]}}
    proxy_rows = []
    for title, unit, better, measure in [
        ("one connection, upload (iperf3)", "Gbit/s", True, lambda p: iperf(p["iperf"])),
        ("one connection, download (iperf3 -R)", "Gbit/s", True, lambda p: iperf(p["iperf"], reverse=True)),
        ("keep-alive HTTP, wrk c=50: requests/s", "req/s", True, lambda p: wrk(p["http"], 50, close=False)["rps"]),
    ]:
        proxy_rows.append((title, unit, better, interleaved(proxy_paths, measure, "HTTP proxy: " + title)))

    # ASP.NET Core: the same minimal API in one process, reached directly, through a forward endpoint to its port, and
    # through SiteLink.AspNetCore (Kestrel over the tunnelled connections, no port).
    aspnet_paths = {"direct": {"http": sitelink["aspnet-direct"]}, "sitelink forward to the app's port": {"http": sitelink["aspnet-forward"]},
                    "SiteLink.AspNetCore (no port)": {"http": sitelink["aspnet-transport"]}}
    warm_up(aspnet_paths, lambda p: wrk(p["http"], 50, close=False, duration=WARM_UP_S))
    aspnet_keepalive = interleaved(aspnet_paths, lambda p: wrk(p["http"], 50, close=False), "ASP.NET Core keep-alive")
    aspnet_fresh = interleaved(aspnet_paths, lambda p: wrk(p["http"], 20, close=True), "ASP.NET Core new connection per request")
    aspnet_rows = [
        ("keep-alive HTTP, wrk c=50: requests/s", "req/s", True, {p: [r["rps"] for r in aspnet_keepalive[p]] for p in aspnet_paths}),
        ("keep-alive HTTP, wrk c=50: p50", "ms", False, {p: [r["p50"] for r in aspnet_keepalive[p]] for p in aspnet_paths}),
        ("new connection per request, wrk c=20: requests/s", "req/s", True, {p: [r["rps"] for r in aspnet_fresh[p]] for p in aspnet_paths}),
    ]
    errors.update({f"{path} (ASP.NET Core)": sum(r["errors"] for r in aspnet_keepalive[path] + aspnet_fresh[path]) for path in aspnet_paths})

    # WAN: 20 ms round trip between agent and relay (sitelink) and between ssh client and sshd (ssh -R).
    wan_paths = {"direct": paths["direct"],
                 "sitelink": {"iperf": sitelink["wan-iperf"], "http": sitelink["wan-http"]},
                 "ssh -R": {"iperf": ssh["wan-iperf"], "http": ssh["wan-http"]}}
    wan_rows = []
    for title, unit, better, measure in [
        ("WAN 20 ms: one connection, upload", "Gbit/s", True, lambda p: iperf(p["iperf"])),
        ("WAN 20 ms: one connection, download", "Gbit/s", True, lambda p: iperf(p["iperf"], reverse=True)),
        ("WAN 20 ms: new connection + request, p50 (wrk c=1)", "ms", False, lambda p: wrk(p["http"], 1, close=True, threads=1)["p50"]),
    ]:
        wan_rows.append((title, unit, better, interleaved(wan_paths, measure, title)))

    log("-- the delay line's own round trip (1-byte ping-pong through it to the echo server)")
    link_rtt = link_round_trip_ms(upstreams["echo"])

    log(f"-- idle: {IDLE_CONNECTIONS} connections through sitelink")
    idle = subprocess.run(["dotnet", HELPER, "idle", str(sitelink["echo"]), str(IDLE_CONNECTIONS), f"5:{IDLE_AFTER_CLOSE_S}", str(relay_pid), str(agent_pid)],
                          capture_output=True, text=True, timeout=900)
    match = re.search(r"idle (\d+) ok (\d+) rss (\d+):(\d+) (\d+):(\d+)", idle.stdout)
    if not match:
        raise RuntimeError(f"idle scenario failed: {idle.stdout} {idle.stderr}")
    count, ok, relay_before, relay_after, agent_before, agent_after = map(int, match.groups())
    per_connection = ((relay_after - relay_before) + (agent_after - agent_before)) / count
    # RSS some seconds after all of them were closed (None from a helper that does not report it).
    closed = re.search(r"closed (\d+) s rss (\d+) (\d+)", idle.stdout)
    idle_memory = {"count": count, "ok": ok, "per_connection": per_connection,
                   "relay": (relay_before, relay_after, int(closed.group(2)) if closed else None),
                   "agent": (agent_before, agent_after, int(closed.group(3)) if closed else None),
                   "closed_after_s": int(closed.group(1)) if closed else None}

    table = render(names, rows, wan_rows, link_rtt, errors, idle_memory, time.time() - started, http_endpoint_rows, tls_rows, proxy_rows, aspnet_rows,
                   cpu_rows)
    os.makedirs(os.path.join(ROOT, "bench/results"), exist_ok=True)
    # A quick run is a smoke test: it must not replace the committed results of a full run.
    with open(os.path.join(ROOT, "bench/results", "quick.md" if QUICK else "latest.md"), "w") as f:
        f.write(table)
    print(table)
    return 0 if ok == count else 1


def render(names, rows, wan_rows, link_rtt, errors, idle_memory, elapsed, http_endpoint_rows, tls_rows, proxy_rows, aspnet_rows,
           cpu_rows):
    def fmt(unit):
        return {"Gbit/s": lambda v: f"{v:.2f}", "req/s": lambda v: f"{v / 1000:.1f}k", "conn/s": lambda v: f"{v / 1000:.2f}k",
                "ms": lambda v: f"{v:.2f}", "tps": lambda v: f"{v:,.0f}", "s/GiB": lambda v: f"{v:.2f}"}[unit]

    def ratio(results, better, other):
        if "sitelink" not in results or other not in results:
            return "—"
        a, b = statistics.median(results["sitelink"]), statistics.median(results[other])
        if a == 0 or b == 0:
            return "—"
        return f"{(a / b) if better else (b / a):.2f}×"

    lines = [
        f"# SiteLink benchmark — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Mode: {'quick (smoke test; numbers not meaningful)' if QUICK else 'full'}; {DURATION} s per measurement; "
        f"median of {RUNS} run(s), taken round-robin across the paths, with (min–max), after one unrecorded {WARM_UP_S} s warm-up run per path "
        f"before the HTTP and HTTPS scenarios; {os.cpu_count()} cores; took {elapsed:.0f} s. "
        "Ratios are sitelink against the path named, oriented so that above 1.00× means sitelink is better.",
        "",
        "| scenario | unit | " + " | ".join(names) + " | vs ssh -R | vs haproxy 2-hop |",
        "|---|---|" + "---|" * len(names) + "---|---|",
    ]
    for title, unit, better, results in rows:
        lines.append(f"| {title} | {unit} | " + " | ".join(cell(results.get(p, []), fmt(unit)) for p in names)
                     + f" | {ratio(results, better, 'ssh -R')} | {ratio(results, better, 'haproxy 2-hop')} |")
    postgres_version = os.path.basename(os.path.dirname(POSTGRES_BIN))
    lines += ["", f"Database rows: PostgreSQL {postgres_version}, a throwaway cluster on loopback (fsync and synchronous commit off: "
              f"the rows compare paths, not this machine's disk), loaded once directly by `pgbench -i -s {PGBENCH_SCALE}`; then through "
              f"each path `pgbench -c 8 -j 2 -T {DURATION}` (the default TPC-B-like transaction: BEGIN, five statements and END, "
              "each a round trip through the path) with its latency average as pgbench reports it, and the same with `-C` "
              "(a new connection, and a new postgres backend, per transaction). Redis (no persistence): "
              f"`redis-benchmark -t get -c 50 --csv` with and without `-P 16`, its `-n` sized from the path's previous run to last "
              f"about {DURATION} s (after one short unrecorded run per path). ssh -R: sshd sets no TCP_NODELAY on the connection of "
              "a non-interactive `ssh -N` session (strace shows it only on the forwarded connections), so a small write to the ssh "
              "client that follows another before it is acknowledged waits for the client's delayed ACK (~40 ms; strace shows such "
              "pauses in pgbench runs); round-trip-bound traffic on few connections, pgbench most, pays it, and pgbench's row locks "
              "(few branches: one with `-s 1`) make every client wait for the stalled one."]
    cpu_names = [p for p in names if any(p in results for _, _, _, results in cpu_rows)]
    lines += ["", "CPU seconds per GiB moved by each path's forwarding processes in the iperf3 rows above: utime + stime from "
              "/proc/<pid>/stat of the processes and all their descendants, read before and after each run, divided by the GiB "
              "iperf3 received. sitelink: relay + agent; ssh -R: ssh client + sshd (the listener and the per-connection sshd "
              "processes it forked); haproxy 2-hop: both haproxy processes. iperf3 itself is not counted. Lower is better; the "
              "ratios are oriented like the rest (above 1.00× means sitelink spends less CPU per byte).", "",
              "| CPU seconds per GiB moved | unit | " + " | ".join(cpu_names) + " | vs ssh -R | vs haproxy 2-hop |",
              "|---|---|" + "---|" * len(cpu_names) + "---|---|"]
    for title, unit, better, results in cpu_rows:
        lines.append(f"| {title} | CPU {unit} | " + " | ".join(cell(results.get(p, []), fmt(unit)) for p in cpu_names)
                     + f" | {ratio(results, better, 'ssh -R')} | {ratio(results, better, 'haproxy 2-hop')} |")
    def versus(intro, columns, rows_of, others):
        """A table of rows over `columns`, with the last column against each of `others` (above 1.00× better)."""
        out = ["", intro, "", "| scenario | unit | " + " | ".join(columns) + "".join(f" | vs {o}" for o in others) + " |",
               "|---|---|" + "---|" * (len(columns) + len(others))]
        for title, unit, better, results in rows_of:
            ratios = []
            for other in others:
                a, b = statistics.median(results[columns[-1]]), statistics.median(results[other])
                ratios.append("—" if a == 0 or b == 0 else f"{(a / b) if better else (b / a):.2f}×")
            out.append(f"| {title} | {unit} | " + " | ".join(cell(results.get(p, []), fmt(unit)) for p in columns) + "".join(f" | {r}" for r in ratios) + " |")
        return out

    lines += versus("HTTP cloud endpoint: the same agent endpoint and nginx upstream behind an http cloud endpoint (requests routed by "
                    "Host and forwarded by YARP over tunnelled connections kept alive between requests) and behind the tcp one "
                    "(wrk's connections tunnelled as they are); its peer, haproxy in http mode (keep-alive, connection reuse) in front "
                    "of the 2-hop haproxy path. Ratios: the http endpoint against each, above 1.00× better.",
                    ["direct", "sitelink", "haproxy http 2-hop", "sitelink http endpoint"], http_endpoint_rows, ["sitelink", "haproxy http 2-hop"])
    lines += versus("Traffic policy: the same http endpoint with a jwt rule (each request's bearer token validated by "
                    "Microsoft.IdentityModel: RS256 signature, issuer, audience, lifetime; keys from a JWKS file) against it without "
                    "a policy. Ratio: with the rule against without, above 1.00× better.",
                    ["sitelink http endpoint", "sitelink http endpoint + jwt"], http_endpoint_rows, ["sitelink http endpoint"])
    lines += versus("TLS end to end: an HTTPS service (nginx, self-signed certificate) reached through a tcp cloud endpoint (bytes as "
                    "they come) and through a tls cloud endpoint (the relay reads the ClientHello's server name to route, then passes "
                    "the bytes through; TLS ends at nginx behind the agent). Ratio: tls endpoint against tcp endpoint.",
                    ["direct", "sitelink (tcp endpoint)", "sitelink tls endpoint"], tls_rows, ["sitelink (tcp endpoint)"])
    lines += versus("Behind a corporate HTTP proxy: the same upstreams served by a second agent that reaches the relay through "
                    "tinyproxy (HTTP CONNECT, then TLS and HTTP/2 to the relay inside the tunnel), against the agent connected "
                    "directly. Ratio: through the proxy against direct to the relay, above 1.00× better. tinyproxy leaves Nagle's "
                    "algorithm on for both of its sockets (it sets no TCP_NODELAY: strace shows none), so the many small HTTP/2 "
                    "frames of 50 multiplexed keep-alive connections wait for acknowledgements at the proxy; that is what such a "
                    "proxy costs, not the agent's CONNECT (the agent's own socket to the proxy has TCP_NODELAY).",
                    ["sitelink", "sitelink via HTTP proxy"], proxy_rows, ["sitelink"])
    lines += versus("ASP.NET Core over the tunnel: one minimal API process, reached directly on its loopback port, through a forward "
                    "endpoint of its own session to that port, and through SiteLink.AspNetCore (Kestrel serving the session's "
                    "tunnelled connections, no port). Ratio: SiteLink.AspNetCore against each, above 1.00× better.",
                    ["direct", "sitelink forward to the app's port", "SiteLink.AspNetCore (no port)"], aspnet_rows,
                    ["direct", "sitelink forward to the app's port"])
    ceiling = [(title, results) for title, _, _, results in rows if "bare gRPC" in results and "sitelink" in results]
    if ceiling:
        lines += ["", "sitelink one connection as a fraction of its transport's ceiling (bare gRPC): the same iperf3 rows' sitelink "
                  "figures against one gRPC bidirectional-streaming call between two .NET processes over TLS and HTTP/2 with "
                  "nothing of SiteLink (the helper's grpc-pipe-server, Kestrel with the relay's HTTP/2 windows, frame size and "
                  "gRPC limits and server GC; grpc-pipe-client, SocketsHttpHandler/GrpcChannel with the SDK's settings), 64 KiB "
                  "messages one way in the direction the row's bytes take between relay and agent (upload: server to client, "
                  "download: client to server), measured by the receiver, in the same round-robin. Target ≥ 0.85.", "",
                  "| one connection | unit | sitelink | bare gRPC | sitelink / bare gRPC |", "|---|---|---|---|---|"]
        for title, results in ceiling:
            a, b = statistics.median(results["sitelink"]), statistics.median(results["bare gRPC"])
            fraction = f"{a / b:.2f}" if b else "—"
            fmt2 = lambda v: f"{v:.2f}"
            lines.append(f"| {title} | Gbit/s | {cell(results['sitelink'], fmt2)} | {cell(results['bare gRPC'], fmt2)} | **{fraction}** |")
    else:
        lines += ["", "sitelink one connection as a fraction of its transport's ceiling (bare gRPC): not measured, no row's title is "
                  "in BARE_GRPC_DIRECTIONS (bench/run.py)."]
    lines += ["", "WAN: 20 ms round trip added between agent and relay (sitelink) and between ssh client and sshd (ssh -R) by the harness's delay proxy; direct has none.", "",
              "| scenario | unit | direct | sitelink | ssh -R | vs ssh -R |", "|---|---|---|---|---|---|"]
    for title, unit, better, results in wan_rows:
        lines.append(f"| {title} | {unit} | " + " | ".join(cell(results.get(p, []), fmt(unit)) for p in ["direct", "sitelink", "ssh -R"])
                     + f" | {ratio(results, better, 'ssh -R')} |")
    latency = next(r for t, _, _, r in wan_rows if "new connection" in t)
    above = statistics.median(latency["sitelink"]) - statistics.median(latency["direct"])
    lines += ["", f"New connection over the WAN: sitelink is {above:.2f} ms above direct. One round trip of the delay line, measured "
              f"by a 1-byte ping-pong through it, is {link_rtt:.2f} ms (nominal {2 * WAN_ONE_WAY_MS} ms; the rest is its own timer slop)."]
    count, ok, per_connection = idle_memory["count"], idle_memory["ok"], idle_memory["per_connection"]
    relay_before, relay_after, relay_closed = idle_memory["relay"]
    agent_before, agent_after, agent_closed = idle_memory["agent"]
    after_close = idle_memory["closed_after_s"]

    def mib(kib):
        return "—" if kib is None else f"{kib / 1024:.0f}"

    lines += ["",
              f"Idle connections through one sitelink session: {count} opened, {ok} carried a byte both ways afterwards. "
              f"RSS relay {relay_before / 1024:.0f} → {relay_after / 1024:.0f} MiB, agent {agent_before / 1024:.0f} → {agent_after / 1024:.0f} MiB: "
              f"**{per_connection:.1f} KiB per connection** (relay + agent).",
              "",
              f"| idle connections | relay RSS, MiB: before / {count} open / {after_close if after_close is not None else '?'} s after closing "
              f"| agent RSS, MiB: before / {count} open / after closing | KiB per connection (relay + agent) |",
              "|---|---|---|---|",
              f"| {count} opened, {ok} carried a byte | {mib(relay_before)} / {mib(relay_after)} / {mib(relay_closed)} "
              f"| {mib(agent_before)} / {mib(agent_after)} / {mib(agent_closed)} | {per_connection:.1f} |",
              "",
              "HTTP errors (socket errors + non-2xx) per path over all wrk runs: " + ", ".join(f"{p} {e}" for p, e in errors.items()) + ".",
              ""]
    return "\n".join(lines)


if __name__ == "__main__":
    # Ctrl-C or a kill of the harness still stops every process it started (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        code = main()
    except Exception as error:  # report, then still stop every process
        log(f"benchmark failed: {error}")
        code = 1
    finally:
        stop_all()
    sys.exit(code)
