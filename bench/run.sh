#!/usr/bin/env bash
# Webhook throughput and latency of the gateway, next to a no-work h2o server (bench/README.md).
#
# Starts a private redis-server (no persistence), the fake provider (bench/fake_provider.py),
# the gateway and bench/baseline, sets up one assistant bound to a WhatsApp and a Telegram
# connection through the management API, then for each connection count runs bench/loadgen
# against the gateway and against the baseline, interleaved (the VM's speed drifts: pairs
# measured back to back compare best). Prints a table and checks that Redis holds every event
# the gateway acknowledged (after each gateway run, which it then clears to keep Redis small).
# Everything it starts is stopped on exit.
#
# On a machine with 2 or more cores the load generator runs on CPU 0 and the servers (gateway
# with SWITCHBOARD_WORKERS=1, baseline with one worker, redis-server) on CPU 1, so that the
# client never competes with the server it measures.
#
# Usage: bench/run.sh [--build-dir DIR] [--switchboard BIN | --gateway-rev REV]
#                     [--duration S] [--warmup S] [--connections "16 64 256"] [--repeat N]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=""
SB=""
GATEWAY_REV=""
DURATION=10
WARMUP=2
CONNS="16 64 256"
REPEAT=1

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    echo
    echo "  --build-dir DIR   use (and update) this CMake build directory; it should be a"
    echo "                    Release or RelWithDebInfo build (default: a fresh one in \$TMPDIR)"
    echo "  --switchboard BIN measure this gateway binary instead of building one"
    echo "  --gateway-rev REV build the gateway from git revision REV (read with git archive)"
    echo "                    instead of the working tree; the bench tools stay the working tree's"
    echo "  --duration S      measured seconds per run (10)"
    echo "  --warmup S        unmeasured seconds before each run (2)"
    echo "  --connections L   connection counts to measure (\"16 64 256\")"
    echo "  --repeat N        runs per cell; the table shows medians (1)"
    echo "Environment: REDIS_CPU overrides the CPU redis-server is pinned to"
    echo "(default: the servers' CPU)."
}

while [ $# -gt 0 ]; do
    case "$1" in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --switchboard) SB=$2; shift 2 ;;
    --gateway-rev) GATEWAY_REV=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

for tool in cmake redis-server redis-cli python3 curl jq; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 1; }
done

# ---- Build ----

# build DIR TARGET...: builds TARGETs in the configured build directory DIR.
build() {
    local dir=$1
    shift
    cmake --build "$dir" -j"$(nproc)" --target "$@" >"$dir/bench-build.log" 2>&1
}

# build_release SRC DIR TARGET...: configures DIR from the source tree SRC as a RelWithDebInfo
# build and builds TARGETs. gcc -O2 finds warnings (e.g. -Wformat-truncation) that the -O0
# builds of the tests do not; then the warnings named in the errors (only those) are made
# non-fatal and the build retried, with a WARNING on stderr.
build_release() {
    local src=$1 dir=$2 noerr="" found
    shift 2
    cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSB_TESTS=OFF \
        -DCMAKE_C_FLAGS="" >/dev/null
    for _ in 1 2 3 4; do
        build "$dir" "$@" && return 0
        found=$({ grep -o '\[-Werror=[a-z0-9-]*=\{0,1\}\]' "$dir/bench-build.log" || true; } |
            sort -u | sed 's/\[-Werror=\([a-z0-9-]*\)=\{0,1\}\]/-Wno-error=\1/' | tr '\n' ' ')
        [ -n "$found" ] || break
        echo "run.sh: WARNING: the release build of $src fails with -Werror:" >&2
        grep -m3 "error:" "$dir/bench-build.log" >&2 || true
        noerr="$noerr $found"
        echo "run.sh: retrying with$noerr" >&2
        cmake -S "$src" -B "$dir" -DCMAKE_C_FLAGS="$noerr" >/dev/null
    done
    echo "run.sh: the build in $dir failed:" >&2
    grep -B3 -A3 "error" "$dir/bench-build.log" | head -40 >&2
    return 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sb-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

TARGETS=(loadgen baseline)
[ -z "$SB" ] && [ -z "$GATEWAY_REV" ] && TARGETS+=(switchboard)
if [ -n "$BUILD_DIR" ]; then
    BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
    build "$BUILD_DIR" "${TARGETS[@]}" || { cat "$BUILD_DIR/bench-build.log" >&2; exit 1; }
    btype=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")
    case "$btype" in
    Release | RelWithDebInfo) ;;
    *) echo "run.sh: WARNING: $BUILD_DIR is a \"$btype\" build, not a release build" >&2 ;;
    esac
