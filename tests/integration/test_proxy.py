# SPDX-License-Identifier: MIT
"""`plane proxy` end to end (spec §16): a real controller, a drone with the
process runtime running the echo backend, and the proxy, all on loopback.
One scenario per test: every step of §16.1 and every status code the proxy
produces, the header contract, bodies both ways, keep-alive, pipelining,
WebSockets, keepalives that hold off the idle sweep, timeouts, the
controller going away, graceful shutdown, and TLS with the redirect port."""
import asyncio
import hashlib
import json
import re
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests
import websockets

from conftest import PLANE, echo_exe, wait_for
from plane_cluster import Controller, Drone, free_port

CLUSTER = "localhost:9090"


class Proxy:
    def __init__(self, procs, tmp_path, ctrl_url, *extra, cluster=CLUSTER, name="px-test", port=None):
        self.procs = procs
        self.port = port or free_port()
        self.log = str(tmp_path / f"{name}.log")
        self.args = [PLANE, "proxy", "--controller-url", ctrl_url + "/", "--cluster", cluster, "--name", name,
                     "--host", "127.0.0.1", "--workers", "2"]
        if not any(a in ("--https-port", "--http-port") for a in extra):
            self.args += ["--http-port", str(self.port)]
        self.args += list(extra)
        self.proc = None

    def start(self, ready=True):
        self.proc = self.procs.start(self.args, log=self.log)
        if ready:
            self.wait_ready()
        return self

    def ready_status(self):
        assert self.proc.poll() is None, self.logs()
        try:
            return requests.get(self.url("/ready"), timeout=2).status_code
        except requests.RequestException:
            return None

    def wait_ready(self, timeout=10):
        wait_for(lambda: self.ready_status() == 200, timeout=timeout, what="proxy ready")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path, host=CLUSTER, **kw):
        headers = {"Host": host} if host is not None else {}
        headers.update(kw.pop("headers", {}))
        return requests.get(self.url(path), headers=headers, timeout=kw.pop("timeout", 20), **kw)

    def logs(self):
        with open(self.log) as f:
            return f.read()


