#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Freeze on idle end to end: a controller, a drone and the proxy on
loopback, BACKENDS backends that ask for "idle": "freeze" with
max_idle_seconds 1. Once the sweep has frozen them all, one request each
through the proxy: the clock runs from sending it to the first byte of the
answer, so it covers the proxy's KeepAlive, the controller's Thaw action,
the drone and the runtime's thaw. Baseline in the same run: the same request
to the same backends once they are thawed (warm).

usage: freeze_bench.py PLANE ECHO_BACKEND [BACKENDS] [RUNTIME...]
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

PLANE, ECHO = sys.argv[1], sys.argv[2]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 20
RUNTIMES = sys.argv[4:] or ["process", "oci"]
CLUSTER = "localhost:9090"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(method, url, body=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def wait(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def first_byte_ms(port, token, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    req = f"GET /{token}{path} HTTP/1.1\r\nHost: {CLUSTER}\r\nConnection: close\r\n\r\n".encode()
    t0 = time.perf_counter()
    s.sendall(req)
    first = s.recv(1)
    dt = (time.perf_counter() - t0) * 1000
    while s.recv(65536):
        pass
    s.close()
    if first != b"H":
        raise SystemExit(f"no answer from {path}")
    return dt


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


def run(runtime, executable):
    d = tempfile.mkdtemp(prefix="plane-freeze-bench-")
    cport, pport = free_port(), free_port()
    procs = []
    log = open(os.path.join(d, "log"), "ab")
    try:
        def start(*args):
            procs.append(subprocess.Popen([PLANE, *args], stdout=log, stderr=log, stdin=subprocess.DEVNULL))
        start("controller", "--db", f"{d}/c.db", "--port", str(cport), "--default-cluster", CLUSTER)
        ctrl = f"http://127.0.0.1:{cport}"
        wait(lambda: urllib.request.urlopen(ctrl + "/pub/health", timeout=1).status == 200, 10, "controller")
        start("drone", "--controller-url", ctrl + "/", "--cluster", CLUSTER, "--name", "dr-bench", "--runtime",
              runtime, "--db", f"{d}/d.db", "--data-dir", f"{d}/data")
        start("proxy", "--controller-url", ctrl + "/", "--cluster", CLUSTER, "--host", "127.0.0.1",
              "--http-port", str(pport), "--workers", "2", "--keepalive-interval", "0.5")
        wait(lambda: urllib.request.urlopen(f"http://127.0.0.1:{pport}/ready", timeout=1).status == 200, 10, "proxy")
        time.sleep(0.5)  # the drone's first heartbeat makes it schedulable
        conns = []
        for i in range(N):
            c = http("POST", ctrl + "/ctrl/connect", {"key": {"name": f"fb{i}"}, "spawn_config": {
                "executable": executable, "idle": "freeze", "max_idle_seconds": 1}})
            conns.append(c)

        def all_frozen():
            return all(http("GET", f"{ctrl}/pub/b/{c['backend_id']}/status").get("frozen") for c in conns)
        wait(all_frozen, 60, "every backend frozen")
        thaw = [first_byte_ms(pport, c["token"], "/thaw") for c in conns]
        warm = [first_byte_ms(pport, c["token"], "/warm") for c in conns]
        for c in conns:
            http("POST", f"{ctrl}/ctrl/b/{c['backend_id']}/hard-terminate")
        return thaw, warm
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()
        shutil.rmtree(d, ignore_errors=True)


def main():
    executables = {"process": {"command": [ECHO], "resource_limits": {"memory_limit_bytes": 1 << 30}},
                   "oci": {"image": "plane-test-echo:1"},
                   "docker": {"image": "plane-test-echo:1", "pull_policy": "Never"}}
    print(f"first request to a frozen backend through the proxy -> first byte (ms; {N} backends each):")
    ok = True
    for rt in RUNTIMES:
        thaw, warm = run(rt, executables[rt])
        print(f"  {rt:8} frozen  p50 {pct(thaw, .5):7.3f}  p90 {pct(thaw, .9):7.3f}  max {max(thaw):7.3f}"
              f"   | warm p50 {pct(warm, .5):6.3f}  (thaw adds {statistics.median(thaw) - statistics.median(warm):.3f})")
        if rt != "docker":
            ok = ok and pct(thaw, .5) <= 5
    print("RESULT:", "targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
