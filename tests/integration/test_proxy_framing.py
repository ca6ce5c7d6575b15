# SPDX-License-Identifier: MIT
"""The proxy's request framing against a backend that parses the way common servers do (lines end
at LF, chunk extensions cut at ';', Transfer-Encoding ignored in HTTP/1.0): no request can be
smuggled past the proxy's checks, forged identity headers never arrive (in trailers or spelled
with '_'), bodiless responses (304/204 with Content-Length, HEAD) do not stall or leak into the
next request, and a client's half-close still gets every answer it asked for."""
import glob
import socket
import time
import pytest
from test_proxy import cluster, connect, token_path, CLUSTER  # noqa: F401
from conftest import procs  # noqa: F401

# A backend that records raw bytes per connection and parses like Go's net/http:
# lines end at LF, chunk extensions cut at ';', Transfer-Encoding ignored on HTTP/1.0.
REC = r'''
import os, socket, threading, time
LOG = os.environ["REC_DIR"]
srv = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
lock = threading.Lock()
cnt = [0]
def log(s):
    with lock:
        with open(LOG + "/requests.log", "a") as f: f.write(s + "\n")
def serve(c, idx):
    raw = open(f"{LOG}/conn{idx}.bin", "ab")
    st = {"buf": b""}
    def fill():
        d = c.recv(65536)
        if not d: raise EOFError
        raw.write(d); raw.flush(); st["buf"] += d
    def readline():
        while b"\n" not in st["buf"]: fill()
        line, st["buf"] = st["buf"].split(b"\n", 1)
        return line.rstrip(b"\r \t")
    def readn(k):
        while len(st["buf"]) < k: fill()
        out, st["buf"] = st["buf"][:k], st["buf"][k:]
        return out
    try:
        while True:
            line = readline()
            if not line: continue
            try:
                method, path, ver = line.split(b" ", 2)
            except ValueError:
                log(f"conn{idx} BAD-REQUEST-LINE {line!r}"); c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"); break
            h = {}
            while True:
                l = readline()
                if not l: break
                k, v = l.split(b":", 1)
                h.setdefault(k.strip().lower().decode(), []).append(v.strip().decode())
            body = b""
            te = h.get("transfer-encoding")
            if te and ver != b"HTTP/1.0":
                while True:
                    sz = int(readline().split(b";")[0].strip(), 16)
                    if sz == 0:
                        while readline(): pass
                        break
                    body += readn(sz)
                    if readn(2) != b"\r\n": raise ValueError("bad chunk end")
            elif "content-length" in h:
                body = readn(int(h["content-length"][0]))
            user = h.get("x-verified-username")
            log(f"conn{idx} {method.decode()} {path.decode()} {ver.decode()} user={user} body={body!r}")
            p = path.decode()
            if method == b"HEAD" and "hb" in path.decode():
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\n"); time.sleep(0.3)
                resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE"
            elif method == b"HEAD":
                resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
            elif "r304cl" in p:
                resp = b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 5\r\n\r\n"
            elif "r204cl" in p:
                resp = b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
            else:
                b = f"{method.decode()} {p} user={user} body={body!r}\n".encode()
                resp = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b) + b
            c.sendall(resp)
            if ver == b"HTTP/1.0" and "keep-alive" not in ",".join(h.get("connection", [])).lower():
                break
    except Exception as e:
        log(f"conn{idx} EXC {e!r}")
    c.close()
while True:
    c, _ = srv.accept()
    cnt[0] += 1
    threading.Thread(target=serve, args=(c, cnt[0]), daemon=True).start()
'''


def rec_backend(ctrl, tmp_path, key):
    d = tmp_path / ("rec-" + key)
    d.mkdir()
    conn = connect(ctrl, key, executable={"command": ["/usr/bin/python3", "-c", REC], "env": {"REC_DIR": str(d)}})
    return conn, d


