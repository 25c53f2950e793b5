#!/usr/bin/env bash
# The cost of one webhook: the gateway next to a minimal server and a no-work h2o server, on
# the same core, in the same run, interleaved (bench/README.md).
#
# Starts a private redis-server (no persistence), the fake provider (bench/fake_provider.py),
# the gateway, bench/minimal (HMAC + jansson + one XADD per webhook) and bench/baseline (no
# work), sets up one assistant bound to a WhatsApp and a Telegram connection through the
# management API, then for each connection count runs bench/loadgen with the realistic 1.26 KB
# WhatsApp body against the gateway, the minimal server and the baseline, one after the other
# (the VM's speed drifts: runs measured back to back compare best). For the gateway and the
# minimal server it also takes Redis's INFO commandstats over the run and the CPU time
# (utime + stime from /proc) of the server and of redis-server over the measured window.
# Prints the figures side by side, the targets of the cost of one event (met / not met), and
# checks that Redis holds every event the gateway (and the minimal server) acknowledged
# (after each run, which it then clears to keep Redis small). Everything it starts is stopped
# on exit.
#
# On a machine with 2 or more cores the load generator runs on CPU 0 and the servers (gateway
# with SWITCHBOARD_WORKERS=1, minimal and baseline with one worker, redis-server) on CPU 1, so
# that the client never competes with the server it measures.
#
# Usage: bench/run.sh [--build-dir DIR] [--switchboard BIN | --gateway-rev REV]
#                     [--duration S] [--warmup S] [--connections "16 64 256"] [--repeat N]
#                     [--channels "whatsapp telegram"] [--body-kind realistic|short]
#                     [--outbound]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=""
SB=""
GATEWAY_REV=""
DURATION=10
WARMUP=2
CONNS="16 64 256"
REPEAT=1
CHANNELS="whatsapp"
BODY_KIND=realistic
OUTBOUND=0

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
    echo "  --channels L      channels to load: whatsapp (gateway, minimal, baseline) and/or"
    echo "                    telegram (gateway, baseline) (\"whatsapp\")"
    echo "  --body-kind K     WhatsApp body: realistic (1.26 KB, the default) or short (490 bytes)"
    echo "  --outbound        then stop everything and run bench/outbound.sh --repeat N with the"
    echo "                    same build and gateway binary: all the targets in one command"
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
    --channels) CHANNELS=$2; shift 2 ;;
    --body-kind) BODY_KIND=$2; shift 2 ;;
    --outbound) OUTBOUND=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

case "$BODY_KIND" in realistic | short) ;; *) usage >&2; exit 2 ;; esac
for ch in $CHANNELS; do
    case "$ch" in whatsapp | telegram) ;; *) usage >&2; exit 2 ;; esac
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

TARGETS=(loadgen baseline minimal)
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
MINIMAL=$BUILD_DIR/bench/minimal

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
        PINNING="load generator on CPU 0; gateway, minimal, baseline and redis-server on CPU 1"
    else
        PINNING="load generator on CPU 0; gateway, minimal and baseline on CPU 1;"
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
REDIS_PID=$!
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

# The minimal server verifies with the same app secret and writes to its own stream.
MIN_STREAM=bench:minimal
MPORT=$(free_port)
"${SERVER_PIN[@]}" "$MINIMAL" --listen "127.0.0.1:$MPORT" --workers 1 --secret "$WA_SECRET" \
    --redis "127.0.0.1:$RPORT" --stream "$MIN_STREAM" 2>"$WORK/minimal.log" &
PIDS+=($!)
MIN_PID=$!
wait_for "the minimal server" curl -sf "http://127.0.0.1:$MPORT/"

# ---- Measurements ----

