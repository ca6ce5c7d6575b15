# SPDX-License-Identifier: MIT
"""Freeze on idle (spawn_config "idle": "freeze"), end to end: a controller,
a drone and the proxy on loopback, the echo backend run by each runtime that
can freeze it (process with a cgroup, process without one, oci, docker). An
idle backend is frozen, not swept, and shown as ready with "frozen": true;
the first request through the proxy thaws it and is answered; a WebSocket
held open on the backend across the freeze carries on; a connect for its key
returns it; its lifetime limit still ends it."""
import os
import shutil
import time

import pytest

from conftest import echo_exe, wait_for
from plane_cluster import Controller, Drone
from test_docker import _engine_ready, docker_exe, inspect, remove_containers
from test_proxy import Proxy
from ws_raw import WS

CLUSTER = "localhost:9090"
SWEEP_S = 5  # the controller's sweep period


def frozen_status(ctrl, backend_id, frozen=True):
    def check():
        s = ctrl.status(backend_id)
        assert s["status"] in ("ready", "waiting", "starting", "loading", "scheduled"), s
        return s if s["status"] == "ready" and bool(s.get("frozen")) == frozen else None
    return wait_for(check, timeout=SWEEP_S * 3, what=f"{backend_id} frozen={frozen}")


def pid_record(drone, backend_id):
    with open(os.path.join(drone.data, "run", backend_id + ".pid")) as f:
        pid, _start, cg = f.read().split()
    return int(pid), cg


def tasks_frozen(drone, backend_id):
    """Whether every task of the backend is stopped, as the kernel sees it."""
    pid, _ = pid_record(drone, backend_id)
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctls, path = line.rstrip("\n").split(":", 2)
            if ctls == "freezer" and path != "/":
                with open(f"/sys/fs/cgroup/freezer{path}/freezer.state") as st:
                    return st.read().strip() == "FROZEN"
            if ctls == "" and os.path.exists(f"/sys/fs/cgroup{path}/cgroup.freeze") and path != "/":
                with open(f"/sys/fs/cgroup{path}/cgroup.events") as ev:
                    return "frozen 1" in ev.read()
    with open(f"/proc/{pid}/status") as f:  # no freezer: the process group is stopped
        return any(line.startswith("State:\tT") for line in f)


def cluster(procs, tmp_path, runtime, *extra):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    drone = Drone(procs, tmp_path, ctrl, "dr-freeze", *extra, runtime=runtime).start()
    # KeepAlives more often than the 1 s idle limit, as a max-idle below 7 s needs (docs/runtimes.md).
    proxy = Proxy(procs, tmp_path, ctrl.url, "--keepalive-interval", "0.5").start()
    return ctrl, drone, proxy


def freeze_thaw_cycle(ctrl, drone, proxy, executable, is_frozen=tasks_frozen):
    r = ctrl.connect("fz", executable=executable, idle="freeze", max_idle_seconds=1)
    assert r.status_code == 200, r.text
    conn = r.json()
    b = conn["backend_id"]
    ctrl.wait_status(b, "ready", timeout=30)
    got = proxy.get("/" + conn["token"] + "/first")
    assert got.status_code == 200
    port = int(got.json()["env"]["PORT"])

    # A WebSocket straight to the backend: it does not keep the backend busy.
    ws = WS(port, "/ws")
    assert ws.status == 101
    ws.send_raw("before")
    assert ws.recv_frame() == (1, b"before")

    frozen_status(ctrl, b)
    assert is_frozen(drone, b)
    ws.send_raw("across the freeze")  # waits in the socket until the thaw
    ws.s.settimeout(30)

    # The first request through the proxy thaws it, and is answered (never an error).
    got = proxy.get("/" + conn["token"] + "/after", timeout=30)
    assert got.status_code == 200
    assert got.json()["path"] == "/after"
    assert ws.recv_frame() == (1, b"across the freeze")
    s = frozen_status(ctrl, b, frozen=False)
    assert s["status"] == "ready"
    ws.close()

    # Idle again, frozen again; a connect for its key returns it and thaws it.
    frozen_status(ctrl, b)
    r = ctrl.connect("fz", executable=executable, idle="freeze", max_idle_seconds=1)
    assert r.json()["backend_id"] == b and r.json()["spawned"] is False
    frozen_status(ctrl, b, frozen=False)

    # Terminating a frozen backend works.
    frozen_status(ctrl, b)
    assert ctrl.terminate(b).status_code == 200
    done = ctrl.wait_status(b, "terminated", timeout=30)
    assert done["termination_kind"] == "soft"
    assert "frozen" not in done


def test_freeze_process_with_a_cgroup(procs, tmp_path):
    ctrl, drone, proxy = cluster(procs, tmp_path, "process")
    exe = echo_exe()
    exe["resource_limits"] = {"memory_limit_bytes": 256 << 20}
    freeze_thaw_cycle(ctrl, drone, proxy, exe)


def test_freeze_process_without_a_cgroup_stops_the_group(procs, tmp_path):
    ctrl, drone, proxy = cluster(procs, tmp_path, "process")
    freeze_thaw_cycle(ctrl, drone, proxy, echo_exe())


@pytest.mark.skipif(shutil.which("crun") is None or not _engine_ready(),
                    reason="needs crun and the Docker Engine with plane-test-echo:1 (scripts/install-deps.sh, "
                           "scripts/docker-up.sh)")
def test_freeze_oci(procs, tmp_path):
    ctrl, drone, proxy = cluster(procs, tmp_path, "oci")
    freeze_thaw_cycle(ctrl, drone, proxy, {"image": "plane-test-echo:1"})


def test_frozen_backend_still_ends_at_its_lifetime_and_idle_default_sweeps(procs, tmp_path):
    ctrl, drone, proxy = cluster(procs, tmp_path, "process")
    r = ctrl.connect("life", executable=echo_exe(), idle="freeze", max_idle_seconds=1,
                     lifetime_limit_seconds=SWEEP_S + 2)
    life = r.json()["backend_id"]
    r = ctrl.connect("swept", executable=echo_exe(), idle="terminate", max_idle_seconds=1)
    swept = r.json()["backend_id"]
    frozen_status(ctrl, life)
    done = ctrl.wait_status(life, "terminated", timeout=SWEEP_S * 4)
    assert done["termination_reason"] == "swept"
    done = ctrl.wait_status(swept, "terminated", timeout=SWEEP_S * 3)
    assert done["termination_reason"] == "swept"
    assert "frozen" not in done
    r = ctrl.connect("bad", executable=echo_exe(), idle="sleep")
    assert r.status_code in (400, 422)
    assert "spawn_config.idle" in r.text


@pytest.mark.skipif(not _engine_ready(), reason="no Docker Engine with plane-test-echo:1 (scripts/docker-up.sh)")
def test_freeze_docker_pauses(procs, tmp_path):
    ctrl, drone, proxy = cluster(procs, tmp_path, "docker", "--docker-network", "host")
    try:
        freeze_thaw_cycle(ctrl, drone, proxy, docker_exe(), is_frozen=lambda _d, b: inspect(b)["State"]["Paused"])
    finally:
        for row in ctrl.sql("SELECT id FROM backend"):
            remove_containers("/plane-" + row[0])
