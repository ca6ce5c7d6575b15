# SPDX-License-Identifier: MIT
"""Summarises bench/proxy.sh's raw lines: medians over rounds, ratios, targets."""
import statistics
import sys


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def main(path):
    runs = {}
    idle = None
    for line in open(path):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "idle":
            idle = fields(line)
            continue
        key = (parts[0], parts[1])
        runs.setdefault(key, []).append({k: float(v) for k, v in fields(line).items()})

    def med(kind, label, field):
        vals = [r[field] for r in runs.get((label, kind), []) if field in r]
        return statistics.median(vals) if vals else float("nan")

    def col(label, field):
        return [round(r[field], 3) for r in runs.get(label, [])]

    print()
    print("HTTP, wrk -t2 -c50, GET /bytes/100 (medians of %d rounds)" % len(runs.get(("http", "direct"), [])))
    print("| path | req/s | p50 ms | p99 ms | rounds req/s |")
    print("|---|---|---|---|---|")
    for kind in ("direct", "proxy", "nginx"):
        print("| %s | %.0f | %.3f | %.3f | %s |" % (kind, med(kind, "http", "rps"), med(kind, "http", "p50"),
                                                   med(kind, "http", "p99"), col(("http", kind), "rps")))
    # Ratios per round (the runs of a round are back to back), then the median.
    def ratio(a, b, label="http"):
        ra, rb = runs.get((label, a), []), runs.get((label, b), [])
        return statistics.median([x["rps"] / y["rps"] for x, y in zip(ra, rb)]) if ra and rb else float("nan")
    r_nginx, r_direct = ratio("proxy", "nginx"), ratio("proxy", "direct")
    print()
    print("proxy / nginx = %.2f (target >= 1.2)   proxy / direct = %.2f (target >= 0.7)" % (r_nginx, r_direct))
    # CPU per request of the relay itself (direct: the backend), from /proc.
    cp, cn = med("proxy", "http", "cpu_us"), med("nginx", "http", "cpu_us")
    cb, cw = med("direct", "http", "cpu_us"), med("direct", "http", "client_cpu_us")
    print("CPU per request: client (wrk) %.2f us; backend %.2f us; proxy %.2f us; nginx %.2f us; "
          "nginx / proxy = %.2f" % (cw, cb, cp, cn, cn / cp if cp else float("nan")))
    # When client, relay and backend share the cores and the cores are the
    # limit, throughput scales with 1 / (CPU per request of all three). A
    # relay does the socket work of both ends (read + write on each side,
    # against the backend's one read and one write), so even one as cheap
    # per call as the backend costs about 2x the backend's CPU per request.
    if cb and cw:
        print("CPU-bound ceiling here for a relay at 2x the backend's cost: (client + backend) / "
              "(client + 3 backend) = %.2f of direct; with the proxy's measured cost: %.2f" %
              ((cw + cb) / (cw + 3 * cb), (cw + cb) / (cw + cb + cp)))
    if runs.get(("h2", "proxy")):
        print()
        print("HTTP/2 with prior knowledge (h2c), h2load -t2 -c50 -m10, GET /bytes/100")
        print("| path | req/s | 2xx / done (last round) | rounds req/s |")
        print("|---|---|---|---|")
        for kind in ("proxy", "nginx"):
            last = runs.get(("h2", kind), [{}])[-1]
            print("| %s | %.0f | %.0f / %.0f | %s |" % (kind, med(kind, "h2", "rps"), last.get("ok", 0),
                                                      last.get("done", 0), col(("h2", kind), "rps")))
        print()
        print("HTTP/2: proxy / nginx = %.2f (target >= 1)" % ratio("proxy", "nginx", "h2"))
    print()
    print("HTTP, moderate load: open loop at a fixed rate, 8 connections (bench/latency_load.c)")
    print("| path | rate | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("direct", "proxy", "nginx"):
        print("| %s | %.0f | %.3f | %.3f | %.3f | %.3f | %.0f |" % (
            kind, med(kind, "moderate", "rate"), med(kind, "moderate", "p50_us") / 1000,
            med(kind, "moderate", "p90_us") / 1000, med(kind, "moderate", "p99_us") / 1000,
            med(kind, "moderate", "p999_us") / 1000, med(kind, "moderate", "errors")))
    added = (med("proxy", "moderate", "p99_us") - med("direct", "moderate", "p99_us")) / 1000
    added_ng = (med("nginx", "moderate", "p99_us") - med("direct", "moderate", "p99_us")) / 1000
    print()
    print("added p99: proxy %.3f ms (target <= 0.2), nginx %.3f ms; per round: proxy %s" % (
        added, added_ng, [round((p["p99_us"] - d["p99_us"]) / 1000, 3) for p, d in
                          zip(runs.get(("moderate", "proxy"), []), runs.get(("moderate", "direct"), []))]))
    print()
    print("WebSocket echo, 1,000 connections, 64-byte messages")
    print("| path | msgs/s | p50 ms | p99 ms | rounds |")
    print("|---|---|---|---|---|")
    for kind in ("direct", "proxy"):
        print("| %s | %.0f | %.3f | %.3f | %s |" % (
            kind, med(kind, "ws", "msgs_per_sec"), med(kind, "ws", "p50_us") / 1000,
            med(kind, "ws", "p99_us") / 1000, col(("ws", kind), "msgs_per_sec")))
    wd, wp = runs.get(("ws", "direct"), []), runs.get(("ws", "proxy"), [])
    if wd and wp:
        wr = statistics.median([p["msgs_per_sec"] / d["msgs_per_sec"] for p, d in zip(wp, wd)])
        print()
        print("proxy / direct = %.2f (target >= 0.8)" % wr)
    if runs.get(("bulk", "direct")):
        print()
        print("Bulk tunnel: 4 WebSockets echoing 1 MiB messages (GiB/s counts both directions)")
        print("| path | MiB messages/s | GiB/s | proxy CPU s per GiB | rounds |")
        print("|---|---|---|---|---|")
        for kind, label in (("direct", "direct"), ("proxy", "proxy (splice)"), ("copy", "proxy --no-splice")):
            rs = runs.get(("bulk", kind), [])
            if not rs:
                continue
            gib = [2 * r["msgs_per_sec"] * r["secs"] / 1024 for r in rs]
            cpu = [r["cpu_ticks"] / r["hz"] / g if g else float("nan") for r, g in zip(rs, gib)]
            print("| %s | %.0f | %.2f | %s | %s |" % (
                label, med(kind, "bulk", "msgs_per_sec"), 2 * med(kind, "bulk", "msgs_per_sec") / 1024,
                "-" if kind == "direct" else "%.3f" % statistics.median(cpu), col(("bulk", kind), "msgs_per_sec")))
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
              (before, rss, (rss - before) * 1024 / held if held else float("nan")))


if __name__ == "__main__":
    main(sys.argv[1])
