#!/usr/bin/env bash
# Installs the Debian packages that building and testing Plane need, if any
# are missing. Safe to run again: it does nothing when all are present.
set -euo pipefail

pkgs=(
    gcc make pkg-config libc6-dev
    libuv1-dev libhttp-parser-dev libwslay-dev libjansson-dev libnghttp2-dev
    libsqlite3-dev libpq-dev libssl-dev libcurl4-openssl-dev libldns-dev liburing-dev
    python3 python3-pytest python3-requests python3-websockets
    clang libclang-rt-14-dev curl
    crun            # the oci runtime's tests
    nghttp2-client  # h2load and nghttp: the proxy's HTTP/2 tests and bench
    postgresql
    chromium        # the dashboard's tests drive the page in headless Chromium
    pebble bind9-dnsutils openssl   # ACME tests: a real CA, dig, certificates
    iproute2 iptables ethtool util-linux   # fault tests and soak: hosts in network namespaces
)
[ "${1:-}" = "--bench" ] && pkgs+=(wrk hyperfine nginx haproxy)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages need root: apt-get install ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
