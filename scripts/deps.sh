#!/usr/bin/env bash
# Installs the Debian 12 packages Switchboard needs, only those missing.
#   scripts/deps.sh          build and run: compiler, CMake, libraries, redis-server
#   scripts/deps.sh test     also what the test suite needs: clang (libFuzzer), python3,
#                            python3-jsonschema (the event and command schemas), and
#                            what the package test needs (dpkg-dev, file, lintian)
#   scripts/deps.sh package  also what scripts/package.sh needs (dpkg-dev, file)
#   scripts/deps.sh bench    also what bench/run.sh and bench/outbound.sh use (jq, curl, python3)
set -euo pipefail

pkgs=(gcc libc6-dev make cmake pkg-config libh2o-dev libuv1-dev libhiredis-dev libcurl4-openssl-dev
      libjansson-dev libssl-dev redis-server redis-tools ca-certificates)
case "${1:-}" in
test) pkgs+=(clang libclang-rt-14-dev python3 python3-jsonschema dpkg-dev file lintian) ;;
package) pkgs+=(dpkg-dev file) ;;
bench) pkgs+=(jq curl python3 util-linux) ;;
esac

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
