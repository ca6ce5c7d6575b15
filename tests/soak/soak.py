#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Soak: a cluster of hosts in network namespaces (tests/integration/
netns_cluster.py) under mixed load for N minutes, with a fault every 20 s
picked at random: SIGKILL (and restart) or SIGSTOP of a drone, the controller
or the proxy, or a partition of a drone or the proxy from the controller.

Checked at the end: no two backends of one key ever ran at once and fencing
tokens only grew (from the backends' own records), every request got an
answer and every 200 carried the right bytes, nothing stray is left running,
every key is usable again, and the RSS and descriptor counts of the plane
processes stayed under their bounds. A summary table is printed either way.

    SOAK_MINUTES=10 (default) or SOAK_SECONDS=N, SOAK_SEED=N (random and
    printed by default), SOAK_MAX_RSS_MB=256, SOAK_MAX_FDS=512,
    PLANE_BIN, ECHO_BACKEND as for the integration tests. Needs root.
    make soak          (10 minutes)
    make soak-short    (60 s, run by `make test`)
"""
import asyncio
import os
import random
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import requests  # noqa: E402
import websockets  # noqa: E402

from lease_records import check, summary  # noqa: E402
from netns_cluster import CLUSTER, PROXY_PORT, Cluster, netns, unavailable  # noqa: E402

LEASE = 12
LOST = 10
FAULT_EVERY = 20
ANSWER_WITHIN = 60
KEYS = 16
IDLE_SECONDS = 15


def pattern(n):
    one = bytes((i * 31 + 7) & 0xFF for i in range(256))
    return (one * (n // 256 + 1))[:n]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}      # (kind, outcome) -> n
        self.unanswered = []  # (kind, what, error)
        self.wrong = []       # (kind, what, detail)
        self.examples = {}    # (kind, outcome) -> the first body seen, for errors

    def example(self, kind, outcome, text):
        with self.lock:
            self.examples.setdefault((kind, outcome), text[:160])

    def add(self, kind, outcome):
        with self.lock:
            self.counts[(kind, outcome)] = self.counts.get((kind, outcome), 0) + 1

    def no_answer(self, kind, what, err):
        with self.lock:
            self.unanswered.append((kind, what, err))
        self.add(kind, "NO ANSWER")

    def bad(self, kind, what, detail):
        with self.lock:
            self.wrong.append((kind, what, detail))
        self.add(kind, "WRONG ANSWER")


class Load:
    def __init__(self, c, rng, stats):
        self.c = c
        self.rng = rng
        self.stats = stats
        self.keys = [f"soak{i}" for i in range(KEYS)]
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.n_new = 0
        self.threads = []

    def key(self):
        with self.lock:
            if self.rng.random() < 0.1:
                self.n_new += 1
                k = f"soak-new{self.n_new}"
                self.keys.append(k)
                return k
            return self.rng.choice(self.keys[:KEYS])

    def connect(self, key):
        spawn = {"executable": self.c.executable()}
        if key.startswith("soak-new"):
            # Keys used once are swept when idle, so the number of live backends
            # (and with it what the drones hold) stays bounded over a long run.
            spawn["max_idle_seconds"] = IDLE_SECONDS
        try:
            r = requests.post(self.c.ctrl_url + "/ctrl/connect", timeout=ANSWER_WITHIN,
                              json={"key": {"name": key}, "spawn_config": spawn})
        except requests.exceptions.Timeout as e:
            self.stats.no_answer("connect", key, repr(e))
            return None
        except requests.RequestException as e:
            self.stats.add("connect", type(e).__name__)
            return None
        self.stats.add("connect", r.status_code)
        if r.status_code != 200:
            self.stats.example("connect", r.status_code, r.text)
        return r.json() if r.status_code == 200 else None

    def http(self, conn, seq):
        url = f"{self.c.proxy_url}/{conn['token']}"
        try:
            if seq % 3 == 0:
                body = os.urandom(self.rng.choice([10, 1000, 65536]))
                r = requests.post(url + "/echo", data=body, headers={"Host": CLUSTER}, timeout=ANSWER_WITHIN)
                want = body
            else:
                n = self.rng.choice([0, 100, 4096, 200000])
                r = requests.get(f"{url}/bytes/{n}", headers={"Host": CLUSTER}, timeout=ANSWER_WITHIN)
                want = pattern(n)
        except requests.exceptions.Timeout as e:
            self.stats.no_answer("http", conn["backend_id"], repr(e))
            return
        except requests.RequestException as e:
            self.stats.add("http", type(e).__name__)
            return
        self.stats.add("http", r.status_code)
        if r.status_code != 200:
            self.stats.example("http", r.status_code, r.text)
        if r.status_code == 200 and r.content != want:
            self.stats.bad("http", conn["backend_id"], f"{len(r.content)} bytes, wanted {len(want)}")

    def http_worker(self):
        with netns(self.c.client.ns):
            seq = 0
            while not self.stopping.is_set():
                conn = self.connect(self.key())
                if conn:
                    for _ in range(3):
                        seq += 1
                        self.http(conn, seq)
                self.stopping.wait(0.1)

    async def ws_once(self, conn):
        msgs = [os.urandom(self.rng.choice([1, 100, 30000])) for _ in range(5)] + ["text é"]
        try:
            async with websockets.connect(f"ws://{CLUSTER}/{conn['token']}/ws", host=self.c.proxy_host.addr,
                                          port=PROXY_PORT, open_timeout=ANSWER_WITHIN, close_timeout=5,
                                          max_size=None) as ws:
                for m in msgs:
                    await ws.send(m)
                    got = await asyncio.wait_for(ws.recv(), ANSWER_WITHIN)
                    if got != m:
                        self.stats.bad("websocket", conn["backend_id"], "echo differs")
                        return
                    await asyncio.sleep(self.rng.random() * 0.5)
        except (asyncio.TimeoutError, TimeoutError) as e:
            self.stats.no_answer("websocket", conn["backend_id"], repr(e))
            return
        except (websockets.exceptions.WebSocketException, OSError) as e:
            self.stats.add("websocket", type(e).__name__)
            return
        self.stats.add("websocket", "ok")

    def ws_worker(self):
        with netns(self.c.client.ns):
            loop = asyncio.new_event_loop()
            try:
                while not self.stopping.is_set():
                    conn = self.connect(self.key())
                    if conn:
                        loop.run_until_complete(self.ws_once(conn))
                    self.stopping.wait(0.2)
            finally:
                loop.close()

    def start(self):
        for fn in (self.http_worker, self.http_worker, self.ws_worker):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(ANSWER_WITHIN + 15)
        return [t for t in self.threads if t.is_alive()]


class Monitor:
    """RSS and descriptor counts of every plane process, every 2 s."""

    def __init__(self, c):
        self.c = c
        self.samples = {}  # role -> [(rss_kb, fds)]
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self):
        for s in self.c.services:
            if not s.alive():
                continue
            try:
                with open(f"/proc/{s.pid}/status") as f:
                    rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
                fds = len(os.listdir(f"/proc/{s.pid}/fd"))
            except (OSError, StopIteration, ValueError):
                continue
            self.samples.setdefault(s.name, []).append((rss, fds))

    def run(self):
        while not self.stopping.wait(2):
            self.sample()

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self.sample()


class Faults:
    KINDS = ["kill drone", "stop drone", "partition drone", "kill controller", "stop controller",
             "kill proxy", "stop proxy", "partition proxy"]

    def __init__(self, c, rng, log):
        self.c = c
        self.rng = rng
        self.log = log
        self.done = []  # (t, kind, target, seconds)

    def one(self, t0):
        c, rng = self.c, self.rng
        kind = rng.choice(self.KINDS)
        what, target = kind.split()
        if target == "drone":
            target = rng.choice(sorted(c.drones))
            svc = c.drones[target]
        else:
            svc = c.controller if target == "controller" else c.proxy
        secs = round(rng.uniform(3, 15), 1)
        self.log(f"t={time.time() - t0:6.1f}s  {kind} {target if 'drone' in kind else ''} "
                 f"{'' if what == 'kill' else f'for {secs}s'}".rstrip())
        if what == "kill":
            svc.kill()
            time.sleep(rng.uniform(0.5, 3))
            svc.start()
            secs = 0
        elif what == "stop":
            svc.stop()
            try:
                time.sleep(secs)
            finally:
                svc.cont()
        else:
            host = target if target in c.drones else "proxy"
            c.net.partition(host, "ctrl")
            try:
                time.sleep(secs)
            finally:
                c.net.heal(host)
        self.done.append((time.time() - t0, kind, target, secs))


def table(rows, head):
    w = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = "  ".join(f"{{:{n}}}" for n in w)
    out = [line.format(*head), line.format(*("-" * n for n in w))]
    out += [line.format(*map(str, r)) for r in rows]
    return "\n".join(out)


def main():
    why = unavailable()
    if why:
        print(f"soak: skipped: network namespaces unavailable: {why}")
        return 0
    secs = int(os.environ.get("SOAK_SECONDS") or float(os.environ.get("SOAK_MINUTES", "10")) * 60)
    seed = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(1 << 31))
    max_rss = int(os.environ.get("SOAK_MAX_RSS_MB", "256")) * 1024
    max_fds = int(os.environ.get("SOAK_MAX_FDS", "512"))
    print(f"soak: {secs} s, seed {seed} (SOAK_SEED={seed} repeats the fault sequence), fault every {FAULT_EVERY} s",
          flush=True)
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="plane-soak-")
    c = Cluster(tmp, lease=LEASE, lost=LOST)
    stats = Stats()
    failures = []
    mon = None
    t0 = time.time()
    try:
        c.start()
        load = Load(c, random.Random(seed + 1), stats)
        mon = Monitor(c)
        mon.start()
        faults = Faults(c, rng, lambda m: print("soak: " + m, flush=True))
        load.start()
        next_fault = t0 + FAULT_EVERY
        while time.time() < t0 + secs:
            time.sleep(max(0.0, min(next_fault, t0 + secs) - time.time()))
            if time.time() >= next_fault and time.time() < t0 + secs:
                faults.one(t0)
                next_fault += FAULT_EVERY
                while next_fault < time.time():
                    next_fault += FAULT_EVERY
        print(f"soak: load ran {time.time() - t0:.0f} s; recovering", flush=True)
        # Everything back, every key usable again, then the load stops.
        c.wait_controller(60)
        for d in c.drones:
            c.wait_drone(d, 60)
        c.wait_proxy(60)
        stuck = load.stop()
        if stuck:
            failures.append(f"{len(stuck)} client thread(s) still waiting for an answer")
        # The long-lived keys, and the newest of the keys used once.
        for k in load.keys[:KEYS] + load.keys[KEYS:][-20:]:
            try:
                c.wait_usable(k, timeout=2 * LEASE + 20)
            except AssertionError as e:
                failures.append(str(e))
                break
        mon.stop()
        rep = check(c.records())
        failures += rep.violations
        if stats.unanswered:
            failures.append(f"{len(stats.unanswered)} call(s) got no answer within {ANSWER_WITHIN} s: "
                            f"{stats.unanswered[:5]}")
        if stats.wrong:
            failures.append(f"{len(stats.wrong)} wrong answer(s): {stats.wrong[:5]}")
        if not any(o in (200, "ok") for (_, o) in stats.counts):
            failures.append("nothing succeeded at all")
        for name, ss in mon.samples.items():
            rss, fds = max(s[0] for s in ss), max(s[1] for s in ss)
            if rss > max_rss:
                failures.append(f"{name}: RSS {rss // 1024} MiB above the bound {max_rss // 1024} MiB")
            if fds > max_fds:
                failures.append(f"{name}: {fds} descriptors, above the bound {max_fds}")
        # Nothing stray: every backend process left is one the controller runs.
        running = {}
        latest = {}
        for l in rep.lives:
            if l.pid not in latest or latest[l.pid].start < l.start:
                latest[l.pid] = l
        for pid in c.backend_processes():
            if pid in latest:
                l = latest[pid]
                running.setdefault(l.key, set()).add(l.backend)
                if c.status(l.backend).get("status") == "terminated":
                    failures.append(f"pid {pid} runs {l.backend} (key {l.key}), terminated for the controller")
        failures += [f"key {k}: {len(b)} backends running" for k, b in running.items() if len(b) > 1]

        # ---- summary ----
        print("\nsoak summary")
        print(table([("seconds", f"{time.time() - t0:.0f}"), ("seed", seed), ("faults", len(faults.done)),
                     *[(k, v) for k, v in summary(rep).items()]], ("what", "value")))
        kinds = {}
        for _, kind, _, _ in faults.done:
            kinds[kind] = kinds.get(kind, 0) + 1
        print()
        print(table(sorted(kinds.items()), ("fault", "times")))
        print()
        print(table(sorted(((k, str(o), n) for (k, o), n in stats.counts.items()), key=lambda r: (r[0], r[1])),
                    ("call", "outcome", "count")))
        if stats.examples:
            print()
            print(table(sorted(((k, str(o), t.replace("\n", " ")) for (k, o), t in stats.examples.items())),
                        ("call", "outcome", "first answer body")))
        print()
        print(table([(n, len(ss), min(s[0] for s in ss) // 1024, max(s[0] for s in ss) // 1024,
                      min(s[1] for s in ss), max(s[1] for s in ss)) for n, ss in sorted(mon.samples.items())],
                    ("process", "samples", "RSS min MiB", "RSS max MiB", "fds min", "fds max")))
    except BaseException as e:
        failures.append(f"soak aborted: {e!r}")
        raise
    finally:
        if mon and mon.thread.is_alive():
            mon.stop()
        if failures:
            print("\nsoak FAILED:\n" + "\n".join(f"- {f}" for f in failures))
            print(f"logs and records in {tmp}")
            tail = c.logs()
            print(tail[-8000:])
        c.close()
    if failures:
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nsoak passed (seed {seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
