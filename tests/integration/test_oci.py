# SPDX-License-Identifier: MIT
"""The oci runtime on a real crun: `plane executor --runtime oci` driven over
the executor protocol, and a controller + drone + proxy with it. Root
filesystems come from the test image plane-test-echo:1 (scripts/docker-up.sh)
through the Docker Engine API, or from a directory. Limits are read back from
the backend's cgroup; every process, cgroup and file a test makes lives under
its tmp_path or dies with the executor/drone the procs fixture stops."""
import json
import os
import shutil
import signal
import socket
import time

import pytest
import requests

from conftest import DOCKER_TEST_IMAGE, ECHO, check_backend_env, wait_for
from plane_cluster import Controller, Drone
from test_docker import _engine_ready
from test_proxy import Proxy

CLUSTER = "localhost:9090"

pytestmark = pytest.mark.skipif(shutil.which("crun") is None,
                                reason="crun is not installed (scripts/install-deps.sh installs it)")
needs_engine = pytest.mark.skipif(not _engine_ready(),
                                  reason="no Docker Engine with plane-test-echo:1 (scripts/docker-up.sh)")


def oci_exe(**env):
    return {"image": DOCKER_TEST_IMAGE, "env": {k: str(v) for k, v in env.items()}}


def addr(port):
    return f"127.0.0.1:{port}"


