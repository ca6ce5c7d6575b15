# SPDX-License-Identifier: MIT
"""`plane executor --runtime docker --docker-network host` against a real
Docker Engine (scripts/docker-up.sh starts it and builds plane-test-echo:1),
driven over the executor socket by the spec's client. Checks are made with
the Engine API directly. Every container a test creates is removed when the
test ends, pass or fail; the tests skip when no engine answers."""
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest
import requests

from conftest import DOCKER_TEST_IMAGE, ROOT, check_backend_env, docker_exe, wait_for

SOCK = "/var/run/docker.sock"
DOCKERD_PID = os.path.join(ROOT, "build", "dockerd.pid")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, timeout):
        super().__init__("localhost", timeout=timeout)

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(SOCK)
        self.sock = s


def api(method, path, body=None, timeout=30, headers=None):
    """(status, decoded JSON or raw bytes) of one Engine API call."""
    c = _UnixConnection(timeout)
    try:
        c.request(method, "/v1.41" + path, body=None if body is None else json.dumps(body),
                  headers={"Content-Type": "application/json", **(headers or {})})
        r = c.getresponse()
        data = r.read()
        try:
            return r.status, json.loads(data) if data else None
        except ValueError:
            return r.status, data
    finally:
        c.close()


def _engine_ready():
    try:
        return api("GET", "/_ping", timeout=2)[0] == 200 and \
            api("GET", f"/images/{DOCKER_TEST_IMAGE}/json", timeout=5)[0] == 200
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _engine_ready(),
                                reason="no Docker Engine with plane-test-echo:1 (scripts/docker-up.sh)")


def inspect(backend):
    status, info = api("GET", f"/containers/plane-{backend}/json")
    return info if status == 200 else None


def running(backend):
    info = inspect(backend)
    return bool(info and info["State"]["Running"])


def addr(port):
    return f"127.0.0.1:{port}"


def remove_containers(name_prefix):
    try:
        status, containers = api("GET", "/containers/json?all=1")
        for c in containers if status == 200 else []:
            if any(n.startswith(name_prefix) for n in c["Names"]):
                api("DELETE", f"/containers/{c['Id']}?force=1")
    except OSError:
        pass  # no engine: nothing to remove


@pytest.fixture(scope="module", autouse=True)
def leftovers():
    """What an earlier, killed run of this module left."""
    remove_containers("/plane-it")
    yield


@pytest.fixture
def ids():
    """Backend ids unique to the test; their containers are removed at the end."""
    prefix = "it" + uuid.uuid4().hex[:6] + "-"
    yield lambda name: prefix + name
    remove_containers("/plane-" + prefix)


@pytest.fixture
def docker_executor(executor):
    def make(*extra, name="ex"):
        return executor("docker", "--docker-network", "host", *extra, name=name)
    return make


def test_docker_full_cycle(docker_executor, ids):
    ex = docker_executor()
    c = ex.client()
    assert c.prepare(docker_exe()) == {"Ok": None}
    b = ids("b1")
    res = c.spawn(b, docker_exe(GREETING="hi", PORT="1", SESSION_BACKEND_ID="spoofed"), static_token="s.static")
    port, cid = res["Ok"]["port"], res["Ok"]["container_id"]
    assert 30000 <= port < 32000
    assert c.wait_ready(b, addr(port)) == {"Ok": None}

    env = requests.get(f"http://127.0.0.1:{port}/x", timeout=5).json()["env"]
    check_backend_env(env, port, b, GREETING="hi")

    status, info = api("GET", f"/containers/{cid}/json")
    assert status == 200
    assert info["Name"] == "/plane-" + b
    assert info["Config"]["Labels"]["dev.plane.backend"] == "true"
    assert info["Config"]["Labels"]["dev.plane.backend.id"] == b
    assert info["Config"]["Image"] == DOCKER_TEST_IMAGE
    assert f"SESSION_BACKEND_ID={b}" in info["Config"]["Env"]
    assert info["HostConfig"]["NetworkMode"] == "host"

    assert c.terminate(b) == {"Ok": True}
    assert c.exit_of(b) == 0  # SIGTERM: the echo backend exits 0
    assert not running(b)
    assert c.terminate(b) == {"Ok": False}  # already gone is not an error
    assert c.terminate(b, hard=True) == {"Ok": False}
    with pytest.raises(AssertionError):
        c.exit_of(b, timeout=0.5)  # reported once


def test_docker_hard_terminate_of_a_sigterm_ignoring_container(docker_executor, ids):
    c = docker_executor().client()
    b = ids("stubborn")
    port = c.spawn(b, docker_exe(ECHO_IGNORE_SIGTERM=1))["Ok"]["port"]
    assert c.wait_ready(b, addr(port)) == {"Ok": None}
    t0 = time.time()
    assert c.terminate(b, hard=True) == {"Ok": True}
    assert c.exit_of(b) == 137
    assert time.time() - t0 < 5


