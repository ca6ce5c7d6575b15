# SPDX-License-Identifier: MIT
"""The controller's /dashboard: its stream read directly, and the page in a real headless
Chromium (tests/integration/browser.py): rows appear and move on their own, terminate and
drain from the page, read-only viewers under forward auth."""
import http.client
import json
import os
import queue
import socket
import sys
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

sys.path.insert(0, os.path.dirname(__file__))
from browser import CHROMIUM, Browser
from conftest import wait_for
from plane_cluster import Controller, Drone, pg_database
from test_controller import AuthServer
from test_readme import dev  # noqa: F401 (a fixture)

CLUSTER = "localhost:9090"
needs_chromium = pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (scripts/install-deps.sh)")


class DashStream:
    """/dashboard/events read on a thread: (event, data) pairs land in a queue."""

    def __init__(self, url, headers=None):
        u = urllib.parse.urlsplit(url)
        self.events = queue.Queue()
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        self.conn.request("GET", "/dashboard/events", headers=headers or {})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200 and self.resp.getheader("content-type") == "text/event-stream"
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        buf = ""
        try:
            while chunk := self.resp.read1(65536):
                buf += chunk.decode()
                while "\n\n" in buf:
                    block, buf = buf.split("\n\n", 1)
                    fields = dict(line.split(":", 1) for line in block.split("\n") if line and line[0] != ":")
                    if "event" in fields:
                        self.events.put((fields["event"], json.loads(fields["data"])))
        except (OSError, ValueError, http.client.HTTPException):
            pass  # closed by the test

    def next(self, timeout=15):
        return self.events.get(timeout=timeout)

    def until(self, cond, timeout=15, what="an event"):
        """Events up to and including the first for which cond(event, data) holds."""
        seen = []
        while True:
            try:
                ev = self.next(timeout)
            except queue.Empty:
                raise AssertionError(f"no {what} in the dashboard stream; saw {seen}")
            seen.append(ev)
            if cond(*ev):
                return seen

    def close(self):
        # Shut the socket down first: the reader thread may be blocked in a read.
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.conn.close()


def backend_status(data, backend_id):
    for b in data.get("backends", []):
        if b["id"] == backend_id:
            return b["state"]["status"]
    return None


@pytest.fixture
def cluster(procs, tmp_path):
    ctrl = Controller(procs, tmp_path, default_cluster=CLUSTER).start()
    drone = Drone(procs, tmp_path, ctrl, "dr-one").start()
    return ctrl, drone


@pytest.fixture
def browser():
    if not CHROMIUM:
        pytest.skip("chromium is not installed (scripts/install-deps.sh)")
    b = Browser()
    yield b
    try:
        assert b.exceptions == [], b.exceptions
    finally:
        b.close()


def open_page(browser, url):
    browser.navigate(url + "/dashboard")
    browser.wait("document.getElementById('conn').textContent === 'live'", what="the stream to be live")


def row_status(browser, backend_id):
    return browser.eval(f"(document.querySelector('#backends .row[data-id={json.dumps(backend_id)}]') || {{}})"
                        ".dataset?.status || null")


def connect(ctrl, key, **mock):
    r = ctrl.connect(key=key, executable={"image": "mock", "mock": mock})
    assert r.status_code == 200, r.text
    return r.json()["backend_id"]


# ---- without a browser ----

def test_page_and_assets_are_served_from_the_binary(cluster):
    ctrl, _ = cluster
    r = requests.get(ctrl.url + "/dashboard", timeout=5)
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert 'src="dashboard/app.js"' in r.text
    for path, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        a = requests.get(f"{ctrl.url}/dashboard/{path}", timeout=5)
        assert a.status_code == 200 and a.headers["content-type"].startswith(kind)
        # Nothing is fetched from anywhere else.
        assert "http://" not in a.text and "https://" not in a.text
    assert "http://" not in r.text and "https://" not in r.text
    r = requests.get(ctrl.url + "/dashboard/", allow_redirects=False, timeout=5)
    assert (r.status_code, r.headers["location"]) == (301, "../dashboard")
    assert requests.get(ctrl.url + "/dashboard/", timeout=5).url == ctrl.url + "/dashboard"
    for path in ("/dashboard/nope", "/dashboard/events/x", "/dashboard/app.js/x"):
        assert requests.get(ctrl.url + path, timeout=5).status_code == 404, path
    assert requests.post(ctrl.url + "/dashboard", timeout=5).status_code == 404


