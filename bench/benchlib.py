"""Process and port helpers shared by bench/run.py and bench/hostile.py.

Every process runs in its own session (so a stop reaches its children), logs to <work>/<name>.log, and is stopped in
reverse start order: SIGTERM, then SIGKILL for what is still there after 10 s. Loopback only.
"""

import os
import re
import signal
import socket
import subprocess
import time


class ProcessGroup:
    def __init__(self, work):
        self.work = work
        self.processes = []

    def log_path(self, name):
        return os.path.join(self.work, name + ".log")

    def start(self, name, args, env=None, cwd=None):
        out = open(self.log_path(name), "w")
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd or self.work,
                                   env={**os.environ, **(env or {})}, start_new_session=True)
        self.processes.append((name, process))
        return process

    def wait_log(self, name, pattern, timeout=60):
        """Waits until process `name` logged a line matching `pattern`; returns the match."""
        path = self.log_path(name)
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(path) as f:
                match = re.search(pattern, f.read())
            if match:
                return match
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not log {pattern!r}; see {path}")

    def stop_all(self):
        for _, process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count):
    """`count` different free loopback ports (sockets held open together, so none is handed out twice)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def wait_echo(port, timeout=60):
    """Waits until a byte comes back through the port (for a cloud endpoint: relay, agent and upstream are all up)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"x")
                if s.recv(1) == b"x":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"no echo through 127.0.0.1:{port} after {timeout} s")
