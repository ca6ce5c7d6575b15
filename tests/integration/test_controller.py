# SPDX-License-Identifier: MIT
"""The controller and drones together, on loopback: connect, keys, status,
sweeping, scheduling, and what happens when either side dies."""
import json
import multiprocessing
import os
import signal
import time

import pytest
import requests

from conftest import ECHO, wait_for
from plane_cluster import Controller, Drone, sse_events


@pytest.fixture
def ctrl(procs, tmp_path):
    return Controller(procs, tmp_path).start()


@pytest.fixture
def drone(procs, tmp_path, ctrl):
    return Drone(procs, tmp_path, ctrl, "dr-one").start()


def test_connect_spawns_then_reuses(ctrl, drone):
    r = ctrl.connect("k1")
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["spawned"] is True and first["status"] == "scheduled"
    assert first["drone"] == "dr-one"
    assert first["url"] == f"http://localhost:9090/{first['token']}/"
    assert first["status_url"] == f"{ctrl.url}/pub/b/{first['backend_id']}/status"
    assert len(first["token"]) == 43 and len(first["secret_token"]) == 43
    ctrl.wait_status(first["backend_id"], "ready")

    again = ctrl.connect("k1").json()
    assert again["backend_id"] == first["backend_id"]
    assert again["spawned"] is False and again["drone"] is None
    assert again["status"] == "ready"
    assert again["token"] != first["token"]

    r = ctrl.connect("k1", tag="other")
    assert r.status_code == 409 and r.json()["kind"] == "KeyHeld"
    r = ctrl.connect("k2", spawn=False)
    assert r.status_code == 409 and r.json()["kind"] == "KeyUnheldNoSpawnConfig"
    err = r.json()
    assert set(err) == {"id", "kind", "message"} and len(err["id"]) == 14


def test_static_token_and_subdomain(ctrl, drone):
    r = ctrl.connect("ks", use_static_token=True, subdomain="abc").json()
    assert r["token"].startswith("s.") and r["secret_token"] is None
    assert r["url"] == f"http://abc.localhost:9090/{r['token']}/"
    assert ctrl.connect("ks").json()["token"] == r["token"]


def test_no_drone_and_no_cluster(procs, tmp_path, ctrl):
    r = ctrl.connect("k1", cluster="nodrones:1")
    assert r.status_code == 500 and r.json()["kind"] == "NoDroneAvailable"
    bare = Controller(procs, tmp_path / "..", default_cluster=None)
    bare.db = str(tmp_path / "bare.db")
    bare.args[bare.args.index("--db") + 1] = bare.db
    bare.start()
    r = bare.connect("k1")
    assert r.status_code == 400 and r.json()["kind"] == "NoClusterProvided"


