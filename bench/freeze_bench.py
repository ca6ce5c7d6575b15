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
import os
import pathlib
import shutil
import socket
import statistics
import sys
import tempfile
import time

PLANE, ECHO = sys.argv[1], sys.argv[2]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 20
RUNTIMES = sys.argv[4:] or ["process", "oci"]
CLUSTER = "localhost:9090"

# The integration tests' helpers run the controller, drone and proxy.
os.environ["PLANE_BIN"] = PLANE
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from conftest import Procs, wait_for  # noqa: E402
from plane_cluster import Controller, Drone  # noqa: E402
from test_proxy import Proxy  # noqa: E402


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
    d = pathlib.Path(tempfile.mkdtemp(prefix="plane-freeze-bench-"))
    procs = Procs()
    try:
        ctrl = Controller(procs, d, default_cluster=CLUSTER).start()
        Drone(procs, d, ctrl, "dr-bench", runtime=runtime).start()
        # KeepAlives more often than the 1 s idle limit, as a max-idle below 7 s needs.
        proxy = Proxy(procs, d, ctrl.url, "--keepalive-interval", "0.5").start()
        conns = []
        for i in range(N):
            r = ctrl.connect(f"fb{i}", executable=executable, idle="freeze", max_idle_seconds=1)
            assert r.status_code == 200, r.text
            conns.append(r.json())
        wait_for(lambda: all(ctrl.status(c["backend_id"]).get("frozen") for c in conns), timeout=60,
                 what="every backend frozen")
        thaw = [first_byte_ms(proxy.port, c["token"], "/thaw") for c in conns]
        warm = [first_byte_ms(proxy.port, c["token"], "/warm") for c in conns]
        for c in conns:
            ctrl.terminate(c["backend_id"], hard=True)
        return thaw, warm
    finally:
        procs.stop_all()
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
