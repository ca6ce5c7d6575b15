#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# bench/proxy.sh [SECONDS] [ROUNDS] - the proxy against its baselines, on
# loopback, in one run:
#   RELAYS `plane proxy --workers WORKERS`; nginx (worker_processes
#          WORKERS, keep-alive upstream over HTTP/1.1, access_log off) and
#          HAProxy (nbthread WORKERS, mode http, http-reuse always, no log),
#          both the Debian packages, run from configs in $TMP (never the
#          system services); and, with PROXY_ALT_ARGS set, a second `plane
#          proxy` ("proxy-alt") with those extra arguments, so two ways of
#          running the proxy are compared in one run. Every measurement below
#          that has one relay has them all, alternating round by round.
#   HTTP   wrk -t2 -c50 (saturation) against the echo backend directly and
#          through each relay; medians and ratios, and each relay's CPU time
#          per request from /proc (all threads and processes of the relay;
#          for direct, the backend's).
#          Moderate load: a fixed rate (RATE, default 5,000 req/s, about a
#          tenth of what the proxy sustains here) over 8 keep-alive
#          connections per path with bench/latency_load.c, which times every
#          request from when it was due (open loop: a slow server is charged
#          for the requests it kept waiting); added latency = relay -
#          direct. Tails this small are the host's more than the relays':
#          the hypervisor lends our cores out for seconds at a time, and
#          back-to-back runs saw different machines. So each round is one
#          run in which direct and every relay take turns, 200 ms each in
#          an order that rotates (SECS of turns for each path; the first
#          20 ms of a turn, while a path that idled wakes up, are not
#          measured); requests due in a turn of all paths (about a second)
#          in which the hypervisor took more than STEAL_MAX % of the CPUs
#          are left out for all paths alike; and the summary gives the
#          added p99 of each round, their median, and that of all rounds'
#          requests pooled into one distribution per path (the estimate
#          that least depends on one round's luck).
#   WS     1,000 concurrent echo connections, directly and through each relay
#          (bench/proxy_wsbench.c): messages/s and the relay's CPU time per
#          message over the measured window. A message is one echo round
#          trip (the client's 64-byte frame to the backend and its echo
#          back: two frames through the relay). Then N idle WebSockets held
#          through the proxy (10,000, or as many as the descriptor limit
#          allows) and the proxy's RSS while it holds them.
#   HTTP/2 h2load -t2 -c50 -m10 with prior knowledge (h2c), through `plane
#          proxy`, nginx's `listen ... http2` and HAProxy's `bind ... proto
#          h2`, same rounds.
#   BULK   4 WebSockets echoing 1 MiB messages: directly, through the proxy
#          (bulk tunnels move by splice(2)), through a second proxy with
#          --no-splice (copies through user space) and through proxy-alt if
#          there is one; throughput and each proxy's CPU time per GiB relayed.
# Needs wrk, h2load, nginx and haproxy (scripts/install-deps.sh --bench).
# PLANE_BIN and ECHO_BACKEND override build/plane and build/echo_backend.
# PROXY_ARGS: extra arguments for `plane proxy` (the main one and the
# --no-splice one), default none. PROXY_ALT_ARGS: when set, also run
# proxy-alt, the same command line as the main proxy without PROXY_ARGS and
# with these instead (for example PROXY_ALT_ARGS="--io epoll"), and the
# binary PLANE_ALT_BIN if that is set (another build of the proxy, side by
# side with this one: PROXY_ALT_ARGS="--io uring" PLANE_ALT_BIN=/tmp/plane).
# PARTS: which measurements to run, default "http h2 moderate ws bulk idle"
# (for example PARTS=moderate to look at the tail at moderate load alone,
# over many rounds).
set -euo pipefail

