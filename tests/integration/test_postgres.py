# SPDX-License-Identifier: MIT
"""Controllers on PostgreSQL: the same API as on SQLite, several controllers on one
database holding one backend per key, and a database that goes away and comes back."""
import os
import random
import signal
import subprocess
import threading
import time

import requests

from conftest import PLANE, wait_for
from plane_cluster import Controller, Drone, pg_database

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def controllers(procs, tmp_path, n, db, *extra):
    return [Controller(procs, tmp_path, *extra, db=db, name=f"controller{i}").start() for i in range(n)]


def test_connect_reuse_status_and_terminate(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, db=pg_database()).start()
    Drone(procs, tmp_path, ctrl, "dr-pg").start()
    first = ctrl.connect("k1").json()
    assert first["spawned"] is True
    ctrl.wait_status(first["backend_id"], "ready")
    again = ctrl.connect("k1").json()
    assert again["backend_id"] == first["backend_id"] and again["spawned"] is False
    assert ctrl.terminate(first["backend_id"], hard=True).status_code == 200
    s = ctrl.wait_status(first["backend_id"], "terminated")
    assert s["termination_reason"] == "external"
    third = ctrl.connect("k1").json()
    assert third["spawned"] is True and third["backend_id"] != first["backend_id"]
    # Fencing tokens come from the database's sequence: one up per acquisition.
    tokens = [t for (t,) in ctrl.sql("SELECT fencing_token FROM backend_key")]
    assert len(tokens) == 1
    assert ctrl.sql("SELECT version FROM schema_version") == [(3,)]  # 2: acme_txt_entries, 3: idle freeze