def test_stream_sends_a_snapshot_then_only_rows_that_changed(cluster):
    ctrl, _ = cluster
    first = connect(ctrl, "first")
    ctrl.wait_status(first, "ready")
    s = DashStream(ctrl.url)
    try:
        ev, snap = s.next()
        assert ev == "snapshot" and snap["control"] is True
        assert backend_status(snap, first) == "ready"
        row = next(b for b in snap["backends"] if b["id"] == first)
        assert row["key"] == {"name": "first", "namespace": "", "tag": ""} and row["drone"] == "dr-one"
        assert sorted(h[0]["status"] for h in row["history"]) == sorted(
            ["scheduled", "loading", "starting", "waiting", "ready"])
        assert [d["name"] for d in snap["drones"]] == ["dr-one"] and snap["drones"][0]["connected"]

        second = connect(ctrl, "second", ready_delay_ms=300)
        seen = s.until(lambda ev, d: backend_status(d, second) == "ready", what="second ready")
        assert all(ev == "update" for ev, _ in seen)
        # The first backend did not change: it is never sent again.
        assert all(backend_status(d, first) is None for _, d in seen)
        statuses = [backend_status(d, second) for _, d in seen if backend_status(d, second)]
        assert statuses[-1] == "ready" and len(statuses) >= 2, statuses

        # Its end, with the reason and exit code, and its key kept although the key is released.
        assert ctrl.terminate(second).status_code == 200
        seen = s.until(lambda ev, d: backend_status(d, second) == "terminated", what="second terminated")
        row = next(b for b in seen[-1][1]["backends"] if b["id"] == second)
        assert row["state"]["reason"] == "external" and row["state"]["exit_code"] == 0
        assert row["key"]["name"] == "second"
    finally:
        s.close()


def test_a_burst_of_changes_is_sent_in_batches(cluster):
    """200 backends started at once: every row reaches the page as ready, in far fewer messages than changes."""
    ctrl, _ = cluster
    s = DashStream(ctrl.url)
    try:
        assert s.next()[0] == "snapshot"
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda i: connect(ctrl, f"burst-{i}"), range(200)))
        ready, updates = set(), 0
        while len(ready) < len(ids):
            ev, d = s.next()
            updates += 1
            ready |= {b["id"] for b in d["backends"] if b["state"]["status"] == "ready"}
        # Five states each: 1000 changes.
        assert updates < 200, updates
    finally:
        s.close()


def test_plane_dev_prints_the_dashboard_url(dev, tmp_path):
    _, cport, _, _ = dev
    url = f"http://127.0.0.1:{cport}/dashboard"
    wait_for(lambda: url in open(tmp_path / "dev.log").read(), what="the dashboard's URL in the output")
    assert requests.get(url, timeout=5).status_code == 200


def test_on_postgres_a_page_follows_backends_run_through_another_controller(procs, tmp_path):
    db = pg_database()
    one, two = (Controller(procs, tmp_path, db=db, name=f"controller{i}", default_cluster=CLUSTER).start()
                for i in range(2))
    Drone(procs, tmp_path, one, "dr-pg").start()
    s = DashStream(two.url)
    try:
        ev, snap = s.next()
        assert ev == "snapshot" and [d["name"] for d in snap["drones"]] == ["dr-pg"]
        backend = connect(one, "elsewhere", ready_delay_ms=300)
        seen = s.until(lambda ev, d: backend_status(d, backend) == "ready", what="ready through the other controller")
        row = next(b for _, d in seen for b in d["backends"] if b["id"] == backend)
        assert row["key"]["name"] == "elsewhere" and row["drone"] == "dr-pg"
        assert two.terminate(backend).status_code == 200
        s.until(lambda ev, d: backend_status(d, backend) == "terminated", what="terminated")
    finally:
        s.close()


# ---- in Chromium ----

