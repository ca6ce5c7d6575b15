#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster for the tests: its own data directory,
# loopback only, trust auth, on a free port; prints the URL to use as
# `--db`. Idempotent: a cluster this script started and that still runs is
# reused.  Usage: scripts/pg-up.sh [DIR]; scripts/pg-up.sh --stop [DIR] stops
# it. The default DIR is under /tmp, one per checkout: the server runs as the
# postgres user, which may not be able to enter the checkout. Tests run it
# with fsync=off (PG_FSYNC=on and PG_SYNC_COMMIT=off for benchmarks, which
# then match SQLite's WAL with synchronous=NORMAL: durable, commits not
# flushed one by one).
set -euo pipefail
cd "$(dirname "$0")/.."

stop=0
[ "${1:-}" = "--stop" ] && { stop=1; shift; }
dir=$(readlink -f "${1:-${TMPDIR:-/tmp}/plane-pg-$(pwd | md5sum | cut -c1-8)}")
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "pg-up: PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }

if [ $stop -eq 1 ]; then
    [ -f "$dir/data/postmaster.pid" ] && as_pg "$bin/pg_ctl -D '$dir/data' -m fast -w stop" >/dev/null
    exit 0
fi

mkdir -p "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres "$dir"
if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_pg "$bin/initdb -D '$dir/data' -A trust -U postgres" >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
fi
if ! as_pg "$bin/pg_ctl -D '$dir/data' status" >/dev/null 2>&1; then
    # The same port as before when restarted, so that clients find it again.
    port=$(cat "$dir/port" 2>/dev/null || python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$bin/pg_ctl -D '$dir/data' -l '$dir/log' -w -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c fsync=${PG_FSYNC:-off} -c synchronous_commit=${PG_SYNC_COMMIT:-on} -c max_connections=200\" start" >/dev/null \
        || { tail -20 "$dir/log" >&2; exit 1; }
    echo "$port" > "$dir/port"
fi
port=$(cat "$dir/port")
echo "postgres://postgres@127.0.0.1:$port/postgres"
