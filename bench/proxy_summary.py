# SPDX-License-Identifier: MIT
"""Summarises bench/proxy.sh's raw lines: medians over rounds, ratios, targets.

Usage: proxy_summary.py RAW [RATE]. RATE is the moderate-load rate (req/s),
for the labels only.
"""
import math
import os
import statistics
import sys

NAN = float("nan")
# Steal time (% of both cores) above which a moderate-load round measured the host's neighbours.
STEAL_MAX = float(os.environ.get("STEAL_MAX", "1"))
# Every path that may appear, in the order the tables list them.
ORDER = ("direct", "proxy", "proxy-alt", "nginx", "haproxy")


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def median(vals):
    vals = [v for v in vals if not math.isnan(v)]
    return statistics.median(vals) if vals else NAN


def verdict(value, ok):
    return "n/a" if math.isnan(value) else "met" if ok else "missed"


def pooled_hist(hist_dir, kind, rounds):
    """{us: count} over the moderate-load runs of kind in the given rounds (0-based); None if one is missing."""
    h = {}
    for i in rounds:
        try:
            with open(os.path.join(hist_dir, "%s.%d" % (kind, i))) as f:
                for line in f:
                    us, n = line.split()
                    h[int(us)] = h.get(int(us), 0) + int(n)
        except OSError:
            return None
    return h


def hist_pct(h, p):
    """The p-quantile (us) of a {us: count} histogram, by nearest rank as bench/latency_load.c takes it."""
    total = sum(h.values())
    rank = max(1, math.ceil(p * total))
    seen = 0
    for us in sorted(h):
        seen += h[us]
        if seen >= rank:
            return us
    return NAN


