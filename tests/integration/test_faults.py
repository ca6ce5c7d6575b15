# SPDX-License-Identifier: MIT
"""Hosts that fail: controller, drones and proxy on hosts of their own
(network namespaces, netns_cluster.py), and the faults users meet: a drone
partitioned past its key lease, a slow lossy link, a proxy cut off from the
controller, SIGKILL and SIGSTOP (30 s) of a drone, the controller, the proxy,
an executor and dockerd.

Every scenario ends by checking the one promise users build on from the
backends' own records (lease_records.py): no two backends of one key ever ran
at the same time, and fencing tokens of a key only grow. Around it: every
request made while a fault lasts gets an answer, nothing is left running that
the controller thinks is gone, and every key is usable again afterwards.

The lease is short so the tests are quick: --key-lease-seconds 12 (renew at
6 s, soft terminate at 8 s, hard at 10 s, DB expiry at 12 s) and
--lost-drone-seconds 10. Scenarios run in parallel (each on a cluster of its
own, FAULTS_PARALLEL at a time, default 4); each test waits for its own.

Needs root (ip netns, veth, iptables); skipped with the reason otherwise.
"""
import asyncio
import concurrent.futures
import contextlib
import glob
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time

import pytest
import requests
import websockets

from lease_records import assert_invariant, check
from netns_cluster import CLUSTER, ECHO, PROXY_PORT, Cluster, netns, pid_alive, unavailable, wait_for

LEASE = 12
LOST = 10
STOP_SECONDS = int(os.environ.get("FAULTS_STOP_SECONDS", "30"))
# The longest a request made during a fault may wait for its answer: a stopped
# process answers once it is continued.
ANSWER_WITHIN = STOP_SECONDS + 45
# After a fault ends, every key is usable again within the lease (the issue's
# promise), plus a little for a restarted component to come up on a loaded machine.
USABLE_WITHIN = LEASE + 8

_why_not = unavailable()
pytestmark = pytest.mark.skipif(_why_not is not None, reason=f"network namespaces unavailable: {_why_not}")


# ---- running scenarios in parallel --------------------------------------------

SCENARIOS = {}


def scenario(fn):
    SCENARIOS[fn.__name__] = fn
    return fn


class Runner:
    def __init__(self, names, tmp_factory):
        self.pool = concurrent.futures.ThreadPoolExecutor(int(os.environ.get("FAULTS_PARALLEL", "4")))
        self.futures = {}
        for n in names:
            tmp = tmp_factory.mktemp(n)
            self.futures[n] = self.pool.submit(self._run, n, tmp)

    @staticmethod
    def _run(name, tmp):
        t0 = time.time()
        try:
            return SCENARIOS[name](tmp)
        finally:
            print(f"[faults] {name}: {time.time() - t0:.0f} s (files in {tmp})", file=sys.stderr)

    def result(self, name):
        return self.futures[name].result()


@pytest.fixture(scope="module")
def faults(request, tmp_path_factory):
    here = request.module
    names = [item.name[len("test_"):] for item in request.session.items
             if item.module is here and item.name[len("test_"):] in SCENARIOS]
    r = Runner(names, tmp_path_factory)
    yield r
    r.pool.shutdown(wait=True)


@contextlib.contextmanager
def cluster_of(tmp, **kw):
    c = Cluster(tmp, lease=LEASE, lost=LOST, **kw)
    try:
        c.start()
        yield c
    except BaseException:
        # The logs of every process go with the failure.
        sys.stderr.write(f"\n[faults] logs of the cluster in {tmp}:\n{c.logs()}\n")
        raise
    finally:
        c.close()


# ---- clients that keep going while faults happen ------------------------------

