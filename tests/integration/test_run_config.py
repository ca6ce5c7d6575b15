# SPDX-License-Identifier: MIT
"""`plane run-config FILE.json` (spec §2.5): each component started from
Plane's config format behaves as the same component started with flags,
checked through the API; several plans run in one process; a bad file is
refused with one line that names the field, and nothing starts."""
import json
import signal
import subprocess

import pytest
import requests

from conftest import PLANE, echo_exe, wait_for
from plane_cluster import Controller, Drone, free_port, pg_database

CLUSTER = "localhost:9090"


def write_config(tmp_path, name, plan):
    path = tmp_path / f"{name}.json"
    path.write_text(plan if isinstance(plan, str) else json.dumps(plan))
    return str(path)


def run_config(procs, tmp_path, name, plan):
    """Starts `plane run-config` on plan; returns the process and its log path."""
    log = str(tmp_path / f"{name}.log")
    proc = procs.start([PLANE, "run-config", write_config(tmp_path, name, plan)], log=log)
    return proc, log


def check_fails(tmp_path, plan, *expected, status=2, name="bad"):
    """run-config on plan exits with status and one error line holding every expected part (log lines aside)."""
    r = subprocess.run([PLANE, "run-config", write_config(tmp_path, name, plan)], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == status, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.startswith("plane run-config:")]
    assert len(lines) == 1, r.stderr
    for part in expected:
        assert part in lines[0], lines[0]
    return lines[0]


def controller_plan(port, db, **extra):
    plan = {"db_url": db, "bind_addr": f"127.0.0.1:{port}", "id": "co-fromfile",
            "controller_url": f"http://localhost:{port}", "default_cluster": CLUSTER, "best_of": 2}
    plan.update(extra)
    return {"Controller": plan}


def drone_plan(ctrl_url, name, executor_config, **extra):
    plan = {"name": name, "controller_url": ctrl_url, "cluster": CLUSTER, "pool": "", "ip": "127.0.0.1",
            "executor_config": executor_config, "cleanup_min_age": None}
    plan.update(extra)
    return {"Drone": plan}


def proxy_plan(ctrl_url, name, port, **extra):
    plan = {"name": name, "controller_url": ctrl_url, "cluster": CLUSTER, "cert_path": None,
            "port_config": {"http_port": port, "https_port": None}, "acme_config": None,
            "root_redirect_url": None, "host": "127.0.0.1", "workers": 2}
    plan.update(extra)
    return {"Proxy": plan}


def wait_up(url, proc, log):
    def up():
        assert proc.poll() is None, open(log).read()
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            return False
    wait_for(up, what=url)