def test_docker_soft_terminate_kills_after_the_grace_period(docker_executor, ids):
    c = docker_executor("--grace-period", "1").client()
    b = ids("stubborn")
    port = c.spawn(b, docker_exe(ECHO_IGNORE_SIGTERM=1))["Ok"]["port"]
    assert c.wait_ready(b, addr(port)) == {"Ok": None}
    t0 = time.time()
    assert c.terminate(b) == {"Ok": True}
    assert c.exit_of(b) == 137
    assert time.time() - t0 >= 0.9


def test_docker_container_exits_on_its_own(docker_executor, ids):
    c = docker_executor().client()
    b = ids("quits")
    c.spawn(b, docker_exe(ECHO_EXIT_AFTER_MS=300, ECHO_EXIT_CODE=3))
    assert c.exit_of(b) == 3
    assert c.terminate(b) == {"Ok": False}


def test_docker_missing_image_is_a_clear_error(docker_executor, ids):
    c = docker_executor().client()
    missing = "plane-test-missing:1"
    err = c.prepare(docker_exe(image=missing))["Err"]
    assert "not present and pull_policy is Never" in err
    # Pulls name a registry on a closed loopback port, so the engine's attempt stays on this machine.
    unreachable = "127.0.0.1:9/" + missing
    t0 = time.time()
    err = c.prepare(docker_exe(image=unreachable, pull_policy="IfNotPresent"))["Err"]
    assert f"cannot pull image '{unreachable}'" in err
    err = c.prepare(docker_exe(image=unreachable, pull_policy="Always"))["Err"]
    assert f"cannot pull image '{unreachable}'" in err
    assert time.time() - t0 < 20  # no registry: an error, not a hang
    err = c.spawn(ids("b1"), docker_exe(image=missing))["Err"]
    assert f"image '{missing}' is not present" in err
    assert "Err" in c.prepare({"image": "bad image name"})


def test_docker_memory_limit_and_metrics(docker_executor, ids):
    c = docker_executor("--metrics-interval", "1").client()
    b = ids("lim")
    exe = docker_exe()
    exe["resource_limits"] = {"memory_limit_bytes": 64 << 20, "cpu_period_percent": 50}
    port = c.spawn(b, exe)["Ok"]["port"]
    assert c.wait_ready(b, addr(port)) == {"Ok": None}
    hc = inspect(b)["HostConfig"]
    assert hc["Memory"] == 64 << 20
    assert hc["CpuQuota"] == 50000  # 100 000 us default period x 50 %
    m = c.next_event("MetricsMessage", timeout=10, match=lambda m: m["backend_id"] == b)
    assert m["mem_limit"] == 64 << 20
    assert 0 < m["mem_used"] < 64 << 20
    assert m["sys_cpu"] > 0
    for field in ("mem_total", "mem_active", "mem_inactive", "mem_unevictable", "cpu_used"):
        assert isinstance(m[field], int)
    t0 = time.time()
    c.next_event("MetricsMessage", timeout=10, match=lambda m: m["backend_id"] == b)
    assert time.time() - t0 > 0.5  # about one a second, not every Docker sample at once


def test_docker_prune_removes_only_our_stopped_containers(docker_executor, ids):
    other = "unlabelled-" + uuid.uuid4().hex[:8]
    status, _ = api("POST", f"/containers/create?name={other}",
                    {"Image": DOCKER_TEST_IMAGE, "HostConfig": {"NetworkMode": "host"}})
    assert status == 201
    try:
        c = docker_executor("--cleanup-interval", "0.3", "--cleanup-min-age", "0").client()
        done, live = ids("done"), ids("live")
        c.spawn(done, docker_exe(ECHO_EXIT_AFTER_MS=100))
        port = c.spawn(live, docker_exe())["Ok"]["port"]
        assert c.exit_of(done) == 0
        wait_for(lambda: inspect(done) is None, timeout=5, what="our exited container pruned")
        assert c.wait_ready(live, addr(port)) == {"Ok": None}
        assert running(live)  # running: kept
        assert api("GET", f"/containers/{other}/json")[0] == 200  # not ours: kept
    finally:
        api("DELETE", f"/containers/{other}?force=1")


