# SPDX-License-Identifier: MIT
"""`plane executor` driven over its Unix socket by a client written from the
spec, with the process runtime (the real echo backend) and the mock runtime."""
import json
import os
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest
import requests

from conftest import ECHO, PLANE, ExecutorClient, check_backend_env, echo_exe, mock_exe, wait_for


def addr(port):
    return f"127.0.0.1:{port}"


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_process_full_cycle(executor):
    ex = executor("process")
    c = ex.client()
    assert c.hello == {"backends": []}
    assert c.prepare(echo_exe()) == {"Ok": None}
    res = c.spawn("b1", echo_exe(GREETING="hi"), static_token="s.static")
    port = res["Ok"]["port"]
    pid = int(res["Ok"]["container_id"])
    assert c.wait_ready("b1", addr(port)) == {"Ok": None}

    body = requests.get(f"http://127.0.0.1:{port}/some/path?q=1", timeout=5).json()
    assert body["path"] == "/some/path?q=1"
    check_backend_env(body["env"], port, "b1", GREETING="hi")

    # A second client sees the running backend in its hello.
    c2 = ex.client()
    assert c2.hello == {"backends": ["b1"]}
    c2.close()

    assert c.terminate("b1") == {"Ok": True}
    assert c.exit_of("b1") == 0
    assert not pid_alive(pid)
    assert c.terminate("b1") == {"Ok": False}  # already gone is not an error
    log = os.path.join(ex.data_dir, "logs", "b1.log")
    assert "echo_backend" in open(log).read()


def test_mock_full_cycle(executor):
    ex = executor("mock")
    c = ex.client()
    p1 = c.spawn("b1", mock_exe())["Ok"]["port"]
    p2 = c.spawn("b2", mock_exe())["Ok"]["port"]
    assert p1 == p2  # one port serves every mock backend
    assert c.wait_ready("b1", addr(p1)) == {"Ok": None}
    r = requests.get(f"http://127.0.0.1:{p1}/x", headers={"x-verified-backend": "b2"}, timeout=5)
    assert r.status_code == 200 and r.json()["backend_id"] == "b2"
    r = requests.get(f"http://127.0.0.1:{p1}/x", headers={"x-verified-backend": "zz"}, timeout=5)
    assert r.status_code == 404
    assert c.terminate("b1", hard=True) == {"Ok": True}
    assert c.exit_of("b1") == 137
    assert c.terminate("b2") == {"Ok": True}
    assert c.exit_of("b2") == 0


@pytest.mark.parametrize("runtime", ["process", "mock"])
def test_hard_terminate_reports_137(executor, runtime):
    ex = executor(runtime)
    c = ex.client()
    exe = echo_exe() if runtime == "process" else mock_exe()
    port = c.spawn("b1", exe)["Ok"]["port"]
    assert c.wait_ready("b1", addr(port)) == {"Ok": None}
    assert c.terminate("b1", hard=True) == {"Ok": True}
    assert c.exit_of("b1") == 137


@pytest.mark.parametrize("runtime", ["process", "mock"])
def test_sigterm_ignoring_backend_killed_after_grace(executor, runtime):
    ex = executor(runtime, "--grace-period", "0.7")
    c = ex.client()
    exe = echo_exe(ECHO_IGNORE_SIGTERM=1) if runtime == "process" else mock_exe(ignore_soft_terminate=True)
    port = c.spawn("b1", exe)["Ok"]["port"]
    assert c.wait_ready("b1", addr(port)) == {"Ok": None}
    t0 = time.time()
    assert c.terminate("b1") == {"Ok": True}
    assert c.exit_of("b1") == 137
    assert time.time() - t0 >= 0.6


@pytest.mark.parametrize("runtime", ["process", "mock"])
def test_backend_exits_on_its_own(executor, runtime):
    ex = executor(runtime)
    c = ex.client()
    exe = (echo_exe(ECHO_EXIT_AFTER_MS=300, ECHO_EXIT_CODE=3) if runtime == "process"
           else mock_exe(exit_after_ms=300, exit_code=3))
    c.spawn("b1", exe)
    assert c.exit_of("b1") == 3