SECS=${1:-5}
ROUNDS=${2:-3}
WORKERS=${WORKERS:-2}   # event loops of the proxy = worker processes of nginx
RATE=${RATE:-5000}      # requests/s of the moderate-load runs
STEAL_MAX=${STEAL_MAX:-1}  # moderate load: requests due in a turn of all paths with more steal (% of both cores) do not count
PARTS=" ${PARTS:-http h2 moderate ws bulk idle} "
part() { [[ $PARTS == *" $1 "* ]]; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PLANE=${PLANE_BIN:-$ROOT/build/plane}
ECHO=${ECHO_BACKEND:-$ROOT/build/echo_backend}
PY=/usr/bin/python3
read -ra PROXY_EXTRA <<<"${PROXY_ARGS:-}"
read -ra ALT_EXTRA <<<"${PROXY_ALT_ARGS:-}"

for tool in wrk h2load nginx haproxy cc curl; do
    command -v "$tool" >/dev/null || { echo "bench/proxy.sh: $tool is missing (scripts/install-deps.sh --bench; apt-get install nginx haproxy)" >&2; exit 1; }
done
[ -x "$PLANE" ] && [ -x "$ECHO" ] || { echo "bench/proxy.sh: build first (make)" >&2; exit 1; }

# Every connection through the proxy is two descriptors.
ulimit -n "$(ulimit -Hn)"

TMP=$(mktemp -d /tmp/proxy-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$@" && return 0; sleep 0.05; done; echo "timeout: $*" >&2; exit 1; }

CPORT=$(free_port); PPORT=$(free_port); NPORT=$(free_port); N2PORT=$(free_port)
HPORT=$(free_port); H2PORT=$(free_port); APORT=$(free_port)
CLUSTER=localhost:9090
"$PLANE" controller --db "$TMP/c.db" --port "$CPORT" --default-cluster "$CLUSTER" >"$TMP/controller.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$CPORT/pub/health"
"$PLANE" drone --controller-url "http://127.0.0.1:$CPORT/" --cluster "$CLUSTER" --runtime process \
    --db "$TMP/d.db" --data-dir "$TMP/dd" >"$TMP/drone.log" 2>&1 &
PIDS+=($!)
"$PLANE" proxy --controller-url "http://127.0.0.1:$CPORT/" --cluster "$CLUSTER" --http-port "$PPORT" \
    --host 127.0.0.1 --workers "$WORKERS" ${PROXY_EXTRA[@]+"${PROXY_EXTRA[@]}"} >"$TMP/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=($PROXY_PID)
CPPORT=$(free_port)
"$PLANE" proxy --controller-url "http://127.0.0.1:$CPORT/" --cluster "$CLUSTER" --http-port "$CPPORT" \
    --host 127.0.0.1 --workers "$WORKERS" --no-splice --name px-copy ${PROXY_EXTRA[@]+"${PROXY_EXTRA[@]}"} \
    >"$TMP/proxy-copy.log" 2>&1 &
COPY_PID=$!
PIDS+=($COPY_PID)
ALT_PID=
if [ -n "${PROXY_ALT_ARGS:-}" ]; then
    "${PLANE_ALT_BIN:-$PLANE}" proxy --controller-url "http://127.0.0.1:$CPORT/" --cluster "$CLUSTER" --http-port "$APORT" \
        --host 127.0.0.1 --workers "$WORKERS" --name px-alt "${ALT_EXTRA[@]}" >"$TMP/proxy-alt.log" 2>&1 &
    ALT_PID=$!
    PIDS+=("$ALT_PID")
fi
for port in "$PPORT" ${ALT_PID:+"$APORT"}; do
    for _ in $(seq 200); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready")" = 200 ] && break; sleep 0.05; done
done
# A proxy that refused its arguments (PROXY_ARGS, PROXY_ALT_ARGS) has exited.
for p in "$PROXY_PID:proxy" "$COPY_PID:proxy-copy" ${ALT_PID:+"$ALT_PID:proxy-alt"}; do
    kill -0 "${p%%:*}" 2>/dev/null || { echo "bench/proxy.sh: ${p#*:} exited:" >&2; cat "$TMP/${p#*:}.log" >&2; exit 1; }
done
sleep 1 # the drone registers
TOKEN=$(curl -s -XPOST -H 'content-type: application/json' \
    -d "{\"key\":{\"name\":\"bench\"},\"spawn_config\":{\"executable\":{\"command\":[\"$ECHO\"]}}}" \
    "http://127.0.0.1:$CPORT/ctrl/connect" | $PY -c 'import json,sys; print(json.load(sys.stdin)["token"])')
BPORT=$(curl -s -H "Host: $CLUSTER" "http://127.0.0.1:$PPORT/$TOKEN/" | $PY -c 'import json,sys; print(json.load(sys.stdin)["env"]["PORT"])')

cat >"$TMP/nginx.conf" <<EOF
worker_processes $WORKERS;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 16384; }
http {
    access_log off;
    upstream b { server 127.0.0.1:$BPORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NPORT;
        location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }
        location /ws {
            proxy_pass http://b; proxy_http_version 1.1; proxy_read_timeout 1h;
            proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection upgrade;
        }
    }
    server {
        listen 127.0.0.1:$N2PORT http2;
        keepalive_requests 1000000;  # the default 1000 would end each h2load connection early
        location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
nginx -c "$TMP/nginx.conf" -p "$TMP" >"$TMP/nginx.out" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$NPORT/"

# HAProxy as nginx above: WORKERS threads, HTTP/1.1 to the backend over
# connections kept open and shared between clients (http-reuse always), no
# log; WebSockets pass as tunnels after the upgrade (timeout tunnel). h2c
# with prior knowledge on a second bind.
cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 8000
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend fe
    bind 127.0.0.1:$HPORT
    bind 127.0.0.1:$H2PORT proto h2
    default_backend b
backend b
    server s1 127.0.0.1:$BPORT
EOF
haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.out" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
wait_http "http://127.0.0.1:$HPORT/"

cc -O2 -o "$TMP/wsbench" "$ROOT/bench/proxy_wsbench.c"
cc -O2 -o "$TMP/latency_load" "$ROOT/bench/latency_load.c" -lm

PATH_Q=/bytes/100
url_of() {
    case $1 in
    direct) echo "http://127.0.0.1:$BPORT$PATH_Q" ;;
    proxy) echo "http://127.0.0.1:$PPORT/$TOKEN$PATH_Q" ;;
    proxy-alt) echo "http://127.0.0.1:$APORT/$TOKEN$PATH_Q" ;;
    nginx) echo "http://127.0.0.1:$NPORT$PATH_Q" ;;
    haproxy) echo "http://127.0.0.1:$HPORT$PATH_Q" ;;
    esac
}
# The relays measured in every round, in the order they run.
RELAYS="proxy${ALT_PID:+ proxy-alt} nginx haproxy"