def test_docker_restarted_executor_adopts_running_containers(docker_executor, ids):
    ex1 = docker_executor(name="ex1")
    c1 = ex1.client()
    b = ids("keep")
    port = c1.spawn(b, docker_exe())["Ok"]["port"]
    assert c1.wait_ready(b, addr(port)) == {"Ok": None}
    c1.close()
    ex1.proc.send_signal(signal.SIGTERM)
    ex1.proc.wait(10)
    assert running(b)  # the drone's containers outlive it, as in Plane

    c2 = docker_executor(name="ex2").client()
    assert c2.wait_ready(b, addr(port)) == {"Ok": None}
    assert c2.terminate(b) == {"Ok": True}
    assert c2.exit_of(b) == 0


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_docker_exits_are_not_lost_while_dockerd_restarts(docker_executor, ids):
    if not os.path.exists(DOCKERD_PID) or not _alive(int(open(DOCKERD_PID).read())):
        pytest.skip("dockerd was not started by scripts/docker-up.sh")
    ex = docker_executor()
    c = ex.client()
    killed, stopped = ids("killed"), ids("stopped")
    for b in (killed, stopped):
        port = c.spawn(b, docker_exe())["Ok"]["port"]
        assert c.wait_ready(b, addr(port)) == {"Ok": None}
    container_pid = inspect(killed)["State"]["Pid"]
    dockerd = int(open(DOCKERD_PID).read())
    try:
        # The engine dies with no chance to say anything; a container dies while it is down.
        os.kill(dockerd, signal.SIGKILL)
        wait_for(lambda: not _alive(dockerd), timeout=10, what="dockerd gone")
        os.kill(container_pid, signal.SIGKILL)
        time.sleep(0.3)
    finally:
        # Back up again: without --live-restore it stops the containers that were still running.
        subprocess.run([os.path.join(ROOT, "scripts", "docker-up.sh"), "--no-image"], check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
    codes = {}
    deadline = time.time() + 30
    while len(codes) < 2:
        e = c.next_event("TerminateEvent", timeout=max(0.1, deadline - time.time()),
                         match=lambda e: e["backend_id"] in (killed, stopped))
        codes[e["backend_id"]] = e["exit_code"]
    assert codes[killed] == 137  # died while no engine watched; its code is still reported
    assert codes[stopped] is not None  # stopped by the engine's restore
    with pytest.raises(AssertionError):  # each reported once
        c.next_event("TerminateEvent", timeout=1, match=lambda e: e["backend_id"] in (killed, stopped))
    assert "events stream ended" in ex.logs()

    # And the runtime carries on with the new engine.
    b = ids("after")
    port = c.spawn(b, docker_exe())["Ok"]["port"]
    assert c.wait_ready(b, addr(port)) == {"Ok": None}
    assert c.terminate(b, hard=True) == {"Ok": True}
    assert c.exit_of(b) == 137


def test_docker_mounts_log_config_and_oci_runtime(docker_executor, ids, tmp_path):
    base = tmp_path / "mounts"
    log_config = {"Type": "json-file", "Config": {"max-size": "1m"}}
    c = docker_executor("--mount-base", str(base), "--log-config", json.dumps(log_config),
                        "--docker-runtime", "runc").client()
    b1 = ids("m1")
    assert "Ok" in c.spawn(b1, {**docker_exe(), "mount": True})
    hc = inspect(b1)["HostConfig"]
    assert hc["Binds"] == [f"{base}/key-{b1}:/plane-data"]  # spec 14.4: B/<key name>
    assert hc["LogConfig"] == log_config
    assert hc["Runtime"] == "runc"
    assert os.path.isdir(base / f"key-{b1}")
    b2 = ids("m2")
    assert "Ok" in c.spawn(b2, {**docker_exe(), "mount": "a/./b/"})
    assert inspect(b2)["HostConfig"]["Binds"] == [f"{base}/a/b:/plane-data"]
    b3 = ids("m3")
    assert "Ok" in c.spawn(b3, {**docker_exe(), "mount": False})
    assert not inspect(b3)["HostConfig"]["Binds"]
    for bad in ("../x", "/abs", "./x", "a/../../x"):
        err = c.spawn(ids("bad"), {**docker_exe(), "mount": bad})["Err"]
        assert "not under the mount base" in err, bad


def test_docker_bridge_network_publishes_8080_on_a_random_port(executor, ids):
    net = "plane-test-net-" + uuid.uuid4().hex[:8]
    status, _ = api("POST", "/networks/create", {"Name": net, "Driver": "bridge"})
    if status != 201:
        pytest.skip(f"cannot create a bridge network here ({status})")
    b = ids("br")
    try:
        c = executor("docker").client()  # no --docker-network: Plane's published-port behaviour
        port = c.spawn(b, {**docker_exe(), "network_name": net})["Ok"]["port"]
        info = inspect(b)
        assert info["HostConfig"]["NetworkMode"] == net
        assert info["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"] == str(port)
        assert c.wait_ready(b, addr(port)) == {"Ok": None}
        env = requests.get(f"http://127.0.0.1:{port}/", timeout=5).json()["env"]
        assert env["PORT"] == "8080"  # spec 18: always 8080 inside
        assert c.terminate(b, hard=True) == {"Ok": True}
        assert c.exit_of(b) == 137
    finally:
        api("DELETE", f"/containers/plane-{b}?force=1")
        api("DELETE", f"/networks/{net}")


REGISTRY_USER, REGISTRY_PASSWORD = "plane", "s3cret-" + uuid.uuid4().hex[:6]


@pytest.fixture
def registry(procs, tmp_path):
    """Debian's docker-registry on 127.0.0.1 with htpasswd auth; its address."""
    exe = shutil.which("docker-registry")
    if not exe:
        pytest.skip("docker-registry is not installed")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
        hashed = crypt.crypt(REGISTRY_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    (tmp_path / "htpasswd").write_text(f"{REGISTRY_USER}:{hashed}\n")
    cfg = tmp_path / "registry.yml"
    cfg.write_text(f"""version: 0.1
log: {{level: warn}}
storage: {{filesystem: {{rootdirectory: {tmp_path}/registry}}}}
http: {{addr: "127.0.0.1:{port}"}}
auth: {{htpasswd: {{realm: plane-test, path: {tmp_path}/htpasswd}}}}
""")
    procs.start([exe, "serve", str(cfg)], log=str(tmp_path / "registry.log"))

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    wait_for(up, timeout=10, what="local registry")
    return f"127.0.0.1:{port}"


def test_docker_pull_from_a_local_registry_with_credentials(docker_executor, ids, registry):
    repo = f"{registry}/plane-echo-{uuid.uuid4().hex[:6]}"
    ref = repo + ":1"
    creds = {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}
    auth = base64.urlsafe_b64encode(json.dumps({**creds, "serveraddress": registry}).encode()).decode()
    assert api("POST", f"/images/{DOCKER_TEST_IMAGE}/tag?repo={repo}&tag=1")[0] == 201
    try:
        status, out = api("POST", f"/images/{repo}/push?tag=1", headers={"X-Registry-Auth": auth}, timeout=60)
        assert status == 200 and b'"error' not in (out if isinstance(out, bytes) else json.dumps(out).encode())
        assert api("DELETE", f"/images/{ref}")[0] == 200  # only the registry has it now
        c = docker_executor().client()
        err = c.prepare({"image": ref})["Err"]  # IfNotPresent, without credentials
        assert f"cannot pull image '{ref}'" in err
        err = c.prepare({"image": ref, "credentials": {**creds, "password": "wrong"}})["Err"]
        assert f"cannot pull image '{ref}'" in err
        assert api("GET", f"/images/{ref}/json")[0] == 404
        assert c.prepare({"image": ref, "credentials": creds}) == {"Ok": None}
        assert api("GET", f"/images/{ref}/json")[0] == 200  # pulled
        assert c.prepare({"image": ref, "pull_policy": "Always", "credentials": creds}) == {"Ok": None}
        b = ids("pulled")
        port = c.spawn(b, {"image": ref, "pull_policy": "Never"})["Ok"]["port"]
        assert c.wait_ready(b, addr(port)) == {"Ok": None}
        assert c.terminate(b, hard=True) == {"Ok": True}
    finally:
        api("DELETE", f"/containers/plane-{ids('pulled')}?force=1")
        api("DELETE", f"/images/{ref}?force=1")


def test_drone_with_the_docker_runtime(procs, tmp_path):
    """The whole path: controller -> drone (docker runtime, host network) -> container -> exit reported."""
    from plane_cluster import Controller, Drone
    ctrl = Controller(procs, tmp_path).start()
    Drone(procs, tmp_path, ctrl, "dr-docker", "--docker-network", "host", "--grace-period", "2",
          runtime="docker").start()
    b = None
    try:
        r = ctrl.connect("dk1", executable=docker_exe(GREETING="hello")).json()
        b = r["backend_id"]
        ctrl.wait_status(b, "ready", timeout=60)
        address = ctrl.sql("SELECT cluster_address FROM backend WHERE id = ?", b)[0][0]
        env = requests.get(f"http://{address}/", timeout=5).json()["env"]
        assert env["SESSION_BACKEND_ID"] == b and env["SESSION_BACKEND_KEY"] == "dk1"
        assert env["GREETING"] == "hello"
        assert inspect(b)["Config"]["Labels"]["dev.plane.backend"] == "true"
        ctrl.terminate(b)
        s = ctrl.wait_status(b, "terminated", timeout=30)
        assert s["termination_reason"] == "external" and s["exit_error"] is False
    finally:
        if b:
            remove_containers(f"/plane-{b}")
