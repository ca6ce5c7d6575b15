# SPDX-License-Identifier: MIT
"""Several hosts on one machine: a controller, drones, a proxy and a client,
each in its own network namespace, joined by veth pairs to a bridge that lives
in a namespace of its own (the "switch"). Nothing is configured in the root
namespace: every address exists only inside the namespaces made here.

    client ─┐
    ctrl ───┤
    d1 ─────┼── br0 (switch namespace)      10.213.X.0/24, X chosen per run
    d2 ─────┤
    proxy ──┘

The test process reaches the controller and the proxy by entering the client
namespace on the calling thread (setns(2) through ctypes) around each request.
Faults: a link taken down or traffic dropped by iptables inside a namespace
(partitions), a slow lossy link (tc netem, or a user-space delay line on the
switch where the kernel has no netem), SIGKILL / SIGSTOP of any process.

Everything made here is removed by close(), which the fixtures call even when
a test fails; namespaces left by a run that crashed (their creating pid is
gone) are removed when the next cluster is made.
"""
import contextlib
import ctypes
import heapq
import os
import random
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLANE = os.environ.get("PLANE_BIN", os.path.join(ROOT, "build", "plane"))
ECHO = os.environ.get("ECHO_BACKEND", os.path.join(ROOT, "build", "echo_backend"))

PREFIX = "pfault"
CLONE_NEWNET = 0x40000000
CLUSTER = "localhost:9090"
CTRL_PORT = 8080
PROXY_PORT = 9090

_libc = ctypes.CDLL(None, use_errno=True)
_seq_lock = threading.Lock()
_seq = [0]


