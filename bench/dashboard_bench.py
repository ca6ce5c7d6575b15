# SPDX-License-Identifier: MIT
"""The dashboard under load: 1,000 backends on the page, then state changes at a set rate.

A controller and a mock drone are started, N backends are connected and become ready, and
the page is opened in headless Chromium. A probe in the page records the gap between
animation frames (a frame that cannot be drawn because the main thread is busy shows as a
long gap), long tasks (main-thread work over 50 ms), and when each row turns `terminated`.
Two phases of equal length, in this run: the baseline (the same page, nothing changing),
then the load (soft terminates at RATE/2 per second: each is two state changes,
terminating and terminated). Reported: frame gaps and long tasks in both phases and their
ratio, the delay from a terminate request to its row showing `terminated`, and the
controller's CPU time in both phases.

    bench/dashboard.sh [BACKENDS] [CHANGES_PER_SECOND] [SECONDS]
"""
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from browser import Browser  # noqa: E402
from conftest import wait_for  # noqa: E402
from plane_cluster import free_port  # noqa: E402

PLANE = os.path.join(ROOT, "build", "plane")
PROBE = """
window.probe = {gaps: [], longtasks: 0, longtaskMs: 0, terminated: {}};
(() => {
  let last = performance.now();
  const frame = (t) => { probe.gaps.push(t - last); last = t; requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) { probe.longtasks++; probe.longtaskMs += e.duration; }
  }).observe({type: 'longtask'});
  new MutationObserver((ms) => {
    for (const m of ms) if (m.target.dataset.status === 'terminated') probe.terminated[m.target.dataset.id] = Date.now();
  }).observe(document.querySelector('#backends .body'), {attributes: true, subtree: true, attributeFilter: ['data-status']});
})();
"""
RESET = "probe.gaps = []; probe.longtasks = 0; probe.longtaskMs = 0; true"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def ready_count(url):
    text = requests.get(url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith('plane_backends{status="ready"}'):
            return int(float(line.split()[-1]))
    return 0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    rate = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    secs = float(sys.argv[3]) if len(sys.argv) > 3 else 10
    tmp = tempfile.mkdtemp(prefix="plane-dash-bench-")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PLANE_LOG="warn")
    procs = []
    browser = None
    try:
        procs.append(subprocess.Popen([PLANE, "controller", "--db", f"{tmp}/c.db", "--port", str(port),
                                       "--default-cluster", "localhost:9090"], env=env,
                                      stderr=open(f"{tmp}/c.log", "wb")))
        wait_for(lambda: _up(url), timeout=10, what="controller")
        procs.append(subprocess.Popen([PLANE, "drone", "--controller-url", url + "/", "--cluster", "localhost:9090",
                                       "--name", "dr-bench", "--runtime", "mock", "--db", f"{tmp}/d.db",
                                       "--data-dir", f"{tmp}/dd"], env=env, stderr=open(f"{tmp}/d.log", "wb")))
        wait_for(lambda: b'"ready":true' in requests.get(url + "/ctrl/c/localhost:9090/state", timeout=1).content,
                 timeout=10, what="drone")
        time.sleep(1.5)  # its first heartbeat makes it schedulable

        def connect(i):
            r = requests.post(url + "/ctrl/connect", timeout=30, json={
                "key": {"name": f"bench-{i}"}, "spawn_config": {"executable": {"image": "mock"}}})
            r.raise_for_status()
            return r.json()["backend_id"]
        t0 = time.time()
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(connect, range(n)))
        wait_for(lambda: ready_count(url) >= n, timeout=60, what=f"{n} backends ready")
        print(f"{n} backends connected and ready in {time.time() - t0:.1f} s")

        browser = Browser(width=1400, height=900, timeout=60)
        browser.navigate(url + "/dashboard")
        browser.wait(f"document.querySelectorAll('#backends .body .row').length >= {n}", timeout=60,
                     what=f"{n} rows on the page")
        browser.eval(PROBE)
        browser.page("Performance.enable")
        ctrl_pid = procs[0].pid

        def metrics():
            m = {x["name"]: x["value"] for x in browser.page("Performance.getMetrics")["metrics"]}
            return {k: m[k] for k in ("ScriptDuration", "LayoutDuration", "RecalcStyleDuration", "TaskDuration")}

        # Baseline: the same page, nothing changing.
        time.sleep(1)
        browser.eval(RESET)
        cpu0, m0 = cpu_seconds(ctrl_pid), metrics()
        time.sleep(secs)
        base = browser.eval("({gaps: probe.gaps, longtasks: probe.longtasks, longtaskMs: probe.longtaskMs})")
        base_cpu, m1 = cpu_seconds(ctrl_pid) - cpu0, metrics()
        base["main"] = {k: m1[k] - m0[k] for k in m0}

        # Load: soft terminates at rate/2 per second, each two state changes.
        browser.eval(RESET)
        requested = {}
        per_second = max(1, rate // 2)
        # Anywhere in the list, so on-screen rows change too (a fixed seed: the same rows each run).
        victims = random.Random(1).sample(ids, min(len(ids), int(per_second * secs)))
        session = requests.Session()
        cpu0, m0 = cpu_seconds(ctrl_pid), metrics()
        start = time.time()
        for k, bid in enumerate(victims):
            due = start + k / per_second
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
            requested[bid] = time.time() * 1000
            session.post(f"{url}/ctrl/b/{bid}/soft-terminate", timeout=10).raise_for_status()
        left = start + secs - time.time()
        if left > 0:
            time.sleep(left)
        load = browser.eval("({gaps: probe.gaps, longtasks: probe.longtasks, longtaskMs: probe.longtaskMs})")
        load_cpu, m1 = cpu_seconds(ctrl_pid) - cpu0, metrics()
        load["main"] = {k: m1[k] - m0[k] for k in m0}
        wait_for(lambda: browser.eval(f"Object.keys(probe.terminated).length >= {len(victims)}"), timeout=30,
                 what="every terminated row on the page")
        shown = browser.eval("probe.terminated")
        delays = [shown[b] - requested[b] for b in victims if b in shown]
        changes = 2 * len(victims) / secs

        print(f"\npage with {n} backends; load: {changes:.0f} state changes/s for {secs:.0f} s "
              f"({len(victims)} soft terminates)")
        print(f"{'phase':<10} {'frames':>7} {'gap p50':>9} {'gap p99':>9} {'gap max':>9} {'long tasks':>11} "
              f"{'controller CPU':>15}")
        for name, r, cpu in (("baseline", base, base_cpu), ("load", load, load_cpu)):
            g = r["gaps"]
            print(f"{name:<10} {len(g):>7} {pct(g, 50):>7.1f}ms {pct(g, 99):>7.1f}ms {max(g):>7.1f}ms "
                  f"{r['longtasks']:>4} ({r['longtaskMs']:.0f} ms) {100 * cpu / secs:>13.1f}%")
        for name, r in (("baseline", base), ("load", load)):
            m = r["main"]
            print(f"{name:<10} page main thread busy {100 * m['TaskDuration'] / secs:.0f}%: script "
                  f"{m['ScriptDuration']:.2f} s, style {m['RecalcStyleDuration']:.2f} s, "
                  f"layout {m['LayoutDuration']:.2f} s")
        print(f"ratio load/baseline: frames {len(load['gaps']) / len(base['gaps']):.2f}, "
              f"gap p99 {pct(load['gaps'], 99) / pct(base['gaps'], 99):.2f}")
        print(f"terminate request -> row shows terminated: p50 {pct(delays, 50):.0f} ms, "
              f"p99 {pct(delays, 99):.0f} ms, max {max(delays):.0f} ms ({len(delays)} rows)")
    finally:
        if browser:
            browser.close()
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        subprocess.run(["rm", "-rf", tmp])


def _up(url):
    try:
        return requests.get(url + "/pub/health", timeout=1).ok
    except requests.RequestException:
        return False


if __name__ == "__main__":
    main()
