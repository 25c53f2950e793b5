#!/usr/bin/env bash
# Installs the Debian 12 packages Switchboard needs, only those missing.
#   scripts/deps.sh          build and run: compiler, CMake, libraries, redis-server
#   scripts/deps.sh test     also what the test suite needs: clang (libFuzzer), python3,
#                            python3-jsonschema (the event and command schemas), what the
#                            package test needs (dpkg-dev, file, lintian), and for the
#                            console's browser tests chromium, node and the pinned
#                            playwright-core (npm ci in tests/browser)
#   scripts/deps.sh package  also what scripts/package.sh needs (dpkg-dev, file)
#   scripts/deps.sh bench    also what bench/run.sh and bench/outbound.sh use (jq, curl, python3)
set -euo pipefail

pkgs=(gcc libc6-dev make cmake pkg-config libh2o-dev libuv1-dev libhiredis-dev libcurl4-openssl-dev
      libjansson-dev libssl-dev redis-server redis-tools ca-certificates)
case "${1:-}" in
test) pkgs+=(clang libclang-rt-14-dev python3 python3-jsonschema dpkg-dev file lintian chromium
            chromium-driver fonts-dejavu-core) ;;
package) pkgs+=(dpkg-dev file) ;;
bench) pkgs+=(jq curl python3 util-linux) ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node and npm: Debian's, unless a node is already there (it may come with its own npm).
if [ "${1:-}" = test ]; then
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
fi

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The browser tests' pinned playwright-core (no browser download: they use Debian's chromium).
if [ "${1:-}" = test ]; then
    browser="$(dirname "$0")/../tests/browser"
    if [ ! -f "$browser/node_modules/.package-lock.json" ] ||
       [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
        (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    fi
fi
