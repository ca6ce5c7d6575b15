#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Docker runtime spawn->ready latency vs `docker run` + polling (and vs the
# same Engine API calls made by hand) in the same run, then waves of
# containers started and stopped concurrently, checking for leaked fds,
# memory and containers. Needs a Docker Engine: scripts/docker-up.sh.
#   bench/docker_spawn.sh [ROUNDS] [WAVE] [WAVES]       (results: bench/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/docker-up.sh >/dev/null
make -s all >/dev/null
# Linked like build/plane, without main.o (the Makefile has no rule for this bench).
mkdir -p build/bench
objs=$(ls src/*/*.c | sed 's|^|build/|; s|\.c$|.o|')
pkgs="libuv jansson sqlite3 libpq openssl libcurl"
cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra $(pkg-config --cflags $pkgs) \
    -o build/bench/docker_spawn_bench bench/docker_spawn_bench.c tests/unit/engine_api.c $objs \
    $(pkg-config --libs $pkgs) -lhttp_parser -lwslay -lm
echo "== docker runtime through the runtime interface; engine $(curl -s --unix-socket /var/run/docker.sock \
    http://localhost/version | sed 's/.*"Version":"\([^"]*\)".*/\1/'), CLI $(docker --version) =="
build/bench/docker_spawn_bench "${1:-30}" "${2:-50}" "${3:-4}"