# load TARGET CHANNEL CONNECTIONS DURATION WARMUP: one loadgen run, its JSON line on stdout.
# For the gateway and the minimal server, loadgen also reports the CPU time of that server and
# of redis-server over the measured window (cpu_us_per_ok: [server, redis]).
load() {
    local port=$GPORT channel=$2 args cpu=()
    case "$1" in
    gateway) cpu=(--cpu-pid "$GW_PID" --cpu-pid "$REDIS_PID") ;;
    minimal) port=$MPORT cpu=(--cpu-pid "$MIN_PID" --cpu-pid "$REDIS_PID") ;;
    baseline) port=$BPORT ;;
    esac
    if [ "$channel" = whatsapp ]; then
        args=(--path "/webhooks/whatsapp/$WA_CONN" --secret "$WA_SECRET"
            --phone-number-id "$WA_PHONE" --body-kind "$BODY_KIND")
    else
        args=(--path "/webhooks/telegram/$TG_CONN" --secret "$TG_SECRET")
    fi
    "${LOAD_PIN[@]}" "$LOADGEN" --url-host 127.0.0.1 --port "$port" --channel "$channel" \
        --connections "$3" --duration "$4" --warmup "$5" "${args[@]}" "${cpu[@]}" |
        jq -c --arg t "$1" '. + {target: $t}'
}

# webhook_200s: the gateway's own count of webhook requests it answered 200 (all channels).
webhook_200s() {
    curl -sf "http://127.0.0.1:$GPORT/metrics" |
        awk 'index($0, "switchboard_http_requests_total{route=\"/webhooks/") == 1 &&
            index($0, "status=\"200\"") { s += $2 } END { printf "%d\n", s }'
}
# acked TARGET: the server's own count of webhooks it answered 200 (warm-ups included).
acked() {
    if [ "$1" = gateway ]; then
        webhook_200s
    else
        curl -sf "http://127.0.0.1:$MPORT/" | jq .acknowledged
    fi
}
# stream_len TARGET: the length of the stream that TARGET appends its events to.
stream_len() {
    if [ "$1" = gateway ]; then
        redis-cli -p "$RPORT" XLEN "sb:in:{$ASSISTANT}"
    else
        redis-cli -p "$RPORT" XLEN "$MIN_STREAM"
    fi
}
UNLINK_LUA="local c, n = '0', 0
repeat
  local r = redis.call('SCAN', c, 'MATCH', ARGV[1], 'COUNT', 10000)
  c = r[1]
  for _, k in ipairs(r[2]) do redis.call('UNLINK', k); n = n + 1 end
until c == '0'
return n"
# clear_events: empties the assistant's stream, the org's inbox, the duplicate-check keys and
# the minimal server's stream between runs, so that Redis stays small (~1.3 KB per event) and
# every run meets the same Redis; a few GB of events made later runs stall on this VM, baseline
# runs included.
clear_events() {
    redis-cli -p "$RPORT" XTRIM "sb:in:{$ASSISTANT}" MAXLEN 0 >/dev/null
    redis-cli -p "$RPORT" XTRIM "sb:inbox:{bench}" MAXLEN 0 >/dev/null
    redis-cli -p "$RPORT" XTRIM "$MIN_STREAM" MAXLEN 0 >/dev/null
    redis-cli -p "$RPORT" EVAL "$UNLINK_LUA" 0 'sb:dd:*' >/dev/null
}
# commandstats: INFO commandstats as {"command": {"calls": N, "usec": N}, ...}, without the
# benchmark's own INFO and CONFIG calls.
commandstats() {
    redis-cli -p "$RPORT" INFO commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2 \3/p' |
        jq -Rnc '[inputs | split(" ") | select(.[0] != "info" and (.[0] | startswith("config") | not))
            | {key: .[0], value: {calls: (.[1] | tonumber), usec: (.[2] | tonumber)}}]
            | from_entries'
}

# Every request must be acknowledged before anything is measured (signature, binding, secret).
for ch in $CHANNELS; do
    targets=(gateway)
    [ "$ch" = whatsapp ] && targets+=(minimal)
    for t in "${targets[@]}"; do
        r=$(load "$t" "$ch" 4 0.5 0)
        if [ "$(jq '.errors + .non_200' <<<"$r")" != 0 ] || [ "$(jq .requests <<<"$r")" = 0 ]; then
            echo "run.sh: the $t does not acknowledge $ch webhooks: $r" >&2
            tail -n 20 "$WORK/$t.log" >&2
            exit 1
        fi
    done