def test_bad_requests(ctrl):
    u = ctrl.url + "/ctrl/connect"
    assert requests.post(u, data="{}", timeout=5).status_code == 415
    assert requests.post(u, data="{nope", headers={"content-type": "application/json"}, timeout=5).status_code == 400
    for body in ({"key": 5}, {"key": {"name": 1}}, {"spawn_config": {}}, {"auth": None},
                 {"spawn_config": {"executable": {}, "max_idle_seconds": "x"}},
                 {"spawn_config": {"executable": {}, "lifetime_limit_seconds": 2 ** 40}},
                 {"spawn_config": {"executable": {}, "id": "Not Valid"}}, []):
        assert requests.post(u, json=body, timeout=5).status_code == 422, body
    big = b'{"x":"' + b"a" * (3 << 20) + b'"}'
    r = requests.post(u, data=big, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413
    assert requests.get(ctrl.url + "/nope", timeout=5).status_code == 404
    assert requests.get(ctrl.url + "/pub/b/nope/status", timeout=5).status_code == 404
    assert ctrl.terminate("nope").status_code == 404
    s = requests.get(ctrl.url + "/ctrl/status", timeout=5).json()
    assert s["status"] == "ok" and s["version"] == "0.5.5"
    r = requests.options(ctrl.url + "/pub/health", timeout=5)
    assert r.headers["access-control-allow-origin"] == "*"


def _connect_many(args):
    url, keys = args
    out = []
    s = requests.Session()
    for k in keys:
        r = s.post(url + "/ctrl/connect", json={"key": {"name": k}, "spawn_config": {"executable": {"image": "m"}}},
                   timeout=30)
        out.append((k, r.status_code, r.json().get("backend_id")))
    return out


def test_concurrent_connects_make_one_backend_per_key(ctrl, drone):
    keys = [f"key{i % 20}" for i in range(200)]
    jobs = [(ctrl.url, keys[i::8]) for i in range(8)]
    with multiprocessing.Pool(8) as pool:
        results = [r for part in pool.map(_connect_many, jobs) for r in part]
    assert all(code == 200 for _, code, _ in results), [r for r in results if r[1] != 200][:3]
    by_key = {}
    for k, _, b in results:
        by_key.setdefault(k, set()).add(b)
    assert len(by_key) == 20 and all(len(v) == 1 for v in by_key.values())
    assert ctrl.sql("SELECT count(*) FROM backend")[0][0] == 20


def test_status_stream_and_resume(ctrl, drone):
    b = ctrl.connect("k1").json()["backend_id"]
    ctrl.wait_status(b, "ready")
    assert ctrl.terminate(b).status_code == 200
    events, raw = sse_events(f"{ctrl.url}/pub/b/{b}/status-stream")
    assert [s for s, _ in events] == ["scheduled", "loading", "starting", "waiting", "ready", "terminating",
                                      "terminated"]
    assert "data:{\"status\":\"scheduled\"" in raw and "\nid:scheduled\n\n" in raw
    last = events[-1][1]
    assert last["termination_reason"] == "external" and last["termination_kind"] == "soft"
    assert last["exit_error"] is False
    resumed, _ = sse_events(f"{ctrl.url}/pub/b/{b}/status-stream", headers={"Last-Event-ID": "ready"})
    assert [s for s, _ in resumed] == ["terminating", "terminated"]


def test_live_stream_follows_a_backend(ctrl, drone):
    r = ctrl.connect("k1", executable={"image": "m", "mock": {"ready_delay_ms": 500, "exit_after_ms": 1500,
                                                                 "exit_code": 3}}).json()
    events, _ = sse_events(f"{ctrl.url}/pub/b/{r['backend_id']}/status-stream")
    assert [s for s, _ in events][-2:] == ["ready", "terminated"]
    assert events[-1][1]["exit_error"] is True
    assert ctrl.status(r["backend_id"])["exit_error"] is True


def test_idle_and_lifetime_sweeps(ctrl, drone):
    idle = ctrl.connect("idle", max_idle_seconds=2).json()["backend_id"]
    life = ctrl.connect("life", lifetime_limit_seconds=3).json()["backend_id"]
    keep = ctrl.connect("keep").json()["backend_id"]
    s = ctrl.wait_status(idle, "terminated", timeout=15)
    assert s["termination_reason"] == "swept"
    s = ctrl.wait_status(life, "terminated", timeout=15)
    assert s["termination_reason"] == "swept"
    assert ctrl.status(keep)["status"] == "ready"
    # The key is free again: a new backend for it.
    again = ctrl.connect("idle").json()
    assert again["spawned"] is True and again["backend_id"] != idle


def test_limits_of_zero_or_less_sweep_as_plane(ctrl, drone):
    # Plane sets expiration_time = now + lifetime (and idles against max_idle_seconds)
    # whatever the sign: 0 or less is swept as soon as the backend has left `scheduled`.
    ids = [ctrl.connect(f"z{i}", **cfg).json()["backend_id"]
           for i, cfg in enumerate([{"lifetime_limit_seconds": 0}, {"lifetime_limit_seconds": -5},
                                    {"max_idle_seconds": -1}])]
    keep = ctrl.connect("keep", lifetime_limit_seconds=600, max_idle_seconds=600).json()["backend_id"]
    for b in ids:
        s = ctrl.wait_status(b, "terminated", timeout=15)
        assert s["termination_reason"] == "swept"
    assert ctrl.status(keep)["status"] == "ready"


def test_fencing_tokens_count_up_across_restarts_not_with_the_clock(procs, tmp_path):
    ctrl = Controller(procs, tmp_path).start()
    Drone(procs, tmp_path, ctrl, "dr-fence").start()
    tokens = []

    def one_round(key):
        # After the restart, until the drone is back: NoDroneAvailable.
        b = wait_for(lambda: ctrl.connect(key).json().get("backend_id"), timeout=20, what="a drone")
        tokens.append(ctrl.sql("SELECT fencing_token FROM backend_key WHERE id = ?", b)[0][0])
        ctrl.wait_status(b, "ready")
        ctrl.terminate(b, hard=True)
        ctrl.wait_status(b, "terminated")

    one_round("k")
    one_round("k")
    ctrl.proc.terminate()
    ctrl.proc.wait(10)
    # The next token does not come from the clock: a counter far in the future stays the base.
    future = int(time.time() * 1000) + 10 ** 9
    ctrl.sql("UPDATE fencing SET last = ?", future)
    ctrl.start()
    one_round("k")
    one_round("other")
    assert tokens[1] == tokens[0] + 1
    assert tokens[2] == future + 1 and tokens[3] == future + 2
    # The spawn action carries the same token to the drone (spec §7.2).
    actions = [json.loads(a) for (a,) in ctrl.sql("SELECT action FROM backend_action")]
    sent = sorted(a["action"]["Spawn"]["key"]["token"] for a in actions if "Spawn" in a["action"])
    assert sent == sorted(tokens)


def test_terminate_api_soft_and_hard(ctrl, drone):
    soft = ctrl.connect("a", executable={"image": "m", "mock": {"ignore_soft_terminate": True}}).json()["backend_id"]
    hard = ctrl.connect("b").json()["backend_id"]
    ctrl.wait_status(soft, "ready")
    ctrl.wait_status(hard, "ready")
    assert ctrl.terminate(hard, hard=True).json() is None
    s = ctrl.wait_status(hard, "terminated")
    assert s["termination_kind"] == "hard" and s["termination_reason"] == "external" and s["exit_error"] is True
    ctrl.terminate(soft)
    assert ctrl.wait_status(soft, "terminating")["termination_kind"] == "soft"
    ctrl.terminate(soft, hard=True)
    assert ctrl.wait_status(soft, "terminated")["termination_kind"] == "hard"


def test_scheduling_spreads_and_drain(procs, tmp_path, ctrl):
    d1 = Drone(procs, tmp_path, ctrl, "dr-a").start()
    d2 = Drone(procs, tmp_path, ctrl, "dr-b").start()
    drones = [ctrl.connect(f"s{i}").json()["drone"] for i in range(12)]
    assert drones.count("dr-a") >= 3 and drones.count("dr-b") >= 3, drones
    r = requests.post(f"{ctrl.url}/ctrl/c/localhost:9090/d/dr-a/drain", timeout=5)
    assert r.json() == {"updated": True}
    assert requests.post(f"{ctrl.url}/ctrl/c/localhost:9090/d/dr-a/drain", timeout=5).json() == {"updated": False}
    assert requests.post(f"{ctrl.url}/ctrl/c/localhost:9090/d/dr-zz/drain", timeout=5).status_code == 404
    assert {ctrl.connect(f"t{i}").json()["drone"] for i in range(8)} == {"dr-b"}
    state = ctrl.state()
    assert {d["node"]["name"]["Drone"]: d["draining"] for d in state["drones"]} == {"dr-a": True, "dr-b": False}


def test_controller_killed_and_restarted(procs, tmp_path, ctrl, drone):
    b = ctrl.connect("k1").json()["backend_id"]
    ctrl.wait_status(b, "ready")
    ctrl.proc.kill()
    ctrl.proc.wait()
    ctrl.start()  # same db and port
    drone.wait_connected()
    assert ctrl.status(b)["status"] == "ready"
    again = ctrl.connect("k1").json()
    assert again["backend_id"] == b and again["spawned"] is False
    ctrl.terminate(b)
    ctrl.wait_status(b, "terminated")
    assert ctrl.sql("SELECT count(*) FROM backend")[0][0] == 1


def test_drone_killed_and_restarted(procs, tmp_path, ctrl):
    d = Drone(procs, tmp_path, ctrl, "dr-proc", runtime="process").start()
    b = ctrl.connect("k1", executable={"command": [ECHO]}).json()["backend_id"]
    ctrl.wait_status(b, "ready")
    addr = ctrl.sql("SELECT cluster_address FROM backend WHERE id = ?", b)[0][0]
    env = requests.get(f"http://{addr}/", timeout=5).json()["env"]
    assert env["SESSION_BACKEND_ID"] == b and env["SESSION_BACKEND_KEY"] == "k1"
    d.proc.kill()
    d.proc.wait()
    d.start()
    # The restarted drone kills what it left and reports it terminated (spec §13.1).
    s = ctrl.wait_status(b, "terminated")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{addr}/", timeout=2)
    new = ctrl.connect("k1", executable={"command": [ECHO]}).json()
    assert new["spawned"] is True and new["backend_id"] != b
    ctrl.wait_status(new["backend_id"], "ready")


def test_silent_drone_is_lost_and_its_key_held_until_it_expires(procs, tmp_path):
    # Lost after 10 s of silence, but the key lease is 12 s: a drone that is only cut off
    # may run the backend until its own deadlines, so the key must not move before it expires.
    ctrl = Controller(procs, tmp_path, "--lost-drone-seconds", "10", "--key-lease-seconds", "12").start()
    d1 = Drone(procs, tmp_path, ctrl, "dr-quiet").start()
    b = ctrl.connect("k1").json()["backend_id"]
    ctrl.wait_status(b, "ready")
    d2 = Drone(procs, tmp_path, ctrl, "dr-spare").start()
    os.kill(d1.proc.pid, signal.SIGSTOP)
    try:
        s = ctrl.wait_status(b, "terminated", timeout=30)
        assert s["termination_reason"] == "lost"
        expires, allow_renew = ctrl.sql("SELECT expires_at, allow_renew FROM backend_key WHERE id = ?", b)[0]
        assert allow_renew == 0
        if time.time() * 1000 < expires - 500:
            again = ctrl.connect("k1").json()
            assert again["spawned"] is False and again["backend_id"] == b
        wait_for(lambda: time.time() * 1000 > expires + 100, timeout=20, what="the key's expiry")
        new = ctrl.connect("k1").json()
        assert new["spawned"] is True and new["drone"] == "dr-spare"
    finally:
        os.kill(d1.proc.pid, signal.SIGCONT)
    # Back, it is told to stop the backend it still runs (the mock runtime's backends stop with the drone).
    wait_for(lambda: f"backend {b}: terminated" in d1.logs(), timeout=20, what="lost backend stopped")


def test_refused_key_renewal_terminates_before_the_lease_ends(procs, tmp_path):
    # A short lease, still longer than the 7 s heartbeat its first deadlines count from (§12).
    ctrl = Controller(procs, tmp_path, "--key-lease-seconds", "15").start()
    Drone(procs, tmp_path, ctrl, "dr-keys").start()
    b = ctrl.connect("k1").json()["backend_id"]
    keep = ctrl.connect("k2").json()["backend_id"]
    t0 = time.time()
    ctrl.wait_status(b, "ready")
    ctrl.sql("UPDATE backend_key SET allow_renew = 0 WHERE id = ?", b)
    expires = ctrl.sql("SELECT expires_at FROM backend_key WHERE id = ?", b)[0][0]
    s = ctrl.wait_status(b, "terminated", timeout=20)
    assert s["termination_reason"] == "keyexpired"
    assert s["time"] < expires  # gone before the lease could go to anyone else
    # The one whose renewals succeed outlives its first lease.
    time.sleep(max(0, 17 - (time.time() - t0)))
    assert ctrl.status(keep)["status"] == "ready"


def _scrape(ctrl):
    """Parses the Prometheus text format strictly enough to catch malformed lines."""
    import re
    text = requests.get(ctrl.url + "/metrics", timeout=5).text
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram")
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? (\S+)', line)
        assert m, line
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(4))
    return samples, types


