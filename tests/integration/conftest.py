# SPDX-License-Identifier: MIT
"""Fixtures for integration tests: the real `plane` binary on loopback.

Every process a test starts is registered with the `procs` fixture, which
stops it (SIGTERM, then SIGKILL) when the test ends, pass or fail.
"""
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLANE = os.environ.get("PLANE_BIN", os.path.join(ROOT, "build", "plane"))
ECHO = os.environ.get("ECHO_BACKEND", os.path.join(ROOT, "build", "echo_backend"))

# PLANE_TEST_PROXY_IO=uring|epoll: every proxy the tests start (`plane proxy`,
# `plane dev`, a run config) does its I/O that way, through the default the
# proxy reads from PLANE_PROXY_IO; unset, the proxy chooses as it does by default.
PROXY_IO = os.environ.get("PLANE_TEST_PROXY_IO") or None
if PROXY_IO:
    os.environ["PLANE_PROXY_IO"] = PROXY_IO


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        log = kw.pop("log", None)
        out = open(log, "ab") if log else subprocess.DEVNULL
        p = subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.stop_all()


def wait_for(cond, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def framed_json(read, sep):
    """The JSON messages in what read() returns (bytes, b"" at the end), one before each sep."""
    buf = b""
    while True:
        chunk = read()
        if not chunk:
            return
        buf += chunk
        while sep in buf:
            raw, buf = buf.split(sep, 1)
            yield json.loads(raw)


class ExecutorClient:
    """A client of the executor protocol, written from the spec (section 15)."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.waiters = {}
        self.events = queue.Queue()
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        try:
            for msg in framed_json(lambda: self.sock.recv(65536), b"\n"):
                if msg.get("id") is None:
                    self.events.put(msg["message"])
                else:
                    with self.lock:
                        q = self.waiters.pop(msg["id"], None)
                    if q is not None:
                        q.put(msg["message"])
        except (OSError, ValueError):
            pass
        self.closed.set()

    def send_raw(self, data):
        self.sock.sendall(data)

    def request(self, message, timeout=15.0):
        rid = uuid.uuid4().hex
        q = queue.Queue()
        with self.lock:
            self.waiters[rid] = q
        self.send_raw((json.dumps({"id": rid, "message": message}) + "\n").encode())
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no response to {message} within {timeout}s")

    def prepare(self, exe):
        return self.request({"Prepare": exe})["PrepareResult"]

    def spawn(self, backend_id, exe, key=None, static_token=None):
        if key is None:
            key = {"key": {"name": "key-" + backend_id, "namespace": "", "tag": ""},
                   "deadlines": {"renew_at": 0, "soft_terminate_at": 0, "hard_terminate_at": 0},
                   "token": 1234}
        return self.request({"Spawn": [backend_id, exe, key, static_token]})["SpawnResult"]

    def wait_ready(self, backend_id, address, timeout=15.0):
        return self.request({"WaitForBackend": [backend_id, address]}, timeout)["WaitForBackendResult"]

    def terminate(self, backend_id, hard=False):
        return self.request({"Terminate": [backend_id, hard]})["TerminateResult"]

    def next_event(self, kind, timeout=10.0, match=None):
        """The next event of kind (and for which match(payload) holds); others are skipped."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"no {kind} event within {timeout}s")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if kind in ev and (match is None or match(ev[kind])):
                return ev[kind]

    def exit_of(self, backend_id, timeout=10.0):
        return self.next_event("TerminateEvent", timeout, lambda e: e["backend_id"] == backend_id)["exit_code"]

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Executor:
    def __init__(self, procs, tmp_path, runtime, extra=(), name="ex"):
        self.procs = procs
        self.socket = str(tmp_path / f"{name}.sock")
        self.data_dir = str(tmp_path / f"{name}-data")
        self.log = str(tmp_path / f"{name}.log")
        self.args = [PLANE, "executor", "--runtime", runtime, "--socket", self.socket,
                     "--data-dir", self.data_dir, *extra]
        self.proc = None

    def _connectable(self):
        if self.proc.poll() is not None:
            return True
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def start(self):
        self.proc = self.procs.start(self.args, log=self.log)
        wait_for(self._connectable, what="executor socket")
        assert self.proc.poll() is None, open(self.log).read()
        return self

    def client(self):
        c = ExecutorClient(self.socket)
        hello = c.next_event("ExecutorHello", timeout=5)
        c.hello = hello
        return c

    def logs(self):
        with open(self.log) as f:
            return f.read()


@pytest.fixture
def executor(procs, tmp_path):
    def make(runtime, *extra, name="ex"):
        return Executor(procs, tmp_path, runtime, extra, name).start()
    return make


def check_backend_env(env, port, backend_id, **user):
    """The echo backend's environment as ExecutorClient.spawn starts it (static token "s.static")."""
    assert env["PORT"] == str(port)
    assert env["SESSION_BACKEND_ID"] == backend_id
    assert env["SESSION_BACKEND_KEY"] == "key-" + backend_id
    assert env["SESSION_BACKEND_FENCING_TOKEN"] == "1234"
    assert env["SESSION_BACKEND_STATIC_TOKEN"] == "s.static"
    for k, v in user.items():
        assert env[k] == v


def echo_exe(**env):
    return {"command": [ECHO], "env": {k: str(v) for k, v in env.items()}}


def mock_exe(**hooks):
    return {"image": "mock", "mock": hooks}


DOCKER_TEST_IMAGE = "plane-test-echo:1"  # built by scripts/docker-up.sh


def docker_exe(image=DOCKER_TEST_IMAGE, pull_policy="Never", **env):
    """A DockerExecutorConfig (spec 4.6) running the echo backend image."""
    return {"image": image, "pull_policy": pull_policy, "env": {k: str(v) for k, v in env.items()}}
