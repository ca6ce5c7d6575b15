#!/usr/bin/env bash
# The dashboard under load: N backends on the page in headless Chromium, state changes
# at a set rate; frame gaps, long tasks and change-to-page delay against an idle baseline
# measured in the same run (see bench/dashboard_bench.py).
#   bench/dashboard.sh [BACKENDS=1000] [CHANGES_PER_SECOND=100] [SECONDS=10]   (results: bench/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
make -s all >/dev/null
exec /usr/bin/python3 bench/dashboard_bench.py "${1:-1000}" "${2:-100}" "${3:-10}"
