# SPDX-License-Identifier: MIT
"""The proxy's I/O paths (`--io uring|epoll`): the choice is made at start
and logged, a bad value is refused, and the traps of completion-based I/O
(a connection closed with requests in flight, a client that stops reading,
many connections coming and going at once) leave the proxy serving with
every byte in order. `make integration` runs these, like the other proxy
tests, once per path (PLANE_TEST_PROXY_IO)."""
import hashlib
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import PLANE, PROXY_IO
from plane_cluster import Controller, Drone
from test_proxy import CLUSTER, Proxy, connect, pattern, token_path


@pytest.fixture
def routed(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    Drone(procs, tmp_path, ctrl, "dr-io", runtime="process").start()
    proxy = Proxy(procs, tmp_path, ctrl.url).start()
    conn = connect(ctrl, "io")
    assert proxy.get(token_path(conn, "/")).status_code == 200
    return ctrl, proxy, conn


class Reader:
    """Reads Content-Length responses off a socket, pipelined ones included."""

    def __init__(self, s):
        self.s = s
        self.data = b""

    def _more(self):
        chunk = self.s.recv(1 << 20)
        assert chunk, len(self.data)
        self.data += chunk

    def response(self):
        while b"\r\n\r\n" not in self.data:
            self._more()
        head, self.data = self.data.split(b"\r\n\r\n", 1)
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(self.data) < length:
            self._more()
        body, self.data = self.data[:length], self.data[length:]
        return head, body


def stops_cleanly(proxy):
    """SIGTERM: with nothing in flight any more the graceful stop is quick (a
    connection the proxy lost track of would hold it until the 10 s force)."""
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=5) == 0


def test_the_chosen_path_is_logged(routed):
    _, proxy, _ = routed
    logs = proxy.logs()
    if PROXY_IO == "epoll":
        assert "i/o through epoll (chosen)" in logs, logs
    else:
        # io_uring, or epoll with the reason where this kernel refuses io_uring.
        assert "i/o through io_uring" in logs or "i/o through epoll: " in logs, logs
    assert logs.count("i/o through") == 1, logs


@pytest.mark.parametrize("io", ["epoll", "uring"])
def test_io_option_overrides_the_environment(procs, tmp_path, io):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    proxy = Proxy(procs, tmp_path, ctrl.url, "--io", io).start()
    logs = proxy.logs()
    if io == "epoll":
        assert "i/o through epoll (chosen)" in logs, logs
    else:
        assert "i/o through io_uring" in logs or "i/o through epoll: " in logs, logs


def test_bad_io_value_is_refused():
    p = subprocess.run([PLANE, "proxy", "--controller-url", "http://127.0.0.1:1/", "--cluster", CLUSTER,
                        "--io", "bogus"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 2
    assert p.stderr == "plane proxy: invalid --io 'bogus' (uring or epoll)\n"


def test_client_that_closes_right_after_its_request(routed):
    _, proxy, conn = routed
    req = f"GET {token_path(conn, '/bytes/200000')} HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n".encode()
    for i in range(200):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        s.sendall(req)
        if i % 2:
            # A reset rather than a FIN: the proxy's writes to it fail.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    r = proxy.get(token_path(conn, "/bytes/1000"))
    assert r.status_code == 200 and r.content == pattern(1000)
    stops_cleanly(proxy)


def test_slow_reader_gets_every_byte(routed):
    """A response much larger than the socket buffers, to a client that reads
    nothing for a while, then everything: backpressure holds the backend,
    and what arrives is exact."""
    _, proxy, conn = routed
    n = 24 * (1 << 20) + 11
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.sendall(f"GET {token_path(conn, f'/bytes/{n}')} HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n".encode())
    time.sleep(1.5)
    rd = Reader(s)
    head, body = rd.response()
    assert head.startswith(b"HTTP/1.1 200 ")
    assert len(body) == n
    assert hashlib.sha256(body).digest() == hashlib.sha256(pattern(n)).digest()
    # The same connection serves the next request.
    s.sendall(f"GET {token_path(conn, '/bytes/5')} HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n".encode())
    _, body = rd.response()
    assert body == pattern(5)
    s.close()


def test_many_connections_come_and_go_with_requests_in_flight(routed):
    _, proxy, conn = routed
    errors = []

    def client(k):
        try:
            for i in range(20):
                s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
                size = 1000 * (1 + (i * 7 + k) % 50)
                req = f"GET {token_path(conn, f'/bytes/{size}')} HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n".encode()
                s.sendall(req * 3)  # pipelined
                if (i + k) % 3 == 0:
                    s.close()  # gone with three requests in flight
                    continue
                rd = Reader(s)
                for _ in range(3 if (i + k) % 3 == 1 else 1):
                    _, body = rd.response()
                    if body != pattern(size):
                        errors.append(f"client {k} round {i}: {len(body)} bytes")
                s.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    r = proxy.get(token_path(conn, "/bytes/1000"))
    assert r.status_code == 200 and r.content == pattern(1000)
    stops_cleanly(proxy)
