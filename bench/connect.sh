#!/usr/bin/env bash
# Controller connect throughput and latency on loopback, with a mock drone.
#  1. connects for existing keys: wrk, 16 connections, against /ctrl/connect,
#     and the same wrk against /pub/health as the baseline of the HTTP layer;
#  2. connect->ready for new keys (status stream), sequential.
#   bench/connect.sh [SECONDS]            (results: bench/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench >/dev/null
make -s all >/dev/null
secs=${1:-10}
tmp=$(mktemp -d)
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
build/plane controller --db "$tmp/c.db" --port "$port" --default-cluster localhost:9090 2>"$tmp/c.log" & pids+=($!)
until curl -sf "$url/pub/health" >/dev/null; do sleep 0.05; done
PLANE_LOG=warn build/plane drone --controller-url "$url/" --cluster localhost:9090 --runtime mock --db "$tmp/d.db" \
    2>"$tmp/d.log" & pids+=($!)
until curl -sf "$url/ctrl/c/localhost:9090/state" | grep -q '"ready":true'; do sleep 0.1; done
sleep 1   # first heartbeat
for i in $(seq 0 99); do
  curl -sf -o /dev/null -H 'content-type: application/json' \
    -d "{\"key\":{\"name\":\"bench-$i\"},\"spawn_config\":{\"executable\":{\"image\":\"mock\"}}}" "$url/ctrl/connect"
done
echo "== existing keys: wrk -t2 -c16 -d${secs}s =="
run() { wrk -t2 -c16 -d"${secs}s" --latency "$@" 2>&1; }
base=$(run "$url/pub/health")
ours=$(KEYS=100 run -s bench/connect_existing.lua "$url/ctrl/connect")
rate() { echo "$1" | awk '/Requests\/sec/ {print $2}'; }
pct() { echo "$1" | awk -v p="$2" '$1 == p {print $2}'; }
errs() { echo "$1" | awk '/Non-2xx/ {print $NF}'; }
printf '  %-28s %10s req/s  p50 %8s  p99 %8s\n' "GET /pub/health (baseline)" "$(rate "$base")" "$(pct "$base" 50%)" "$(pct "$base" 99%)"
printf '  %-28s %10s req/s  p50 %8s  p99 %8s  non-2xx: %s\n' "POST /ctrl/connect" "$(rate "$ours")" "$(pct "$ours" 50%)" "$(pct "$ours" 99%)" "$(errs "$ours")"
/usr/bin/python3 -c "print(f'  connect / health throughput ratio: {float(\"$(rate "$ours")\")/float(\"$(rate "$base")\"):.2f}  (target >= 5000 connects/s, p99 < 10 ms)')"
echo "== new keys =="
/usr/bin/python3 bench/connect_bench.py "$url" 200
