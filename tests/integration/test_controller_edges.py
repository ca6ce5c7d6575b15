# SPDX-License-Identifier: MIT
"""Controller edge cases: forward-auth path spellings and hostile auth services, shutdown with
open streams, controller downtime vs drone silence, malformed node messages, pipelined
WebSocket handshakes, short key leases, option parsing, held routes, peers that reset."""
import http.client, json, os, signal, socket, struct, subprocess, sys, time, threading
import pytest, requests
sys.path.insert(0, os.path.dirname(__file__))
from conftest import wait_for, PLANE
from plane_cluster import Controller, Drone, sse_events, free_port, pg_database
from test_controller import AuthServer
from ws_raw import WS, handshake


def raw_get(port, path, method="GET", headers=None, body=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    return r.status, r.read()


def test_forward_auth_cannot_be_skipped_by_spelling_the_path(procs, tmp_path):
    """Every spelling the router takes for a /ctrl route is checked, with the same x-original-path."""
    auth = AuthServer()
    try:
        ctrl = Controller(procs, tmp_path, "--forward-auth", f"http://127.0.0.1:{auth.port}/check").start()
        for path in ("/ctrl/status", "//ctrl/status", "/%63trl/status", "/ctrl//status"):
            assert raw_get(ctrl.port, path)[0] == 401, path
        st, _ = raw_get(ctrl.port, "//ctrl/connect", "POST", {"content-type": "application/json"},
                        json.dumps({"key": {"name": "k"}}))
        assert st == 401
        assert [auth.header(c, "x-original-path") for c in auth.seen[:3]] == ["/status"] * 3
        good = {"Authorization": "Bearer good"}
        assert raw_get(ctrl.port, "//ctrl/status", headers=good)[0] == 200
        assert raw_get(ctrl.port, "/%63trl/status", headers=good)[0] == 200
    finally:
        auth.stop()


def test_shutdown_with_open_status_stream(procs, tmp_path):
    ctrl = Controller(procs, tmp_path).start()
    s = socket.create_connection(("127.0.0.1", ctrl.port))
    s.sendall(b"GET /pub/b/nothing/status-stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200" in s.recv(4096)
    ctrl.proc.send_signal(signal.SIGTERM)
    rc = ctrl.proc.wait(10)
    log = open(ctrl.log).read()
    print(rc, log[-800:])
    assert rc == 0, log


def test_controller_downtime_counts_as_drone_silence(procs, tmp_path):
    """The drone never stops working; only the controller is down. Its backend must not be marked lost."""
    port = free_port()
    ctrl = Controller(procs, tmp_path, "--lost-drone-seconds", "10", port=port).start()
    d = Drone(procs, tmp_path, ctrl, "dr-one").start()
    r = ctrl.connect("k1")
    bid = r.json()["backend_id"]
    ctrl.wait_status(bid, "ready")
    ctrl.proc.kill(); ctrl.proc.wait()
    time.sleep(12)           # controller outage longer than --lost-drone-seconds
    d.proc.send_signal(signal.SIGSTOP)  # the drone reconnects a little late (its backoff), here 6 s < 10 s
    try:
        ctrl.start()
        time.sleep(6)
    finally:
        d.proc.send_signal(signal.SIGCONT)
    d.wait_connected()
    time.sleep(1)
    st = ctrl.status(bid)
    print(st)
    print(open(ctrl.log).read()[-1500:])
    assert st["status"] == "ready", st


BAD = [
    "", "null", "[]", "{}", "1", '"Heartbeat"', '{"Heartbeat":null}', '{"Heartbeat":{"local_time":"x"}}',
    '{"Heartbeat":{"local_time":1e400}}', '{"Heartbeat":{"local_time":99999999999999999999999}}',
    '{"BackendEvent":{"event_id":1,"backend_id":"nope","state":{"status":"ready"}}}',
    '{"BackendEvent":{"event_id":1,"backend_id":"abc","state":{"status":"ready","address":"x"}}}',
    '{"BackendEvent":{"event_id":1,"backend_id":"abc","state":{"status":"terminated","last_status":"bogus"}}}',
    '{"BackendEvent":{"event_id":1,"backend_id":"abc","state":{"status":"terminated","last_status":"ready","exit_code":1e3}}}',
    '{"BackendEvent":{"event_id":1,"backend_id":"abc","state":[]}}',
    '{"AckAction":{"action_id":5}}', '{"AckAction":"x"}', '{"RenewKey":{"backend":"abc"}}',
    '{"RenewKey":{"backend":"abc","local_time":9223372036854775807}}',
    '{"BackendMetrics":{}}', '{"A":1,"B":2}', '{"Heartbeat":{"local_time":1},"Heartbeat":{"local_time":2}}',
    '{"RouteInfoRequest":{"token":7}}', '{"RouteInfoRequest":"x"}', '{"KeepAlive":7}', '{"KeepAlive":"a/b"}',
    '{"CertManagerRequest":7}', '{"CertManagerRequest":{"SetTxtRecord":7}}', '{"CertManagerRequest":{"X":1,"Y":2}}',
    "{" * 5000, "[" * 100000,
]


def test_malformed_socket_messages(procs, tmp_path):
    ctrl = Controller(procs, tmp_path).start()
    for kind, name in (("drone", "dr-fuzz"), ("proxy", "px-fuzz")):
        ws = WS(ctrl.port, f"/ctrl/c/localhost:9090/{kind}-socket")
        assert ws.status == 101
        handshake(ws, name)
        for m in BAD:
            ws.send_raw(m.encode("latin-1") if isinstance(m, str) else m)
        ws.send_raw(b"\x00\x01", opcode=2)  # binary
        # a valid message still gets its answer
        if kind == "proxy":
            ws.send({"RouteInfoRequest": {"token": "nothing"}})
            got = ws.recv()
            assert got == {"RouteInfoResponse": {"token": "nothing", "route_info": None}}, got
        ws.close()
    assert ctrl.proc.poll() is None
    assert requests.get(ctrl.url + "/pub/health", timeout=5).status_code == 200


class RawAuth:
    """A TCP server that answers each check with mode(conn)."""

    def __init__(self, mode):
        self.mode = mode
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        try:
            self.mode(c)
        except OSError:
            pass  # the controller gave up on this check (its client left): expected


def _read_head(c):
    b = b""
    while b"\r\n\r\n" not in b:
        d = c.recv(4096)
        if not d:
            break
        b += d
    return b


def test_forward_auth_hostile_auth_servers(procs, tmp_path):
    def silent(c):
        _read_head(c)
        time.sleep(30)

    def garbage(c):
        _read_head(c)
        c.sendall(b"\x00\x01garbage" * 300)
        time.sleep(1)
        c.close()

    def slow_ok(c):
        _read_head(c)
        for ch in b"HTTP/1.1 204 No Content\r\n\r\n":
            c.sendall(bytes([ch]))
            time.sleep(0.05)
        c.close()

    def close_now(c):
        c.close()

    def interim(c):
        _read_head(c)
        c.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        time.sleep(0.5)
        c.close()

    results = {}
    for name, mode in (("garbage", garbage), ("slow_ok", slow_ok), ("close_now", close_now),
                       ("interim", interim), ("silent", silent)):
        a = RawAuth(mode)
        sub = tmp_path / name
        sub.mkdir()
        ctrl = Controller(procs, sub, "--forward-auth", f"http://127.0.0.1:{a.port}/").start()
        # Clients that give up while the check is pending.
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", ctrl.port))
            s.sendall(b"GET /ctrl/status HTTP/1.1\r\nHost: x\r\n\r\n")
            s.close()
        t0 = time.time()
        # A silent auth service is given up after 10 s: the client waits longer than that.
        st, body = raw_get(ctrl.port, "/ctrl/status", timeout=30)
        results[name] = (st, body, round(time.time() - t0, 1))
        # shutdown with a check pending
        s = socket.create_connection(("127.0.0.1", ctrl.port))
        s.sendall(b"GET /ctrl/status HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        assert ctrl.proc.poll() is None, open(ctrl.log).read()
        ctrl.proc.send_signal(signal.SIGTERM)
        rc = ctrl.proc.wait(15)
        assert rc == 0, (name, open(ctrl.log).read()[-2000:])
        s.close()
    print(results)
    assert results["garbage"][0] == 502
    assert results["slow_ok"][0] == 200
    assert results["close_now"][0] == 502
    assert results["silent"][0] == 502
    assert results["interim"][0] == 200, results["interim"]


def _ws_frame(payload):
    import os as _os, struct as _st
    payload = payload.encode()
    mask = _os.urandom(4)
    return _st.pack("!BB", 0x81, 0x80 | len(payload)) + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


@pytest.mark.parametrize("with_auth", [False, True])
def test_upgrade_with_pipelined_handshake(procs, tmp_path, with_auth):
    extra = []
    if with_auth:
        auth = AuthServer()
        extra = ["--forward-auth", f"http://127.0.0.1:{auth.port}/"]
    ctrl = Controller(procs, tmp_path, *extra).start()
    s = socket.create_connection(("127.0.0.1", ctrl.port), timeout=5)
    hs = json.dumps({"version": {"version": "0.5.5", "git_hash": "x"}, "name": "dr-pipe"})
    s.sendall(b"GET /ctrl/c/localhost:9090/drone-socket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
              b"Authorization: Bearer good\r\n\r\n" + _ws_frame(hs))
    got = b""
    try:
        while got.count(b"controller") == 0 and got.count(b"\"name\"") == 0:
            d = s.recv(4096)
            if not d:
                break
            got += d
    except socket.timeout:
        pass
    print(with_auth, got)
    assert b"\"name\"" in got, got


def test_short_key_lease_spawns_dead_backends(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, "--key-lease-seconds", "6", "--lost-drone-seconds", "120").start()
    Drone(procs, tmp_path, ctrl, "dr-one").start()
    ids = []
    for i in range(8):
        r = ctrl.connect(f"k{i}"); print(r.status_code, r.text[:200]); ids.append(r.json()["backend_id"])
        time.sleep(1)
    time.sleep(3)
    sts = [ctrl.status(b) for b in ids]
    print(sts)
    dead = [s for s in sts if s.get("termination_reason") == "keyexpired"]
    assert not dead, f"{len(dead)} of {len(ids)} new backends killed by their initial deadlines"


def test_numeric_options_clobber_lost_drone_seconds(procs, tmp_path):
    # --best-of 1 (or --port, --key-lease-seconds) also sets lost_after_ms = v * 1000.
    ctrl = Controller(procs, tmp_path, "--best-of", "1").start()
    Drone(procs, tmp_path, ctrl, "dr-one").start()
    time.sleep(2)
    r = ctrl.connect("k1")
    print(r.status_code, r.text)
    assert r.status_code == 200, r.text
    b = r.json()["backend_id"]
    ctrl.wait_status(b, "ready")
    time.sleep(8)
    print(ctrl.status(b))
    assert ctrl.status(b)["status"] == "ready"


def test_held_routes_churn(procs, tmp_path):
    ctrl = Controller(procs, tmp_path).start()
    # A fake drone that never acks nor reports: backends stay scheduled, routes are held.
    d = WS(ctrl.port, "/ctrl/c/localhost:9090/drone-socket")
    handshake(d, "dr-fake")
    d.send({"Heartbeat": {"local_time": int(time.time() * 1000)}})
    time.sleep(0.3)
    toks = []
    for i in range(20):
        r = ctrl.connect(f"k{i}")
        assert r.status_code == 200, r.text
        toks.append((r.json()["token"], r.json()["backend_id"]))
    for round_ in range(3):
        p = WS(ctrl.port, "/ctrl/c/localhost:9090/proxy-socket")
        handshake(p, f"px-p{round_}")
        for t, _ in toks:
            for _ in range(3):
                p.send({"RouteInfoRequest": {"token": t}})
        time.sleep(0.2)
        if round_ == 0:
            # resolve half of them via drone events while held
            for n, (t, b) in enumerate(toks[:10]):
                d.send({"BackendEvent": {"event_id": n + 1, "backend_id": b, "timestamp": 0,
                                         "state": {"status": "ready", "address": "127.0.0.1:1"}}})
            got = set()
            while len(got) < 10:
                m = p.recv()
                if "RouteInfoResponse" in m:
                    got.add(m["RouteInfoResponse"]["token"])
        p.close()  # with held routes pending
        time.sleep(0.2)
    for n, (t, b) in enumerate(toks[10:]):
        d.send({"BackendEvent": {"event_id": 100 + n, "backend_id": b, "timestamp": 0,
                                 "state": {"status": "terminated", "last_status": "scheduled"}}})
    time.sleep(0.5)
    d.close()
    time.sleep(0.3)
    assert ctrl.proc.poll() is None
    ctrl.proc.send_signal(signal.SIGTERM)
    assert ctrl.proc.wait(10) == 0


def test_ws_peer_reset_leaves_dangling_session(procs, tmp_path):
    import struct as _st
    ctrl = Controller(procs, tmp_path).start()
    d = WS(ctrl.port, "/ctrl/c/localhost:9090/drone-socket")
    handshake(d, "dr-fake")
    d.send({"Heartbeat": {"local_time": int(time.time() * 1000)}})
    time.sleep(0.3)
    bids = [ctrl.connect(f"k{i}").json()["backend_id"] for i in range(40)]
    ev = 1
    for i, b in enumerate(bids):
        assert ctrl.proc.poll() is None, ("controller died", ctrl.proc.returncode, open(ctrl.log).read()[-300:])
        p = WS(ctrl.port, "/ctrl/c/localhost:9090/proxy-socket")
        handshake(p, f"px-r{i}")
        # The proxy resets its connection while the controller is busy writing to it.
        p.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _st.pack("ii", 1, 0))
        for _ in range(30):
            p.send({"RouteInfoRequest": {"token": "nothing"}})
        d.send({"BackendEvent": {"event_id": ev, "backend_id": b, "timestamp": 0,
                                 "state": {"status": "terminated", "last_status": "scheduled"}}})
        ev += 1
        p.close()
    time.sleep(0.5)
    # Every later terminated event is broadcast to every proxy session still listed.
    assert ctrl.proc.poll() is None, open(ctrl.log).read()[-500:]
    r = ctrl.connect("after")
    d.send({"BackendEvent": {"event_id": ev, "backend_id": r.json()["backend_id"], "timestamp": 0,
                             "state": {"status": "terminated", "last_status": "scheduled"}}})
    time.sleep(0.5)
    assert ctrl.proc.poll() is None, open(ctrl.log).read()[-500:]
    st = requests.get(ctrl.url + "/metrics", timeout=5).text
    print([l for l in st.splitlines() if "connected" in l])
    assert "plane_connected_proxies 0" in st


def test_socket_routes_check_the_cluster_name(procs, tmp_path):
    ctrl = Controller(procs, tmp_path).start()
    for cluster in ("bad%20name", "host:port", "x:99999", "under_score"):
        for kind in ("drone", "proxy"):
            st, body = raw_get(ctrl.port, f"/ctrl/c/{cluster}/{kind}-socket")
            assert st == 400, (cluster, kind, st)
            assert b"InvalidClusterName" in body, body
    ws = WS(ctrl.port, "/ctrl/c/localhost:9090/drone-socket")
    assert ws.status == 101
    ws.close()


def test_a_peer_that_reads_nothing_is_dropped(procs, tmp_path):
    """A proxy that keeps asking but never reads: the controller stops queueing answers and closes it."""
    import struct as _st
    ctrl = Controller(procs, tmp_path).start()
    p = WS(ctrl.port, "/ctrl/c/localhost:9090/proxy-socket")
    handshake(p, "px-deaf")
    p.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    payload = json.dumps({"RouteInfoRequest": {"token": "t" * 400}}).encode()
    mask = b"\x01\x02\x03\x04"
    frame = _st.pack("!BBH", 0x81, 0x80 | 126, len(payload)) + mask + bytes(
        c ^ mask[i % 4] for i, c in enumerate(payload))
    batch = frame * 1000
    p.s.settimeout(30)
    closed = False
    try:
        for _ in range(200):  # up to ~90 MB of answers asked for
            p.s.sendall(batch)
            if "reads nothing" in open(ctrl.log).read():
                break
    except OSError:
        closed = True
    wait_for(lambda: "reads nothing" in open(ctrl.log).read(), timeout=30, what="the controller giving up")
    # The connection ends (after what was already in the kernel's buffers).
    if not closed:
        p.s.settimeout(10)
        try:
            while p.s.recv(1 << 20):
                pass
        except OSError:
            pass
    assert ctrl.proc.poll() is None
    assert requests.get(ctrl.url + "/pub/health", timeout=5).status_code == 200
    wait_for(lambda: "plane_connected_proxies 0" in requests.get(ctrl.url + "/metrics", timeout=5).text,
             what="the proxy counted as gone")


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_connects_answered_in_batches(procs, tmp_path, store):
    """Connects for named keys that arrive together are asked of the store in one batch: each still gets its
    own answer (held key: a fresh token for the same backend; another tag: 409; a static token; a new key:
    spawned; no spawn config: 409), and clients that hang up before their answer leave the controller serving."""
    ctrl = Controller(procs, tmp_path, db=pg_database() if store == "postgres" else None).start()
    Drone(procs, tmp_path, ctrl, "dr-batch").start()
    tag = "b"
    held = ctrl.connect(f"held-{tag}").json()
    static = ctrl.connect(f"static-{tag}", use_static_token=True).json()
    assert held["spawned"] and static["spawned"]

    kinds = ["held", "tag", "static", "new", "nospawn"] * 12
    answers = [None] * len(kinds)
    go = threading.Barrier(len(kinds))

    def one(i):
        k = kinds[i]
        go.wait()
        if k == "held":
            answers[i] = ctrl.connect(f"held-{tag}")
        elif k == "tag":
            answers[i] = ctrl.connect(f"held-{tag}", tag="other")
        elif k == "static":
            answers[i] = ctrl.connect(f"static-{tag}")
        elif k == "new":
            answers[i] = ctrl.connect(f"new-{tag}-{i}")
        else:
            answers[i] = ctrl.connect(f"absent-{tag}-{i}", spawn=False)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(kinds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    tokens = set()
    for k, r in zip(kinds, answers):
        body = r.json()
        if k == "held":
            assert r.status_code == 200 and not body["spawned"] and body["backend_id"] == held["backend_id"], body
            assert body["token"] != held["token"] and body["secret_token"]
            tokens.add(body["token"])
        elif k == "tag":
            assert (r.status_code, body["kind"]) == (409, "KeyHeld"), body
        elif k == "static":
            assert r.status_code == 200 and body["token"] == static["token"] and body["secret_token"] is None, body
        elif k == "new":
            assert r.status_code == 200 and body["spawned"], body
        else:
            assert (r.status_code, body["kind"]) == (409, "KeyUnheldNoSpawnConfig"), body
    assert len(tokens) == kinds.count("held")  # every answer a token of its own

    # Clients that send a connect and leave at once (half with a reset): nothing breaks.
    body = json.dumps({"key": {"name": f"held-{tag}"}, "spawn_config": {"executable": {"image": "mock"}}}).encode()
    req = (b"POST /ctrl/connect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body)) + body
    for i in range(300):
        s = socket.create_connection(("127.0.0.1", ctrl.port))
        s.sendall(req)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    r = ctrl.connect(f"held-{tag}")
    assert r.status_code == 200 and r.json()["backend_id"] == held["backend_id"]
    assert ctrl.proc.poll() is None