@pytest.mark.parametrize("runtime", ["process", "mock"])
def test_backend_that_never_becomes_ready(executor, runtime):
    ex = executor(runtime, "--ready-timeout", "1")
    c = ex.client()
    exe = echo_exe(ECHO_NEVER_LISTEN=1) if runtime == "process" else mock_exe(never_ready=True)
    port = c.spawn("b1", exe)["Ok"]["port"]
    t0 = time.time()
    assert c.wait_ready("b1", addr(port)) == {"Err": "StartupTimeout"}
    assert 0.8 <= time.time() - t0 < 5
    assert c.terminate("b1", hard=True) == {"Ok": True}
    assert c.exit_of("b1") == 137


def test_mock_hooks_fail_steps(executor):
    ex = executor("mock")
    c = ex.client()
    assert c.prepare(mock_exe(prepare_error="pull failed")) == {"Err": "pull failed"}
    assert c.spawn("b1", mock_exe(spawn_error="no room")) == {"Err": "no room"}
    port = c.spawn("b2", mock_exe(ready_error="crashed"))["Ok"]["port"]
    assert c.wait_ready("b2", addr(port)) == {"Err": {"Other": "crashed"}}


def test_process_bad_executable_is_a_clear_error(executor):
    c = executor("process").client()
    err = c.prepare({"command": ["/no/such/program"]})["Err"]
    assert "/no/such/program" in err
    assert "command" in c.spawn("b1", {"image": "not-a-process-executable"})["Err"]


def test_process_metrics_events(executor):
    ex = executor("process", "--metrics-interval", "0.2")
    c = ex.client()
    port = c.spawn("b1", echo_exe())["Ok"]["port"]
    assert c.wait_ready("b1", addr(port)) == {"Ok": None}
    m = c.next_event("MetricsMessage", timeout=5)
    assert m["backend_id"] == "b1"
    assert set(m) == {"backend_id", "mem_used", "mem_total", "mem_active", "mem_inactive",
                      "mem_unevictable", "mem_limit", "cpu_used", "sys_cpu"}
    assert m["mem_used"] > 0 and m["mem_limit"] >= m["mem_used"]


def test_garbage_lines_are_dropped_and_answered(executor):
    ex = executor("mock")
    c = ex.client()
    c.send_raw(b"this is not json\n\n[1,2,3]\n{\"id\":null,\"message\":{\"Spawn\":1}}\n")
    c.send_raw(b"{" + b"x" * (5 << 20) + b"}\n")  # longer than any line we accept
    c.send_raw(b"\xff\xfe\x00garbage\n")
    r = c.request({"Bogus": {}})
    assert "Error" in r
    r = c.request({"Spawn": "not an array"})
    assert "Err" in r["SpawnResult"]
    r = c.request({"Terminate": ["b1"]})
    assert "Err" in r["TerminateResult"]
    r = c.request({"WaitForBackend": ["b1", "not-an-address"]})
    assert "Other" in r["WaitForBackendResult"]["Err"]
    # Still serving, on the same connection.
    port = c.spawn("b1", mock_exe())["Ok"]["port"]
    assert c.wait_ready("b1", addr(port)) == {"Ok": None}
    assert ex.proc.poll() is None
    assert "dropped" in ex.logs()


def test_events_while_no_client_is_connected_are_kept(executor):
    ex = executor("mock")
    c = ex.client()
    c.spawn("b1", mock_exe(exit_after_ms=300, exit_code=5))
    c.close()
    time.sleep(0.6)
    c2 = ex.client()
    assert c2.hello == {"backends": []}
    assert c2.exit_of("b1") == 5


def test_clients_served_together_and_in_turn(executor):
    ex = executor("mock")
    a, b = ex.client(), ex.client()
    port = a.spawn("b1", mock_exe())["Ok"]["port"]
    assert b.wait_ready("b1", addr(port)) == {"Ok": None}
    assert b.terminate("b1") == {"Ok": True}
    assert a.exit_of("b1") == 0 and b.exit_of("b1") == 0  # events go to everyone
    a.close()
    b.close()
    for i in range(5):
        c = ex.client()
        assert c.spawn(f"c{i}", mock_exe())["Ok"]["port"] == port
        c.close()


