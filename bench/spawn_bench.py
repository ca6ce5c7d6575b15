#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Spawn-to-ready latency of the process runtime, measured through
`plane executor` over its socket, against a baseline run in the same
script: spawn the same echo backend directly (posix_spawn) and poll it with
the same HEAD probe every 0.5 ms until it answers. Then start and stop many
backends in a loop and check the executor leaks no fds, processes or memory.

usage: spawn_bench.py PLANE ECHO_BACKEND [ROUNDS] [LOOP]
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PLANE, ECHO = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 100
LOOP = int(sys.argv[4]) if len(sys.argv) > 4 else 200
PROBE = b"HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n"


def probe_once(port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(PROBE)
        return s.recv(5) == b"HTTP/"
    except OSError:
        return False
    finally:
        s.close()


def baseline_once(port):
    env = {"PORT": str(port), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    t0 = time.perf_counter()
    pid = os.posix_spawn(ECHO, [ECHO], env, file_actions=[
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0)])
    while not probe_once(port):
        time.sleep(0.0005)
    dt = time.perf_counter() - t0
    os.kill(pid, 15)
    os.waitpid(pid, 0)
    return dt


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.f = self.s.makefile("rwb", buffering=0)
        self.n = 0
        self.events = []
        self.read()  # hello

    def read(self):
        return json.loads(self.f.readline())

    def call(self, message):
        self.n += 1
        rid = str(self.n)
        self.f.write((json.dumps({"id": rid, "message": message}) + "\n").encode())
        while True:
            m = self.read()
            if m["id"] == rid:
                return m["message"]
            self.events.append(m["message"])

    def wait_exit(self, bid):
        while True:
            for e in self.events:
                if "TerminateEvent" in e and e["TerminateEvent"]["backend_id"] == bid:
                    self.events.remove(e)
                    return e["TerminateEvent"]["exit_code"]
            self.events.append(self.read()["message"])


def ours_once(c, bid):
    exe = {"command": [ECHO]}
    t0 = time.perf_counter()
    r = c.call({"Spawn": [bid, exe, None, None]})
    port = r["SpawnResult"]["Ok"]["port"]
    r = c.call({"WaitForBackend": [bid, f"127.0.0.1:{port}"]})
    dt = time.perf_counter() - t0
    assert r == {"WaitForBackendResult": {"Ok": None}}, r
    c.call({"Terminate": [bid, False]})
    assert c.wait_exit(bid) == 0
    return dt


def proc_stats(pid):
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    children = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children += 1
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return rss, fds, children


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    tmp = tempfile.mkdtemp(prefix="plane-bench-")
    sock = os.path.join(tmp, "ex.sock")
    ex = subprocess.Popen([PLANE, "executor", "--runtime", "process", "--socket", sock,
                           "--data-dir", os.path.join(tmp, "data")],
                          stderr=open(os.path.join(tmp, "executor.log"), "w"))
    try:
        while not os.path.exists(sock):
            time.sleep(0.01)
        c = Client(sock)
        for i in range(10):  # warm up both paths
            ours_once(c, f"w{i}")
            baseline_once(19000 + i)
        base, ours = [], []
        for i in range(ROUNDS):  # interleaved, so drift hits both alike
            base.append(baseline_once(19100 + (i % 50)))
            ours.append(ours_once(c, f"r{i}"))
        mb, mo = statistics.median(base), statistics.median(ours)
        print(f"spawn->ready, {ROUNDS} rounds each (ms):")
        print(f"  baseline posix_spawn+poll  p50 {mb*1e3:7.2f}  p90 {pct(base, .9)*1e3:7.2f}  max {max(base)*1e3:7.2f}")
        print(f"  plane executor (process)   p50 {mo*1e3:7.2f}  p90 {pct(ours, .9)*1e3:7.2f}  max {max(ours)*1e3:7.2f}")
        print(f"  median ratio ours/baseline: {mo/mb:.2f}  (target <= 1.3)")

        before = proc_stats(ex.pid)
        t0 = time.time()
        for i in range(LOOP):
            ours_once(c, f"l{i}")
        after = proc_stats(ex.pid)
        print(f"{LOOP} backends started and stopped in {time.time()-t0:.1f}s:")
        print(f"  executor RSS  {before[0]} kB -> {after[0]} kB ({(after[0]-before[0])*100/before[0]:+.1f}%, target within 10%)")
        print(f"  executor fds  {before[1]} -> {after[1]}")
        print(f"  child procs   {before[2]} -> {after[2]}")
        ok = mo / mb <= 1.3 and abs(after[0] - before[0]) <= before[0] * 0.1 and after[1] == before[1] and after[2] == 0
        print("RESULT:", "targets met" if ok else "TARGET MISSED")
    finally:
        ex.terminate()
        ex.wait()


main()