class Load:
    """Threads in the client namespace that keep connecting (existing and new
    keys) and sending requests through the proxy; every call is recorded. A
    call the client gave up on (its timeout) is a call that got no answer."""

    def __init__(self, cluster, keys, prefix, workers=2, new_every=5, seed=1):
        self.c = cluster
        self.keys = list(keys)
        self.prefix = prefix
        self.workers = workers
        self.new_every = new_every
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.calls = []        # (what, outcome, seconds)
        self.unanswered = []   # (what, error, seconds)
        self.threads = []
        self.n = 0

    def start(self):
        for i in range(self.workers):
            t = threading.Thread(target=self._work, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _key(self):
        with self.lock:
            self.n += 1
            if self.n % self.new_every == 0:
                k = f"{self.prefix}-new{self.n}"
                self.keys.append(k)
                return k
            return self.rng.choice(self.keys)

    def _call(self, what, fn):
        t0 = time.time()
        try:
            r = fn()
            outcome = r.status_code
        except (requests.exceptions.Timeout,) as e:
            with self.lock:
                self.unanswered.append((what, repr(e), time.time() - t0))
            return None
        except requests.RequestException as e:
            outcome = type(e).__name__
            r = None
        with self.lock:
            self.calls.append((what, outcome, time.time() - t0))
        return r

    def _work(self, i):
        with netns(self.c.client.ns):
            while not self.stopping.is_set():
                key = self._key()
                r = self._call(f"connect {key}", lambda: requests.post(
                    self.c.ctrl_url + "/ctrl/connect", timeout=ANSWER_WITHIN,
                    json={"key": {"name": key}, "spawn_config": {"executable": self.c.executable()}}))
                if r is not None and r.status_code == 200:
                    tok = r.json()["token"]
                    self._call(f"proxy {key}", lambda: requests.get(
                        f"{self.c.proxy_url}/{tok}/", headers={"Host": CLUSTER}, timeout=ANSWER_WITHIN))
                self.stopping.wait(0.2)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(ANSWER_WITHIN + 10)
        assert not any(t.is_alive() for t in self.threads), "a client thread is still waiting"

    def check_answered(self):
        ok = sum(1 for _, o, _ in self.calls if o == 200)
        assert not self.unanswered, (f"{len(self.unanswered)} call(s) got no answer within {ANSWER_WITHIN} s:\n"
                                     + "\n".join(map(str, self.unanswered[:20])))
        assert ok > 0, f"no call succeeded at all: {self.calls[:20]}"
        return ok


# ---- checks shared by the scenarios -------------------------------------------

def running_backends(c):
    """(backend id, key, where) of every backend process (or container) running now."""
    lives = check(c.records()).lives
    if getattr(c, "running_containers", None):
        by_id = {l.backend: l for l in lives}
        return [(name[len("plane-"):], by_id[name[len("plane-"):]].key if name[len("plane-"):] in by_id else None,
                 f"container {name}") for name in c.running_containers()]
    latest = {}
    for l in lives:
        if l.pid not in latest or latest[l.pid].start < l.start:
            latest[l.pid] = l
    return [(latest[pid].backend, latest[pid].key, f"pid {pid} on {host}")
            for pid, host in c.backend_processes().items() if pid in latest]


def strays(c):
    """Backends still running that the controller calls terminated, and keys
    with more than one running backend."""
    bad = []
    per_key = {}
    for backend, key, where in running_backends(c):
        if key is None:
            continue  # started a moment ago, no line yet
        per_key.setdefault(key, set()).add(backend)
        st = c.status(backend)
        if st.get("status") == "terminated":
            bad.append(f"{where} runs backend {backend} (key {key}) which the controller says is terminated: {st}")
    for k, bs in per_key.items():
        if len(bs) > 1:
            bad.append(f"key {k} has {len(bs)} running backends: {sorted(bs)}")
    return bad


def wait_no_strays(c, timeout=LEASE + 20):
    last = []

    def none():
        last[:] = strays(c)
        return not last
    try:
        wait_for(none, timeout, interval=0.5, what="no stray backends")
    except AssertionError:
        raise AssertionError("left running:\n" + "\n".join(last))


def wait_all_usable(c, keys, since=None, timeout=USABLE_WITHIN, what=""):
    """Every key answers through the proxy again, at most `timeout` s after
    `since` (the end of the fault). Returns the seconds that took."""
    t0 = since or time.time()
    for k in keys:
        c.wait_usable(k, timeout=max(1.0, timeout - (time.time() - t0)))
    took = time.time() - t0
    if what:
        print(f"[faults] {what}: {len(keys)} keys usable again {took:.1f} s after the fault ended", file=sys.stderr)
    return took


def terminate_everything(c, extra_gone=None, timeout=40):
    """Hard-terminates every backend the records know of that is not terminated,
    then waits until no backend process (or container) is left."""
    for l in check(c.records()).lives:
        with contextlib.suppress(requests.RequestException, ValueError):
            if c.status(l.backend).get("status") != "terminated":
                c.terminate(l.backend, hard=True)

    def gone():
        left = c.backend_processes()
        if extra_gone:
            left = dict(left, **extra_gone())
        return not left
    try:
        wait_for(gone, timeout, interval=0.5, what="every backend gone after terminating all")
    except AssertionError:
        raise AssertionError(f"backend processes left after terminating everything: {c.backend_processes()}"
                             + (f", containers: {extra_gone()}" if extra_gone else ""))


def key_lives(c, key):
    return [l for l in check(c.records()).lives if l.key == key]


def stop_plane_and_check_nothing_left(c, timeout=20):
    """Graceful stop of every plane process; then nothing of ours may be left
    running in the drones' namespaces."""
    for s in c.services:
        s.terminate()
    from netns_cluster import ns_pids

    def empty():
        return all(not [p for p in ns_pids(h.ns) if pid_alive(p)] for h in c.drone_hosts.values())
    try:
        wait_for(empty, timeout, interval=0.5, what="drone hosts empty")
    except AssertionError:
        left = {h.role: [(p, open(f"/proc/{p}/cmdline").read().replace("\0", " ")[:200])
                         for p in ns_pids(h.ns) if pid_alive(p)] for h in c.drone_hosts.values()}
        raise AssertionError(f"processes left in the drone hosts after every plane process stopped: {left}")


# ---- scenarios ------------------------------------------------------------------

def controller_sql(c, query, *args):
    db = sqlite3.connect(c.path("controller.db"), timeout=10)
    try:
        return db.execute(query, args).fetchall()
    finally:
        db.close()


def after_a_renewal_well_after_a_heartbeat(c, key, drone, gap_ms=4000, timeout=60):
    """Returns just after the controller renewed `key` at a moment at least
    gap_ms after the last heartbeat of `drone`. Cut off then, the drone holds a
    lease valid for most of a lease yet while the controller last heard of it
    well before: the case where calling the drone lost at its last heartbeat
    plus --lost-drone-seconds hands the key out while the old lease runs."""
    def expiry():
        rows = controller_sql(c, "SELECT expires_at FROM backend_key WHERE key_name = ?", key)
        return rows[0][0] if rows else None
    deadline = time.time() + timeout
    last = expiry()
    while time.time() < deadline:
        time.sleep(0.02)
        e = expiry()
        if e is not None and e != last:
            hb = controller_sql(c, "SELECT drone.last_heartbeat FROM drone JOIN node USING(id) WHERE node.name = ?",
                                f"dr-{drone}")[0][0]
            now_ms = time.time() * 1000
            if hb is not None and now_ms - hb >= gap_ms:
                return now_ms - hb
        last = e
    raise AssertionError(f"no renewal of {key} at least {gap_ms} ms after a heartbeat within {timeout} s")


@scenario
def drone_partitioned_past_the_lease(tmp):
    with cluster_of(tmp) as c:
        # A backend that ignores SIGTERM, so the drone's soft terminate at the
        # soft deadline does not end it: it runs until the hard deadline, as a
        # backend that takes its time to save its state would.
        exe = c.executable()
        exe["env"]["ECHO_IGNORE_SIGTERM"] = "1"
        r = c.connect("pk", executable=exe)
        assert r.status_code == 200, r.text
        first = r.json()
        victim = first["drone"].removeprefix("dr-")
        other = [d for d in c.drones if d != victim][0]
        c.wait_usable("pk")
        old_pids = set(c.backend_processes(victim))
        assert old_pids, "the backend of pk does not run on the drone it was scheduled on"
        gap = after_a_renewal_well_after_a_heartbeat(c, "pk", victim)
        print(f"[faults] partition {gap:.0f} ms after the last heartbeat, just after a renewal", file=sys.stderr)

        c.net.partition(victim, "ctrl")
        t_part = time.time()
        # Clients keep asking for the key all along, as users do: the moment the
        # controller lets go of it, a new backend starts.
        seen = []
        stop_asking = threading.Event()

        def ask():
            while not stop_asking.is_set():
                with contextlib.suppress(requests.RequestException, ValueError):
                    u = c.usable("pk", timeout=5)
                    if u:
                        seen.append(u[0])
                stop_asking.wait(0.2)
        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        try:
            # Its backend stops by itself, while the drone is still cut off.
            wait_for(lambda: not (set(c.backend_processes(victim)) & old_pids), LEASE + 15, interval=0.2,
                     what=f"the backend on the partitioned drone {victim} to stop by itself")
            # The key moves to the other drone and serves there.
            wait_for(lambda: any(b != first["backend_id"] for b in seen), 3 * LEASE + 20, interval=0.2,
                     what="pk usable on the other drone")
        finally:
            stop_asking.set()
            asker.join(15)
        moved = [b for b in seen if b != first["backend_id"]]
        moved = (moved[0],)
        assert c.status(moved[0])["status"] == "ready"
        assert c.backend_processes(other), f"no backend runs on {other}"
        # Keep the partition past the lease, then heal.
        time.sleep(max(0.0, t_part + LEASE + 3 - time.time()))
        assert c.drones[victim].alive()
        c.net.heal(victim)
        c.wait_drone(victim)
        # Nothing doubled: the old backend is (reported) gone, the key stays where it moved.
        wait_for(lambda: c.status(first["backend_id"]).get("status") == "terminated", 40,
                 what="the partitioned backend reported terminated after the heal")
        time.sleep(3)
        assert c.usable("pk")[0] == moved[0]
        wait_no_strays(c)
        lives = key_lives(c, "pk")
        assert {l.backend for l in lives} == {first["backend_id"], moved[0]}, lives
        assert_invariant(c.records(), "the partition scenario")
        terminate_everything(c)
        stop_plane_and_check_nothing_left(c)
        assert_invariant(c.records(), "the partition scenario")


@scenario
def slow_lossy_drone_link(tmp):
    # One drone, so every backend runs behind the slow link.
    with cluster_of(tmp, drones=("d1",)) as c:
        how = c.net.slow_link("d1", delay_ms=200, loss=0.05, seed=7)
        print(f"[faults] slow link by {how}", file=sys.stderr)
        t0 = time.time()
        first = c.wait_usable("slow0", timeout=60)
        n = 0
        # Connects, requests and WebSockets keep working, and over more than a
        # lease the first backend keeps its key (renewals get through).
        while time.time() - t0 < LEASE + 6 or n < 6:
            n += 1
            k = f"slow{n % 4}"
            r = c.connect(k, timeout=30)
            assert r.status_code == 200, r.text
            p = c.through_proxy(r.json()["token"], f"/n{n}", timeout=30)
            assert p.status_code == 200, (p.status_code, p.text)
            assert p.headers["x-plane-backend-id"] == r.json()["backend_id"]
            with netns(c.client.ns):
                asyncio.run(ws_echo(c, r.json()["token"], [f"m{n}", b"x" * 20000]))
        assert c.usable("slow0")[0] == first[0], "slow0 lost its backend although its drone stayed reachable"
        assert c.status(first[0])["status"] == "ready"
        assert_invariant(c.records(), "the slow-link scenario")
        terminate_everything(c, timeout=60)
        assert_invariant(c.records(), "the slow-link scenario")


async def ws_echo(c, token, msgs, timeout=30):
    async with websockets.connect(f"ws://{CLUSTER}/{token}/ws", host=c.proxy_host.addr, port=PROXY_PORT,
                                  open_timeout=timeout, close_timeout=5, max_size=None) as ws:
        for m in msgs:
            await ws.send(m)
            assert await asyncio.wait_for(ws.recv(), timeout) == m


@scenario
def proxy_partitioned_from_the_controller(tmp):
    with cluster_of(tmp) as c:
        conns = {}
        for k in ("pa", "pb"):
            c.wait_usable(k)
            r = c.connect(k)
            conns[k] = r.json()
            assert c.through_proxy(conns[k]["token"]).status_code == 200
        # A WebSocket opened before the partition keeps echoing through it.
        ws_box = {}
        loop = asyncio.new_event_loop()
        try:
            proxy_partition_body(c, conns, ws_box, loop)
        finally:
            if "ws" in ws_box:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(asyncio.wait_for(ws_box["ws"].close(), 10))
            loop.close()


def proxy_partition_body(c, conns, ws_box, loop):
    async def open_ws():
        ws_box["ws"] = await websockets.connect(f"ws://{CLUSTER}/{conns['pa']['token']}/ws",
                                                host=c.proxy_host.addr, port=PROXY_PORT, open_timeout=10)
    with netns(c.client.ns):
        loop.run_until_complete(open_ws())

    c.net.partition("proxy", "ctrl")
    t_part = time.time()
    # Tokens the proxy has never seen (a new one for a running backend, and
    # one for a new key) are asked for while the cached routes are used; the
    # proxy cannot reach the controller, so the answer must be 503.
    fresh = c.connect("pa").json()
    fresh_key = c.connect("pc").json()
    fresh_answers = {}

    def ask(tok):
        try:
            p = c.through_proxy(tok, timeout=ANSWER_WITHIN)
            fresh_answers[tok] = (p.status_code, p.text[:200])
        except requests.RequestException as e:
            fresh_answers[tok] = ("no answer", repr(e))
    askers = [threading.Thread(target=ask, args=(t,)) for t in (fresh["token"], fresh_key["token"])]
    for t in askers:
        t.start()
    # Cached routes keep serving, past a whole lease.
    n = 0
    while time.time() - t_part < LEASE + 4:
        n += 1
        for k in ("pa", "pb"):
            p = c.through_proxy(conns[k]["token"], f"/during{n}", timeout=20)
            assert p.status_code == 200, (k, p.status_code, p.text)
            assert p.headers["x-plane-backend-id"] == conns[k]["backend_id"]

        async def ping():
            await ws_box["ws"].send(f"w{n}")
            assert await asyncio.wait_for(ws_box["ws"].recv(), 10) == f"w{n}"
        loop.run_until_complete(ping())
        time.sleep(0.5)
    for t in askers:
        t.join(ANSWER_WITHIN + 5)
    assert [a[0] for a in fresh_answers.values()] == [503, 503], \
        f"tokens the partitioned proxy never saw: {fresh_answers}"
    c.net.heal("proxy")
    c.wait_proxy(timeout=60)
    # Healed: the new tokens resolve.
    wait_for(lambda: c.through_proxy(fresh["token"]).status_code == 200, 30, what="fresh token after the heal")
    wait_for(lambda: c.through_proxy(fresh_key["token"]).status_code == 200, 30, what="pc after the heal")
    loop.run_until_complete(ws_box["ws"].close())
    assert_invariant(c.records(), "the proxy-partition scenario")
    terminate_everything(c)
    assert_invariant(c.records(), "the proxy-partition scenario")


def kill_then_stop(c, name, victim, restart, healthy, keys, extra_gone=None):
    """The common part of the SIGKILL/SIGSTOP scenarios: load running, SIGKILL
    `victim` and start it again, then SIGSTOP it for STOP_SECONDS; after each:
    every key usable again, nothing stray; at the end every call answered,
    nothing left, the invariant."""
    for k in keys:
        c.wait_usable(k, timeout=60)
    load = Load(c, keys, prefix=name).start()
    try:
        time.sleep(2)
        # SIGKILL, and a restart as a supervisor would do it.
        victim().kill()
        time.sleep(2)
        restart()
        ended = time.time()
        healthy()
        wait_all_usable(c, list(load.keys), since=ended, what=f"{name} SIGKILL")
        wait_no_strays(c)
        # SIGSTOP for STOP_SECONDS.
        v = victim()
        v.stop()
        try:
            time.sleep(STOP_SECONDS)
        finally:
            v.cont()
        ended = time.time()
        healthy()
        wait_all_usable(c, list(load.keys), since=ended, what=f"{name} SIGSTOP")
        wait_no_strays(c)
    finally:
        load.stop()
    load.check_answered()
    assert_invariant(c.records(), f"the {name} kill/stop scenario")
    wait_all_usable(c, list(load.keys))
    terminate_everything(c, extra_gone)
    assert_invariant(c.records(), f"the {name} kill/stop scenario")
    return load


@scenario
def kill_and_stop_a_drone(tmp):
    with cluster_of(tmp) as c:
        keys = [f"dk{i}" for i in range(4)]
        r = c.connect(keys[0])
        victim = r.json()["drone"].removeprefix("dr-")
        kill_then_stop(c, "drone", lambda: c.drones[victim], lambda: c.drones[victim].start(),
                       lambda: c.wait_drone(victim, timeout=60), keys)
        stop_plane_and_check_nothing_left(c)


@scenario
def kill_and_stop_the_controller(tmp):
    with cluster_of(tmp) as c:
        def healthy():
            c.wait_controller(timeout=60)
            for d in c.drones:
                c.wait_drone(d, timeout=60)
            c.wait_proxy(timeout=60)
        kill_then_stop(c, "controller", lambda: c.controller, lambda: c.controller.start(), healthy,
                       [f"ck{i}" for i in range(4)])
        stop_plane_and_check_nothing_left(c)


@scenario
def kill_and_stop_the_proxy(tmp):
    with cluster_of(tmp) as c:
        kill_then_stop(c, "proxy", lambda: c.proxy, lambda: c.proxy.start(), lambda: c.wait_proxy(timeout=60),
                       [f"xk{i}" for i in range(4)])
        stop_plane_and_check_nothing_left(c)


@scenario
def kill_and_stop_an_executor(tmp):
    with cluster_of(tmp, drone_runtime="executor") as c:
        keys = [f"ek{i}" for i in range(4)]
        r = c.connect(keys[0])
        victim = r.json()["drone"].removeprefix("dr-")

        def restart():
            sock = c.path(f"{victim}-executor.sock")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(sock)  # a killed executor leaves its socket file
            c.executors[victim].start()
            c.wait_executor(victim)
        kill_then_stop(c, "executor", lambda: c.executors[victim], restart,
                       lambda: c.wait_drone(victim, timeout=60), keys)
        stop_plane_and_check_nothing_left(c)


# ---- dockerd: a private engine in a drone's namespace --------------------------

DOCKER_IMAGE = "plane-faults-echo:1"


class PrivateDockerd:
    """A dockerd of our own (never the machine's shared one), running in the
    drone host's network namespace (nsenter --net only, so cgroups stay
    mounted), on its own socket, data root and exec root."""

    def __init__(self, host, base):
        self.host = host
        self.base = base
        self.sock = os.path.join(base, "docker.sock")
        self.data_root = os.path.join(base, "data")
        self.exec_root = os.path.join("/run", f"pfault-docker-{os.getpid()}-{os.path.basename(base)}")
        self.pidfile = os.path.join(base, "dockerd.pid")
        self.log = os.path.join(base, "dockerd.log")
        self.svc = None

    @staticmethod
    def remove_stale():
        """Exec roots of private engines whose test process is gone (a crashed run)."""
        for d in glob.glob("/run/pfault-docker-*"):
            parts = os.path.basename(d).split("-")
            if len(parts) >= 4 and parts[2].isdigit() and not pid_alive(int(parts[2])):
                unmount_under(d)
                shutil.rmtree(d, ignore_errors=True)

    def _clear_stale_pidfiles(self):
        for f in (self.pidfile, os.path.join(self.exec_root, "containerd", "containerd.pid")):
            with contextlib.suppress(OSError, ValueError):
                if not pid_alive(int(open(f).read().strip())):
                    os.unlink(f)

    def start(self):
        self.remove_stale()
        os.makedirs(self.data_root, exist_ok=True)
        self._clear_stale_pidfiles()
        out = open(self.log, "ab")
        self.svc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.host.ns}", "dockerd", "--host", f"unix://{self.sock}",
             "--data-root", self.data_root, "--exec-root", self.exec_root, "--pidfile", self.pidfile,
             "--storage-driver", "vfs", "--bridge=none", "--iptables=false", "--ip-masq=false",
             "--ip-forward=false", "--ip6tables=false"],
            stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.history = getattr(self, "history", []) + [self.svc]
        wait_for(self.ping, 60, interval=0.2, what="private dockerd")
        return self

    def api(self, method, path, data=None, ctype=None, timeout=120):
        cmd = ["curl", "-sS", "--max-time", str(timeout), "--unix-socket", self.sock, "-X", method]
        if ctype:
            cmd += ["-H", f"Content-Type: {ctype}", "--data-binary", "@-"]
        r = subprocess.run(cmd + [f"http://localhost/v1.41{path}"], input=data, capture_output=True)
        return r.stdout.decode(errors="replace")

    def ping(self):
        assert self.svc.poll() is None, "dockerd exited:\n" + open(self.log, errors="replace").read()[-3000:]
        r = subprocess.run(["curl", "-sf", "--max-time", "2", "--unix-socket", self.sock, "http://localhost/_ping"],
                           capture_output=True)
        return r.returncode == 0

    def build_image(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            df = b"FROM scratch\nCOPY echo_backend /echo_backend\nENTRYPOINT [\"/echo_backend\"]\n"
            ti = tarfile.TarInfo("Dockerfile")
            ti.size = len(df)
            tar.addfile(ti, io.BytesIO(df))
            tar.add(ECHO, arcname="echo_backend")
        out = self.api("POST", f"/build?t={DOCKER_IMAGE}&q=1&rm=1&forcerm=1", buf.getvalue(), "application/x-tar")
        assert '"error' not in out, out
        assert "Id" in self.api("GET", f"/images/{DOCKER_IMAGE}/json"), out

    def containers(self):
        out = self.api("GET", "/containers/json?all=false", timeout=20)
        try:
            return {x["Names"][0].lstrip("/"): x["State"] for x in json.loads(out)}
        except (ValueError, KeyError, IndexError):
            return {"?": out}

    def close(self):
        for p in getattr(self, "history", []):
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        # Whatever it left mounted under its roots.
        unmount_under(self.data_root)
        unmount_under(self.exec_root)
        shutil.rmtree(self.exec_root, ignore_errors=True)


def unmount_under(root):
    with open("/proc/self/mounts") as f:
        mounts = [l.split()[1] for l in f]
    for m in sorted(mounts, key=len, reverse=True):
        if m == root or m.startswith(root + "/"):
            subprocess.run(["umount", "-l", m], capture_output=True)


def docker_unavailable():
    if shutil.which("dockerd") is None:
        return "docker.io is not installed (dockerd missing)"
    if shutil.which("nsenter") is None or shutil.which("curl") is None:
        return "nsenter and curl are needed for the private dockerd"
    return None


@scenario
def kill_and_stop_dockerd(tmp):
    why = docker_unavailable()
    if why:
        pytest.skip(why)
    c = Cluster(tmp, drones=("d1",), lease=LEASE, lost=LOST, drone_runtime="docker")
    engine = PrivateDockerd(c.drone_hosts["d1"], os.path.join(str(tmp), "docker"))
    # The drone talks to the private engine; containers share the drone host's network.
    c.drones["d1"].args += ["--docker-socket", engine.sock, "--docker-network", "host",
                            "--mount-base", c.tmp]
    c.executable = lambda: {"image": DOCKER_IMAGE, "pull_policy": "Never", "mount": "records",
                            "env": {"ECHO_RECORD_FILE": "/plane-data/backends.jsonl"}}

    # Containers: their processes are not children of the drone; they count by name.
    def containers():
        return {n: s for n, s in engine.containers().items() if n.startswith("plane-")}
    c.running_containers = containers

    try:
        engine.start()
        engine.build_image()
        c.start()

        def restart():
            engine.start()

        def healthy():
            wait_for(engine.ping, 60, what="private dockerd answering")
        kill_then_stop(c, "dockerd", lambda: engine_victim(engine), restart, healthy,
                       [f"gk{i}" for i in range(3)], extra_gone=containers)
        c.drones["d1"].terminate()
        assert containers() == {}, containers()
    except BaseException:
        sys.stderr.write(f"\n[faults] logs of the dockerd cluster in {tmp}:\n{c.logs()}\n"
                         f"==== dockerd\n{open(engine.log, errors='replace').read()[-4000:]}\n")
        raise
    finally:
        c.close()
        engine.close()


def engine_victim(engine):
    """The running dockerd as a Service-like object for kill_then_stop."""
    class V:
        def kill(self):
            engine.svc.send_signal(signal.SIGKILL)
            engine.svc.wait()

        def stop(self):
            engine.svc.send_signal(signal.SIGSTOP)

        def cont(self):
            engine.svc.send_signal(signal.SIGCONT)
    return V()


# ---- the tests ----------------------------------------------------------------

def test_drone_partitioned_past_the_lease(faults):
    """A drone cut off from the controller for longer than the lease: its backend
    stops by itself, the key starts on the other drone only after that, and
    after the heal nothing runs twice."""
    faults.result("drone_partitioned_past_the_lease")


def test_slow_lossy_drone_link(faults):
    """200 ms latency and 5 % loss on a drone's link: connects, requests and
    WebSockets still succeed, and keys are renewed."""
    faults.result("slow_lossy_drone_link")


def test_proxy_partitioned_from_the_controller(faults):
    """Cached routes keep serving (HTTP and an open WebSocket); tokens the proxy
    never saw are 503 until the link is back."""
    faults.result("proxy_partitioned_from_the_controller")


def test_kill_and_stop_a_drone(faults):
    faults.result("kill_and_stop_a_drone")


def test_kill_and_stop_the_controller(faults):
    faults.result("kill_and_stop_the_controller")


def test_kill_and_stop_the_proxy(faults):
    faults.result("kill_and_stop_the_proxy")


def test_kill_and_stop_an_executor(faults):
    faults.result("kill_and_stop_an_executor")


def test_kill_and_stop_dockerd(faults):
    faults.result("kill_and_stop_dockerd")