@needs_chromium
def test_connect_makes_a_row_that_moves_through_its_states(cluster, browser):
    ctrl, _ = cluster
    open_page(browser, ctrl.url)
    browser.wait("document.querySelector('#drones .row[data-id] .col-name')?.textContent === 'dr-one'",
                 what="the drone's row")
    browser.eval("window.notReloaded = true")
    backend = connect(ctrl, "moving", spawn_delay_ms=400, ready_delay_ms=1200)
    seen = []

    def moved_to_ready():
        st = row_status(browser, backend)
        if st and (not seen or seen[-1] != st):
            seen.append(st)
        return st == "ready"
    wait_for(moved_to_ready, timeout=20, interval=0.03, what="the row to reach ready")
    order = ["scheduled", "loading", "starting", "waiting", "ready"]
    assert seen == sorted(seen, key=order.index) and "waiting" in seen and len(seen) >= 2, seen
    assert browser.eval("window.notReloaded") is True
    row = f"#backends .row[data-id='{backend}']"
    assert browser.eval(f"document.querySelector(\"{row} .col-key\").textContent") == "moving"
    assert browser.eval(f"document.querySelector(\"{row} .col-drone\").textContent") == "dr-one"
    history = browser.eval(f"document.querySelector(\"{row} .col-history\").textContent")
    assert history.startswith("scheduled") and "waiting" in history and "ready" in history
    assert browser.eval("document.querySelector('#drones .row[data-id] .col-backends').textContent") == "1"


@needs_chromium
def test_terminate_from_the_page_ends_the_backend(cluster, browser):
    ctrl, _ = cluster
    backend = connect(ctrl, "doomed")
    ctrl.wait_status(backend, "ready")
    open_page(browser, ctrl.url)
    button = f"#backends .row[data-id='{backend}'] button[data-action=terminate]"
    browser.wait(f"!!document.querySelector(\"{button}\")", what="the terminate button")
    browser.click(button)
    # The first click only asks for confirmation.
    assert browser.eval(f"document.querySelector(\"{button}\").textContent") == "Confirm terminate?"
    assert ctrl.status(backend)["status"] == "ready"
    browser.click(button)
    wait_for(lambda: row_status(browser, backend) == "terminated", timeout=15, what="terminated on the page")
    st = ctrl.status(backend)
    assert (st["status"], st["termination_reason"]) == ("terminated", "external")
    assert browser.eval(f"document.querySelector(\"#backends .row[data-id='{backend}'] .col-exit\").textContent") == "0"
    assert browser.eval(f"document.querySelector(\"{button}\")") is None


@needs_chromium
def test_filters_by_state_key_and_cluster(procs, tmp_path, cluster, browser):
    ctrl, _ = cluster
    other = "other.example:9090"
    Drone(procs, tmp_path, ctrl, "dr-other", cluster=other).start()
    alpha, beta = connect(ctrl, "alpha-1"), connect(ctrl, "beta-1")
    elsewhere = ctrl.connect(key="alpha-3", executable={"image": "mock"}, cluster=other).json()["backend_id"]
    gone = connect(ctrl, "alpha-2")
    ctrl.wait_status(gone, "ready")
    ctrl.terminate(gone)
    ctrl.wait_status(gone, "terminated")
    open_page(browser, ctrl.url)
    browser.wait("document.querySelectorAll('#backends .body .row').length === 4", what="four rows")

    def shown():
        return sorted(browser.eval("[...document.querySelectorAll('#backends .body .row')]"
                                   ".filter(r => !r.hidden).map(r => r.dataset.id)"))

    def choose(select, value):
        browser.eval(f"(() => {{ const s = document.getElementById('{select}'); s.value = {json.dumps(value)};"
                     " s.dispatchEvent(new Event('change')); return true; })()")

    assert shown() == sorted([alpha, beta, elsewhere, gone])
    choose("f-state", "live")
    assert shown() == sorted([alpha, beta, elsewhere])
    choose("f-state", "terminated")
    assert shown() == [gone]
    choose("f-state", "")
    browser.click("#f-key")
    browser.page("Input.insertText", text="alpha")
    browser.wait(f"document.querySelector(\"#backends .row[data-id='{beta}']\").hidden", what="beta hidden")
    assert shown() == sorted([alpha, elsewhere, gone])
    assert browser.eval("document.getElementById('backends-count').textContent") == "3 shown of 4"
    assert browser.eval("[...document.getElementById('f-cluster').options].map(o => o.value)") == \
        ["", CLUSTER, other]
    choose("f-cluster", other)
    assert shown() == [elsewhere]
    assert browser.eval("[...document.querySelectorAll('#drones .body .row')].filter(r => !r.hidden)"
                        ".map(r => r.textContent.includes('dr-other'))") == [True]
    choose("f-cluster", CLUSTER)
    assert shown() == sorted([alpha, gone])