else
    BUILD_DIR=${TMPDIR:-/tmp}/switchboard-bench-build
    build_release "$ROOT" "$BUILD_DIR" "${TARGETS[@]}"
fi
if [ -n "$GATEWAY_REV" ]; then
    # A clean copy of that revision (git archive only reads the repository).
    sha=$(git -C "$ROOT" rev-parse --short=12 "$GATEWAY_REV^{commit}")
    revdir=${TMPDIR:-/tmp}/switchboard-bench-$sha
    if [ ! -d "$revdir/src" ]; then
        mkdir -p "$revdir/src"
        git -C "$ROOT" archive --format=tar "$sha" | tar -x -C "$revdir/src"
    fi
    build_release "$revdir/src" "$revdir/build" switchboard
    SB=$revdir/build/switchboard
    GATEWAY_DESC="switchboard at $GATEWAY_REV ($sha)"
elif [ -n "$SB" ]; then
    GATEWAY_DESC="switchboard binary $SB"
else
    SB=$BUILD_DIR/switchboard
    rev=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo "no git")
    if ! git -C "$ROOT" diff --quiet HEAD -- gateway adapters queue CMakeLists.txt 2>/dev/null; then
        rev="$rev + uncommitted changes"
    fi
    GATEWAY_DESC="switchboard from the working tree ($rev)"
fi
[ -x "$SB" ] || { echo "run.sh: no switchboard binary at $SB" >&2; exit 1; }
LOADGEN=$BUILD_DIR/bench/loadgen
BASELINE=$BUILD_DIR/bench/baseline

# ---- Processes ----

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_for WHAT CMD...: runs CMD until it succeeds, for up to 10 s.
wait_for() {
    local what=$1
    shift
    for _ in $(seq 200); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "run.sh: timed out waiting for $what" >&2
    return 1
}

NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then
    LOAD_PIN=(taskset -c 0)
    SERVER_PIN=(taskset -c 1)
    REDIS_CPU=${REDIS_CPU:-1}
    REDIS_PIN=(taskset -c "$REDIS_CPU")
    if [ "$REDIS_CPU" = 1 ]; then
        PINNING="load generator on CPU 0; gateway, baseline and redis-server on CPU 1"
    else
        PINNING="load generator on CPU 0; gateway and baseline on CPU 1;"
        PINNING="$PINNING redis-server on CPU $REDIS_CPU"
    fi
else
    LOAD_PIN=()
    SERVER_PIN=()
    REDIS_PIN=()
    PINNING="not pinned (1 CPU): load generator and servers share the core"
fi

RPORT=$(free_port)
"${REDIS_PIN[@]}" redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" --logfile "$WORK/redis.log" &
PIDS+=($!)
wait_for "redis-server" redis-cli -p "$RPORT" ping

FPORT=$(free_port)
python3 "$ROOT/bench/fake_provider.py" "$FPORT" "$WORK/telegram_secret" &
PIDS+=($!)
wait_for "the fake provider" curl -sf "http://127.0.0.1:$FPORT/v21.0/me"

GPORT=$(free_port)
mkdir -p "$WORK/data"
export SWITCHBOARD_LISTEN=127.0.0.1:$GPORT
export SWITCHBOARD_REDIS_URL=redis://127.0.0.1:$RPORT/0
export SWITCHBOARD_DATA_DIR=$WORK/data
export SWITCHBOARD_WORKERS=1
export SWITCHBOARD_PUBLIC_URL=http://127.0.0.1:$GPORT
export SWITCHBOARD_TELEGRAM_API_BASE=http://127.0.0.1:$FPORT
export SWITCHBOARD_GRAPH_API_BASE=http://127.0.0.1:$FPORT/v21.0
export SWITCHBOARD_LOG_LEVEL=warn
# Keep every event: the check at the end compares XLEN with the acknowledged requests.
export SWITCHBOARD_STREAMS_MAXLEN=1000000000
"${SERVER_PIN[@]}" "$SB" >"$WORK/gateway.log" 2>&1 &
PIDS+=($!)
GW_PID=$!
wait_for "the gateway to be ready" curl -sf "http://127.0.0.1:$GPORT/readyz"

BPORT=$(free_port)
"${SERVER_PIN[@]}" "$BASELINE" --listen "127.0.0.1:$BPORT" --workers 1 2>"$WORK/baseline.log" &
PIDS+=($!)
wait_for "the baseline server" curl -sf -X POST "http://127.0.0.1:$BPORT/"

# ---- Set-up through the management API ----

KEY=$("$SB" keys create --org bench)