def test_server_restart_in_the_middle(executor, tmp_path):
    ex = executor("process")
    c = ex.client()
    port = c.spawn("b1", echo_exe())["Ok"]["port"]
    pid = int(c.spawn("b2", echo_exe())["Ok"]["container_id"])
    assert c.wait_ready("b1", addr(port)) == {"Ok": None}

    ex.proc.kill()  # a crash: no chance to clean up
    ex.proc.wait()
    wait_for(lambda: c.closed.is_set(), what="client to see the connection drop")
    assert pid_alive(pid)  # orphaned for now...

    ex.start()  # same data dir
    wait_for(lambda: not pid_alive(pid), what="leftover backend to be killed")
    c = ex.client()
    assert c.hello == {"backends": []}
    port = c.spawn("b1", echo_exe())["Ok"]["port"]
    assert c.wait_ready("b1", addr(port)) == {"Ok": None}

    # A clean stop kills the backends and removes the socket.
    new_pid = int(c.spawn("b3", echo_exe())["Ok"]["container_id"])
    ex.proc.send_signal(signal.SIGTERM)
    assert ex.proc.wait(10) == 0
    assert not pid_alive(new_pid)
    assert not os.path.exists(ex.socket)


def test_executor_runtime_chain_recovers_from_upstream_restart(executor):
    """Python -> executor B (executor runtime, our C client) -> executor A (process)."""
    up = executor("process", name="up")
    front = executor("executor", "--executor-socket", up.socket, name="front")
    c = front.client()
    port = c.spawn("b1", echo_exe())["Ok"]["port"]
    assert c.wait_ready("b1", addr(port)) == {"Ok": None}
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).json()["env"]["SESSION_BACKEND_ID"] == "b1"
    assert c.terminate("b1") == {"Ok": True}
    assert c.exit_of("b1") == 0

    # Upstream dies while a request is in flight: the request fails, nothing hangs.
    port = c.spawn("b2", echo_exe(ECHO_NEVER_LISTEN=1))["Ok"]["port"]
    result = {}
    waiter = threading.Thread(target=lambda: result.update(r=c.wait_ready("b2", addr(port), timeout=10)))
    waiter.start()
    time.sleep(0.3)
    t0 = time.time()
    up.proc.kill()
    up.proc.wait()
    waiter.join()
    assert "Err" in result["r"] and time.time() - t0 < 5
    # Upstream comes back with nothing running: b2 is reported gone.
    up.start()
    assert c.exit_of("b2", timeout=10) is None
    port = c.spawn("b3", echo_exe())["Ok"]["port"]
    assert c.wait_ready("b3", addr(port)) == {"Ok": None}


def test_socket_is_private_and_stale_socket_replaced(executor, tmp_path, procs):
    ex = executor("mock")
    mode = stat.S_IMODE(os.stat(ex.socket).st_mode)
    assert mode & 0o077 == 0
    ex.proc.kill()
    ex.proc.wait()
    assert os.path.exists(ex.socket)  # stale
    ex.start()
    assert ex.client().hello == {"backends": []}
    # A path that is not a socket is never deleted.
    f = tmp_path / "file"
    f.write_text("keep me")
    r = subprocess.run([PLANE, "executor", "--runtime", "mock", "--socket", str(f)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "not a socket" in r.stderr
    assert f.read_text() == "keep me"


@pytest.mark.parametrize("args,msg", [
    ([], "--runtime and --socket are required"),
    (["--runtime", "nope", "--socket", "/tmp/x"], "unknown runtime"),
    (["--runtime", "mock", "--socket", "/tmp/x", "--grace-period", "abc"], "invalid duration"),
    (["--runtime", "executor", "--socket", "/tmp/x"], "needs --executor-socket"),
])
def test_cli_errors(args, msg):
    r = subprocess.run([PLANE, "executor", *args], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert msg in r.stderr