# CPU time (clock ticks, all threads) of what sits on each path: the
# backend for direct, the proxy process, nginx's master and workers,
# HAProxy's one process (its threads). Their
# CPU per request compares the relays' efficiency apart from how the
# scheduler shares two cores among client, relay and backend.
BACKEND_PID=$(ss -Hltnp "sport = :$BPORT" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
NGINX_PIDS=$(pgrep -f "nginx -c $TMP/nginx.conf" | tr '\n' ' ')
ticks() { local t=0 p; for p in "$@"; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done; echo $t; }
relay_pids() {
    case $1 in
    direct) echo "$BACKEND_PID" ;;
    proxy) echo "$PROXY_PID" ;;
    proxy-alt) echo "$ALT_PID" ;;
    nginx) echo "$NGINX_PIDS $(for p in $NGINX_PIDS; do pgrep -P "$p"; done | tr '\n' ' ')" ;;
    haproxy) echo "$HAPROXY_PID $(pgrep -P "$HAPROXY_PID" | tr '\n' ' ')" ;;
    esac
}
HZ=$(getconf CLK_TCK)

RAW=$TMP/raw.txt
: >"$RAW"
mkdir -p "$TMP/hist" # moderate load: every latency of round R's run of KIND in hist/KIND.(R-1)
run_wrk() { # kind label threads conns
    local out pids c0 c1 b0 b1
    pids=$(relay_pids "$1")
    # shellcheck disable=SC2086
    c0=$(ticks $pids); b0=$(ticks "$BACKEND_PID")
    # wrk's own CPU: a shell's children times, read after it waited for wrk.
    out=$(sh -c 'wrk "$@"; echo "client_ticks $(awk "{ print \$16 + \$17 }" /proc/$$/stat)"' wrk \
        -t"$3" -c"$4" -d"${SECS}s" --latency -H "Host: $CLUSTER" "$(url_of "$1")")
    # shellcheck disable=SC2086
    c1=$(ticks $pids); b1=$(ticks "$BACKEND_PID")
    echo "$out" | awk -v k="$2" -v t="$1" -v cpu=$((c1 - c0)) -v bcpu=$((b1 - b0)) -v hz="$HZ" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /requests in/ { n = $1 }
        /Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx/ { bad = $NF }
        $1 == "client_ticks" { ccpu = $2 }
        END { printf "%s %s rps=%s p50=%.3f p99=%.3f bad=%s cpu_us=%.2f backend_cpu_us=%.2f client_cpu_us=%.2f\n",
              k, t, rps, p50, p99, bad + 0, n ? cpu * 1e6 / hz / n : 0, n ? bcpu * 1e6 / hz / n : 0,
              n ? ccpu * 1e6 / hz / n : 0 }' >>"$RAW"
}