@pytest.fixture
def cluster(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    Drone(procs, tmp_path, ctrl, "dr-proxy", runtime="process").start()
    proxy = Proxy(procs, tmp_path, ctrl.url).start()
    return ctrl, proxy


def connect(ctrl, key, executable=None, **kw):
    r = ctrl.connect(key, executable=executable or echo_exe(), **kw)
    assert r.status_code == 200, r.text
    return r.json()


def token_path(conn, rest=""):
    return "/" + conn["token"] + rest


def raw_exchange(port, data, timeout=10, until_close=True):
    """Sends raw bytes, returns everything read until the peer closes (or the timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not until_close and b"\r\n\r\n" in out:
                break
        return out
    finally:
        s.close()


def check_plane_headers(r):
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-methods"] == "*"
    assert r.headers["access-control-allow-headers"] == "*, Authorization"
    assert r.headers["server"].startswith("Plane/0.5.5-")


def pattern(n):
    one = bytes((i * 31 + 7) & 0xFF for i in range(256))
    return (one * (n // 256 + 1))[:n]


# ---- §16.1 steps 1-2: /ready and / ----

def test_ready_follows_the_controller_link(procs, tmp_path):
    port = free_port()
    proxy = Proxy(procs, tmp_path, f"http://127.0.0.1:{port}").start(ready=False)
    # No controller yet: 503, and a token lookup is "none" (never connected, §16.2).
    wait_for(lambda: proxy.ready_status() == 503, what="proxy answering")
    r = proxy.get("/sometoken/")
    assert r.status_code == 410
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER, port=port).start()
    proxy.wait_ready(timeout=15)
    r = requests.get(proxy.url("/ready"), timeout=5)
    assert r.status_code == 200
    check_plane_headers(r)
    state = ctrl.state()
    assert [p["name"] for p in state["proxies"]] == [{"Proxy": "px-test"}]
    # The controller goes away: not ready, and unknown tokens are 503 (§21), not a hang.
    ctrl.proc.send_signal(signal.SIGKILL)
    ctrl.proc.wait()
    wait_for(lambda: proxy.ready_status() == 503, what="proxy not ready")
    assert proxy.get("/othertoken/", timeout=5).status_code == 503
    # Back: ready again after the backoff.
    Controller(procs, tmp_path, default_cluster=CLUSTER, port=port).start()
    proxy.wait_ready(timeout=15)


def test_silent_controller_is_given_up_cached_routes_keep_serving(cluster):
    # A stopped controller keeps its TCP connections open: only its silence tells.
    ctrl, proxy = cluster
    c = connect(ctrl, "cached")
    ctrl.wait_status(c["backend_id"], "ready")
    assert proxy.get(token_path(c, "/x")).status_code == 200  # now cached
    ctrl.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: proxy.ready_status() == 503, timeout=30, what="proxy gives the controller up")
        assert "no answer from" in proxy.logs()
        assert proxy.get(token_path(c, "/y"), timeout=5).status_code == 200
        assert proxy.get("/unknowntoken/", timeout=5).status_code == 503
    finally:
        ctrl.proc.send_signal(signal.SIGCONT)
    proxy.wait_ready(timeout=20)
    assert proxy.get(token_path(c, "/z")).status_code == 200


def test_root_path_and_empty_token(cluster):
    ctrl, proxy = cluster
    r = proxy.get("/", allow_redirects=False)
    assert r.status_code == 400
    check_plane_headers(r)
    assert "x-plane-backend-id" not in r.headers
    assert proxy.get("//rest", allow_redirects=False).status_code == 400
    assert proxy.get("/ready").status_code == 200


def test_root_redirect(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    proxy = Proxy(procs, tmp_path, ctrl.url, "--root-redirect-url", "HTTP://Example.COM").start()
    r = proxy.get("/", allow_redirects=False)
    assert r.status_code == 301
    assert r.headers["location"] == "http://example.com/"
    check_plane_headers(r)


# ---- steps 3-6: tokens, routes, hosts, the header contract ----

def test_unknown_token_is_gone(cluster):
    ctrl, proxy = cluster
    r = proxy.get("/not-a-token/x")
    assert r.status_code == 410
    check_plane_headers(r)
    assert "x-plane-backend-id" not in r.headers
    # Not even a Host is needed to be told so (step 4 comes before step 5).
    out = raw_exchange(proxy.port, b"GET /not-a-token HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 410 ")


def test_header_contract_and_spoofed_headers(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "contract", user="alice", auth={"zeta": [1, {"b": 2, "a": "é"}], "alpha": None})
    r = proxy.get(token_path(conn, "/some/path?q=1&r=%20"), headers={
        "X-Verified-Username": "mallory", "x-verified-user": "mallory", "X-VERIFIED-BACKEND": "other",
        "x-verified-secret": "guess", "x-verified-user-data": "{}", "x-verified-path": "/evil",
        "X-Forwarded-For": "6.6.6.6", "x-forwarded-proto": "https", "x-custom": "kept"})
    assert r.status_code == 200, r.text
    check_plane_headers(r)
    assert r.headers["x-plane-backend-id"] == conn["backend_id"]
    body = r.json()
    h = body["headers"]
    assert body["path"] == "/some/path?q=1&r=%20"
    assert h["x-verified-username"] == "alice"
    assert "x-verified-user" not in h
    assert h["x-verified-backend"] == conn["backend_id"]
    assert h["x-verified-secret"] == conn["secret_token"]
    assert h["x-verified-path"] == "/" + conn["token"] + "/some/path"
    # Compact JSON, keys sorted at every level, UTF-8 as it is (serde_json's output).
    assert h["x-verified-user-data"] == '{"alpha":null,"zeta":[1,{"a":"é","b":2}]}'
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-custom"] == "kept"
    assert h["host"] == CLUSTER
    assert body["env"]["SESSION_BACKEND_ID"] == conn["backend_id"]
    # Just the token: the path upstream is "/".
    assert proxy.get(token_path(conn)).json()["path"] == "/"
    assert proxy.get(token_path(conn, "?x=1")).json()["path"] == "/?x=1"


def test_default_user_data_and_static_tokens(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "plain")
    h = proxy.get(token_path(conn, "/")).json()["headers"]
    assert h["x-verified-user-data"] == "{}"
    assert "x-verified-username" not in h
    static = connect(ctrl, "static", use_static_token=True)
    assert static["token"].startswith("s.")
    body = proxy.get(token_path(static, "/kept/path?a=b")).json()
    # Static tokens: the path goes upstream unchanged, the secret is empty.
    assert body["path"] == "/" + static["token"] + "/kept/path?a=b"
    assert body["headers"]["x-verified-secret"] == ""
    assert body["headers"]["x-verified-path"] == "/" + static["token"] + "/kept/path"
    assert "x-verified-user-data" not in body["headers"]


def test_host_and_subdomain_checks(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "hosts")
    path = token_path(conn, "/")
    out = raw_exchange(proxy.port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert b"access-control-allow-origin: *" in out
    assert proxy.get(path, host="example.com").status_code == 403
    assert proxy.get(path, host="LOCALHOST:9090").status_code == 403  # byte comparison
    assert proxy.get(path, host="localhost:9090:443").status_code == 200  # ":443" is stripped
    assert proxy.get(path, host="any.localhost:9090").status_code == 200  # no subdomain on the route
    sub = connect(ctrl, "sub", subdomain="abc")
    spath = token_path(sub, "/")
    assert proxy.get(spath, host="abc.localhost:9090").status_code == 200
    assert proxy.get(spath, host="localhost:9090").status_code == 403
    assert proxy.get(spath, host="xyz.localhost:9090").status_code == 403
    r = proxy.get(spath, host="xyz.localhost:9090")
    check_plane_headers(r)


def test_token_answered_while_backend_starts(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "slow", executable=echo_exe(ECHO_LISTEN_DELAY_MS=1500))
    results = []

    def one():
        results.append(proxy.get(token_path(conn, "/")).status_code)
    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 6


def test_terminated_backend_is_gone(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "ends")
    assert proxy.get(token_path(conn, "/")).status_code == 200
    ctrl.terminate(conn["backend_id"], hard=True)
    ctrl.wait_status(conn["backend_id"], "terminated")
    # BackendRemoved turns the cached route into "none".
    wait_for(lambda: proxy.get(token_path(conn, "/")).status_code == 410, what="410 after termination")


# ---- step 7: forwarding, failures, bodies, connections ----

def test_backend_killed_mid_request_is_502(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "victim")
    pid = proxy.get(token_path(conn, "/")).json()["pid"]
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    s.sendall(f"POST {token_path(conn, '/')} HTTP/1.1\r\nHost: {CLUSTER}\r\nContent-Length: 100\r\n\r\n"
              "0123456789".encode())
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    assert out.startswith(b"HTTP/1.1 502 "), out[:300]
    assert f"x-plane-backend-id: {conn['backend_id']}".encode() in out
    assert b"access-control-allow-origin: *" in out
    # The proxy keeps serving.
    other = connect(ctrl, "survivor")
    assert proxy.get(token_path(other, "/")).status_code == 200
    assert proxy.get("/ready").status_code == 200


def test_unreachable_backend_is_502(cluster):
    ctrl, proxy = cluster
    # Answers the drone's readiness probe, then stops listening but keeps running.
    script = (
        "import http.server, os, time\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_HEAD(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        "s = http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H)\n"
        "s.handle_request()\n"
        "s.server_close()\n"
        "time.sleep(3600)\n")
    conn = connect(ctrl, "gone", executable={"command": ["/usr/bin/python3", "-c", script]})
    r = proxy.get(token_path(conn, "/"))
    assert r.status_code == 502
    assert r.headers["x-plane-backend-id"] == conn["backend_id"]
    check_plane_headers(r)


def test_backends_sharing_one_port_told_apart_by_header(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    Drone(procs, tmp_path, ctrl, "dr-mock").start()
    proxy = Proxy(procs, tmp_path, ctrl.url).start()
    a = connect(ctrl, "mock-a", executable={"image": "mock"})
    b = connect(ctrl, "mock-b", executable={"image": "mock"})
    ra, rb = proxy.get(token_path(a, "/p")), proxy.get(token_path(b, "/p"))
    assert ra.status_code == 200 and rb.status_code == 200
    assert a["backend_id"] in ra.text and b["backend_id"] not in ra.text
    assert b["backend_id"] in rb.text and a["backend_id"] not in rb.text


def test_large_and_chunked_bodies_both_ways(cluster, tmp_path):
    ctrl, proxy = cluster
    conn = connect(ctrl, "bodies")
    data = os.urandom(1 << 20)
    r = requests.post(proxy.url(token_path(conn, "/echo")), data=data, headers={"Host": CLUSTER}, timeout=30)
    assert r.status_code == 200 and r.content == data
    # Chunked upload (a generator makes requests send chunks).
    r = requests.post(proxy.url(token_path(conn, "/echo")), headers={"Host": CLUSTER}, timeout=30,
                      data=(data[i:i + 70000] for i in range(0, len(data), 70000)))
    assert r.status_code == 200 and r.content == data
    # curl: chunked upload with Expect: 100-continue, byte-exact.
    f = tmp_path / "up.bin"
    f.write_bytes(data)
    out = subprocess.run(["curl", "-sS", "-H", f"Host: {CLUSTER}", "-H", "Transfer-Encoding: chunked",
                          "-H", "Expect: 100-continue", "--data-binary", f"@{f}",
                          proxy.url(token_path(conn, "/echo"))], capture_output=True, timeout=30)
    assert out.returncode == 0 and out.stdout == data
    # Downloads, Content-Length and chunked.
    r = proxy.get(token_path(conn, f"/bytes/{1 << 20}"))
    assert r.headers["content-length"] == str(1 << 20) and r.content == pattern(1 << 20)
    r = proxy.get(token_path(conn, f"/bytes/{(1 << 20) + 7}?chunked=1"))
    assert r.headers["transfer-encoding"] == "chunked" and r.content == pattern((1 << 20) + 7)
    out = subprocess.run(["curl", "-sS", "--raw", "-H", f"Host: {CLUSTER}",
                          proxy.url(token_path(conn, "/bytes/300000?chunked=1"))], capture_output=True, timeout=30)
    assert out.returncode == 0 and out.stdout.endswith(b"0\r\n\r\n")
    assert hashlib.sha256(requests.get(proxy.url(token_path(conn, "/bytes/300000?chunked=1")),
                                       headers={"Host": CLUSTER}).content).digest() == \
        hashlib.sha256(pattern(300000)).digest()


def backend_connections(port):
    """Established TCP connections to 127.0.0.1:port (from /proc/net/tcp)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            rem, st = parts[2], parts[3]
            if st == "01" and int(rem.split(":")[1], 16) == port:
                n += 1
    return n


def test_keep_alive_on_both_sides(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "reuse")
    s = requests.Session()
    first = s.get(proxy.url(token_path(conn, "/")), headers={"Host": CLUSTER}, timeout=10).json()
    backend_port = int(first["env"]["PORT"])
    for i in range(30):
        r = s.get(proxy.url(token_path(conn, f"/n{i}")), headers={"Host": CLUSTER}, timeout=10)
        assert r.status_code == 200 and r.json()["path"] == f"/n{i}"
    # One client connection; upstream, at most one pooled connection per worker.
    assert backend_connections(backend_port) <= 2
    # Several clients at once still reuse a bounded number of upstream connections.
    def burst():
        with requests.Session() as ss:
            for _ in range(20):
                assert ss.get(proxy.url(token_path(conn, "/")), headers={"Host": CLUSTER}, timeout=10).ok
    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend_connections(backend_port) <= 8


def test_http10_keep_alive_and_head_requests(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "old")
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    f = s.makefile("rb")

    def exchange(req):
        s.sendall(req.encode())
        status = f.readline()
        headers = {}
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        body = f.read(int(headers.get("content-length", "0"))) if not req.startswith("HEAD") else b""
        return status, headers, body

    st, h, body = exchange(f"GET {token_path(conn, '/a')} HTTP/1.0\r\nHost: {CLUSTER}\r\nConnection: keep-alive\r\n\r\n")
    assert st.startswith(b"HTTP/1.1 200") and h["connection"] == "keep-alive"
    assert json.loads(body)["path"] == "/a"
    # HEAD: a length but no body, and the connection goes on.
    st, h, body = exchange(f"HEAD {token_path(conn, '/bytes/1000')} HTTP/1.0\r\nHost: {CLUSTER}\r\n"
                           "Connection: keep-alive\r\n\r\n")
    assert st.startswith(b"HTTP/1.1 200") and "content-length" in h
    st, h, body = exchange(f"GET {token_path(conn, '/b')} HTTP/1.0\r\nHost: {CLUSTER}\r\n\r\n")
    assert json.loads(body)["path"] == "/b" and h["connection"] == "close"
    assert f.read() == b""  # HTTP/1.0 without keep-alive: closed after the answer
    s.close()


def test_pipelined_requests_answered_in_order(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "pipeline")
    proxy.get(token_path(conn, "/"))
    reqs = b"".join(f"GET {token_path(conn, '/p' + str(i))} HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n".encode()
                    for i in range(5))
    reqs += f"POST {token_path(conn, '/echo')} HTTP/1.1\r\nHost: {CLUSTER}\r\nContent-Length: 5\r\n" \
            "Connection: close\r\n\r\nhello".encode()
    out = raw_exchange(proxy.port, reqs)
    assert out.count(b"HTTP/1.1 200 OK") == 6
    positions = [out.index(f'"path":"/p{i}"'.encode()) for i in range(5)]
    assert positions == sorted(positions)
    assert out.endswith(b"hello")


def test_eof_delimited_response_and_backend_cors(cluster):
    ctrl, proxy = cluster
    script = (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    protocol_version = 'HTTP/1.0'\n"
        "    def do_HEAD(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "    def do_GET(self):\n"
        "        self.send_response(200)\n"
        "        self.send_header('Access-Control-Allow-Origin', 'https://example.com')\n"
        "        self.send_header('Connection', 'close')\n"
        "        self.end_headers()\n"
        "        self.wfile.write(b'x' * 100000 + b'end')\n"
        "    def log_message(self, *a): pass\n"
        "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n")
    conn = connect(ctrl, "py", executable={"command": ["/usr/bin/python3", "-c", script]})
    r = proxy.get(token_path(conn, "/"))
    assert r.status_code == 200
    assert r.content == b"x" * 100000 + b"end"
    # The backend set CORS itself: left alone, nothing added.
    assert r.headers["access-control-allow-origin"] == "https://example.com"
    assert "access-control-allow-methods" not in r.headers
    assert r.headers["server"].startswith("Plane/")
    assert r.headers["x-plane-backend-id"] == conn["backend_id"]
    assert r.headers["connection"] == "close"


# ---- limits and timeouts ----

def test_oversized_head_is_431_and_garbage_is_400(cluster):
    ctrl, proxy = cluster
    big = "x" * 40000
    out = raw_exchange(proxy.port, f"GET /t HTTP/1.1\r\nHost: {CLUSTER}\r\nX-Big: {big}\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 431 "), out[:100]
    out = raw_exchange(proxy.port, b"\x16\x03\x01 not http\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    out = raw_exchange(proxy.port, f"GET /t HTTP/1.1\r\nHost: {CLUSTER}\r\nContent-Length: 1\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 400 ")
    assert proxy.get("/ready").status_code == 200


def test_slow_request_head_times_out(cluster):
    ctrl, proxy = cluster
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
    s.sendall(f"GET /t HTTP/1.1\r\nHost: {CLUSTER}\r\n".encode())
    t0 = time.time()
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    assert 9 <= time.time() - t0 <= 14
    assert out.startswith(b"HTTP/1.1 408 ")


# ---- step 8: upgrades ----

async def ws_connect(proxy, path, **kw):
    return await websockets.connect(f"ws://{CLUSTER}{path}", host="127.0.0.1", port=proxy.port,
                                    max_size=None, **kw)


def test_websocket_echo_through_the_proxy(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "ws", user="bob")

    async def run():
        ws = await ws_connect(proxy, token_path(conn, "/ws"))
        assert ws.response_headers["x-plane-backend-id"] == conn["backend_id"]
        assert ws.response_headers["server"].startswith("Plane/")
        for msg in ["hello", "é" * 1000, os.urandom(1 << 20), b"", "last"]:
            await ws.send(msg)
            assert await asyncio.wait_for(ws.recv(), 10) == msg
        await ws.close()
        # Many at once.
        socks = [await ws_connect(proxy, token_path(conn, "/ws")) for _ in range(50)]
        await asyncio.gather(*(w.send(f"m{i}") for i, w in enumerate(socks)))
        got = await asyncio.gather(*(asyncio.wait_for(w.recv(), 10) for w in socks))
        assert got == [f"m{i}" for i in range(50)]
        await asyncio.gather(*(w.close() for w in socks))
    asyncio.run(run())
    # Plain HTTP still works on the same proxy afterwards.
    assert proxy.get(token_path(conn, "/")).json()["headers"]["x-verified-username"] == "bob"


# A backend speaking a raw protocol after its 101: it reads until the
# client's FIN, answers with the count and SHA-256 of what it got, sends
# RAW_BACK bytes of pattern(), then its own FIN. "die" as the first bytes
# makes it exit at once instead (the tunnel must then close).
RAW_TUNNEL_BACKEND = """
import hashlib, os, socket, sys, threading
BACK = int(os.environ.get("RAW_BACK", "0"))
one = bytes((i * 31 + 7) & 0xFF for i in range(256))
pat = (one * (BACK // 256 + 1))[:BACK]
srv = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
def serve(c):
    f = b""
    while b"\\r\\n\\r\\n" not in f:
        d = c.recv(65536)
        if not d:
            c.close(); return
        f += d
    head, rest = f.split(b"\\r\\n\\r\\n", 1)
    if b"upgrade: rawtest" not in head.lower():
        c.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: 0\\r\\nconnection: close\\r\\n\\r\\n"); c.close(); return
    c.sendall(b"HTTP/1.1 101 Switching Protocols\\r\\nconnection: upgrade\\r\\nupgrade: rawtest\\r\\n\\r\\n")
    h, n = hashlib.sha256(rest), len(rest)
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        if n == 0 and d.startswith(b"die"):
            os._exit(1)
        h.update(d); n += len(d)
    c.sendall(f"{n} {h.hexdigest()}\\n".encode() + pat)
    c.shutdown(socket.SHUT_WR)
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def raw_upgrade(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {CLUSTER}\r\nConnection: Upgrade\r\nUpgrade: rawtest\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(4096)
        assert d, head
        head += d
    head, rest = head.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s, rest


def raw_exchange_both_ways(s, send):
    """Runs send() on a thread while reading s until the peer's FIN; closes s; returns what was read."""
    sender = threading.Thread(target=send)
    sender.start()
    got = b""
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        got += d
    sender.join()
    s.close()
    return got


@pytest.mark.parametrize("mode", ["splice", "copy"])
def test_raw_tunnel_bulk_half_close_and_backend_death(procs, tmp_path, mode):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    Drone(procs, tmp_path, ctrl, "dr-raw", runtime="process").start()
    mport = free_port()
    extra = ["--metrics-port", str(mport)] + (["--no-splice"] if mode == "copy" else [])
    proxy = Proxy(procs, tmp_path, ctrl.url, *extra).start()
    back = 3 * (1 << 20) + 17
    conn = connect(ctrl, "raw", executable={"command": ["/usr/bin/python3", "-c", RAW_TUNNEL_BACKEND],
                                            "env": {"RAW_BACK": str(back)}})
    up = pattern(8 * (1 << 20) + 5)

    # Bulk both ways, with each side's FIN passed on only after its bytes. In
    # the middle an urgent byte (MSG_OOB), which splice(2) stops at for good
    # unless the proxy steps over it as a read does: the byte itself is not
    # passed on (in either mode), the rest is.
    tail = b"after the urgent byte" * 50

    def cpu_seconds():
        with open(f"/proc/{proxy.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    spun = []

    def send_all(s, pause):
        s.sendall(up)
        s.send(b"!", socket.MSG_OOB)
        s.sendall(tail)
        if pause:
            # The tail waits behind the mark with no FIN yet: it must flow, and
            # the proxy must not spin on a socket that splice cannot read.
            time.sleep(0.1)
            c0 = cpu_seconds()
            time.sleep(pause)
            spun.append(cpu_seconds() - c0)
        s.shutdown(socket.SHUT_WR)

    for pause in (0, 1.0, 0):
        s, rest = raw_upgrade(proxy.port, token_path(conn, "/"))
        got = rest + raw_exchange_both_ways(s, lambda: send_all(s, pause))
        line, body = got.split(b"\n", 1)
        assert line.decode() == f"{len(up) + len(tail)} {hashlib.sha256(up + tail).hexdigest()}"
        assert body == pattern(back)
    assert spun and spun[0] < 0.5, spun  # a spinning worker would burn the whole 1 s

    # The backend dies mid-tunnel: the client's side closes too, and the proxy goes on serving.
    s, _ = raw_upgrade(proxy.port, token_path(conn, "/"))
    s.sendall(b"die")
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    s.close()
    conn2 = connect(ctrl, "raw-after")
    assert proxy.get(token_path(conn2, "/")).status_code == 200

    metrics = requests.get(f"http://127.0.0.1:{mport}/metrics", timeout=5).text
    spliced = int(re.search(r"^plane_proxy_spliced_tunnels_total (\d+)$", metrics, re.M).group(1))
    assert spliced >= 3 if mode == "splice" else spliced == 0


def test_spliced_tunnel_copies_again_when_no_pipe_can_be_made(procs, tmp_path):
    """Descriptors exhausted: a bulk tunnel that cannot get a pipe goes on copying instead of failing."""
    import resource
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    Drone(procs, tmp_path, ctrl, "dr-nopipe", runtime="process").start()
    proxy = Proxy(procs, tmp_path, ctrl.url).start()
    conn = connect(ctrl, "raw", executable={"command": ["/usr/bin/python3", "-c", RAW_TUNNEL_BACKEND],
                                            "env": {"RAW_BACK": "10"}})
    pid = proxy.proc.pid
    socks = [raw_upgrade(proxy.port, token_path(conn, "/"))[0] for _ in range(4)]
    # No thread of the proxy can open a descriptor now: the limit is at the lowest free number.
    lowest = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        fds = {int(x) for x in os.listdir(f"/proc/{pid}/task/{tid}/fd")}
        lowest.append(min(set(range(len(fds) + 1)) - fds))
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (min(lowest), hard))
    try:
        data = os.urandom(4 << 20)
        for s in socks:
            got = raw_exchange_both_ways(s, lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
            assert got.split(b"\n", 1)[0].decode() == f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert "copying again" in proxy.logs()
    assert proxy.get(token_path(connect(ctrl, "after"), "/")).status_code == 200


def test_workers_hold_their_connections_in_their_own_descriptor_tables(cluster):
    """Each worker thread has its own table: the process's limit bounds each worker, not all of them."""
    ctrl, proxy = cluster
    conn = connect(ctrl, "fds")
    pid = proxy.proc.pid

    def tables():
        out = {}
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                out[tid] = set(os.listdir(f"/proc/{pid}/task/{tid}/fd"))
            except FileNotFoundError:
                pass
        return out

    main_before = tables()[str(pid)]
    socks = []
    try:
        for _ in range(40):
            s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
            s.sendall(f"GET {token_path(conn, '/')} HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n".encode())
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            socks.append(s)
        t = tables()
        # The main thread's table did not grow by the 40 client sockets (nor their upstreams) ...
        assert len(t[str(pid)]) < len(main_before) + 10
        # ... the workers' tables hold them, and they are not the main thread's table.
        workers = [fds for tid, fds in t.items() if tid != str(pid) and fds != t[str(pid)]]
        assert len(workers) == 2
        assert sum(len(fds) for fds in workers) >= 40 + 2
    finally:
        for s in socks:
            s.close()


def test_upgrade_request_gets_the_header_contract(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "upg")
    # An upgrade the backend refuses (not /ws): the plain answer comes back, then the connection closes.
    out = raw_exchange(proxy.port, f"GET {token_path(conn, '/json')} HTTP/1.1\r\nHost: {CLUSTER}\r\n"
                       "Connection: Upgrade\r\nUpgrade: websocket\r\nx-verified-username: mallory\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    assert b"mallory" not in out
    body = json.loads(out.split(b"\r\n\r\n", 1)[1])
    assert body["headers"]["connection"] == "Upgrade"
    assert body["headers"]["x-verified-backend"] == conn["backend_id"]


def test_open_websocket_keeps_its_backend_from_the_idle_sweep(procs, tmp_path):
    # The controller sweeps every 5 s whatever has been idle for more than
    # max_idle_seconds; with 3 s, keepalives must come more often than the
    # 7 s default (with which Plane itself would sweep this backend too).
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    Drone(procs, tmp_path, ctrl, "dr-proxy", runtime="process").start()
    proxy = Proxy(procs, tmp_path, ctrl.url, "--keepalive-interval", "1").start()
    kept = connect(ctrl, "kept", max_idle_seconds=3)
    idle = connect(ctrl, "idle", max_idle_seconds=3)

    async def run():
        ws = await ws_connect(proxy, token_path(kept, "/ws"))
        await ws.send("hi")
        assert await ws.recv() == "hi"
        ctrl.wait_status(idle["backend_id"], "ready")
        await asyncio.sleep(10)  # no traffic at all on the socket: only proxy keepalives
        assert ctrl.status(kept["backend_id"])["status"] == "ready"
        assert ctrl.status(idle["backend_id"])["status"] in ("terminating", "terminated")
        await ws.send("still")
        assert await ws.recv() == "still"
        await ws.close()
    asyncio.run(run())


# ---- §16.7 graceful shutdown ----

def test_graceful_shutdown_finishes_exchanges(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "grace", executable=echo_exe(ECHO_LISTEN_DELAY_MS=1500))
    result = {}

    def slow():
        result["r"] = proxy.get(token_path(conn, "/"))
    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)  # the request is waiting for the backend to start
    idle = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    time.sleep(0.2)
    proxy.proc.send_signal(signal.SIGTERM)
    t.join(15)
    assert result["r"].status_code == 200
    assert result["r"].headers["connection"] == "close"
    assert idle.recv(100) == b""  # an idle connection is closed at once
    idle.close()
    assert proxy.proc.wait(12) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(proxy.url("/ready"), timeout=2)


# ---- §16.5-16.6 TLS and the redirect port ----

def make_cert(tmp_path):
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    path = tmp_path / "cert.json"
    path.write_text(json.dumps({"cert": crt.read_text(), "key": key.read_text()}))
    return str(path), str(crt)


def tls_cluster(procs, tmp_path, drone_name):
    """A controller, a process drone and an HTTPS proxy with a self-signed certificate for localhost,
    ready: (ctrl, https_port, http_port, curl's --resolve/--cacert arguments, https base URL, CA file)."""
    cert_json, cacert = make_cert(tmp_path)
    https_port, http_port = free_port(), free_port()
    cluster_name = f"localhost:{https_port}"
    ctrl = Controller(procs, tmp_path, default_cluster=cluster_name).start()
    Drone(procs, tmp_path, ctrl, drone_name, runtime="process", cluster=cluster_name).start()
    proxy = Proxy(procs, tmp_path, ctrl.url, "--https-port", str(https_port), "--http-port", str(http_port),
                  "--cert-path", cert_json, cluster=cluster_name)
    proxy.port = http_port
    proxy.start(ready=False)
    resolve = ["--resolve", f"localhost:{https_port}:127.0.0.1", "--cacert", cacert]
    base = f"https://localhost:{https_port}"
    wait_for(lambda: subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *resolve,
                                     base + "/ready"], capture_output=True).stdout == b"200", what="https ready")
    return ctrl, https_port, http_port, resolve, base, cacert


def test_tls_termination_and_https_redirect(procs, tmp_path):
    ctrl, https_port, http_port, resolve, base, cacert = tls_cluster(procs, tmp_path, "dr-tls")
    conn = connect(ctrl, "tls", user="carol")
    out = subprocess.run(["curl", "-sS", "-i", "--http1.1", *resolve, base + token_path(conn, "/x?y=1")],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    head, body = out.stdout.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"x-plane-backend-id: {conn['backend_id']}".encode() in head
    j = json.loads(body)
    assert j["path"] == "/x?y=1"
    assert j["headers"]["x-forwarded-proto"] == "https"
    assert j["headers"]["x-verified-username"] == "carol"
    # A 1 MiB upload and download over TLS.
    data = os.urandom(1 << 20)
    up = tmp_path / "up.bin"
    up.write_bytes(data)
    out = subprocess.run(["curl", "-sS", "--http1.1", *resolve, "--data-binary", f"@{up}",
                          base + token_path(conn, "/echo")],
                         capture_output=True, timeout=30)
    assert out.stdout == data
    # WebSocket over TLS.
    ctx = ssl.create_default_context(cafile=cacert)

    async def run():
        ws = await websockets.connect(f"wss://localhost:{https_port}" + token_path(conn, "/ws"), ssl=ctx,
                                      host="127.0.0.1", port=https_port, server_hostname="localhost",
                                      max_size=None)
        for msg in ["secure", os.urandom(300000)]:
            await ws.send(msg)
            assert await ws.recv() == msg
        await ws.close()
    asyncio.run(run())
    # The HTTP port only redirects (§16.6): no CORS/server fields, port dropped, path and query kept.
    r = requests.get(f"http://127.0.0.1:{http_port}/a/b?c=d", headers={"Host": "example.com:8080"},
                     allow_redirects=False, timeout=5)
    assert r.status_code == 301
    assert r.headers["location"] == "https://example.com/a/b?c=d"
    assert "server" not in r.headers and "access-control-allow-origin" not in r.headers
    r = requests.get(f"http://127.0.0.1:{http_port}/ready", headers={"Host": "h"}, allow_redirects=False, timeout=5)
    assert r.status_code == 301 and r.headers["location"] == "https://h/ready"
    out = raw_exchange(http_port, b"GET /x HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")


def test_https_without_certificate_fails_to_start(procs, tmp_path):
    p = subprocess.run([PLANE, "proxy", "--controller-url", "http://127.0.0.1:1/", "--cluster", CLUSTER,
                        "--https-port", str(free_port()), "--host", "127.0.0.1",
                        "--cert-path", str(tmp_path / "missing.json")], capture_output=True, timeout=10)
    assert p.returncode == 1
    assert b"missing.json" in p.stderr


def test_proxy_metrics_move(procs, tmp_path):
    """/metrics on --metrics-port: responses by class, upstream latency, tunnels, bytes."""
    import asyncio
    import websockets
    from plane_cluster import Controller, Drone, free_port
    from conftest import PLANE, ECHO, wait_for
    ctrl = Controller(procs, tmp_path).start()
    Drone(procs, tmp_path, ctrl, "dr-met", runtime="process").start()
    port, mport = free_port(), free_port()
    procs.start([PLANE, "proxy", "--controller-url", ctrl.url + "/", "--cluster", "localhost:9090",
                 "--http-port", str(port), "--host", "127.0.0.1", "--metrics-port", str(mport)],
                log=str(tmp_path / "proxy.log"))
    wait_for(lambda: _get(f"http://127.0.0.1:{port}/ready") == 200, what="proxy ready")
    r = ctrl.connect("met", executable={"command": [ECHO]}).json()
    ctrl.wait_status(r["backend_id"], "ready")

    def scrape():
        out = {}
        for line in requests.get(f"http://127.0.0.1:{mport}/metrics", timeout=5).text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out
    before = scrape()
    base = f"http://127.0.0.1:{port}/{r['token']}/"
    headers = {"Host": "localhost:9090"}
    assert requests.get(base, headers=headers, timeout=10).status_code == 200
    assert requests.get(f"http://127.0.0.1:{port}/nope-token/", headers=headers, timeout=10).status_code == 410

    async def ws():
        async with websockets.connect(f"ws://localhost:9090/{r['token']}/ws", host="127.0.0.1", port=port) as c:
            await c.send("hi")
            assert await c.recv() == "hi"
            return scrape()
    during = asyncio.run(ws())
    assert during["plane_proxy_websocket_tunnels"] == 1
    wait_for(lambda: scrape()["plane_proxy_websocket_tunnels"] == 0, timeout=5, what="tunnel closed")
    after = scrape()

    def delta(name):
        return after.get(name, 0) - before.get(name, 0)
    assert delta('plane_proxy_responses_total{code="200"}') == 1
    assert delta('plane_proxy_responses_total{code="410"}') == 1
    assert delta('plane_proxy_responses_total{code="101"}') == 1
    assert delta("plane_proxy_upstream_seconds_count") == 1
    assert after["plane_proxy_websocket_tunnels"] == 0
    assert after["plane_proxy_websocket_tunnels_total"] == 1
    assert delta("plane_proxy_sent_bytes_total") > 0


def _get(url):
    try:
        return requests.get(url, timeout=1).status_code
    except requests.RequestException:
        return None