def connect(ctrl_url, key, executable, **spawn):
    body = {"key": {"name": key}, "spawn_config": {"executable": executable, **spawn}}
    r = requests.post(ctrl_url + "/ctrl/connect", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(ctrl_url, backend, status):
    return wait_for(lambda: requests.get(f"{ctrl_url}/pub/b/{backend}/status", timeout=5).json()["status"] == status,
                    timeout=20, what=f"{backend} {status}")


def drone_registered(ctrl_url, name):
    drones = requests.get(f"{ctrl_url}/ctrl/c/{CLUSTER}/state", timeout=5).json()["drones"]
    return any(d["node"]["name"]["Drone"] == name for d in drones)


# ---- each component, file against flags ----

def test_controller_from_file_behaves_as_from_flags(procs, tmp_path):
    fport = free_port()
    flags = Controller(procs, tmp_path, "--controller-url", f"http://localhost:{fport}", "--best-of", "2",
                       port=fport, default_cluster=CLUSTER).start()
    port = free_port()
    db = str(tmp_path / "file.db")
    proc, log = run_config(procs, tmp_path, "controller", controller_plan(port, db))
    from_file = Controller(procs, tmp_path, port=port, db=db, name="unused")  # a client of it; not started
    wait_up(from_file.url + "/pub/health", proc, log)
    assert "controller co-fromfile: listening on 127.0.0.1:%d" % port in open(log).read()

    for ctrl, name in ((flags, "dr-flags"), (from_file, "dr-file")):
        status = requests.get(ctrl.url + "/ctrl/status", timeout=5).json()
        assert status["status"] == "ok" and status["version"] == "0.5.5"
        Drone(procs, tmp_path, ctrl, name).start()
        conn = connect(ctrl.url, "k", {"image": "mock"})  # no cluster: the default one
        assert conn["drone"] == name
        # status_url is built on controller_url (localhost), not on the address it listens on.
        assert conn["status_url"].startswith(ctrl.url.replace("127.0.0.1", "localhost") + "/pub/b/")
        assert conn["url"].startswith(f"http://{CLUSTER}/")
        wait_status(ctrl.url, conn["backend_id"], "ready")
    # The drone's node row names the controller by the id the file gave it.
    assert from_file.sql("SELECT controller FROM node WHERE name = ?", "dr-file") == [("co-fromfile",)]


def test_controller_from_file_on_postgres(procs, tmp_path):
    db = pg_database()
    port = free_port()
    proc, log = run_config(procs, tmp_path, "controller", controller_plan(port, db, lost_drone_seconds=30))
    url = f"http://127.0.0.1:{port}"
    wait_up(url + "/pub/health", proc, log)
    assert requests.get(url + "/ctrl/status", timeout=5).json()["status"] == "ok"


def test_drone_from_file_behaves_as_from_flags(procs, tmp_path, executor):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    ex_flags = executor("mock", name="ex-flags")
    ex_file = executor("mock", name="ex-file")
    Drone(procs, tmp_path, ctrl, "dr-flags", "--executor-socket", ex_flags.socket, "--pool", "one",
          runtime="executor").start()
    proc, log = run_config(procs, tmp_path, "drone", drone_plan(
        ctrl.url + "/", "dr-file", {"unix_socket": {"socket_path": ex_file.socket}}, pool="two",
        db_path=str(tmp_path / "dr-file.db")))
    wait_for(lambda: proc.poll() is None and drone_registered(ctrl.url, "dr-file"), what="dr-file registered")
    wait_for(lambda: ctrl.sql("SELECT last_local_time FROM drone JOIN node USING(id) WHERE name = ?",
                              "dr-file")[0][0] is not None, what="first heartbeat")
    for pool, name in (("one", "dr-flags"), ("two", "dr-file")):
        conn = connect(ctrl.url, "k-" + pool, {"image": "mock"}, pool=pool)
        assert conn["drone"] == name
        wait_status(ctrl.url, conn["backend_id"], "ready")
        assert ctrl.terminate(conn["backend_id"]).status_code == 200
        wait_status(ctrl.url, conn["backend_id"], "terminated")
    # The file's drone keeps its state where db_path says.
    assert (tmp_path / "dr-file.db").exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_proxy_from_file_behaves_as_from_flags(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    Drone(procs, tmp_path, ctrl, "dr-proxy", runtime="process").start()
    flags_port, file_port = free_port(), free_port()
    flags = procs.start([PLANE, "proxy", "--controller-url", ctrl.url + "/", "--cluster", CLUSTER, "--name", "px-flags",
                 "--host", "127.0.0.1", "--workers", "2", "--http-port", str(flags_port),
                 "--root-redirect-url", "https://example.com/home"], log=str(tmp_path / "px-flags.log"))
    proc, log = run_config(procs, tmp_path, "proxy", proxy_plan(
        [ctrl.url + "/"], "px-file", file_port, root_redirect_url="https://example.com/home"))
    wait_up(f"http://127.0.0.1:{flags_port}/ready", flags, str(tmp_path / "px-flags.log"))
    wait_up(f"http://127.0.0.1:{file_port}/ready", proc, log)
    conn = connect(ctrl.url, "echo", echo_exe())
    wait_status(ctrl.url, conn["backend_id"], "ready")
    answers = []
    for port in (flags_port, file_port):
        base = f"http://127.0.0.1:{port}"
        r = requests.get(f"{base}/{conn['token']}/hello?x=1", headers={"Host": CLUSTER}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["x-plane-backend-id"] == conn["backend_id"]
        root = requests.get(base + "/", headers={"Host": CLUSTER}, allow_redirects=False, timeout=5)
        answers.append((r.status_code, json.loads(r.text)["path"] if r.text.startswith("{") else r.text,
                        root.status_code, root.headers.get("location")))
    assert answers[0] == answers[1]
    assert answers[1][2:] == (301, "https://example.com/home")


# ---- several plans in one process ----

def test_controller_drone_and_proxy_in_one_process(procs, tmp_path):
    cport, pport = free_port(), free_port()
    ctrl_url = f"http://127.0.0.1:{cport}"
    plans = [
        controller_plan(cport, str(tmp_path / "all.db")),
        drone_plan(ctrl_url + "/", "dr-all", {"process": {"data_dir": str(tmp_path / "backends")}},
                   db_path=str(tmp_path / "drone.db")),
        proxy_plan(ctrl_url + "/", "px-all", pport),
    ]
    proc, log = run_config(procs, tmp_path, "all", plans)
    wait_up(ctrl_url + "/pub/health", proc, log)
    wait_for(lambda: drone_registered(ctrl_url, "dr-all"), what="drone registered")
    wait_up(f"http://127.0.0.1:{pport}/ready", proc, log)
    conn = wait_for(lambda: (lambda r: r.json() if r.status_code == 200 else None)(requests.post(
        ctrl_url + "/ctrl/connect", json={"key": {"name": "all"}, "spawn_config": {"executable": echo_exe()}},
        timeout=10)), what="a drone to schedule on")
    assert conn["drone"] == "dr-all"
    wait_status(ctrl_url, conn["backend_id"], "ready")
    r = requests.get(f"http://127.0.0.1:{pport}/{conn['token']}/x", headers={"Host": CLUSTER}, timeout=10)
    assert r.status_code == 200 and r.headers["x-plane-backend-id"] == conn["backend_id"]
    assert "3 components started" in open(log).read()
    # One signal stops everything, backends included.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_a_component_that_cannot_start_stops_the_others(procs, tmp_path):
    cport = free_port()
    busy = free_port()
    blocker = procs.start([PLANE, "controller", "--db", str(tmp_path / "b.db"), "--port", str(busy)])
    wait_up(f"http://127.0.0.1:{busy}/pub/health", blocker, "/dev/null")
    plans = [controller_plan(cport, str(tmp_path / "x.db")),
             proxy_plan(f"http://127.0.0.1:{cport}/", "px-busy", busy)]
    check_fails(tmp_path, plans, "[1].Proxy:", f"port {busy}", status=1)


# ---- Dns ----

def test_dns_from_file_answers_as_from_flags(procs, tmp_path):
    from test_dns import CLUSTER as DNS_CLUSTER, Dns, FakeProxy, dig
    ctrl = Controller(procs, tmp_path).start()
    flags = Dns(procs, tmp_path, ctrl.url + "/", name="ns-flags").start()
    port = free_port()
    proc, log = run_config(procs, tmp_path, "dns", {"Dns": {
        "name": "ns-file", "controller_url": ctrl.url + "/", "port": port, "zone": None, "host": "127.0.0.1"}})
    flags.wait_linked()
    wait_for(lambda: proc.poll() is None and "connected to controller" in open(log).read(), what="dns linked")
    name = "_acme-challenge." + DNS_CLUSTER
    assert dig(port, "www.example.com")[0] == dig(flags.port, "www.example.com")[0] == "REFUSED"
    assert dig(port, name)[:2] == dig(flags.port, name)[:2] == ("NOERROR", [])
    px = FakeProxy(ctrl, "px-dns")
    assert px.lease() and px.set_txt("value-from-the-proxy")
    wanted = '"value-from-the-proxy"'
    wait_for(lambda: [a[4] for a in dig(port, name)[1]] == [wanted], what="the TXT value from the file's server")
    assert [a[4] for a in dig(flags.port, name)[1]] == [wanted]


# ---- bad files ----

GOOD_DRONE = drone_plan("http://127.0.0.1:1/", "dr-x", {"docker": {}})["Drone"]
GOOD_PROXY = proxy_plan("http://127.0.0.1:1/", "px-x", 1)["Proxy"]
GOOD_CONTROLLER = controller_plan(1, "/nonexistent/x.db")["Controller"]


def changed(kind, base, **change):
    plan = dict(base)
    for k, v in change.items():
        if v is ...:
            plan.pop(k, None)
        else:
            plan[k] = v
    return {kind: plan}


BAD = [
    ("syntax", '{"Drone": {', "line 1"),
    ("duplicate key", '{"Drone": {"name": "dr-a", "name": "dr-b"}}', "duplicate"),
    ("not a plan", '"Drone"', "expected one of"),
    ("two plans in one object", {"Drone": {}, "Proxy": {}}, "expected one of"),
    ("unknown plan", {"Drones": {}}, "Drones: unknown plan"),
    ("empty array", [], "empty array"),
    ("dns among others", [{"Controller": GOOD_CONTROLLER}, {"Dns": {
        "name": "ns-a", "controller_url": "http://127.0.0.1:1/", "port": 53}}], "[1].Dns: a Dns plan runs alone"),
    ("controller unknown field", changed("Controller", GOOD_CONTROLLER, best_off=3),
     "Controller: unknown field 'best_off'"),
    ("controller best_of missing", changed("Controller", GOOD_CONTROLLER, best_of=...), "Controller.best_of: required"),
    ("controller best_of 0", changed("Controller", GOOD_CONTROLLER, best_of=0), "Controller.best_of: 0 is out of range"),
    ("controller best_of string", changed("Controller", GOOD_CONTROLLER, best_of="2"),
     "Controller.best_of: expected an integer"),
    ("controller bind_addr", changed("Controller", GOOD_CONTROLLER, bind_addr="localhost:80"),
     "Controller.bind_addr: 'localhost:80' is not IP:PORT"),
    ("controller id", changed("Controller", GOOD_CONTROLLER, id="dr-x"), "Controller.id: invalid name"),
    ("controller url", changed("Controller", GOOD_CONTROLLER, controller_url="nope"),
     "Controller.controller_url: invalid URL"),
    ("controller cluster", changed("Controller", GOOD_CONTROLLER, default_cluster="a b"),
     "Controller.default_cluster: invalid cluster name"),
    ("controller forward_auth", changed("Controller", GOOD_CONTROLLER, forward_auth="https://auth.example/"),
     "Controller.forward_auth: must be an http:// URL"),
    ("controller lost drones", changed("Controller", GOOD_CONTROLLER, lost_drone_seconds=5),
     "Controller.lost_drone_seconds: must be 0 or at least 10"),
    ("drone name", changed("Drone", GOOD_DRONE, name="px-a"), "Drone.name: invalid name 'px-a'"),
    ("drone pool missing", changed("Drone", GOOD_DRONE, pool=...), "Drone.pool: required"),
    ("drone ip hostname", changed("Drone", GOOD_DRONE, ip="localhost"), "Drone.ip: 'localhost' is not an IP"),
    ("drone no executor", changed("Drone", GOOD_DRONE, executor_config=...), "Drone: exactly one of"),
    ("drone both executors", changed("Drone", GOOD_DRONE, docker_config={}), "Drone: exactly one of"),
    ("drone executor kind", changed("Drone", GOOD_DRONE, executor_config={"podman": {}}),
     "Drone.executor_config: unknown executor 'podman'"),
    ("drone two executors", changed("Drone", GOOD_DRONE, executor_config={"docker": {}, "mock": {}}),
     "Drone.executor_config: expected one of"),
    ("drone docker field", changed("Drone", GOOD_DRONE, executor_config={"docker": {"runtime": 1}}),
     "Drone.executor_config.docker.runtime: expected a string"),
    ("drone docker unknown", changed("Drone", GOOD_DRONE, docker_config={"mount": "/x"}, executor_config=...),
     "Drone.docker_config: unknown field 'mount'"),
    ("drone log_config", changed("Drone", GOOD_DRONE, executor_config={"docker": {"log_config": {
        "Type": "json-file", "Config": {"max-size": 10}}}}),
     "Drone.executor_config.docker.log_config.Config.max-size: expected a string"),
    ("drone cleanup age", changed("Drone", GOOD_DRONE, cleanup_min_age=-1), "Drone.cleanup_min_age: -1 is out of range"),
    ("drone socket path", changed("Drone", GOOD_DRONE, executor_config={"unix_socket": {}}),
     "Drone.executor_config.unix_socket.socket_path: required"),
    ("drone controller url", changed("Drone", GOOD_DRONE, controller_url="ftp://x/"),
     "Drone.controller_url: invalid --controller-url 'ftp://x/'"),
    ("drone controller url missing", changed("Drone", GOOD_DRONE, controller_url=...),
     "Drone.controller_url: required"),
    ("drone mock port", changed("Drone", GOOD_DRONE, executor_config={"mock": {"port": 70000}}),
     "Drone.executor_config.mock.port: 70000 is out of range"),
    ("proxy port_config missing", changed("Proxy", GOOD_PROXY, port_config=...), "Proxy.port_config: required"),
    ("proxy http_port", changed("Proxy", GOOD_PROXY, port_config={"http_port": 0}),
     "Proxy.port_config.http_port: 0 is out of range"),
    ("proxy port unknown", changed("Proxy", GOOD_PROXY, port_config={"http_port": 1, "https": 2}),
     "Proxy.port_config: unknown field 'https'"),
    ("proxy https without cert", changed("Proxy", GOOD_PROXY, port_config={"http_port": 1, "https_port": 2}),
     "Proxy.cert_path: required with port_config.https_port unless acme_config"),
    ("proxy cluster", changed("Proxy", GOOD_PROXY, cluster=""), "Proxy.cluster: invalid cluster name"),
    ("proxy redirect", changed("Proxy", GOOD_PROXY, root_redirect_url="example.com"),
     "Proxy.root_redirect_url: invalid URL"),
    ("proxy acme email", changed("Proxy", GOOD_PROXY, acme_config={"endpoint": "https://acme.example/dir"}),
     "Proxy.acme_config.mailto_email: required"),
    ("proxy eab key", changed("Proxy", GOOD_PROXY, acme_config={
        "endpoint": "https://acme.example/dir", "mailto_email": "a@example.com",
        "acme_eab_keypair": {"key_id": "k", "key": "not base64!"}}),
     "Proxy.acme_config.acme_eab_keypair.key: not base64url"),
    ("proxy workers", changed("Proxy", GOOD_PROXY, workers=0), "Proxy.workers: 0 is out of range"),
    ("proxy io", changed("Proxy", GOOD_PROXY, io="bogus"), "Proxy.io: 'bogus' is not uring or epoll"),
    ("dns port", {"Dns": {"name": "ns-a", "controller_url": "http://127.0.0.1:1/", "port": 0}},
     "Dns.port: 0 is out of range"),
    ("dns name", {"Dns": {"name": "dns-a", "controller_url": "http://127.0.0.1:1/", "port": 53}},
     "Dns.name: invalid name"),
    ("array element", [{"Controller": GOOD_CONTROLLER}, changed("Proxy", GOOD_PROXY, name=5)],
     "[1].Proxy.name: expected a string"),
]


@pytest.mark.parametrize("what,plan,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_file_is_refused_naming_the_field(tmp_path, what, plan, expected):
    check_fails(tmp_path, plan, expected)


def test_file_name_and_reading(tmp_path):
    r = subprocess.run([PLANE, "run-config", str(tmp_path / "config.yaml")], capture_output=True, text=True)
    assert r.returncode == 2 and "must end in .json" in r.stderr
    r = subprocess.run([PLANE, "run-config", str(tmp_path / "missing.json")], capture_output=True, text=True)
    assert r.returncode == 2 and "missing.json: cannot open" in r.stderr
    r = subprocess.run([PLANE, "run-config"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage: plane run-config FILE.json" in r.stderr