run_h2() { # kind: h2load with prior knowledge, 50 connections of 10 streams each
    local url out
    case $1 in
    proxy) url="http://127.0.0.1:$PPORT/$TOKEN$PATH_Q" ;;
    proxy-alt) url="http://127.0.0.1:$APORT/$TOKEN$PATH_Q" ;;
    nginx) url="http://127.0.0.1:$N2PORT$PATH_Q" ;;
    haproxy) url="http://127.0.0.1:$H2PORT$PATH_Q" ;;
    esac
    out=$(h2load -t2 -c50 -m10 -D "$SECS" -H ":authority: $CLUSTER" "$url" 2>&1)
    echo "$out" | awk -v t="$1" '
        / req\/s/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^req\/s/) rps = $i }
        /^status codes:/ { ok = $3 }
        /^requests:/ { done = $8 }
        END { printf "h2 %s rps=%s ok=%s done=%s\n", t, rps, ok + 0, done + 0 }' >>"$RAW"
}

run_moderate() { # round: open-loop RATE req/s, direct and every relay taking turns in one run
    local kinds=(direct $RELAYS) targets=() kind out k=0 line
    for kind in $RELAYS; do
        case $kind in
        proxy) targets+=(-t "$PPORT:/$TOKEN$PATH_Q") ;;
        proxy-alt) targets+=(-t "$APORT:/$TOKEN$PATH_Q") ;;
        nginx) targets+=(-t "$NPORT:$PATH_Q") ;;
        haproxy) targets+=(-t "$HPORT:$PATH_Q") ;;
        esac
    done
    out=$(LATENCY_HIST="$TMP/hist/run" "$TMP/latency_load" -q "$STEAL_MAX" "${targets[@]}" \
        127.0.0.1 "$BPORT" "$PATH_Q" "$CLUSTER" "$RATE" 8 "$SECS")
    while read -r line; do
        echo "moderate ${kinds[$k]} $line" >>"$RAW"
        mv "$TMP/hist/run.$k" "$TMP/hist/${kinds[$k]}.$(($1 - 1))"
        k=$((k + 1))
    done <<<"$out"
}

run_ws() { # kind: 1,000 echo connections; the relay's CPU over the measured window
    local port path
    case $1 in
    direct) port=$BPORT path=/ws ;;
    proxy) port=$PPORT path=/$TOKEN/ws ;;
    proxy-alt) port=$APORT path=/$TOKEN/ws ;;
    nginx) port=$NPORT path=/ws ;;
    haproxy) port=$HPORT path=/ws ;;
    esac
    echo "ws $1 $(WSBENCH_PIDS="$(relay_pids "$1")" "$TMP/wsbench" echo 127.0.0.1 "$port" "$path" "$CLUSTER" 1000 "$SECS")" >>"$RAW"
}

echo "proxy bench: $ROUNDS rounds of ${SECS}s; echo backend on :$BPORT, proxy :$PPORT${ALT_PID:+, proxy-alt :$APORT}," \
    "nginx :$NPORT (h2c :$N2PORT), haproxy :$HPORT (h2c :$H2PORT)" >&2