done

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $NCPU x" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "gateway: $GATEWAY_DESC, SWITCHBOARD_WORKERS=1; minimal: bench/minimal --workers 1;" \
    "baseline: bench/baseline --workers 1"
echo "pinning: $PINNING"
echo "runs: ${DURATION}s measured after ${WARMUP}s warm-up, closed loop, repeat $REPEAT," \
    "gateway, minimal and baseline interleaved; WhatsApp body: $BODY_KIND" \
    "($(load minimal whatsapp 1 0.1 0 | jq .body_bytes) bytes)"
RESULTS=$WORK/results.jsonl
declare -A STORED=([gateway]=0 [minimal]=0)   # events the runs added to the stream
declare -A ANSWERED=([gateway]=0 [minimal]=0) # webhook 200s the server counted meanwhile
declare -A LOST_RUNS=([gateway]=0 [minimal]=0) # runs whose events are not all in the stream
for c in $CONNS; do
    for ch in $CHANNELS; do
        targets=(gateway minimal baseline)
        [ "$ch" = telegram ] && targets=(gateway baseline)
        for _ in $(seq "$REPEAT"); do
            for target in "${targets[@]}"; do
                if [ "$target" != baseline ]; then
                    clear_events
                    x0=$(stream_len "$target")
                    m0=$(acked "$target")
                    redis-cli -p "$RPORT" CONFIG RESETSTAT >/dev/null
                fi
                r=$(load "$target" "$ch" "$c" "$DURATION" "$WARMUP")
                if [ "$target" != baseline ]; then
                    stats=$(commandstats)
                    # The stream must hold every event acknowledged during the run, warm-up
                    # included: at least loadgen's measured 200s, exactly the server's count.
                    dx=$(($(stream_len "$target") - x0))
                    dm=$(($(acked "$target") - m0))
                    ok=$(jq '.requests - .non_200' <<<"$r")
                    STORED[$target]=$((STORED[$target] + dx))
                    ANSWERED[$target]=$((ANSWERED[$target] + dm))
                    if [ "$dx" -lt "$ok" ] || [ "$dx" != "$dm" ]; then
                        echo "run.sh: the stream grew by $dx events, the $target answered $dm" \
                            "webhooks with 200 (loadgen measured $ok)" >&2
                        LOST_RUNS[$target]=$((LOST_RUNS[$target] + 1))
                    fi
                    r=$(jq -c --argjson s "$stats" --argjson ev "$dx" \
                        '. + {events: $ev, commandstats: $s}' <<<"$r")
                fi
                echo "$r" | tee -a "$RESULTS" >&2
            done
        done
    done
done
MEM=$(redis-cli -p "$RPORT" INFO memory | tr -d '\r' | sed -n 's/^used_memory_peak_human://p')
clear_events

# ---- Tables ----