def test_a_newer_schema_is_refused(procs, tmp_path):
    db = pg_database()
    Controller(procs, tmp_path, db=db).start().proc.terminate()
    subprocess.run(["psql", db, "-qc", "UPDATE schema_version SET version = 99"], check=True)
    p = subprocess.run([PLANE, "controller", "--db", db, "--port", "0"], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode == 1
    assert "schema is version 99, newer than this plane knows" in p.stderr


def connect_anywhere(ctrls, key, tries=20):
    """A client that moves to another controller when one does not answer."""
    order = random.sample(ctrls, len(ctrls))
    for i in range(tries):
        c = order[i % len(order)]
        try:
            r = c.connect(key)
        except requests.RequestException:
            continue
        if r.status_code == 200:
            return r.json()
        if r.status_code not in (500, 503):
            raise AssertionError(r.text)
        time.sleep(0.05)
    raise AssertionError(f"no controller answered a connect for {key}")


def connect_load(ctrls, keys, at_count, fault):
    """Connects for every key in keys from 10 threads, any controller; fault() once at_count have answered.
    Returns {key: {backend ids}}."""
    seen, errors, done = {}, [], []
    lock = threading.Lock()

    def worker(chunk):
        for k in chunk:
            try:
                r = connect_anywhere(ctrls, k)
            except AssertionError as e:
                errors.append(str(e))
                continue
            with lock:
                seen.setdefault(k, set()).add(r["backend_id"])
                done.append(k)
                if len(done) == at_count:
                    fault()  # in the middle of the load

    threads = [threading.Thread(target=worker, args=(keys[i::10],)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors, errors[:3]
    assert sorted(seen) == sorted(set(keys))
    assert all(len(ids) == 1 for ids in seen.values()), {k: v for k, v in seen.items() if len(v) > 1}
    return seen


def test_three_controllers_one_backend_per_key_through_a_controller_kill(procs, tmp_path):
    db = pg_database()
    ctrls = controllers(procs, tmp_path, 3, db)
    Drone(procs, tmp_path, ctrls[0], "dr-pg-a").start()
    Drone(procs, tmp_path, ctrls[1], "dr-pg-b").start()
    keys = [f"key-{i}" for i in range(30)] * 10
    random.shuffle(keys)
    seen = connect_load(ctrls, keys, 60, lambda: ctrls[2].proc.send_signal(signal.SIGKILL))
    assert ctrls[2].proc.wait(5) == -signal.SIGKILL
    rows = ctrls[0].sql("SELECT count(*), count(DISTINCT id) FROM backend")
    assert rows == [(30, 30)]
    # Every one of them reaches its drone (a drone's socket is on one controller, the connect on another).
    for ids in seen.values():
        ctrls[0].wait_status(next(iter(ids)), "ready", timeout=30)


def test_three_controllers_through_a_postgres_restart(procs, tmp_path):
    db = pg_database()
    ctrls = controllers(procs, tmp_path, 3, db)
    Drone(procs, tmp_path, ctrls[0], "dr-pg-a").start()
    keys = [f"key-{i}" for i in range(15)] * 10
    random.shuffle(keys)

    def restart():
        pg = os.path.join(ROOT, "scripts", "pg-up.sh")
        subprocess.run([pg, "--stop"], check=True, cwd=ROOT)
        subprocess.run([pg], check=True, cwd=ROOT, capture_output=True)

    seen = connect_load(ctrls, keys, 40, restart)
    assert ctrls[1].sql("SELECT count(*), count(DISTINCT id) FROM backend") == [(15, 15)]
    for ids in seen.values():
        ctrls[2].wait_status(next(iter(ids)), "ready", timeout=30)
    assert all(c.proc.poll() is None for c in ctrls)


def test_a_status_stream_resumes_on_another_controller_without_a_gap(procs, tmp_path):
    from plane_cluster import sse_events
    a, b = controllers(procs, tmp_path, 2, pg_database())
    Drone(procs, tmp_path, b, "dr-pg").start()
    r = b.connect("k", executable={"image": "m", "mock": {"ready_delay_ms": 200}}).json()
    events, _ = sse_events(f"{a.url}/pub/b/{r['backend_id']}/status-stream", until="ready")
    last = events[-1][0]
    a.proc.send_signal(signal.SIGKILL)
    b.terminate(r["backend_id"])
    rest, _ = sse_events(f"{b.url}/pub/b/{r['backend_id']}/status-stream", headers={"Last-Event-ID": last})
    order = ["scheduled", "loading", "starting", "waiting", "ready", "terminating", "hard-terminating",
             "terminated"]
    got = [s for s, _ in events] + [s for s, _ in rest]
    assert got == sorted(set(got), key=order.index)  # each once, in order
    assert got[-1] == "terminated" and rest[0][1]["status"] == "terminating"


def test_postgres_down_is_503_and_service_resumes(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, db=pg_database()).start()
    Drone(procs, tmp_path, ctrl, "dr-pg").start()
    b = ctrl.connect("before").json()["backend_id"]
    ctrl.wait_status(b, "ready")
    subprocess.run([os.path.join(ROOT, "scripts", "pg-up.sh"), "--stop"], check=True, cwd=ROOT)
    try:
        r = ctrl.connect("during")
        assert r.status_code == 503
        assert r.json()["kind"] == "DatabaseError"
        assert requests.get(ctrl.url + "/ctrl/status", timeout=5).status_code == 503
    finally:
        subprocess.run([os.path.join(ROOT, "scripts", "pg-up.sh")], check=True, cwd=ROOT, capture_output=True)
    r = wait_for(lambda: (lambda r: r if r.status_code == 200 else None)(ctrl.connect("after")), timeout=20,
                 what="service back")
    ctrl.wait_status(r.json()["backend_id"], "ready")
    assert ctrl.connect("before").json()["backend_id"] == b
    assert ctrl.proc.poll() is None


def test_a_status_stream_on_one_controller_follows_a_backend_run_through_another(procs, tmp_path):
    from plane_cluster import sse_events
    a, b, c = controllers(procs, tmp_path, 3, pg_database())
    Drone(procs, tmp_path, a, "dr-pg").start()
    # Scheduled through b; the drone's socket is on a; the stream is on c.
    r = b.connect("k", executable={"image": "m", "mock": {"ready_delay_ms": 300, "exit_after_ms": 800,
                                                          "exit_code": 0}}).json()
    events, _ = sse_events(f"{c.url}/pub/b/{r['backend_id']}/status-stream", timeout=20)
    statuses = [s for s, _ in events]
    assert statuses[0] == "scheduled" and statuses[-2:] == ["ready", "terminated"]
    assert statuses == sorted(statuses, key=["scheduled", "loading", "starting", "waiting", "ready",
                                             "terminating", "hard-terminating", "terminated"].index)


def test_drones_proxies_and_admin_move_to_another_controller(procs, tmp_path):
    from plane_cluster import free_port
    from test_proxy import Proxy
    from conftest import echo_exe
    a, b = controllers(procs, tmp_path, 2, pg_database())
    d = Drone(procs, tmp_path, a, "dr-pg", "--controller-url", b.url + "/", runtime="process").start()
    proxy = Proxy(procs, tmp_path, a.url, "--controller-url", b.url + "/").start()
    first = b.connect("k1", executable=echo_exe()).json()
    b.wait_status(first["backend_id"], "ready")
    assert proxy.get("/" + first["token"] + "/x").status_code == 200
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    # Both move to b: the drone takes new backends, the proxy resolves new tokens.
    second = wait_for(lambda: (lambda r: r.json() if r.status_code == 200 else None)(
        b.connect("k2", executable=echo_exe())), timeout=15, what="a drone on b")
    b.wait_status(second["backend_id"], "ready", timeout=20)
    wait_for(lambda: proxy.get("/" + second["token"] + "/y", timeout=5).status_code == 200, timeout=15,
             what="the proxy on b")
    assert "connected to controller" in d.logs()
    # plane admin skips a controller it cannot reach.
    dead = f"http://127.0.0.1:{free_port()}"
    out = subprocess.run([PLANE, "admin", "--controller", dead, "--controller", b.url, "status"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Status: ok" in out.stdout