def unavailable():
    """Why network-namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (ip netns, veth, iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"network-namespace tests need `{tool}` (scripts/install-deps.sh installs iproute2, iptables)"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns add` fails here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def sh(*args, check=True, ns=None, quiet=False):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


@contextlib.contextmanager
def netns(name):
    """Runs the body with this thread in namespace `name`: sockets made inside
    stay there (and keep working after the thread leaves)."""
    target = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({name}): {os.strerror(e)}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                # A thread stuck in a test namespace would send later traffic there.
                raise OSError(e, f"setns back to the original namespace: {os.strerror(e)}")
    finally:
        os.close(target)
        os.close(own)


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def remove_stale():
    """Namespaces of this fixture whose creating process is gone: kill what runs
    in them and delete them."""
    r = sh("ip", "netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != PREFIX or not parts[1].isdigit():
            continue
        if pid_alive(int(parts[1])):
            continue
        _kill_ns_pids(name)
        sh("ip", "netns", "del", name, check=False)


def ns_pids(name):
    r = sh("ip", "netns", "pids", name, check=False)
    return [int(p) for p in r.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def _kill_ns_pids(name):
    for sig in (signal.SIGCONT, signal.SIGKILL):
        for p in ns_pids(name):
            with contextlib.suppress(OSError):
                os.kill(p, sig)
    deadline = time.time() + 5
    while time.time() < deadline and any(pid_alive(p) for p in ns_pids(name)):
        time.sleep(0.05)


class Host:
    def __init__(self, net, role, index):
        self.net = net
        self.role = role
        self.ns = f"{net.name}-{role}"
        self.addr = f"10.213.{net.subnet}.{index}"
        self.port_sw = role  # its veth end on the switch (a name only unique inside the switch)


class Net:
    """The switch and the hosts plugged into it."""

    def __init__(self):
        remove_stale()
        with _seq_lock:
            _seq[0] += 1
            seq = _seq[0]
        self.name = f"{PREFIX}-{os.getpid()}-{seq}"
        self.subnet = (os.getpid() + seq * 7) % 250 + 1
        self.hosts = {}
        self.delay_lines = []
        self.closed = False
        self.sw = f"{self.name}-sw"
        sh("ip", "netns", "add", self.sw)
        sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.sw, "link", "set", "br0", "up")

    def host(self, role):
        h = Host(self, role, len(self.hosts) + 2)
        sh("ip", "netns", "add", h.ns)
        self.hosts[role] = h
        sh("ip", "-n", self.sw, "link", "add", h.port_sw, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
        sh("ip", "-n", self.sw, "link", "set", h.port_sw, "master", "br0", "up")
        sh("ip", "-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", "eth0")
        sh("ip", "-n", h.ns, "link", "set", "eth0", "up")
        sh("ip", "-n", h.ns, "link", "set", "lo", "up")
        return h

    # ---- faults ----

    def unplug(self, role):
        """The host's cable pulled: nothing in or out."""
        sh("ip", "-n", self.sw, "link", "set", self.hosts[role].port_sw, "down")

    def plug(self, role):
        sh("ip", "-n", self.sw, "link", "set", self.hosts[role].port_sw, "up")

    def partition(self, role, *peers):
        """Drops all traffic between host `role` and the hosts `peers` (inside `role`'s namespace)."""
        h = self.hosts[role]
        for p in peers:
            a = self.hosts[p].addr
            sh("iptables", "-w", "-I", "INPUT", "-s", a, "-j", "DROP", ns=h.ns)
            sh("iptables", "-w", "-I", "OUTPUT", "-d", a, "-j", "DROP", ns=h.ns)

    def heal(self, role):
        sh("iptables", "-w", "-F", "INPUT", ns=self.hosts[role].ns)
        sh("iptables", "-w", "-F", "OUTPUT", ns=self.hosts[role].ns)

    def slow_link(self, role, delay_ms=200, loss=0.05, seed=1):
        """Every frame the host sends is delayed by delay_ms and lost with
        probability `loss` (tc netem on its interface; where the kernel has no
        netem, the same done by a delay line on the switch). Returns "netem" or
        "delay line"."""
        h = self.hosts[role]
        r = sh("tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", f"{delay_ms}ms",
               "loss", f"{loss * 100:g}%", ns=h.ns, check=False)
        if r.returncode == 0:
            return "netem"
        if "unknown" not in r.stderr:
            raise RuntimeError(f"tc netem: {r.stderr.strip()}")
        self.delay_lines.append(DelayLine(self, h, delay_ms, loss, seed))
        return "delay line"

    def close(self):
        if self.closed:
            return
        self.closed = True
        for d in self.delay_lines:
            d.stop()
        for h in self.hosts.values():
            _kill_ns_pids(h.ns)
        for h in self.hosts.values():
            sh("ip", "netns", "del", h.ns, check=False)
        _kill_ns_pids(self.sw)
        sh("ip", "netns", "del", self.sw, check=False)


ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class DelayLine:
    """A slow, lossy cable in user space: the host's switch port is taken off
    the bridge and a thread copies frames between it and a new veth pair that
    is on the bridge, delaying (and dropping some of) the frames the host sends.
    Checksum and segmentation offloads are turned off everywhere (ethtool), so
    the copied frames are complete and carry correct checksums."""

    def __init__(self, net, host, delay_ms, loss, seed):
        if shutil.which("ethtool") is None:
            raise RuntimeError("no netem in this kernel and no ethtool for the delay line "
                               "(scripts/install-deps.sh installs ethtool)")
        self.delay = delay_ms / 1000.0
        self.loss = loss
        self.rng = random.Random(seed)
        self.stats = {"host frames": 0, "dropped": 0, "switch frames": 0}
        sw = net.sw
        a, q, r = host.port_sw, host.port_sw + "q", host.port_sw + "r"
        for h in net.hosts.values():
            sh("ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off", "gro", "off", ns=h.ns, check=False)
        sh("ip", "-n", sw, "link", "set", a, "nomaster")
        sh("ip", "-n", sw, "link", "add", q, "type", "veth", "peer", "name", r)
        for ifc in (a, q, r):
            sh("ethtool", "-K", ifc, "tx", "off", "tso", "off", "gso", "off", "gro", "off", ns=sw, check=False)
        sh("ip", "-n", sw, "link", "set", r, "master", "br0", "up")
        sh("ip", "-n", sw, "link", "set", q, "up")
        with netns(sw):
            self.host_side = self._sock(a)
            self.switch_side = self._sock(q)
        self.stopping = False
        self.heap = []
        self.seq = 0
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"delay-line-{host.role}")
        self.thread.start()

    @staticmethod
    def _sock(ifname):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((ifname, 0))
        s.setblocking(False)
        return s

    def _run(self):
        socks = [self.host_side, self.switch_side]
        while not self.stopping:
            now = time.monotonic()
            while self.heap and self.heap[0][0] <= now:
                _, _, out, frame = heapq.heappop(self.heap)
                with contextlib.suppress(OSError):
                    out.send(frame)
            timeout = min(0.05, max(0.0, self.heap[0][0] - now)) if self.heap else 0.05
            try:
                ready, _, _ = select.select(socks, [], [], timeout)
            except (OSError, ValueError):
                return
            for s in ready:
                for _ in range(64):
                    try:
                        frame, addr = s.recvfrom(65536)
                    except (BlockingIOError, OSError):
                        break
                    if addr[2] == PACKET_OUTGOING:
                        continue
                    if s is self.host_side:
                        self.stats["host frames"] += 1
                        if self.rng.random() < self.loss:
                            self.stats["dropped"] += 1
                            continue
                        self.seq += 1
                        heapq.heappush(self.heap, (time.monotonic() + self.delay, self.seq, self.switch_side, frame))
                    else:
                        self.stats["switch frames"] += 1
                        with contextlib.suppress(OSError):
                            self.host_side.send(frame)

    def stop(self):
        self.stopping = True
        self.thread.join(2)
        self.host_side.close()
        self.switch_side.close()


