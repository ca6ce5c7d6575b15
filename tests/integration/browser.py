# SPDX-License-Identifier: MIT
"""A real headless Chromium, driven through the DevTools protocol over a pipe.

Chromium is started with --remote-debugging-pipe: it reads commands from its
fd 3 and writes answers and events to its fd 4, one JSON message per NUL.
No port is opened and nothing but the page under test is fetched. One page
(a target attached in flat mode) per Browser; every exception the page
throws is kept in `exceptions` so tests can insist there were none.
"""
import base64
import fcntl
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from conftest import framed_json

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
         "--remote-debugging-pipe"]


class CDPError(Exception):
    pass


class Browser:
    def __init__(self, width=1400, height=900, timeout=30.0):
        if not CHROMIUM:
            raise RuntimeError("chromium is not installed (scripts/install-deps.sh installs it)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="plane-chromium-")
        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()
        # Above 4, so that putting one on fd 3 or 4 cannot overwrite the other.
        cmd_r, out_w = (self._high(fd) for fd in (cmd_r, out_w))
        # bash (dash takes single-digit fds only) puts the pipe ends on the fds Chromium expects.
        script = f'exec "$0" "$@" 3<&{cmd_r} 4>&{out_w} {cmd_r}<&- {out_w}>&-'
        self.log = open(os.path.join(self.profile, "chromium.log"), "wb")
        self.proc = subprocess.Popen(["bash", "-c", script, CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"],
                                     pass_fds=(cmd_r, out_w), stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, start_new_session=True)
        os.close(cmd_r)
        os.close(out_w)
        self.ids = itertools.count(1)
        self.waiters = {}
        self.lock = threading.Lock()
        self.events = queue.Queue()
        self.exceptions = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.page("Page.enable")
            self.page("Runtime.enable")
            self.page("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)
        except Exception:
            self.close()
            raise

    @staticmethod
    def _high(fd):
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return high

    def _read(self):
        try:
            for msg in framed_json(lambda: os.read(self.out_r, 1 << 16), b"\0"):
                if "id" in msg:
                    with self.lock:
                        q = self.waiters.pop(msg["id"], None)
                    if q is not None:
                        q.put(msg)
                elif msg.get("method") == "Runtime.exceptionThrown":
                    self.exceptions.append(msg["params"]["exceptionDetails"])
                else:
                    self.events.put(msg)
        except OSError:
            pass  # closed by close()

    def _send(self, method, params, session, timeout=None):
        mid = next(self.ids)
        q = queue.Queue()
        with self.lock:
            self.waiters[mid] = q
        msg = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        try:
            answer = q.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise CDPError(f"no answer to {method} within {timeout or self.timeout}s")
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def call(self, method, **params):
        """A browser-level command."""
        return self._send(method, params, None)

    def page(self, method, **params):
        """A command to the page."""
        return self._send(method, params, self.session)

    def navigate(self, url):
        self.page("Page.navigate", url=url)

    def eval(self, expression):
        """The value of a JavaScript expression in the page (promises are awaited)."""
        r = self.page("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise CDPError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression, timeout=15.0, what=None):
        """Polls until expression is truthy in the page; returns its value."""
        deadline = time.time() + timeout
        while True:
            try:
                v = self.eval(expression)
            except CDPError:
                v = None
            if v:
                return v
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}")
            time.sleep(0.05)

    def click(self, selector):
        """A real left click (mouse events through the input pipeline) at the middle of selector's element."""
        rect = self.eval(f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            if (!e) return null;
            e.scrollIntoView({{block: 'center'}});
            const r = e.getBoundingClientRect();
            return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
        }})()""")
        if not rect:
            raise AssertionError(f"nothing to click at {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=rect["x"], y=rect["y"], button="left",
                      clickCount=1)

    def screenshot(self, path):
        data = self.page("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            if self.proc.poll() is None:
                try:
                    self._send("Browser.close", {}, None, timeout=5)
                except (CDPError, OSError):
                    pass
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            # Its child processes (renderer, GPU, zygote) are in the session it leads: none may outlive it.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        finally:
            for fd in (self.cmd_w, self.out_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.log.close()
            shutil.rmtree(self.profile, ignore_errors=True)
