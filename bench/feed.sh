#!/usr/bin/env bash
# The inbox feed under load: N Server-Sent Events subscribers on ONE gateway worker receive a
# paced burst of events (bench/README.md, "The inbox feed").
#
# Starts a private redis-server (no persistence) and the gateway with SWITCHBOARD_WORKERS=1,
# creates an org key, then runs bench/feed: it opens the subscribers, appends --rate events per
# second for --duration seconds to the org's inbox stream, and prints one JSON line with the
# event-to-subscriber latency percentiles, the deliveries (every event to every subscriber),
# and the gateway's RSS before, at the peak of and after the burst. Exits 0 when the targets
# are met: p99 under 50 ms, nothing missing, RSS growth under 20 %. Everything it starts is
# stopped on exit. On 2 or more cores the gateway and redis-server run on CPU 1 and the
# subscribers on CPU 0.
#
# Usage: bench/feed.sh [--build-dir DIR] [--switchboard BIN] [--subscribers 1000]
#                      [--rate 1000] [--duration 10]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=""
SB=""
SUBS=1000
RATE=1000
DURATION=10
while [ $# -gt 0 ]; do
    case "$1" in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --switchboard) SB=$2; shift 2 ;;
    --subscribers) SUBS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sb-feed-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "$BUILD_DIR" ]; then
    BUILD_DIR="$WORK/build"
fi
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DSB_TESTS=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" -j2 --target feed $([ -z "$SB" ] && echo switchboard) >/dev/null
SB=${SB:-$BUILD_DIR/switchboard}
FEED=$BUILD_DIR/bench/feed

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SERVER_CPU=""
CLIENT_CPU=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    SERVER_CPU="taskset -c 1"
    CLIENT_CPU="taskset -c 0"
fi

RPORT=$(free_port)
$SERVER_CPU redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=($REDIS_PID)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

GPORT=$(free_port)
export SWITCHBOARD_REDIS_URL="redis://127.0.0.1:$RPORT/0" SWITCHBOARD_LISTEN="127.0.0.1:$GPORT"
export SWITCHBOARD_WORKERS=1 SWITCHBOARD_DATA_DIR="$WORK/data" SWITCHBOARD_LOG_LEVEL=warn
export SWITCHBOARD_API_RATE_LIMIT_PER_MINUTE=1000000
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
$SERVER_CPU "$SB" 2>"$WORK/gateway.log" &
GW=$!
PIDS+=($GW)
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$GPORT/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
ORG=bench_feed
KEY=$("$SB" keys create --org "$ORG")

$CLIENT_CPU "$FEED" --port "$GPORT" --redis-port "$RPORT" --key "$KEY" --org "$ORG" \
    --subscribers "$SUBS" --rate "$RATE" --duration "$DURATION" --pid "$GW" --redis-pid "$REDIS_PID" && rc=0 || rc=$?
curl -fs "http://127.0.0.1:$GPORT/metrics" | grep '^switchboard_inbox' >&2 || true
exit $rc