def test_metrics_move(ctrl, drone):
    before, types = _scrape(ctrl)
    assert types["plane_connects_total"] == "counter" and types["plane_backend_start_seconds"] == "histogram"
    b = ctrl.connect("m1").json()["backend_id"]
    ctrl.wait_status(b, "ready")
    ctrl.connect("m1")
    ctrl.connect("m2", spawn=False)
    after, _ = _scrape(ctrl)
    assert after['plane_connects_total{result="spawned"}'] == before['plane_connects_total{result="spawned"}'] + 1
    assert after['plane_connects_total{result="existing"}'] == before['plane_connects_total{result="existing"}'] + 1
    assert after['plane_connects_total{result="error"}'] == before['plane_connects_total{result="error"}'] + 1
    assert after["plane_backend_start_seconds_count"] == before["plane_backend_start_seconds_count"] + 1
    assert after['plane_backends{status="ready"}'] == 1
    assert after["plane_connected_drones"] == 1


# ---- forward auth (§5.3) ----

class AuthServer:
    """An auth service: 204 for `Authorization: Bearer good` (or whatever allow(method, headers)
    says), 403 otherwise; records every check."""

    def __init__(self, allow=None):
        import http.server
        import threading
        seen = self.seen = []
        allow = allow or (lambda method, headers: headers.get("authorization") == "Bearer good")

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_check(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                seen.append({"method": self.command, "path": self.path, "body": body,
                             "headers": [(k.lower(), v) for k, v in self.headers.items()]})
                ok = allow(self.command, self.headers)
                self.send_response(204 if ok else 403)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = handle_check

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def header(self, check, name):
        values = [v for k, v in check["headers"] if k == name]
        assert len(values) <= 1, values
        return values[0] if values else None

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_forward_auth_guards_ctrl_routes(procs, tmp_path):
    import subprocess
    from conftest import PLANE
    auth = AuthServer()
    try:
        ctrl = Controller(procs, tmp_path, "--forward-auth", f"http://127.0.0.1:{auth.port}/check?from=plane").start()
        good = {"Authorization": "Bearer good"}
        base = ctrl.url

        # Denied: 401 "Unauthorized", plain, whatever the route (unknown ones too).
        for path in ("/ctrl/status", "/ctrl/c/localhost:9090/state", "/ctrl/nothing"):
            r = requests.get(base + path, timeout=5)
            assert (r.status_code, r.text) == (401, "Unauthorized"), path
            assert "content-type" not in r.headers
        r = requests.get(base + "/ctrl/status", headers={"Authorization": "Bearer bad"}, timeout=5)
        assert r.status_code == 401
        # Allowed: the route answers; the check carried the method, every header, the path without
        # /ctrl and the query, and targeted the configured URL exactly.
        auth.seen.clear()
        r = requests.get(base + "/ctrl/status?verbose=1", headers={**good, "x-original-path": "/spoofed",
                                                                  "x-extra": "kept"}, timeout=5)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        (check,) = auth.seen
        assert check["method"] == "GET" and check["path"] == "/check?from=plane"
        assert auth.header(check, "x-original-path") == "/status"
        assert auth.header(check, "host") == f"127.0.0.1:{ctrl.port}"
        assert auth.header(check, "authorization") == "Bearer good"
        assert auth.header(check, "x-extra") == "kept"
        assert requests.get(base + "/ctrl/nothing", headers=good, timeout=5).status_code == 404
        # /pub is never checked.
        n = len(auth.seen)
        assert requests.get(base + "/pub/health", timeout=5).status_code == 200
        assert len(auth.seen) == n

        # A drone that presents the token (http://TOKEN@host/) gets its WebSocket; one without does not.
        d = Drone(procs, tmp_path, ctrl, "dr-auth")
        d.args[d.args.index("--controller-url") + 1] = f"http://good@127.0.0.1:{ctrl.port}/"
        d.start(wait=False)
        bad = Drone(procs, tmp_path, ctrl, "dr-noauth").start(wait=False)

        def drones():
            st = requests.get(base + "/ctrl/c/localhost:9090/state", headers=good, timeout=5).json()
            return sorted(x["node"]["name"]["Drone"] for x in st["drones"])
        wait_for(lambda: drones() == ["dr-auth"], what="authorised drone")
        sock_checks = [c for c in auth.seen if auth.header(c, "x-original-path") == "/c/localhost:9090/drone-socket"]
        assert sock_checks and all(auth.header(c, "upgrade") is None for c in sock_checks)
        assert bad.proc.poll() is None
        time.sleep(1)
        assert drones() == ["dr-auth"]

        # A POST: the check has no body (content-length 0) and the request keeps its own.
        auth.seen.clear()
        r = requests.post(base + "/ctrl/connect", json={"key": {"name": "k"}, "spawn_config": {"executable": {"image": "m"}}},
                          headers=good, timeout=10)
        assert r.status_code == 200, r.text
        # (The drone without a token keeps retrying its socket: those checks are left out.)
        (check,) = [c for c in auth.seen if auth.header(c, "x-original-path") == "/connect"]
        assert check["method"] == "POST" and check["body"] == b"" and auth.header(check, "content-length") == "0"

        # The auth service gone: 502 "Error forwarding auth.".
        auth.stop()
        r = requests.get(base + "/ctrl/status", headers=good, timeout=15)
        assert (r.status_code, r.text) == (502, "Error forwarding auth.")
        assert requests.get(base + "/pub/health", timeout=5).status_code == 200
    finally:
        try:
            auth.stop()
        except Exception:
            pass

    # An https URL can never work (spec §5.3): refused at start, with one line.
    r = subprocess.run([PLANE, "controller", "--db", str(tmp_path / "x.db"), "--port", "0",
                        "--forward-auth", "https://auth.example/"], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "http://" in r.stderr
