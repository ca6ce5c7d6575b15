# SPDX-License-Identifier: MIT
"""`plane admin` against a real controller and drone, and its error paths."""
import json
import subprocess

import pytest

from conftest import ECHO, PLANE
from plane_cluster import Controller, Drone


def admin(ctrl_url, *args, check=True):
    r = subprocess.run([PLANE, "admin", "--controller", ctrl_url, *args], capture_output=True, text=True,
                       timeout=30)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture
def cluster(procs, tmp_path):
    ctrl = Controller(procs, tmp_path).start()
    Drone(procs, tmp_path, ctrl, "dr-admin", runtime="process").start()
    return ctrl


def test_connect_status_terminate_drain(cluster):
    out = admin(cluster.url, "connect", "--key", "a1", "--", ECHO).stdout.splitlines()
    assert out[0].startswith("Created backend: ")
    backend = out[0].split(": ")[1]
    assert out[1].startswith("URL: http://localhost:9090/")
    assert out[2] == f"Status URL: {cluster.url}/pub/b/{backend}/status"
    assert out[3] == "Drone: dr-admin"
    assert [l.split()[1] for l in out[4:]] == ["scheduled", "loading", "starting", "waiting", "ready"]
    again = admin(cluster.url, "connect", "--key", "a1", "--immediate", "--command", "true").stdout.splitlines()
    assert again[0] == f"Reusing backend: {backend}"
    j = json.loads(admin(cluster.url, "--json", "connect", "--key", "a1", "--immediate", "--image", "x").stdout)
    assert j["backend_id"] == backend and j["spawned"] is False

    st = admin(cluster.url, "status").stdout.splitlines()
    assert st[0] == "Status: ok" and st[1].startswith("Version: 0.5.5 (client: 0.5.5)")
    state = json.loads(admin(cluster.url, "cluster-state", "localhost:9090").stdout)
    assert state["drones"][0]["backend_count"] == 1

    out = admin(cluster.url, "terminate", backend).stdout.splitlines()
    assert out[0] == f"Sent termination signal {backend}"
    assert out[-1].startswith("Status: terminated at ")
    follow = admin(cluster.url, "backend-status", backend).stdout.splitlines()
    assert follow[-1].startswith("Status: terminated")

    assert admin(cluster.url, "drain", "--cluster", "localhost:9090", "--drone", "dr-admin").stdout == \
        "Drone dr-admin draining initiated.\n"
    assert admin(cluster.url, "drain", "--cluster", "localhost:9090", "--drone", "dr-admin").stdout == \
        "Drone dr-admin was already draining.\n"


def test_errors_are_one_line_and_exit_1(cluster):
    r = admin(cluster.url, "terminate", "nope", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Backend does not exist" in r.stderr
    r = admin(cluster.url, "drain", "--cluster", "localhost:9090", "--drone", "dr-nope", check=False)
    assert r.returncode == 1 and "Drone does not exist" in r.stderr
    r = admin(cluster.url, "connect", "--key", "x", "--cluster", "empty:1", "--image", "i", check=False)
    assert r.returncode == 1 and "No active drone available" in r.stderr
    r = admin("http://127.0.0.1:1", "status", check=False)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "cannot reach the controller" in r.stderr
    r = admin(cluster.url, "connect", check=False)
    assert r.returncode == 1
    r = admin(cluster.url, "frobnicate", check=False)
    assert r.returncode == 2


def test_json_logs_and_levels(procs, tmp_path):
    """PLANE_LOG_JSON=1 gives one JSON object per line; PLANE_LOG=warn hides info lines."""
    import os
    import time
    from plane_cluster import free_port
    port = free_port()
    env = dict(os.environ, PLANE_LOG_JSON="1")
    p = subprocess.Popen([PLANE, "controller", "--db", str(tmp_path / "j.db"), "--port", str(port)],
                         stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(0.5)
    p.terminate()
    _, err = p.communicate(timeout=10)
    lines = [json.loads(l) for l in err.splitlines() if l.strip()]
    assert lines and all(set(l) == {"time", "level", "component", "message"} for l in lines)
    assert any("listening on" in l["message"] for l in lines)
    env = dict(os.environ, PLANE_LOG="warn")
    p = subprocess.Popen([PLANE, "controller", "--db", str(tmp_path / "k.db"), "--port", str(port)],
                         stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(0.5)
    p.terminate()
    _, err = p.communicate(timeout=10)
    assert "listening on" not in err


def test_drone_metrics(procs, tmp_path):
    from plane_cluster import free_port
    import requests
    ctrl = Controller(procs, tmp_path).start()
    mport = free_port()
    Drone(procs, tmp_path, ctrl, "dr-metrics", "--metrics-port", str(mport)).start()
    b = ctrl.connect("dm").json()["backend_id"]
    ctrl.wait_status(b, "ready")
    text = requests.get(f"http://127.0.0.1:{mport}/metrics", timeout=5).text
    assert 'plane_drone_backends{status="ready"} 1' in text
    assert 'plane_drone_runtime_operations_total{op="spawn",result="ok"} 1' in text
    assert "plane_drone_runtime_spawn_seconds_count 1" in text
    assert "plane_drone_connected 1" in text
