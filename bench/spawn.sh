#!/usr/bin/env bash
# Process runtime spawn->ready latency vs a posix_spawn+poll baseline in the
# same run, and a start/stop loop checking for leaked fds, processes and
# memory; then the same measured end to end through `plane executor`.
#   bench/spawn.sh [ROUNDS] [LOOP]        (results: bench/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
make -s all build/bench/spawn_bench >/dev/null
echo "== process runtime through the runtime interface =="
build/bench/spawn_bench "$PWD/build/echo_backend" "${1:-200}" "${2:-200}" || status=$?
echo
echo "== the same through plane executor (adds two protocol round trips) =="
/usr/bin/python3 bench/spawn_bench.py "$PWD/build/plane" "$PWD/build/echo_backend" "${1:-200}" "${2:-200}" || true
exit "${status:-0}"