@needs_chromium
def test_a_drained_drone_shows_as_draining(procs, tmp_path, cluster, browser):
    ctrl, _ = cluster
    Drone(procs, tmp_path, ctrl, "dr-two").start()
    open_page(browser, ctrl.url)
    row = "#drones .row[data-id]"
    browser.wait(f"document.querySelectorAll('{row}').length === 2", what="both drones")
    one = browser.eval(f"[...document.querySelectorAll('{row}')].find(r => r.textContent.includes('dr-one')).dataset.id")
    two = browser.eval(f"[...document.querySelectorAll('{row}')].find(r => r.textContent.includes('dr-two')).dataset.id")
    # From the page: two clicks on Drain.
    button = f"#drones .row[data-id='{one}'] button[data-action=drain]"
    browser.click(button)
    browser.click(button)
    browser.wait(f"document.querySelector(\"#drones .row[data-id='{one}']\").dataset.draining === 'true'",
                 what="dr-one draining on the page")
    drones = {d["node"]["name"]["Drone"]: d for d in ctrl.state()["drones"]}
    assert drones["dr-one"]["draining"] and not drones["dr-two"]["draining"]
    assert browser.eval(f"document.querySelector(\"#drones .row[data-id='{one}'] .col-state\").textContent") == \
        "connecteddraining"
    assert browser.eval(f"document.querySelector(\"{button}\")") is None
    # Through the API: the open page sees it without a reload.
    browser.eval("window.notReloaded = true")
    r = requests.post(f"{ctrl.url}/ctrl/c/{CLUSTER}/d/dr-two/drain", timeout=5)
    assert r.json() == {"updated": True}
    browser.wait(f"document.querySelector(\"#drones .row[data-id='{two}']\").dataset.draining === 'true'",
                 what="dr-two draining on the page")
    assert browser.eval("window.notReloaded") is True


@needs_chromium
def test_forward_auth_guards_the_dashboard_and_viewers_get_no_buttons(procs, tmp_path, browser):
    """admin may do anything, viewer only GET, anyone else nothing."""
    def allow(method, headers):
        who = headers.get("authorization")
        return who == "Bearer admin" or (who == "Bearer viewer" and method == "GET")

    auth = AuthServer(allow)
    try:
        ctrl = Controller(procs, tmp_path, "--forward-auth", f"http://127.0.0.1:{auth.port}/check",
                          default_cluster=CLUSTER).start()
        # The drone authenticates as admin (its URL's user is its bearer token).
        drone = Drone(procs, tmp_path, ctrl, "dr-one")
        drone.args[drone.args.index("--controller-url") + 1] = f"http://admin@127.0.0.1:{ctrl.port}/"
        drone.start(wait=False)
        ctrl_admin = {"Authorization": "Bearer admin"}
        wait_for(lambda: requests.get(f"{ctrl.url}/ctrl/c/{CLUSTER}/state", headers=ctrl_admin,
                                      timeout=5).json()["drones"], what="the drone")
        assert requests.get(ctrl.url + "/dashboard", timeout=5).status_code == 401
        assert requests.get(ctrl.url + "/dashboard/events", timeout=5).status_code == 401
        assert requests.get(ctrl.url + "/dashboard", headers={"Authorization": "Bearer viewer"},
                            timeout=5).status_code == 200
        paths = {auth.header(c, "x-original-path") for c in auth.seen}
        assert {"/dashboard", "/dashboard/events"} <= paths
        # A decoded path reaches the auth service encoded, never raw.
        requests.get(ctrl.url + "/dashboard/%0d%0ax-evil:%201", timeout=5)
        assert auth.header(auth.seen[-1], "x-original-path") == "/dashboard/%0D%0Ax-evil:%201"
        assert auth.header(auth.seen[-1], "x-evil") is None

        s = DashStream(ctrl.url, {"Authorization": "Bearer viewer"})
        try:
            ev, snap = s.next()
            assert ev == "snapshot" and snap["control"] is False
        finally:
            s.close()
        assert any(c["method"] == "POST" and auth.header(c, "x-original-path") == "/dashboard" for c in auth.seen)

        r = requests.post(f"{ctrl.url}/ctrl/connect", headers=ctrl_admin,
                          json={"key": {"name": "guarded"}, "spawn_config": {"executable": {"image": "mock"}}})
        backend = r.json()["backend_id"]

        browser.page("Network.enable")
        browser.page("Network.setExtraHTTPHeaders", headers={"Authorization": "Bearer viewer"})
        open_page(browser, ctrl.url)
        browser.wait(f"!!document.querySelector(\"#backends .row[data-id='{backend}']\")", what="the backend's row")
        assert browser.eval("document.getElementById('mode').hidden") is False
        assert browser.eval("document.querySelectorAll('button[data-action]').length") == 0

        browser.page("Network.setExtraHTTPHeaders", headers={"Authorization": "Bearer admin"})
        open_page(browser, ctrl.url)
        browser.wait(f"!!document.querySelector(\"#backends .row[data-id='{backend}'] button[data-action=terminate]\")",
                     what="the terminate button")
        assert browser.eval("document.getElementById('mode').hidden") is True
    finally:
        auth.stop()


