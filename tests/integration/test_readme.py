# SPDX-License-Identifier: MIT
"""The README's tour, run literally against `plane dev` (only the ports and
the data directory change), so the README cannot rot; and `plane dev`
stopping cleanly with many backends."""
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from conftest import ECHO, PLANE, ROOT, wait_for
from plane_cluster import free_port


def tour_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    blocks = re.findall(r"```sh tour\n(.*?)```", text, re.S)
    assert len(blocks) >= 2, "the README lost its tour"
    return blocks


@pytest.fixture
def dev(procs, tmp_path):
    cport, pport = free_port(), free_port()
    p = procs.start([PLANE, "dev", "--controller-port", str(cport), "--proxy-port", str(pport),
                     "--data-dir", str(tmp_path / "plane-dev")], log=str(tmp_path / "dev.log"), cwd=str(tmp_path))
    url = f"http://127.0.0.1:{cport}"

    def up():
        assert p.poll() is None, open(tmp_path / "dev.log").read()
        try:
            return requests.get(f"http://127.0.0.1:{pport}/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False
    wait_for(up, what="plane dev")
    return p, cport, pport, url


def run_tour(tmp_path, cport, pport, command=None):
    script = "set -euo pipefail\n" + "\n".join(tour_blocks())
    script = script.replace("127.0.0.1:8080", f"127.0.0.1:{cport}").replace(":9090", f":{pport}")
    script = script.replace("build/plane", PLANE).replace("python3 -c", "/usr/bin/python3 -c")
    if command:
        script = script.replace('"command":["sh","-c","exec python3 -m http.server --bind 127.0.0.1 $PORT"]',
                                f'"command":["{command}"]')
        script = script.replace("--command 'exec python3 -m http.server --bind 127.0.0.1 $PORT'",
                                f"-- {command}")
    env = dict(os.environ, PLANE_CONTROLLER=f"http://127.0.0.1:{cport}")
    r = subprocess.run(["bash", "-c", script], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_readme_tour_with_python(dev, tmp_path):
    _, cport, pport, _ = dev
    out = run_tour(tmp_path, cport, pport)
    assert "Directory listing" in out          # the Python server's page, through the proxy
    assert "Reusing backend:" in out
    assert "Status: terminated" in out
    assert '"termination_reason":"swept"' in out


def test_readme_tour_with_the_echo_backend(dev, tmp_path):
    _, cport, pport, _ = dev
    out = run_tour(tmp_path, cport, pport, command=ECHO)
    assert '"x-verified-backend"' in out       # the echo backend shows the proxy's headers
    assert '"termination_reason":"swept"' in out


def test_dev_stops_every_backend_on_ctrl_c(dev, tmp_path):
    p, cport, pport, url = dev
    s = requests.Session()
    ids = []
    for i in range(100):
        r = s.post(url + "/ctrl/connect", json={"key": {"name": f"many-{i}"},
                                                "spawn_config": {"executable": {"command": [ECHO]}}}, timeout=10)
        ids.append(r.json()["backend_id"])
    wait_for(lambda: all(s.get(f"{url}/pub/b/{b}/status", timeout=5).json()["status"] == "ready" for b in ids),
             timeout=60, what="100 backends ready")
    pids = [int(x) for x in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()]
    assert len(pids) >= 100
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    p.wait(30)
    assert time.time() - t0 < 30  # within the grace period
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and
             open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert alive == []
    # State survives: a restart reports the old backends as terminated.
    p2 = subprocess.Popen([PLANE, "dev", "--controller-port", str(cport), "--proxy-port", str(pport),
                           "--data-dir", str(tmp_path / "plane-dev")], cwd=str(tmp_path),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def terminated():
        try:
            return requests.get(f"{url}/pub/b/{ids[0]}/status", timeout=5).json()["status"] == "terminated"
        except requests.RequestException:
            return False
    try:
        wait_for(terminated, timeout=30, what="old backend terminated after restart")
    finally:
        p2.send_signal(signal.SIGINT)
        p2.wait(30)