def main(path, rate):
    runs = {}
    hist_dir = os.path.join(os.path.dirname(path), "hist")
    idle = None
    for line in open(path):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "idle":
            idle = fields(line)
            continue
        key = (parts[0], parts[1])
        r = {k: float(v) for k, v in fields(line).items()}
        if r.get("kept") == 0:  # every epoch left out: no percentiles, not zeros
            r.update({k: NAN for k in r if k.endswith("_us")})
        runs.setdefault(key, []).append(r)

    def med(kind, label, field):
        return median([r[field] for r in runs.get((label, kind), []) if field in r])

    def col(label, field):
        return [round(r[field], 3) for r in runs.get(label, [])]

    def kinds(label, with_direct=True):
        return [k for k in ORDER if (label, k) in runs and (with_direct or k != "direct")]

    def per_round(label, fn, *ks):
        """The median over rounds of fn(round of k1, round of k2, ...); rounds pair up by index."""
        lists = [runs.get((label, k), []) for k in ks]
        if not all(lists):
            return NAN
        return median([fn(*rs) for rs in zip(*lists)])

    def ws_cpu(r):
        # Relay CPU µs per message (one echo round trip), over the measured window.
        if "relay_ticks" not in r or not r.get("msgs"):
            return NAN
        return r["relay_ticks"] * 1e6 / r["hz"] / r["msgs"]

    # Ratios per round (the runs of a round are back to back), then the median.
    def ratio(a, b, label="http", field="rps"):
        return per_round(label, lambda x, y: x[field] / y[field] if y[field] else NAN, a, b)

    def added(kind, field="p99_us"):
        return (med(kind, "moderate", field) - med("direct", "moderate", field)) / 1000

    def is_quiet(r):
        """Did a moderate-load run keep its cores? latency_load -q left out the epochs with steal above
        STEAL_MAX itself; the run counts if it kept half of them."""
        return r.get("epochs", 0) > 0 and r["excluded_epochs"] <= r["epochs"] / 2

    def round_added(kind):
        """Per round: the added p99 (ms), and whether both the relay's and direct's run were quiet."""
        return [((p["p99_us"] - d["p99_us"]) / 1000, is_quiet(p) and is_quiet(d))
                for p, d in zip(runs.get(("moderate", kind), []), runs.get(("moderate", "direct"), []))]

    def quiet_added(kind):
        """The median added p99 (ms) over the quiet rounds, and how many there were."""
        quiet = [a for a, ok in round_added(kind) if ok]
        return median(quiet), len(quiet)

    def pooled_added(kind):
        """The added p99 (ms) of the quiet rounds' requests pooled: the p99 of every latency the relay's
        runs in those rounds recorded, less that of direct's runs in the same rounds; with the rounds and
        the requests per path. NaN without the runs' histograms (bench/latency_load.c, LATENCY_HIST)."""
        quiet = [i for i, (_, ok) in enumerate(round_added(kind)) if ok]
        hists = [pooled_hist(hist_dir, k, quiet) for k in (kind, "direct")]
        if not quiet or not all(hists):
            return NAN, len(quiet), 0
        return (hist_pct(hists[0], 0.99) - hist_pct(hists[1], 0.99)) / 1000, len(quiet), sum(hists[0].values())

    http = kinds("http")
    if http:
        print()
        print("HTTP, wrk -t2 -c50, GET /bytes/100 (medians of %d rounds; CPU: the relay's, for direct the backend's)"
              % len(runs.get(("http", "direct"), [])))
        print("| path | req/s | p50 ms | p99 ms | CPU us/req | rounds req/s |")
        print("|---|---|---|---|---|---|")
        for kind in http:
            print("| %s | %.0f | %.3f | %.3f | %.2f | %s |" % (
                kind, med(kind, "http", "rps"), med(kind, "http", "p50"), med(kind, "http", "p99"),
                med(kind, "http", "cpu_us"), col(("http", kind), "rps")))

        print()
        print("proxy / nginx = %.2f   proxy / haproxy = %.2f   proxy / direct = %.2f   haproxy / nginx = %.2f" % (
            ratio("proxy", "nginx"), ratio("proxy", "haproxy"), ratio("proxy", "direct"), ratio("haproxy", "nginx")))
        if ("http", "proxy-alt") in runs:
            print("proxy-alt / proxy = %.2f (req/s), %.2f (CPU per request)" % (
                ratio("proxy-alt", "proxy"), ratio("proxy-alt", "proxy", field="cpu_us")))
        # CPU per request of the relay itself (direct: the backend), from /proc.
        cb, cw = med("direct", "http", "cpu_us"), med("direct", "http", "client_cpu_us")
        print("CPU per request: client (wrk) %.2f us; backend %.2f us; %s" % (
            cw, cb, "; ".join("%s %.2f us" % (k, med(k, "http", "cpu_us")) for k in http if k != "direct")))
        # When client, relay and backend share the cores and the cores are the
        # limit, throughput scales with 1 / (CPU per request of all three). A
        # relay does the socket work of both ends (read + write on each side,
        # against the backend's one read and one write), so even one as cheap
        # per call as the backend costs about 2x the backend's CPU per request.
        cp = med("proxy", "http", "cpu_us")
        if cb and cw:
            print("CPU-bound ceiling here for a relay at 2x the backend's cost: (client + backend) / "
                  "(client + 3 backend) = %.2f of direct; with the proxy's measured cost: %.2f" %
                  ((cw + cb) / (cw + 3 * cb), (cw + cb) / (cw + cb + cp)))

    h2 = kinds("h2", with_direct=False)
    if h2:
        print()
        print("HTTP/2 with prior knowledge (h2c), h2load -t2 -c50 -m10, GET /bytes/100")
        print("| path | req/s | 2xx / done (last round) | rounds req/s |")
        print("|---|---|---|---|")
        for kind in h2:
            last = runs.get(("h2", kind), [{}])[-1]
            print("| %s | %.0f | %.0f / %.0f | %s |" % (kind, med(kind, "h2", "rps"), last.get("ok", 0),
                                                      last.get("done", 0), col(("h2", kind), "rps")))
        print()
        print("HTTP/2: proxy / nginx = %.2f (target >= 1), proxy / haproxy = %.2f" % (
            ratio("proxy", "nginx", "h2"), ratio("proxy", "haproxy", "h2")))

    mod = kinds("moderate")
    if mod:

        print()
        print("HTTP, moderate load: open loop at %s req/s, 8 connections per path (bench/latency_load.c); added = path - direct"
              % rate)
        print("| path | rate | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | added p50 / p90 / p99 ms |")
        print("|---|---|---|---|---|---|---|---|")
        for kind in mod:
            print("| %s | %.0f | %.3f | %.3f | %.3f | %.3f | %.0f | %s |" % (
                kind, med(kind, "moderate", "rate"), med(kind, "moderate", "p50_us") / 1000,
                med(kind, "moderate", "p90_us") / 1000, med(kind, "moderate", "p99_us") / 1000,
                med(kind, "moderate", "p999_us") / 1000, med(kind, "moderate", "errors"),
                "-" if kind == "direct" else "%.3f / %.3f / %.3f" % (
                    added(kind, "p50_us"), added(kind, "p90_us"), added(kind))))
        print()
        print("added p99 per round: %s" % "; ".join(
            "%s %s" % (k, [round(a, 3) for a, _ in round_added(k)])
            for k in mod if k != "direct"))
        quiet = {k: quiet_added(k) for k in mod if k != "direct"}
        if any(n for _, n in quiet.values()):
            print("added p99, median over quiet rounds (steal <= %s %%): %s" % (
                STEAL_MAX, "; ".join("%s %.3f ms (%d rounds)" % (k, v, n) for k, (v, n) in quiet.items())))
        pooled = {k: pooled_added(k) for k in mod if k != "direct"}
        if any(n for _, _, n in pooled.values()):
            print("added p99 of the quiet rounds' requests pooled (p99 of all of a path's latencies in those "
                  "rounds, less direct's): %s" % "; ".join(
                      "%s %.3f ms (%d rounds, %d requests)" % (k, v, r, n) for k, (v, r, n) in pooled.items()))
        direct = runs.get(("moderate", "direct"), [])
        if any("epochs" in r for r in direct):
            print("epochs (one turn of every path) left out for steal > %s %% per round: %s" % (
                STEAL_MAX, ["%d of %d" % (r.get("excluded_epochs", 0), r.get("epochs", 0)) for r in direct]))

    ws = kinds("ws")
    if ws:
        print()
        print("WebSocket echo, 1,000 connections, 64-byte messages (a message = one echo round trip, two frames "
              "through the relay; CPU: the relay's over the measured window, for direct the backend's)")
        print("| path | msgs/s | p50 ms | p99 ms | CPU us/msg | rounds msgs/s |")
        print("|---|---|---|---|---|---|")
        for kind in ws:
            print("| %s | %.0f | %.3f | %.3f | %.2f | %s |" % (
                kind, med(kind, "ws", "msgs_per_sec"), med(kind, "ws", "p50_us") / 1000,
                med(kind, "ws", "p99_us") / 1000, median([ws_cpu(r) for r in runs.get(("ws", kind), [])]),
                col(("ws", kind), "msgs_per_sec")))
        if ("ws", "direct") in runs and ("ws", "proxy") in runs:
            print()
            print("WebSocket proxy / direct = %.2f (target >= 0.8), proxy / nginx = %.2f, proxy / haproxy = %.2f" % (
                ratio("proxy", "direct", "ws", "msgs_per_sec"), ratio("proxy", "nginx", "ws", "msgs_per_sec"),
                ratio("proxy", "haproxy", "ws", "msgs_per_sec")))

    if runs.get(("bulk", "direct")):
        print()
        print("Bulk tunnel: 4 WebSockets echoing 1 MiB messages (GiB/s counts both directions)")
        print("| path | MiB messages/s | GiB/s | proxy CPU s per GiB | rounds |")
        print("|---|---|---|---|---|")
        for kind, label in (("direct", "direct"), ("proxy", "proxy (splice)"), ("copy", "proxy --no-splice"),
                            ("proxy-alt", "proxy-alt")):
            rs = runs.get(("bulk", kind), [])
            if not rs:
                continue
            gib = [2 * r["msgs_per_sec"] * r["secs"] / 1024 for r in rs]
            cpu = [r["cpu_ticks"] / r["hz"] / g if g else NAN for r, g in zip(rs, gib)]
            print("| %s | %.0f | %.2f | %s | %s |" % (
                label, med(kind, "bulk", "msgs_per_sec"), 2 * med(kind, "bulk", "msgs_per_sec") / 1024,
                "-" if kind == "direct" else "%.3f" % median(cpu), col(("bulk", kind), "msgs_per_sec")))
    if idle:
        held = int(idle["held"])
        rss = int(idle["rss_kb"]) / 1024
        before = int(idle["rss_before_kb"]) / 1024
        print()
        print("idle WebSockets held through the proxy: %d (wanted %s; descriptor limit %s per table)" %
              (held, idle["wanted"], idle["limit"]))
        if idle.get("fds_by_thread"):
            print("descriptors by proxy thread: %s" % idle["fds_by_thread"])
        print("proxy RSS: %.1f MB before, %.1f MB holding them (%.2f KB per connection; target <= 100 MB)" %
              (before, rss, (rss - before) * 1024 / held if held else NAN))

    # Issue 15: one row per relay, then the targets with their ratios.
    relays = [k for k in ORDER if k != "direct" and any((p, k) in runs for p in ("http", "moderate", "ws"))]
    print()
    print("Per relay (medians; added p99 = relay - direct at %s req/s open loop)" % rate)
    print("| relay | req/s | p50 ms | p99 ms | CPU us/req | WS msgs/s | CPU us/msg | added p99 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in relays:
        print("| %s | %.0f | %.3f | %.3f | %.2f | %.0f | %.2f | %.3f |" % (
            kind, med(kind, "http", "rps"), med(kind, "http", "p50"), med(kind, "http", "p99"),
            med(kind, "http", "cpu_us"), med(kind, "ws", "msgs_per_sec"),
            median([ws_cpu(r) for r in runs.get(("ws", kind), [])]), added(kind)))
    print()
    print("Targets (issue 15; ratios are medians of per-round ratios):")
    for ours in ("proxy", "proxy-alt"):
        if not any((p, ours) in runs for p in ("http", "moderate", "ws")):
            continue
        cpu_req = per_round("http", lambda o, n, h: o["cpu_us"] / min(n["cpu_us"], h["cpu_us"]),
                            ours, "nginx", "haproxy")
        ws_o = runs.get(("ws", ours), [])
        ws_n = runs.get(("ws", "nginx"), [])
        cpu_msg = median([ws_cpu(o) / ws_cpu(n) if ws_cpu(n) else NAN for o, n in zip(ws_o, ws_n)])
        rps = per_round("http", lambda o, n, h: o["rps"] / max(n["rps"], h["rps"]), ours, "nginx", "haproxy")
        p99 = added(ours)
        p99q, nq = quiet_added(ours)
        p99p, _, npool = pooled_added(ours)
        print("  %s CPU per request / min(nginx, haproxy) = %.2f (target <= 0.8): %s" % (
            ours, cpu_req, verdict(cpu_req, cpu_req <= 0.8)))
        print("  %s CPU per WebSocket message / nginx's = %.2f (target <= 0.8): %s" % (
            ours, cpu_msg, verdict(cpu_msg, cpu_msg <= 0.8)))
        print("  %s req/s / max(nginx, haproxy) = %.2f (target >= 1.0): %s" % (ours, rps, verdict(rps, rps >= 1.0)))
        # The verdict takes the pooled quiet rounds where there are histograms (every request of those
        # rounds counts once), else the median over the quiet rounds, else over all rounds.
        judged = p99p if npool else p99q if nq else p99
        print("  %s added p99 at %s req/s open loop = %.3f ms over all rounds, %.3f ms over %d quiet rounds, "
              "%.3f ms pooled over them (target <= 0.2): %s" % (ours, rate, p99, p99q, nq, p99p,
                                                               verdict(judged, judged <= 0.2)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "5000")