# Medians over the repeats of each cell; per-run figures first (run.sh's stderr has them all).
JQ_LIB='
  def median: map(select(. != null)) |
    if length == 0 then null
    else sort | if length % 2 == 1 then .[length / 2 | floor]
                else (.[length / 2 - 1] + .[length / 2]) / 2 end end;
  def cell(t): map(select(.target == t));
  def fmt(d): if . == null then "-" else (. * pow(10; d) | round) / pow(10; d) | tostring end;
  def ratio(a; b): if a == null or b == null or b == 0 then null else a / b end;
  def scripts: ["eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"];
  # per run: Redis figures from INFO commandstats over the run (warm-up included), per event
  def cmd_us: if .events > 0 then ([.commandstats[].usec] | add // 0) / .events else null end;
  def script_us: if .events > 0 then
      ([.commandstats | to_entries[] | select(.key as $k | scripts | index($k)) | .value.usec]
       | add // 0) / .events else null end;
  def calls_ev: if .events > 0 then ([.commandstats[].calls] | add // 0) / .events else null end;
  def per_call(k): .commandstats[k] | if . == null or .calls == 0 then null
                                      else .usec / .calls end;
  def srv_cpu: .cpu_us_per_ok[0]?;
  def redis_cpu: .cpu_us_per_ok[1]?;
  def groups: group_by([.channel, .connections]) | sort_by(.[0].channel != "whatsapp",
                                                           .[0].connections);
'
echo
echo "Throughput and latency (medians): rps = 200s per second, p50/p99 in ms"
jq -rs "$JQ_LIB"'
  (["channel", "conns", "gw_rps", "gw_p50", "gw_p99", "min_rps", "min_p50", "min_p99",
    "base_rps", "base_p50", "base_p99", "gw/min", "gw/base", "gw_err"] | @tsv),
  (groups[] | cell("gateway") as $g | cell("minimal") as $m | cell("baseline") as $b |
   ($g | map(.rps) | median) as $grps | ($m | map(.rps) | median) as $mrps |
   ($b | map(.rps) | median) as $brps |
   [.[0].channel, .[0].connections, ($grps | fmt(0)),
    ($g | map(.p50_ms) | median | fmt(2)), ($g | map(.p99_ms) | median | fmt(2)),
    ($mrps | fmt(0)), ($m | map(.p50_ms) | median | fmt(2)),
    ($m | map(.p99_ms) | median | fmt(2)),
    ($brps | fmt(0)), ($b | map(.p50_ms) | median | fmt(2)),
    ($b | map(.p99_ms) | median | fmt(2)),
    (ratio($grps; $mrps) | fmt(2)), (ratio($grps; $brps) | fmt(2)),
    ($g | map(.errors + .non_200) | add)] | @tsv)
' "$RESULTS" | column -t -s $'\t'

echo
echo "Cost per webhook (medians, microseconds): cpu = utime+stime over the measured window per"
echo "200, of the server and of redis-server; cmd = INFO commandstats usec of all commands per"
echo "event stored (a script's commands count in the script and again on their own lines),"
echo "scripts = the EVAL/EVALSHA/FCALL part of it; calls = commands per event; per call: usec_per_call"
jq -rs "$JQ_LIB"'
  (["channel", "conns", "gw_cpu", "min_cpu", "gw_redis_cpu", "min_redis_cpu", "gw_cmd",
    "gw_scripts", "gw_calls", "evalsha/call", "gw_xadd/call", "min_cmd", "min_xadd/call"]
   | @tsv),
  (groups[] | cell("gateway") as $g | cell("minimal") as $m |
   [.[0].channel, .[0].connections,
    ($g | map(srv_cpu) | median | fmt(1)), ($m | map(srv_cpu) | median | fmt(1)),
    ($g | map(redis_cpu) | median | fmt(1)), ($m | map(redis_cpu) | median | fmt(1)),
    ($g | map(cmd_us) | median | fmt(1)), ($g | map(script_us) | median | fmt(1)),
    ($g | map(calls_ev) | median | fmt(1)), ($g | map(per_call("evalsha")) | median | fmt(1)),
    ($g | map(per_call("xadd")) | median | fmt(1)),
    ($m | map(cmd_us) | median | fmt(1)), ($m | map(per_call("xadd")) | median | fmt(1))]
   | @tsv)
' "$RESULTS" | column -t -s $'\t'

echo
echo "Targets (WhatsApp, medians; the cost of one event)"
jq -rs "$JQ_LIB"'
  def mark(v; ok): if v == null then "-" elif ok then "met" else "NOT MET" end;
  (["target", "conns", "value", "status"] | @tsv),
  (groups[] | select(.[0].channel == "whatsapp") | .[0].connections as $c |
   cell("gateway") as $g | cell("minimal") as $m |
   ($g | map(redis_cpu) | median) as $rc | ($g | map(cmd_us) | median) as $cmd |
   ($g | map(srv_cpu) | median) as $cpu |
   ratio($g | map(.rps) | median; $m | map(.rps) | median) as $r |
   ($g | map(.p99_ms) | median) as $p99 |
   (["Redis time per event <= 20 us (redis-server CPU)", $c, ($rc | fmt(1)),
     mark($rc; $rc <= 20)] | @tsv),
   ($g | map(script_us) | median) as $scr |
   # With scripts, commandstats counts their commands twice (in the script and on their own
   # lines): the time of the commands sent lies between the scripts alone and the sum.
   (if $scr == null or $scr == 0 then
      ["Redis time per event <= 20 us (commandstats)", $c, ($cmd | fmt(1)),
       mark($cmd; $cmd <= 20)]
    else
      ["Redis time per event <= 20 us (commandstats)", $c,
       "\($scr | fmt(1))..\($cmd | fmt(1))",
       (if $cmd <= 20 then "met" elif $scr > 20 then "NOT MET" else "undecided" end)]
    end | @tsv),
   (["gateway CPU per webhook <= 45 us", $c, ($cpu | fmt(1)), mark($cpu; $cpu <= 45)] | @tsv),
   (["throughput >= 0.8 x minimal", $c, ($r | fmt(2)), mark($r; $r >= 0.8)] | @tsv),
   (if $c == 64 then ["p99 at 64 connections <= 5 ms", $c, ($p99 | fmt(2)),
                      mark($p99; $p99 <= 5)] | @tsv else empty end))
' "$RESULTS" | column -t -s $'\t'
echo "(Redis CPU: utime+stime of redis-server per 200 over the measured window; commandstats:"
echo " usec of the commands per event stored, shown as scripts..all when scripts ran, since"
echo " Redis counts a script's commands in the script and again on their own lines)"

# ---- Checks ----

echo
status=0
bad=$(jq -s 'map(.errors + .non_200) | add' "$RESULTS")
if [ "$bad" != 0 ]; then
    echo "CHECK FAILED: $bad requests got an error or a status other than 200 (see the JSON lines)"
    status=1
fi
dups=$(curl -sf "http://127.0.0.1:$GPORT/metrics" |
    awk '/^switchboard_duplicate_events_total/ { s += $2 } END { printf "%d\n", s }')
for target in gateway minimal; do
    acked_lg=$(jq -s --arg t "$target" \
        'map(select(.target == $t) | .requests - .non_200) | add // 0' "$RESULTS")
    stream="sb:in:{$ASSISTANT}"
    [ "$target" = minimal ] && stream=$MIN_STREAM
    echo "redis: the $target runs appended ${STORED[$target]} events to $stream (checked after" \
        "each run, then cleared); the $target answered ${ANSWERED[$target]} webhooks 200" \
        "(warm-ups included); loadgen measured $acked_lg 200s"
    if [ "${LOST_RUNS[$target]}" != 0 ] || [ "${STORED[$target]}" -lt "$acked_lg" ]; then
        echo "CHECK FAILED: in ${LOST_RUNS[$target]} $target runs the stream does not hold every" \
            "acknowledged event"
        status=1
    else
        echo "check passed: every event the $target acknowledged was in its stream"
    fi
done
echo "redis: duplicate events at the gateway: $dups; peak memory $MEM"
if [ "$dups" != 0 ]; then
    echo "CHECK FAILED: $dups events took the duplicate path (ids must be unique)"
    status=1
fi
for pid in "$GW_PID" "$MIN_PID"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "CHECK FAILED: the server with pid $pid exited during the run"
        status=1
    fi
done
if grep -q '"level":"\(warn\|error\)"' "$WORK/gateway.log"; then
    echo "gateway warnings/errors:"
    grep '"level":"\(warn\|error\)"' "$WORK/gateway.log" | sort | uniq -c | sort -rn | head -5
fi
if [ "$OUTBOUND" = 1 ]; then
    # The servers above are stopped first: the outbound run has the core to itself.
    cleanup
    PIDS=()
    echo
    "$ROOT/bench/outbound.sh" --build-dir "$BUILD_DIR" --switchboard "$SB" --repeat "$REPEAT" ||
        status=1
fi
exit $status