def raw(port, data, shut=False, timeout=3.0, pause=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if isinstance(data, bytes):
        data = [data]
    for i, part in enumerate(data):
        s.sendall(part)
        if pause and i < len(data) - 1:
            time.sleep(pause)
    if shut:
        s.shutdown(socket.SHUT_WR)
    out = b""
    t0 = time.time()
    while True:
        try:
            d = s.recv(65536)
        except socket.timeout:
            out += b"<<TIMEOUT>>"
            break
        except ConnectionResetError:
            out += b"<<RESET>>"
            break
        if not d:
            out += b"<<EOF>>"
            break
        out += d
    s.close()
    return out


def reqlog(d):
    p = d / "requests.log"
    return p.read_text() if p.exists() else ""


def rawlog(d):
    return b"\n=====\n".join(open(f, "rb").read() for f in sorted(glob.glob(str(d / "conn*.bin"))))


def warm(proxy, conn):
    r = proxy.get(token_path(conn, "/warm"))
    assert r.status_code == 200, r.text


def recorded(cluster, tmp_path, key, warm_up=True):
    """A recording backend behind the proxy: (proxy, its log directory, its token)."""
    ctrl, proxy = cluster
    conn, d = rec_backend(ctrl, tmp_path, key)
    if warm_up:
        warm(proxy, conn)
    return proxy, d, conn["token"]




def test_chunk_extension_ending_in_lf_cannot_smuggle_a_request(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "smug")
    smug = f"GET /admin HTTP/1.1\r\nHost: {CLUSTER}\r\nX-Verified-Username: admin\r\n\r\n".encode()
    data = b"0\r\n\r\n" + smug
    n = len(data)
    body = b"%x;\n" % n + b"A" * n + b"\r\n" + data + b"\r\n0\r\n\r\n"
    req = (f"POST /{tok}/upload HTTP/1.1\r\nHost: {CLUSTER}\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + body
    got = raw(proxy.port, req, timeout=3)
    assert got.startswith(b"HTTP/1.1 400 "), got[:100]
    assert "/admin" not in reqlog(d)


def test_http10_transfer_encoding_is_refused(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "h10te")
    inner = f"x-verified-username: admin\r\nHost: {CLUSTER}\r\n\r\n".encode()
    chunk = b"ADD /admin HTTP/1.1\r\n" + inner
    # http-parser: chunk size 0xADD, extension " /admin HTTP/1.1"; pad data to 0xADD bytes.
    pad = 0xADD - len(inner)
    body = chunk + b"Z" * pad + b"\r\n0\r\n\r\n"
    req = (f"POST /{tok}/x HTTP/1.0\r\nHost: {CLUSTER}\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + body
    got = raw(proxy.port, req, timeout=3)
    assert "/admin" not in reqlog(d)


def test_304_with_content_length_has_no_body(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "r304")
    req = (f"GET /{tok}/r304cl HTTP/1.1\r\nHost: {CLUSTER}\r\nIf-None-Match: \"x\"\r\n\r\n"
           f"GET /{tok}/second HTTP/1.1\r\nHost: {CLUSTER}\r\nConnection: close\r\n\r\n").encode()
    got = raw(proxy.port, req, timeout=4)
    assert got.startswith(b"HTTP/1.1 304 ") and b"GET /second" in got


def test_half_close_after_a_request_with_a_body(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "hc", warm_up=False)
    req = (f"POST /{tok}/post HTTP/1.1\r\nHost: {CLUSTER}\r\nContent-Length: 5\r\n\r\nhello").encode()
    got = raw(proxy.port, req, shut=True, timeout=4)
    assert b"200 OK" in got


def test_half_close_after_pipelined_requests(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "pipe")
    req = (f"GET /{tok}/one HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n"
           f"GET /{tok}/two HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n").encode()
    got = raw(proxy.port, req, shut=True, timeout=4)
    assert b"GET /two" in got


def test_connect_is_refused(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "connect")
    second = f"GET /{tok}/second HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n".encode()
    req = (f"CONNECT /{tok}/c HTTP/1.1\r\nHost: {CLUSTER}\r\nContent-Length: {len(second)}\r\n\r\n").encode() + second
    got = raw(proxy.port, req, timeout=4)
    assert got.startswith(b"HTTP/1.1 405 "), got[:100]
    assert "/second" not in reqlog(d) and "CONNECT" not in reqlog(d)


def test_x_verified_trailer_is_refused(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "trailer")
    req = (f"POST /{tok}/t HTTP/1.1\r\nHost: {CLUSTER}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           "3\r\nabc\r\n0\r\nX-Verified-Username: admin\r\n\r\n").encode()
    got = raw(proxy.port, req, timeout=4)
    assert got.startswith(b"HTTP/1.1 400 ")
    assert b"X-Verified-Username: admin" not in rawlog(d)


def test_chunk_data_must_end_in_crlf(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "crlf")
    req = (f"POST /{tok}/t HTTP/1.1\r\nHost: {CLUSTER}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           "3\r\nabcXY0\r\n\r\n").encode()
    got = raw(proxy.port, req, timeout=4)
    assert b"400" in got.split(b"\r\n")[0]


def test_x_verified_spelled_with_underscores_is_dropped(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "under")
    req = (f"GET /{tok}/u HTTP/1.1\r\nHost: {CLUSTER}\r\nX_Verified_Username: admin\r\nX-Verified_Backend: other\r\nConnection: close\r\n\r\n").encode()
    got = raw(proxy.port, req, timeout=4)
    assert got.startswith(b"HTTP/1.1 200 ")
    assert b"X_Verified_Username" not in rawlog(d) and b"X-Verified_Backend" not in rawlog(d)


def test_half_close_while_a_large_response_streams(cluster, tmp_path):
    ctrl, proxy = cluster
    conn = connect(ctrl, "big")
    tok = conn["token"]
    proxy.get(token_path(conn, "/"))
    req = f"GET /{tok}/bytes/20000000 HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n".encode()
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    s.sendall(req)
    s.shutdown(socket.SHUT_WR)
    n = 0
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        n += len(d)
        if n < 1000000:
            time.sleep(0.01)
    s.close()
    assert n > 20000000


def test_expect_100_continue(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "expect")
    # The rec backend reads CL bytes before answering; send body only after a pause
    req = [(f"POST /{tok}/e HTTP/1.1\r\nHost: {CLUSTER}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").encode(), b"hello"]
    got = raw(proxy.port, req, timeout=3, pause=0.5)
    assert b"HTTP/1.1 200 " in got and b"body=b'hello'" in got


def test_late_bytes_after_head_never_reach_another_request(cluster, tmp_path):
    proxy, d, tok = recorded(cluster, tmp_path, "hb")
    req = (f"HEAD /{tok}/hb HTTP/1.1\r\nHost: {CLUSTER}\r\n\r\n"
           f"GET /{tok}/second HTTP/1.1\r\nHost: {CLUSTER}\r\nConnection: close\r\n\r\n").encode()
    got = raw(proxy.port, req, timeout=4)
    assert b"STALE" not in got
