#!/usr/bin/env bash
# Spawn->ready latency of every runtime in one run: the process runtime vs a
# posix_spawn+poll baseline (and a start/stop loop checking for leaked fds,
# processes and memory), then process, oci, docker and a bare `crun run` of
# the oci runtime's own bundle side by side, with thaw->first byte of frozen
# backends; the first request to a frozen backend through proxy, controller
# and drone; then the process runtime measured end to end through
# `plane executor`.
#   bench/spawn.sh [ROUNDS] [LOOP] [DOCKER_ROUNDS] [FROZEN_BACKENDS]   (results: bench/RESULTS.md)
# The oci and docker rows need crun and a Docker Engine with plane-test-echo:1
# (scripts/install-deps.sh, scripts/docker-up.sh); without an engine the
# docker row is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
make -s all build/bench/spawn_bench build/bench/runtimes_bench >/dev/null
echo "== process runtime through the runtime interface =="
build/bench/spawn_bench "$PWD/build/echo_backend" "${1:-200}" "${2:-200}" || status=$?
echo
echo "== every runtime, and bare crun, through the runtime interface =="
build/bench/runtimes_bench "$PWD/build/echo_backend" "${1:-200}" "${3:-30}" || status=$?
echo
echo "== the first request to a frozen backend, through the proxy, controller and drone =="
runtimes="process"
command -v crun >/dev/null && runtimes="$runtimes oci"
/usr/bin/python3 bench/freeze_bench.py "$PWD/build/plane" "$PWD/build/echo_backend" "${4:-20}" $runtimes || status=$?
echo
echo "== the process runtime through plane executor (adds two protocol round trips) =="
/usr/bin/python3 bench/spawn_bench.py "$PWD/build/plane" "$PWD/build/echo_backend" "${1:-200}" "${2:-200}" || true
exit "${status:-0}"
