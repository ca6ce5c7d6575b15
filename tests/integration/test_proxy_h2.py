# SPDX-License-Identifier: MIT
"""HTTP/2 on the proxy: h2c with prior knowledge on the HTTP port, h2 chosen
by ALPN on the TLS port, with real clients (curl, h2load) against a real
controller, drone (process runtime, echo backend) and proxy. The rules of
§16.1 are those of HTTP/1.1: /ready, /, tokens, the host check and the
x-verified-* contract; bodies both ways byte-exact; many streams at once;
malformed frames end the connection with a GOAWAY."""
import json
import os
import signal
import socket
import struct
import subprocess

import pytest

from plane_cluster import Controller, Drone
from test_proxy import CLUSTER, Proxy, connect, pattern, tls_cluster, token_path


@pytest.fixture
def cluster(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    Drone(procs, tmp_path, ctrl, "dr-h2", runtime="process").start()
    proxy = Proxy(procs, tmp_path, ctrl.url, "--root-redirect-url", "https://example.com/home").start()
    return ctrl, proxy


def curl(*args, data=None, timeout=30):
    """curl with the response head in a file: (status, head lines, body bytes, http version)."""
    out = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/stdout", *args], input=data, capture_output=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr
    head, body = out.stdout.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    version, status = lines[0].split(" ")[:2]
    fields = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        fields[k.strip().lower()] = v.strip()
    return int(status), fields, body, version


def h2c(proxy, path, *args, host=CLUSTER, data=None):
    extra = ["-H", f"Host: {host}"] if host else []
    return curl("--http2-prior-knowledge", *extra, *args, proxy.url(path), data=data)


def check_plane_fields(fields):
    assert fields["access-control-allow-origin"] == "*"
    assert fields["server"].startswith("Plane/0.5.5-")


def test_h2c_ready_and_root(cluster):
    ctrl, proxy = cluster
    status, fields, body, version = h2c(proxy, "/ready")
    assert (version, status) == ("HTTP/2", 200)
    check_plane_fields(fields)
    status, fields, _, version = h2c(proxy, "/")
    assert (version, status) == ("HTTP/2", 301)
    assert fields["location"] == "https://example.com/home"
    status, _, _, _ = h2c(proxy, "/not-a-token/x")
    assert status == 410


def test_h2c_proxied_get_keeps_the_header_contract(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "h2-get", user="alice", auth={"b": 1, "a": [True]})
    ctrl.wait_status(conn["backend_id"], "ready")
    status, fields, body, version = h2c(proxy, token_path(conn, "/hello?x=1"),
                                        "-H", "x-verified-username: mallory", "-H", "X-Verified-Backend: evil",
                                        "-H", "x-forwarded-for: 10.9.9.9", "-H", "cookie: a=1", "-H", "cookie: b=2")
    assert (version, status) == ("HTTP/2", 200)
    check_plane_fields(fields)
    assert fields["x-plane-backend-id"] == conn["backend_id"]
    j = json.loads(body)
    assert j["method"] == "GET" and j["path"] == "/hello?x=1"
    h = j["headers"]
    assert h["host"] == CLUSTER  # :authority, read as Host
    assert h["x-verified-username"] == "alice"
    assert h["x-verified-user-data"] == '{"a":[true],"b":1}'
    assert h["x-verified-backend"] == conn["backend_id"]
    assert h["x-verified-path"] == "/" + conn["token"] + "/hello"
    assert h["x-forwarded-for"] == "127.0.0.1" and h["x-forwarded-proto"] == "http"
    assert h["cookie"] == "a=1; b=2"
    # Host rules as for HTTP/1.1: another cluster is 403.
    status, _, _, _ = h2c(proxy, token_path(conn, "/x"), host="other.example")
    assert status == 403


@pytest.mark.parametrize("how", ["content-length", "no length"])
def test_h2c_post_one_mib_byte_exact(cluster, tmp_path, how):
    ctrl, proxy = cluster
    conn = connect(ctrl, "h2-post")
    ctrl.wait_status(conn["backend_id"], "ready")
    data = os.urandom(1 << 20)
    if how == "content-length":
        up = tmp_path / "up.bin"
        up.write_bytes(data)
        status, _, body, version = h2c(proxy, token_path(conn, "/echo"), "--data-binary", f"@{up}")
    else:  # from stdin: no content-length, so the body goes upstream chunked
        status, _, body, version = h2c(proxy, token_path(conn, "/echo"), "-T", "-", "-X", "POST", data=data)
    assert (version, status) == ("HTTP/2", 200)
    assert body == data


def test_h2c_large_download_byte_exact(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "h2-down")
    ctrl.wait_status(conn["backend_id"], "ready")
    n = 8 << 20
    for query in ("", "?chunked=1"):
        status, _, body, _ = h2c(proxy, token_path(conn, f"/bytes/{n}{query}"))
        assert status == 200 and body == pattern(n)


def test_h2load_many_streams(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "h2-load")
    ctrl.wait_status(conn["backend_id"], "ready")
    out = subprocess.run(["h2load", "-n", "600", "-c", "3", "-m", "50", "-H", f":authority: {CLUSTER}",
                          proxy.url(token_path(conn, "/x"))], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "600 succeeded" in out.stdout and "600 2xx" in out.stdout, out.stdout


def test_h2_over_tls_by_alpn(procs, tmp_path):
    ctrl, _, _, tls, base, _ = tls_cluster(procs, tmp_path, "dr-h2tls")
    status, _, _, version = curl("--http2", *tls, base + "/ready")
    assert (version, status) == ("HTTP/2", 200)
    conn = connect(ctrl, "h2-tls", user="carol")
    ctrl.wait_status(conn["backend_id"], "ready")
    status, fields, body, version = curl("--http2", *tls, base + token_path(conn, "/x?y=1"))
    assert (version, status) == ("HTTP/2", 200)
    j = json.loads(body)
    assert j["headers"]["x-forwarded-proto"] == "https" and j["headers"]["x-verified-username"] == "carol"
    data = os.urandom(1 << 20)
    up = tmp_path / "up.bin"
    up.write_bytes(data)
    status, _, body, version = curl("--http2", *tls, "--data-binary", f"@{up}", base + token_path(conn, "/echo"))
    assert (version, status, body == data) == ("HTTP/2", 200, True)
    # http/1.1 is still offered by ALPN.
    status, _, _, version = curl("--http1.1", *tls, base + token_path(conn, "/x"))
    assert (version, status) == ("HTTP/1.1", 200)


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def read_frames(sock):
    """Frames until the peer closes: [(type, flags, stream, payload)]."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    frames = []
    while len(data) >= 9:
        n = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9:9 + n]))
        data = data[9 + n:]
    return frames


@pytest.mark.parametrize("bad", [
    frame(0x0, 0, 1, b"data on an idle stream"),      # DATA before HEADERS: PROTOCOL_ERROR
    frame(0x4, 0, 0, b"\x00\x03"),                    # SETTINGS of 2 bytes: FRAME_SIZE_ERROR
    frame(0x1, 0x4, 2, b"\x82"),                      # HEADERS on an even (server) stream id
    b"\xff" * 64,                                     # garbage
])
def test_malformed_frames_end_the_connection_with_goaway(cluster, bad):
    ctrl, proxy = cluster
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0) + bad)
    frames = read_frames(s)
    s.close()
    assert any(f[0] == 0x7 for f in frames), frames  # GOAWAY
    # The proxy goes on serving.
    assert h2c(proxy, "/ready")[0] == 200


def test_request_head_too_large_is_431(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "h2-big")
    args = []
    for i in range(120):
        args += ["-H", f"x-field-{i}: {'v' * 50}"]
    status, fields, _, version = h2c(proxy, token_path(conn, "/x"), *args)
    assert (version, status) == ("HTTP/2", 431)
    check_plane_fields(fields)



class RawH2:
    """A client of the few frames a test needs (curl 7.88 cannot run streams one after another on one
    connection: --next fails with a framing error against any server). Fields are sent as HPACK
    literals; the client's windows are opened wide so DATA never waits for it."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        big = 1 << 30
        self.s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(0x4, 0, 0, struct.pack(">HI", 4, big)) +
                       frame(0x8, 0, 0, struct.pack(">I", big)))

    def next_frame(self):
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            chunk = self.s.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        n = int.from_bytes(self.buf[:3], "big")
        f = (self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF, self.buf[9:9 + n])
        self.buf = self.buf[9 + n:]
        return f

    def request(self, sid, method, path, authority, body=b""):
        def lit(name, value):
            return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
        block = (lit(b":method", method.encode()) + lit(b":scheme", b"http") + lit(b":path", path.encode()) +
                 lit(b":authority", authority.encode()))
        if body:
            block += lit(b"content-length", str(len(body)).encode())
            pieces = [body[i:i + 16384] for i in range(0, len(body), 16384)]  # SETTINGS_MAX_FRAME_SIZE
            self.s.sendall(frame(0x1, 0x4, sid, block) + b"".join(
                frame(0x0, 0x1 if i == len(pieces) - 1 else 0, sid, p) for i, p in enumerate(pieces)))
        else:
            self.s.sendall(frame(0x1, 0x5, sid, block))
        status, data = None, b""
        while True:
            ftype, flags, fsid, payload = self.next_frame()
            if ftype == 0x4 and not flags & 0x1:
                self.s.sendall(frame(0x4, 0x1, 0))  # SETTINGS ack
            if fsid != sid:
                continue
            if ftype == 0x1 and status is None:
                status = {0x88: 200, 0x89: 204}.get(payload[0], payload[0])
            elif ftype == 0x0:
                data += payload
            assert ftype != 0x3, "stream reset"
            if ftype in (0x0, 0x1) and flags & 0x1:
                return status, data

    def close(self):
        self.s.close()


def test_streams_one_after_another_on_one_connection(cluster):
    """Sequential streams reuse what carried the previous exchange; every answer stays its own."""
    ctrl, proxy = cluster
    conn = connect(ctrl, "h2-seq")
    ctrl.wait_status(conn["backend_id"], "ready")
    c = RawH2(proxy.port)
    try:
        for i in range(8):
            sid = 2 * i + 1
            if i % 2:
                body = os.urandom(30000 + i)
                assert c.request(sid, "POST", token_path(conn, "/echo"), CLUSTER, body) == (200, body)
            else:
                n = 100000 + i
                assert c.request(sid, "GET", token_path(conn, f"/bytes/{n}"), CLUSTER) == (200, pattern(n))
    finally:
        c.close()


def test_graceful_shutdown_sends_goaway_then_closes(cluster):
    ctrl, proxy = cluster
    conn = connect(ctrl, "h2-stop")
    ctrl.wait_status(conn["backend_id"], "ready")
    c = RawH2(proxy.port)
    try:
        assert c.request(1, "GET", token_path(conn, "/bytes/10"), CLUSTER) == (200, pattern(10))
        proxy.proc.send_signal(signal.SIGTERM)
        kinds = set()
        while True:  # GOAWAY comes, then the connection closes
            try:
                kinds.add(c.next_frame()[0])
            except AssertionError:
                break
        assert 0x7 in kinds
        assert proxy.proc.wait(12) == 0
    finally:
        c.close()