def test_controller_stops_cleanly_with_pages_open_and_checks_pending(procs, tmp_path):
    """One stream open, one waiting for its control check: SIGTERM ends both and the controller exits 0."""
    import signal
    release = threading.Event()
    posts = []

    def allow(method, headers):
        if method == "POST":
            posts.append(method)
            if len(posts) > 1:
                release.wait(10)  # the second control check hangs until the test is done
        return True

    auth = AuthServer(allow)
    try:
        ctrl = Controller(procs, tmp_path, "--forward-auth", f"http://127.0.0.1:{auth.port}/check").start()
        s1 = DashStream(ctrl.url)
        assert s1.next()[0] == "snapshot"
        pending = {}
        t = threading.Thread(target=lambda: pending.update(
            r=requests.get(ctrl.url + "/dashboard/events", timeout=20)), daemon=True)
        t.start()
        wait_for(lambda: sum(c["method"] == "POST" for c in auth.seen) >= 2, what="both control checks")
        assert not t.is_alive() or "r" not in pending
        ctrl.proc.send_signal(signal.SIGTERM)
        assert ctrl.proc.wait(10) == 0, open(ctrl.log).read()
        t.join(10)
        assert pending["r"].status_code == 503
        s1.close()
    finally:
        release.set()
        auth.stop()


@needs_chromium
def test_screenshot_of_a_few_backends(procs, tmp_path, cluster, browser):
    """The page with backends in several states, as a PNG. DASHBOARD_SCREENSHOT=docs/dashboard.png
    writes it there too (that is how the README's picture is made)."""
    import shutil
    import struct
    ctrl, _ = cluster
    Drone(procs, tmp_path, ctrl, "dr-two").start()
    ready = [connect(ctrl, k) for k in ("editor-41", "editor-7", "whiteboard-3")]
    starting = connect(ctrl, "notebook-12", ready_delay_ms=60000)
    stopping = connect(ctrl, "render-9", ignore_soft_terminate=True)
    failed = connect(ctrl, "import-job-5", exit_after_ms=800, exit_code=3)
    done = connect(ctrl, "editor-2")
    for b in ready + [stopping, done]:
        ctrl.wait_status(b, "ready")
    ctrl.terminate(stopping)
    ctrl.terminate(done)
    ctrl.wait_status(done, "terminated")
    ctrl.wait_status(failed, "terminated")
    ctrl.wait_status(starting, "waiting")
    requests.post(f"{ctrl.url}/ctrl/c/{CLUSTER}/d/dr-two/drain", timeout=5)
    open_page(browser, ctrl.url)
    browser.wait("document.querySelectorAll('#backends .body .row').length === 7 && "
                 "document.querySelector('#drones .row[data-draining=true]') !== null", what="the whole scene")
    browser.wait(f"document.querySelector(\"#backends .row[data-id='{stopping}']\").dataset.status === 'terminating'",
                 what="render-9 terminating")
    browser.page("Emulation.setDeviceMetricsOverride", width=1400, height=720, deviceScaleFactor=1, mobile=False)
    browser.eval("document.activeElement.blur(); window.scrollTo(0, 0); true")
    path = tmp_path / "dashboard.png"
    browser.screenshot(str(path))
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1400, 720)
    if os.environ.get("DASHBOARD_SCREENSHOT"):
        shutil.copy(path, os.environ["DASHBOARD_SCREENSHOT"])