def cgroup_dir(pid, controller):
    """The directory of pid's cgroup for a v1 controller (or the v2 group)."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctls, path = line.rstrip("\n").split(":", 2)
            if controller in ctls.split(","):
                return f"/sys/fs/cgroup/{controller}{path}"
            if ctls == "" and not os.path.exists("/sys/fs/cgroup/memory"):
                return f"/sys/fs/cgroup{path}"
    raise AssertionError(f"pid {pid} has no {controller} cgroup")


def read(path):
    with open(path) as f:
        return f.read().strip()


def answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def oci_executor(executor):
    def make(*extra, name="ex"):
        return executor("oci", *extra, name=name)
    return make


@needs_engine
def test_oci_full_cycle(oci_executor):
    ex = oci_executor()
    c = ex.client()
    assert c.prepare(oci_exe()) == {"Ok": None}
    res = c.spawn("b1", oci_exe(GREETING="hi", PORT="1", SESSION_BACKEND_ID="spoofed"), static_token="s.static")
    port, leader = res["Ok"]["port"], int(res["Ok"]["container_id"])
    assert c.wait_ready("b1", addr(port)) == {"Ok": None}

    body = requests.get(f"http://127.0.0.1:{port}/x", timeout=5).json()
    assert body["pid"] == 1  # its own pid namespace
    check_backend_env(body["env"], port, "b1", GREETING="hi")
    assert body["env"]["PATH"].startswith("/usr/local/sbin")

    # crun leads, the container runs beside it in the backend's cgroup.
    assert os.path.basename(read(f"/proc/{leader}/cmdline").split("\0")[0]) == "crun"
    procs = read(cgroup_dir(leader, "memory") + "/cgroup.procs").split()
    assert len(procs) == 2 and str(leader) in procs
    bundle = os.path.join(ex.data_dir, "oci", "bundles", "b1", "config.json")
    config = json.load(open(bundle))
    assert config["root"]["readonly"] is True
    assert {m["destination"] for m in config["mounts"]} >= {"/proc", "/dev", "/tmp"}
    images = os.listdir(os.path.join(ex.data_dir, "oci", "images"))
    assert len(images) == 1 and len(images[0]) == 64  # one root per image id

    assert c.terminate("b1") == {"Ok": True}
    assert c.exit_of("b1") == 0  # SIGTERM reached the container: the echo backend exits 0
    assert not os.path.exists(bundle)
    assert os.listdir(os.path.join(ex.data_dir, "oci", "state")) == []
    assert c.terminate("b1") == {"Ok": False}  # already gone is not an error
    assert c.terminate("b1", hard=True) == {"Ok": False}

    # The same image again: the cached root, no second export.
    assert c.prepare(oci_exe()) == {"Ok": None}
    assert os.listdir(os.path.join(ex.data_dir, "oci", "images")) == images


@needs_engine
def test_oci_terminate_hard_soft_and_exit_codes(oci_executor):
    c = oci_executor("--grace-period", "1").client()
    assert c.prepare(oci_exe()) == {"Ok": None}
    ports = {}
    for b in ("hard", "soft"):
        ports[b] = c.spawn(b, oci_exe(ECHO_IGNORE_SIGTERM=1))["Ok"]["port"]
        assert c.wait_ready(b, addr(ports[b])) == {"Ok": None}
    c.spawn("quits", oci_exe(ECHO_EXIT_AFTER_MS=300, ECHO_EXIT_CODE=3))
    assert c.exit_of("quits") == 3  # its own exit code, through crun

    assert c.terminate("hard", hard=True) == {"Ok": True}
    assert c.exit_of("hard") == 137
    t0 = time.time()
    assert c.terminate("soft") == {"Ok": True}
    assert c.exit_of("soft") == 137  # SIGTERM ignored: SIGKILL after the grace period
    assert time.time() - t0 >= 0.9
    assert not answers(ports["hard"]) and not answers(ports["soft"])


@needs_engine
def test_oci_limits_are_in_the_cgroup_and_metrics(oci_executor):
    c = oci_executor("--metrics-interval", "0.5").client()
    exe = oci_exe()
    exe["resource_limits"] = {"memory_limit_bytes": 64 << 20, "cpu_period_percent": 50, "cpu_period": 200000}
    assert c.prepare(exe) == {"Ok": None}
    res = c.spawn("lim", exe)["Ok"]
    assert c.wait_ready("lim", addr(res["port"])) == {"Ok": None}
    leader = int(res["container_id"])
    mem = cgroup_dir(leader, "memory")
    if os.path.exists(mem + "/memory.limit_in_bytes"):
        assert int(read(mem + "/memory.limit_in_bytes")) == 64 << 20
        cpu = cgroup_dir(leader, "cpu")
        assert int(read(cpu + "/cpu.cfs_period_us")) == 200000
        assert int(read(cpu + "/cpu.cfs_quota_us")) == 100000
    else:
        assert int(read(mem + "/memory.max")) == 64 << 20
        assert read(mem + "/cpu.max") == "100000 200000"
    # The container's own process is in it too, not only crun.
    pids = read(mem + "/cgroup.procs").split()
    assert len(pids) == 2
    m = c.next_event("MetricsMessage", timeout=10, match=lambda m: m["backend_id"] == "lim")
    assert m["mem_limit"] == 64 << 20
    assert 0 < m["mem_used"] < 64 << 20
    assert c.terminate("lim", hard=True) == {"Ok": True}
    assert c.exit_of("lim") == 137
    wait_for(lambda: not os.path.exists(mem), timeout=5, what="the backend's cgroup removed")


def test_oci_rootfs_directory_and_bad_executables(oci_executor, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ECHO, root / "echo_backend")
    c = oci_executor().client()
    exe = {"rootfs": str(root), "command": ["/echo_backend"], "cwd": "/"}
    assert c.prepare(exe) == {"Ok": None}
    port = c.spawn("dir", exe)["Ok"]["port"]
    assert c.wait_ready("dir", addr(port)) == {"Ok": None}
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).json()["pid"] == 1
    assert c.terminate("dir") == {"Ok": True}
    assert c.exit_of("dir") == 0

    def err(result):
        assert "Err" in result, result
        return result["Err"]
    assert "exactly one of" in err(c.prepare({"image": DOCKER_TEST_IMAGE, "rootfs": str(root)}))
    assert "exactly one of" in err(c.prepare({"command": ["/x"]}))
    assert "not a directory" in err(c.prepare({"rootfs": str(root / "echo_backend")}))
    assert "must be an absolute path" in err(c.prepare({"rootfs": "relative"}))
    assert "image reference" in err(c.prepare({"image": "bad image"}))
    assert "non-empty array" in err(c.prepare({"rootfs": str(root), "command": []}))
    assert "executable.env" in err(c.prepare({"rootfs": str(root), "env": {"A": 1}}))
    assert "disk_limit_bytes" in err(c.prepare({"rootfs": str(root), "resource_limits": {"disk_limit_bytes": 1}}))
    assert "no command" in err(c.spawn("nocmd", {"rootfs": str(root)}))
    assert "was not prepared here" in err(c.spawn("unprepared", {"image": "never-prepared:1"}))
    assert "not running" in err(c.wait_ready("nocmd", addr(1)))["Other"]
    assert os.listdir(os.path.join(tmp_path, "ex-data", "oci", "bundles")) == []


@needs_engine
def test_oci_missing_image_is_a_clear_error(oci_executor):
    c = oci_executor().client()
    err = c.prepare(oci_exe() | {"image": "plane-test-missing:1"})["Err"]
    assert "not present on the Docker Engine" in err


def test_oci_without_crun_fails_at_start(executor, tmp_path):
    with pytest.raises(AssertionError):
        executor("oci", "--oci-runtime", str(tmp_path / "no-crun"))
    assert "cannot find" in open(tmp_path / "ex.log").read()


@pytest.fixture
def oci_cluster(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    drone = Drone(procs, tmp_path, ctrl, "dr-oci", "--grace-period", "2", runtime="oci").start()
    proxy = Proxy(procs, tmp_path, ctrl.url).start()
    return ctrl, drone, proxy


@needs_engine
def test_oci_through_the_proxy_and_a_drone_restart(procs, tmp_path, oci_cluster):
    ctrl, drone, proxy = oci_cluster
    r = ctrl.connect("oci-key", executable=oci_exe(GREETING="through"))
    assert r.status_code == 200, r.text
    conn = r.json()
    ctrl.wait_status(conn["backend_id"], "ready")
    got = proxy.get("/" + conn["token"] + "/hello")
    assert got.status_code == 200
    assert got.json()["env"]["GREETING"] == "through"
    assert got.headers["x-plane-backend-id"] == conn["backend_id"]
    port = int(got.json()["env"]["PORT"])

    # The drone dies without a word; its container keeps serving meanwhile.
    drone.proc.send_signal(signal.SIGKILL)
    drone.proc.wait(10)
    assert answers(port)
    # Back up, it reconciles: the leftover is killed and reported, its files removed.
    Drone(procs, tmp_path, ctrl, "dr-oci", runtime="oci").start()
    ctrl.wait_status(conn["backend_id"], "terminated", timeout=30)
    wait_for(lambda: not answers(port), timeout=10, what="the leftover container gone")
    assert os.listdir(os.path.join(drone.data, "oci", "bundles")) == []
    assert os.listdir(os.path.join(drone.data, "oci", "state")) == []

    # The key is free again: a new backend, served through the proxy.
    r = ctrl.connect("oci-key", executable=oci_exe())
    conn2 = r.json()
    assert conn2["backend_id"] != conn["backend_id"]
    ctrl.wait_status(conn2["backend_id"], "ready")
    assert proxy.get("/" + conn2["token"] + "/").status_code == 200
    assert ctrl.terminate(conn2["backend_id"], hard=True).status_code == 200
    ctrl.wait_status(conn2["backend_id"], "terminated")

