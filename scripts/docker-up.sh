#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Makes a Docker Engine answer on /var/run/docker.sock for the tests, without
# touching the network: installs docker.io if dockerd is missing, starts
#   dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false
# in the background if the API does not answer (log build/dockerd.log, pid
# build/dockerd.pid), waits for /_ping, then builds the test image
# plane-test-echo:1 (FROM scratch, the static build/echo_backend) through the
# Engine API, and installs Debian's docker-registry if it can (the tests run
# it on 127.0.0.1 for pulls). Safe to run again: a running engine is reused,
# the image build is cached. Pid files a killed engine left are cleared.
#   scripts/docker-up.sh [--no-image]
set -euo pipefail
cd "$(dirname "$0")/.."

SOCK=/var/run/docker.sock
IMAGE=plane-test-echo:1
LOG=build/dockerd.log
PIDFILE=build/dockerd.pid
API=http://localhost/v1.41

# Running and not a zombie (a killed dockerd may linger unreaped where nothing reaps orphans).
alive() {
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]
}

ping() {
    curl -sf --max-time 2 --unix-socket "$SOCK" http://localhost/_ping >/dev/null 2>&1
}

mkdir -p build
if ! ping; then
    if ! command -v dockerd >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "docker-up: dockerd is missing and installing it needs root" >&2
            exit 1
        fi
        echo "docker-up: installing docker.io"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq docker.io >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq docker.io >/dev/null; }
    fi
    # A previous engine of ours that died may have left its pid file behind.
    if [ -f "$PIDFILE" ] && alive "$(cat "$PIDFILE")" &&
        grep -q dockerd "/proc/$(cat "$PIDFILE")/cmdline" 2>/dev/null; then
        echo "docker-up: dockerd $(cat "$PIDFILE") runs but does not answer yet"
    else
        # A dockerd that was killed leaves its pid file, and a new one refuses to start.
        # Its containerd too, or the new one waits for a dead containerd's socket.
        for f in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
            if [ -f "$f" ] && ! alive "$(cat "$f")"; then
                rm -f "$f"
            fi
        done
        echo "docker-up: starting dockerd (log $LOG)"
        setsid dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
            --host "unix://$SOCK" >>"$LOG" 2>&1 </dev/null &
        echo $! >"$PIDFILE"
    fi
    for _ in $(seq 1 300); do
        ping && break
        if ! alive "$(cat "$PIDFILE")"; then
            echo "docker-up: dockerd exited; the end of $LOG:" >&2
            tail -20 "$LOG" >&2
            exit 1
        fi
        sleep 0.2
    done
    if ! ping; then
        echo "docker-up: dockerd did not answer within 60 s; the end of $LOG:" >&2
        tail -20 "$LOG" >&2
        exit 1
    fi
fi

[ "${1:-}" = "--no-image" ] && exit 0

# Optional: a local registry (run by the tests on 127.0.0.1 only) for the pull tests; they skip without it.
if ! command -v docker-registry >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null 2>&1 ||
        echo "docker-up: docker-registry did not install; registry pull tests will skip"
fi

# The test image, built by the Engine API itself (no docker CLI needed).
[ -x build/echo_backend ] || make -s build/echo_backend
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp build/echo_backend "$ctx/echo_backend"
cp tests/fixtures/Dockerfile "$ctx/Dockerfile"
out=$(tar -C "$ctx" -cf - Dockerfile echo_backend |
    curl -sS --max-time 120 --unix-socket "$SOCK" -X POST -H 'Content-Type: application/x-tar' \
        --data-binary @- "$API/build?t=$IMAGE&q=1&rm=1&forcerm=1")
if echo "$out" | grep -q '"error'; then
    echo "docker-up: building $IMAGE failed: $out" >&2
    exit 1
fi
curl -sf --unix-socket "$SOCK" "$API/images/$IMAGE/json" >/dev/null ||
    { echo "docker-up: $IMAGE is missing after the build: $out" >&2; exit 1; }
echo "docker-up: engine up, $IMAGE built"
