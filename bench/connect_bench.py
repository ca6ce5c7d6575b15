#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Connect->ready latency for new keys on the mock runtime: POST /ctrl/connect,
then follow the status stream until `ready`. usage: connect_bench.py URL N"""
import json
import statistics
import sys
import time

import requests

url, n = sys.argv[1], int(sys.argv[2])
s = requests.Session()
times = []
for i in range(n):
    t0 = time.perf_counter()
    r = s.post(url + "/ctrl/connect", json={"key": {"name": f"new-{i}-{time.time()}"},
                                            "spawn_config": {"executable": {"image": "mock"}}}, timeout=10)
    b = r.json()["backend_id"]
    with s.get(f"{url}/pub/b/{b}/status-stream", stream=True, timeout=10) as st:
        for line in st.iter_lines(decode_unicode=True):
            if line == "id:ready":
                break
    times.append(time.perf_counter() - t0)
    s.post(f"{url}/ctrl/b/{b}/hard-terminate", timeout=10)
times.sort()
print(f"  connect->ready, new keys, {n} sequential: p50 {statistics.median(times)*1e3:.2f} ms"
      f"  p90 {times[int(n*0.9)]*1e3:.2f} ms  p99 {times[min(n-1, int(n*0.99))]*1e3:.2f} ms (target p50 < 20 ms)")