# ---- processes ----

class Service:
    """One long-running process in a host's namespace, started as
    `ip netns exec NS …` (which execs, so the pid is the program's)."""

    def __init__(self, host, name, args, log, env=None):
        self.host = host
        self.name = name
        self.args = [str(a) for a in args]
        self.log = log
        self.env = env
        self.proc = None
        self.history = []  # every Popen, for cleanup

    def start(self):
        out = open(self.log, "ab")
        env = dict(os.environ, **self.env) if self.env else None
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.host.ns, *self.args], stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        out.close()
        self.history.append(self.proc)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self):
        self.proc.send_signal(signal.SIGCONT)

    def terminate(self, timeout=10):
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        for p in self.history:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                p.wait()

    def logs(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def wait_for(cond, timeout=10.0, interval=0.1, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            v = cond()
        except (requests.RequestException, OSError) as e:
            v, last = None, e
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ""))


class Cluster:
    """controller, drones and a proxy, each on its own host, plus a client host.

    lease: --key-lease-seconds (renew at lease/2, soft at 2/3, hard at 5/6, DB
    expiry at lease); lost: --lost-drone-seconds. drone_runtime "process" runs
    the echo backend as a child of the drone; "executor" puts a
    `plane executor --runtime process` next to each drone; "docker" expects
    docker_socket (a private engine running in that drone's namespace)."""

    def __init__(self, tmp, drones=("d1", "d2"), lease=12, lost=10, drone_runtime="process", grace=2,
                 env=None):
        self.tmp = str(tmp)
        os.makedirs(self.tmp, exist_ok=True)
        self.records_dir = os.path.join(self.tmp, "records")
        os.makedirs(self.records_dir, exist_ok=True)
        self.record_file = os.path.join(self.records_dir, "backends.jsonl")
        self.lease = lease
        self.lost = lost
        self.grace = grace
        self.env = env
        self.drone_runtime = drone_runtime
        self.services = []
        self.net = Net()
        self.client = self.net.host("client")
        self.ctrl_host = self.net.host("ctrl")
        self.proxy_host = self.net.host("proxy")
        self.drone_hosts = {d: self.net.host(d) for d in drones}
        self.ctrl_url = f"http://{self.ctrl_host.addr}:{CTRL_PORT}"
        self.proxy_url = f"http://{self.proxy_host.addr}:{PROXY_PORT}"
        self.controller = self._service(self.ctrl_host, "controller", [
            PLANE, "controller", "--db", self.path("controller.db"), "--host", self.ctrl_host.addr,
            "--port", CTRL_PORT, "--default-cluster", CLUSTER, "--controller-url", self.ctrl_url,
            "--key-lease-seconds", lease, "--lost-drone-seconds", lost])
        self.proxy = self._service(self.proxy_host, "proxy", [
            PLANE, "proxy", "--controller-url", self.ctrl_url + "/", "--cluster", CLUSTER, "--name", "px-faults",
            "--host", "0.0.0.0", "--http-port", PROXY_PORT, "--workers", "1"])
        self.executors = {}
        self.drones = {}
        for d, h in self.drone_hosts.items():
            extra = ["--runtime", drone_runtime]
            if drone_runtime == "process":
                extra += ["--data-dir", self.path(f"{d}-data"), "--bind-ip", h.addr, "--grace-period", grace]
            elif drone_runtime == "executor":
                sock = self.path(f"{d}-executor.sock")
                self.executors[d] = self._service(h, f"{d}-executor", [
                    PLANE, "executor", "--runtime", "process", "--socket", sock, "--data-dir",
                    self.path(f"{d}-data"), "--bind-ip", h.addr, "--grace-period", grace])
                extra += ["--executor-socket", sock]
            self.drones[d] = self._service(h, d, [
                PLANE, "drone", "--controller-url", self.ctrl_url + "/", "--cluster", CLUSTER, "--name", f"dr-{d}",
                "--ip", h.addr, "--db", self.path(f"{d}.db"), *extra])

    def path(self, name):
        return os.path.join(self.tmp, name)

    def _service(self, host, name, args):
        s = Service(host, name, args, self.path(f"{name}.log"), self.env)
        self.services.append(s)
        return s

    # ---- start and wait ----

    def start(self):
        self.controller.start()
        self.wait_controller()
        for d in self.drones:
            if d in self.executors:
                self.executors[d].start()
                self.wait_executor(d)
            self.drones[d].start()
        self.proxy.start()
        for d in self.drones:
            self.wait_drone(d)
        self.wait_proxy()
        return self

    def get(self, url, **kw):
        with netns(self.client.ns):
            return requests.get(url, timeout=kw.pop("timeout", 5), **kw)

    def post(self, url, **kw):
        with netns(self.client.ns):
            return requests.post(url, timeout=kw.pop("timeout", 5), **kw)

    def wait_controller(self, timeout=20):
        def up():
            assert self.controller.alive(), "controller exited:\n" + self.controller.logs()[-3000:]
            return self.get(self.ctrl_url + "/pub/health", timeout=1).status_code == 200
        wait_for(up, timeout, what="controller health")

    def wait_executor(self, d, timeout=20):
        sock = self.path(f"{d}-executor.sock")
        wait_for(lambda: os.path.exists(sock), timeout, what=f"executor socket of {d}")

    def drone_row(self, d):
        db = sqlite3.connect(self.path("controller.db"), timeout=10)
        try:
            return db.execute("SELECT drone.last_local_time, node.controller FROM drone JOIN node USING(id) "
                              "WHERE node.name = ?", (f"dr-{d}",)).fetchone()
        finally:
            db.close()

    def wait_drone(self, d, timeout=30):
        """Connected (listed in the cluster state) and heartbeating (schedulable)."""
        def seen():
            assert self.drones[d].alive(), f"drone {d} exited:\n" + self.drones[d].logs()[-3000:]
            names = [x["node"]["name"]["Drone"] for x in self.state()["drones"]]
            return f"dr-{d}" in names and (self.drone_row(d) or (None,))[0] is not None
        wait_for(seen, timeout, what=f"drone {d} registered")

    def wait_proxy(self, timeout=30):
        def ready():
            assert self.proxy.alive(), "proxy exited:\n" + self.proxy.logs()[-3000:]
            return self.get(self.proxy_url + "/ready", timeout=2).status_code == 200
        wait_for(ready, timeout, what="proxy ready")

    # ---- the API ----

    def state(self):
        return self.get(f"{self.ctrl_url}/ctrl/c/{CLUSTER}/state").json()

    def executable(self):
        return {"command": [ECHO], "env": {"ECHO_RECORD_FILE": self.record_file}}

    def connect(self, key, timeout=10, **spawn):
        sc = {"executable": self.executable()}
        sc.update(spawn)
        return self.post(self.ctrl_url + "/ctrl/connect", json={"key": {"name": key}, "spawn_config": sc},
                         timeout=timeout)

    def status(self, backend_id):
        return self.get(f"{self.ctrl_url}/pub/b/{backend_id}/status").json()

    def terminate(self, backend_id, hard=True):
        return self.post(f"{self.ctrl_url}/ctrl/b/{backend_id}/{'hard' if hard else 'soft'}-terminate")

    def through_proxy(self, token, path="/", timeout=10, **kw):
        headers = {"Host": CLUSTER}
        headers.update(kw.pop("headers", {}))
        return self.get(f"{self.proxy_url}/{token}{path}", headers=headers, timeout=timeout, **kw)

    def usable(self, key, timeout=10):
        """A connect for key whose backend answers through the proxy: (backend id, response)."""
        r = self.connect(key, timeout=timeout)
        if r.status_code != 200:
            return None
        c = r.json()
        p = self.through_proxy(c["token"], "/", timeout=timeout)
        if p.status_code != 200:
            return None
        return c["backend_id"], p.json()

    def wait_usable(self, key, timeout=30):
        return wait_for(lambda: self.usable(key), timeout, interval=0.5, what=f"key {key} usable")

    # ---- looking at it ----

    def records(self):
        from lease_records import read_records
        return read_records(self.records_dir)

    def backend_processes(self, host=None):
        """pid -> argv of every echo backend in the drones' namespaces (or one host's)."""
        out = {}
        hosts = [self.drone_hosts[host]] if host else list(self.drone_hosts.values())
        for h in hosts:
            for pid in ns_pids(h.ns):
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if os.path.basename(exe).startswith("echo_backend") and pid_alive(pid):
                    out[pid] = h.role
        return out

    def logs(self):
        out = []
        for s in self.services:
            out.append(f"==== {s.name} ({s.log})\n{s.logs()[-6000:]}")
        return "\n".join(out)

    def close(self):
        for s in self.services:
            s.close()
        self.net.close()