# api METHOD PATH JSON: prints the "id" of a 201 answer, or fails with the answer.
api() {
    local code
    code=$(curl -sS -o "$WORK/answer" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' --data "$3" "http://127.0.0.1:$GPORT$2")
    if [ "$code" != 201 ]; then
        echo "run.sh: $1 $2 answered $code: $(cat "$WORK/answer")" >&2
        return 1
    fi
    jq -r .id "$WORK/answer"
}

rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }

ASSISTANT=$(api POST /orgs/c/assistants '{"name":"bench"}')
WA_SECRET=$(rand_hex 16)
WA_PHONE=100000000000777
WA_CONN=$(api POST /orgs/c/connections "{\"provider\":\"whatsapp\",\"credentials\":{
    \"app_secret\":\"$WA_SECRET\",\"verify_token\":\"$(rand_hex 8)\",
    \"access_token\":\"EAAB$(rand_hex 20)\"}}")
api POST "/orgs/c/assistants/$ASSISTANT/channels" \
    "{\"connection_id\":\"$WA_CONN\",\"external_id\":\"$WA_PHONE\"}" >/dev/null
BOT_ID=7000000001
TG_CONN=$(api POST /orgs/c/connections \
    "{\"provider\":\"telegram\",\"credentials\":{\"bot_token\":\"$BOT_ID:AA$(rand_hex 16)\"}}")
TG_SECRET=$(cat "$WORK/telegram_secret")
api POST "/orgs/c/assistants/$ASSISTANT/channels" \
    "{\"connection_id\":\"$TG_CONN\",\"external_id\":\"$BOT_ID\"}" >/dev/null

# ---- Measurements ----

# load TARGET CHANNEL CONNECTIONS DURATION WARMUP: one loadgen run, its JSON line on stdout.
load() {
    local port=$GPORT channel=$2 args
    [ "$1" = baseline ] && port=$BPORT
    if [ "$channel" = whatsapp ]; then
        args=(--path "/webhooks/whatsapp/$WA_CONN" --secret "$WA_SECRET"
            --phone-number-id "$WA_PHONE")
    else
        args=(--path "/webhooks/telegram/$TG_CONN" --secret "$TG_SECRET")
    fi
    "${LOAD_PIN[@]}" "$LOADGEN" --url-host 127.0.0.1 --port "$port" --channel "$channel" \
        --connections "$3" --duration "$4" --warmup "$5" "${args[@]}" |
        jq -c --arg t "$1" '. + {target: $t}'
}

# webhook_200s: the gateway's own count of webhook requests it answered 200 (all channels).
webhook_200s() {
    curl -sf "http://127.0.0.1:$GPORT/metrics" |
        awk 'index($0, "switchboard_http_requests_total{route=\"/webhooks/") == 1 &&
            index($0, "status=\"200\"") { s += $2 } END { printf "%d\n", s }'
}
xlen() { redis-cli -p "$RPORT" XLEN "sb:in:{$ASSISTANT}"; }
UNLINK_LUA="local c, n = '0', 0
repeat
  local r = redis.call('SCAN', c, 'MATCH', ARGV[1], 'COUNT', 10000)
  c = r[1]
  for _, k in ipairs(r[2]) do redis.call('UNLINK', k); n = n + 1 end
until c == '0'
return n"
# clear_events: empties the assistant's stream, the org's inbox and the duplicate-check keys,
# between runs, so that Redis stays small (~1.3 KB per event) and every run meets the same
# Redis; a few GB of events made later runs stall on this VM, baseline runs included.
clear_events() {
    redis-cli -p "$RPORT" XTRIM "sb:in:{$ASSISTANT}" MAXLEN 0 >/dev/null
    redis-cli -p "$RPORT" XTRIM "sb:inbox:{bench}" MAXLEN 0 >/dev/null
    redis-cli -p "$RPORT" EVAL "$UNLINK_LUA" 0 'sb:dd:*' >/dev/null
}

# Every request must be acknowledged before anything is measured (signature, binding, secret).
for ch in whatsapp telegram; do
    r=$(load gateway "$ch" 4 0.5 0)
    if [ "$(jq '.errors + .non_200' <<<"$r")" != 0 ] || [ "$(jq .requests <<<"$r")" = 0 ]; then
        echo "run.sh: the gateway does not acknowledge $ch webhooks: $r" >&2
        tail -n 20 "$WORK/gateway.log" >&2
        exit 1
    fi
done

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $NCPU x" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "gateway: $GATEWAY_DESC, SWITCHBOARD_WORKERS=1; baseline: bench/baseline --workers 1"
echo "pinning: $PINNING"
echo "runs: ${DURATION}s measured after ${WARMUP}s warm-up, closed loop, repeat $REPEAT," \
    "gateway and baseline interleaved"