# The relays take turns at going first: a run right after another on this
# host is not in the same state as one after a pause (the direct run, say),
# so each relay gets every place in the order over the rounds.
rotate() { # n words...: the words, the first n moved to the end
    local n=$1; shift
    n=$((n % $#))
    echo "${@:n+1}" "${@:1:n}"
}
for r in $(seq "$ROUNDS"); do
    order=$(rotate "$((r - 1))" $RELAYS)
    if part http; then for kind in direct $order; do run_wrk "$kind" http 2 50; done; fi
    if part h2; then for kind in $order; do run_h2 "$kind"; done; fi
    if part moderate; then run_moderate "$r"; fi
    if part ws; then for kind in direct $order; do run_ws "$kind"; done; fi
    part bulk && for kind in direct $(rotate "$((r - 1))" proxy copy ${ALT_PID:+proxy-alt}); do
        case $kind in
        direct) port=$BPORT path=/ws pids= ;;
        proxy) port=$PPORT path=/$TOKEN/ws pids=$PROXY_PID ;;
        copy) port=$CPPORT path=/$TOKEN/ws pids=$COPY_PID ;;
        proxy-alt) port=$APORT path=/$TOKEN/ws pids=$ALT_PID ;;
        esac
        # shellcheck disable=SC2086
        c0=$(ticks $pids)
        res=$("$TMP/wsbench" echo 127.0.0.1 "$port" "$path" "$CLUSTER" 4 "$SECS" 1048576)
        # shellcheck disable=SC2086
        c1=$(ticks $pids)
        echo "bulk $kind $res cpu_ticks=$((c1 - c0)) hz=$HZ secs=$SECS" >>"$RAW"
    done
    echo "round $r done" >&2
done

# Idle WebSockets: as many as 10,000, if the descriptor limit allows. Each
# connection is two descriptors in one worker's table, and every worker
# thread has a table of its own (the limit applies to each): connections
# spread over the workers by the kernel's SO_REUSEPORT hash, so leave 10 %
# for an uneven spread.
if part idle; then
LIMIT=$(ulimit -Hn)
IDLE=10000
CAP=$(( (LIMIT / 2 - 64) * WORKERS * 9 / 10 ))
[ "$WORKERS" -eq 1 ] && CAP=$((LIMIT / 2 - 64))
[ "$CAP" -lt $IDLE ] && IDLE=$CAP
rss() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
RSS0=$(rss "$PROXY_PID")
mkfifo "$TMP/hold"
"$TMP/wsbench" idle 127.0.0.1 "$PPORT" "/$TOKEN/ws" "$CLUSTER" "$IDLE" <"$TMP/hold" >"$TMP/idle.out" 2>&1 &
IDLE_PID=$!
PIDS+=($IDLE_PID)
exec 9>"$TMP/hold"
for _ in $(seq 1200); do grep -q '^ready=' "$TMP/idle.out" && break; kill -0 "$IDLE_PID" 2>/dev/null || break; sleep 0.1; done
sleep 1
RSS1=$(rss "$PROXY_PID")
HELD=$(sed -n 's/^ready=//p' "$TMP/idle.out")
[ -n "$HELD" ] || { echo "idle connections failed:" >&2; cat "$TMP/idle.out" >&2; HELD=0; }
# Descriptors per thread of the proxy (the workers' own tables; the main thread's is the process's).
FDS=$(for t in /proc/"$PROXY_PID"/task/*; do ls "$t/fd" 2>/dev/null | wc -l; done | sort -n | paste -sd, -)
echo "idle held=$HELD wanted=10000 limit=$LIMIT rss_before_kb=$RSS0 rss_kb=$RSS1 fds_by_thread=$FDS" >>"$RAW"
exec 9>&-
wait "$IDLE_PID" 2>/dev/null || true
fi

echo
echo "proxy: --workers $WORKERS${PROXY_ARGS:+ $PROXY_ARGS}${ALT_PID:+; proxy-alt: --workers $WORKERS $PROXY_ALT_ARGS};" \
    "nginx worker_processes $WORKERS; haproxy nbthread $WORKERS ($(haproxy -v | awk 'NR == 1 { print $3 }'))"
STEAL_MAX=$STEAL_MAX $PY "$ROOT/bench/proxy_summary.py" "$RAW" "$RATE"
