#!/usr/bin/env bash
# Controller connect throughput and latency on loopback, with a mock drone, for
# each store side by side: SQLite, PostgreSQL with one controller, PostgreSQL
# with two controllers on one database.
#  1. connects for existing keys: wrk (16 connections in all, split over the
#     controllers) against /ctrl/connect, and the same against /pub/health
#     as the baseline of the HTTP layer;
#  2. connect->ready for new keys (status stream), sequential.
# PostgreSQL runs a cluster of its own with fsync on and synchronous_commit
# off, which matches SQLite's WAL with synchronous=NORMAL.
#   bench/connect.sh [SECONDS]            (results: bench/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench >/dev/null
make -s all >/dev/null
secs=${1:-10}
tmp=$(mktemp -d)
chmod 755 "$tmp" # the PostgreSQL server runs as its own user
pgdir=$tmp/pg
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/pg-up.sh --stop "$pgdir" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rate() { echo "$1" | awk '/Requests\/sec/ {print $2}'; }
pct() { echo "$1" | awk -v p="$2" '$1 == p {print $2}'; }
errs() { echo "$1" | awk '/Non-2xx/ {n = $NF} END {print n + 0}'; }

# setup NAME DB N: N controllers on DB, a mock drone on the first, 100 keys.
setup() {
  local name=$1 db=$2 n=$3
  urls=(); ctrl_pids=()
  for i in $(seq 1 "$n"); do
    local port; port=$(free_port)
    build/plane controller --db "$db" --port "$port" --default-cluster localhost:9090 2>"$tmp/$name-c$i.log" &
    pids+=($!); ctrl_pids+=($!)
    urls+=("http://127.0.0.1:$port")
    until curl -sf "${urls[-1]}/pub/health" >/dev/null; do sleep 0.05; done
  done
  PLANE_LOG=warn build/plane drone --controller-url "${urls[0]}/" --cluster localhost:9090 --runtime mock \
      --db "$tmp/$name-d.db" 2>"$tmp/$name-d.log" & pids+=($!)
  until curl -sf "${urls[0]}/ctrl/c/localhost:9090/state" | grep -q '"ready":true'; do sleep 0.1; done
  sleep 1   # first heartbeat
  for i in $(seq 0 99); do
    curl -sf -o /dev/null -H 'content-type: application/json' \
      -d "{\"key\":{\"name\":\"bench-$i\"},\"spawn_config\":{\"executable\":{\"image\":\"mock\"}}}" "${urls[0]}/ctrl/connect"
  done
}

# cpu_ticks: "busy total" jiffies of the whole machine so far (/proc/stat).
cpu_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }

# proc_ticks PID...: their CPU time so far (user + system jiffies); PostgreSQL's
# server processes are the postmaster's children, started as it goes.
proc_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
pg_pids() { local pm; pm=$(head -1 "$pgdir/data/postmaster.pid" 2>/dev/null) || return 0; echo "$pm $(pgrep -P "$pm" | tr '\n' ' ')"; }

# load PATH [wrk args]: 16 connections split over the controllers; prints
# "req/s|p50s|p99s|non2xx|busy%|controller us|postgres us" (busy: both cores,
# everything running, during the load; us: CPU per request of the controllers,
# of PostgreSQL's processes).
load() {
  local path=$1; shift
  local n=${#urls[@]} outs=() i b0 t0 b1 t1 c0 c1 g0 g1 pgp
  pgp=$(pg_pids)
  read -r b0 t0 <<<"$(cpu_ticks)"
  c0=$(proc_ticks "${ctrl_pids[@]}"); g0=$(proc_ticks $pgp)
  for i in $(seq 0 $((n - 1))); do
    wrk -t$((2 / n > 0 ? 2 / n : 1)) -c$((16 / n)) -d"${secs}s" --latency "$@" "${urls[$i]}$path" >"$tmp/wrk$i" 2>&1 &
    outs+=($!)
  done
  wait "${outs[@]}"
  read -r b1 t1 <<<"$(cpu_ticks)"
  c1=$(proc_ticks "${ctrl_pids[@]}"); g1=$(proc_ticks $(pg_pids))
  local total=0 p50="" p99="" bad=0
  for i in $(seq 0 $((n - 1))); do
    local o; o=$(cat "$tmp/wrk$i")
    total=$(/usr/bin/python3 -c "print(${total} + float('$(rate "$o")'))")
    p50="$p50 $(pct "$o" 50%)"; p99="$p99 $(pct "$o" 99%)"
    bad=$((bad + $(errs "$o")))
  done
  local hz; hz=$(getconf CLK_TCK)
  echo "$total|$p50|$p99|$bad|$(( (b1 - b0) * 100 / (t1 - t0) ))|$(/usr/bin/python3 -c "r=$total*$secs; print(f'{($c1-$c0)*1e6/$hz/r:.0f}|{($g1-$g0)*1e6/$hz/r:.0f}')")"
}

declare -A connects
report() {
  local name=$1
  IFS='|' read -r base_rate base_p50 base_p99 _ <<<"$(load /pub/health)"
  IFS='|' read -r c_rate c_p50 c_p99 c_bad c_busy c_cus c_pgus <<<"$(KEYS=100 load /ctrl/connect -s bench/connect_existing.lua)"
  connects[$name]=$c_rate
  printf '  %-22s health %9.0f req/s | connect %9.0f req/s  p50%s  p99%s  non-2xx %s\n' \
    "$name" "$base_rate" "$c_rate" "$c_p50" "$c_p99" "$c_bad"
  printf '  %-22s   cores busy %s%%, CPU per connect: controllers %s us, PostgreSQL %s us\n' "$name" "$c_busy" "$c_cus" "$c_pgus"
  printf '  %-22s ' "$name"; /usr/bin/python3 bench/connect_bench.py "${urls[0]}" 200
}

echo "== connects for existing keys (wrk, ${secs}s, 16 connections) and new keys connect->ready =="
setup sqlite "$tmp/c.db" 1
report sqlite
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()

pg=$(PG_FSYNC=on PG_SYNC_COMMIT=off scripts/pg-up.sh "$pgdir")
psql "$pg" -qc "CREATE DATABASE bench1" -c "CREATE DATABASE bench2"
setup postgres-1 "${pg%/*}/bench1" 1
report postgres-1
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()
setup postgres-2 "${pg%/*}/bench2" 2
report postgres-2
/usr/bin/python3 - "${connects[sqlite]}" "${connects[postgres-1]}" "${connects[postgres-2]}" <<'PY'
import sys
s, p1, p2 = map(float, sys.argv[1:])
print(f"  postgres-1 / sqlite connects: {p1 / s:.2f} (target >= 0.5)   postgres-2 / postgres-1: {p2 / p1:.2f} (target >= 1.6)")
PY