RESULTS=$WORK/results.jsonl
STORED=0      # events the gateway runs added to the stream (warm-ups included)
ANSWERED=0    # webhook 200s the gateway counted meanwhile (warm-ups included)
LOST_RUNS=0   # gateway runs whose events are not all in the stream
for c in $CONNS; do
    for ch in whatsapp telegram; do
        for _ in $(seq "$REPEAT"); do
            for target in gateway baseline; do
                if [ "$target" = gateway ]; then
                    clear_events
                    x0=$(xlen)
                    m0=$(webhook_200s)
                fi
                r=$(load "$target" "$ch" "$c" "$DURATION" "$WARMUP")
                echo "$r" | tee -a "$RESULTS" >&2
                if [ "$target" = gateway ]; then
                    # The stream must hold every event acknowledged during the run, warm-up
                    # included: at least loadgen's measured 200s, exactly the gateway's count.
                    dx=$(($(xlen) - x0))
                    dm=$(($(webhook_200s) - m0))
                    ok=$(jq '.requests - .non_200' <<<"$r")
                    STORED=$((STORED + dx))
                    ANSWERED=$((ANSWERED + dm))
                    if [ "$dx" -lt "$ok" ] || [ "$dx" != "$dm" ]; then
                        echo "run.sh: the stream grew by $dx events, the gateway answered $dm" \
                            "webhooks with 200 (loadgen measured $ok)" >&2
                        LOST_RUNS=$((LOST_RUNS + 1))
                    fi
                fi
            done
        done
    done
done
MEM=$(redis-cli -p "$RPORT" INFO memory | tr -d '\r' | sed -n 's/^used_memory_peak_human://p')
clear_events

# ---- Table ----

echo
jq -rs '
  def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                     else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  def cell(t): map(select(.target == t));
  def fmt(d): (. * pow(10; d) | round) / pow(10; d) | tostring;
  group_by([.channel, .connections]) | sort_by(.[0].connections, .[0].channel) |
  (["channel", "conns", "gw_rps", "gw_p50_ms", "gw_p99_ms", "gw_err", "base_rps",
    "base_p50_ms", "base_p99_ms", "gw/base"] | @tsv),
  (.[] | cell("gateway") as $g | cell("baseline") as $b |
   ($g | map(.rps) | median) as $grps | ($b | map(.rps) | median) as $brps |
   [.[0].channel, .[0].connections, ($grps | round),
    ($g | map(.p50_ms) | median | fmt(2)), ($g | map(.p99_ms) | median | fmt(2)),
    ($g | map(.errors + .non_200) | add),
    ($brps | round),
    ($b | map(.p50_ms) | median | fmt(2)), ($b | map(.p99_ms) | median | fmt(2)),
    (if $brps > 0 then ($grps / $brps | fmt(2)) else "-" end)] | @tsv)
' "$RESULTS" | column -t -s $'\t'

# ---- Checks ----

echo
status=0
bad=$(jq -s 'map(.errors + .non_200) | add' "$RESULTS")
if [ "$bad" != 0 ]; then
    echo "CHECK FAILED: $bad requests got an error or a status other than 200 (see the JSON lines)"
    status=1
fi
acked=$(jq -s 'map(select(.target == "gateway") | .requests - .non_200) | add' "$RESULTS")
dups=$(curl -sf "http://127.0.0.1:$GPORT/metrics" |
    awk '/^switchboard_duplicate_events_total/ { s += $2 } END { printf "%d\n", s }')
echo "redis: the gateway runs appended $STORED events to sb:in:{$ASSISTANT} (checked after each" \
    "run, then cleared); the gateway answered $ANSWERED webhooks 200 (warm-ups included);" \
    "loadgen measured $acked 200s; duplicate events: $dups; peak memory $MEM"
if [ "$LOST_RUNS" != 0 ] || [ "$STORED" -lt "$acked" ]; then
    echo "CHECK FAILED: in $LOST_RUNS runs the stream does not hold every acknowledged event"
    status=1
else
    echo "check passed: every acknowledged event was in the assistant's stream"
fi
if [ "$dups" != 0 ]; then
    echo "CHECK FAILED: $dups events took the duplicate path (ids must be unique)"
    status=1
fi
if ! kill -0 "$GW_PID" 2>/dev/null; then
    echo "CHECK FAILED: the gateway exited during the run"
    status=1
fi
if grep -q '"level":"\(warn\|error\)"' "$WORK/gateway.log"; then
    echo "gateway warnings/errors:"
    grep '"level":"\(warn\|error\)"' "$WORK/gateway.log" | sort | uniq -c | sort -rn | head -5
fi
exit $status
