#!/usr/bin/env bash
# Outbound throughput: commands in sb:out to provider requests out, per second, next to a bare
# curl-multi loop posting the same sends to the same fake provider on the same core.
#
# Starts a private redis-server, bench/baseline as a fast fake Graph API (it answers every
# request with one JSON body that works both as GET /me and as a WhatsApp send result), and
# the gateway (one worker). Creates a WhatsApp connection, a binding and CONVS conversations
# (inbound webhooks), then adds COMMANDS text commands spread over the conversations to
# sb:out in one pipeline and measures the time until the last one is sent and recorded
# (its inbox event written and the entry acknowledged). Pacing is lifted for the run
# (SWITCHBOARD_OUTBOUND_RATE_WHATSAPP) so that the engine, not the 80/s default, is measured.
# Over each gateway run it takes Redis's INFO commandstats and the CPU time (utime + stime from
# /proc) of the gateway and of redis-server, per command. After each gateway run,
# bench/curl_loop posts as many WhatsApp text sends with libcurl multi on a libuv loop (one
# in flight per conversation, the gateway's per-host connection cap) to the same fake
# provider: what the HTTP side alone costs. Prints both rates, their ratio against the
# target (>= 0.6) and the Redis time per command.
#
# On a machine with 2 or more cores the fake provider runs on CPU 0 and the gateway,
# redis-server and curl_loop on CPU 1.
#
# Usage: bench/outbound.sh [--commands N] [--convs N] [--repeat N] [--build-dir DIR]
#                          [--switchboard BIN]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COMMANDS=20000
CONVS=100
REPEAT=3
BUILD_DIR=""
SB=""
while [ $# -gt 0 ]; do
    case "$1" in
    --commands) COMMANDS=$2; shift 2 ;;
    --convs) CONVS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --switchboard) SB=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "outbound.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for tool in cmake redis-server redis-cli python3 curl; do
    command -v "$tool" >/dev/null || { echo "outbound.sh: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sb-outbench.XXXXXX")
BUILD_DIR=${BUILD_DIR:-$WORK/build}
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

# A given build directory is used as it is configured (bench/run.sh --outbound passes its own).
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSB_TESTS=OFF >/dev/null
fi
TARGETS=(baseline curl_loop)
[ -n "$SB" ] || TARGETS+=(switchboard)
cmake --build "$BUILD_DIR" -j"$(nproc)" --target "${TARGETS[@]}" >"$WORK/build.log" 2>&1 ||
    { cat "$WORK/build.log" >&2; exit 1; }

if [ "$(nproc)" -ge 2 ]; then
    CLIENT="taskset -c 0"
    SERVER="taskset -c 1"
else
    CLIENT=""
    SERVER=""
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() {
    for _ in $(seq 200); do
        curl -fs "$1" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "outbound.sh: $1 did not answer" >&2
    exit 1
}

PNID=109900000000001
SECRET=bench-app-secret-0123456789
RPORT=$(free_port)
PPORT=$(free_port)
GPORT=$(free_port)
BODY='{"id":"1","name":"Bench","messaging_product":"whatsapp","contacts":[{"input":"1","wa_id":"1"}],"messages":[{"id":"wamid.bench"}]}'

$SERVER redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
$CLIENT "$BUILD_DIR/bench/baseline" --listen "127.0.0.1:$PPORT" --workers 1 --body "$BODY" \
    >"$WORK/provider.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

export SWITCHBOARD_LISTEN=127.0.0.1:$GPORT
export SWITCHBOARD_REDIS_URL=redis://127.0.0.1:$RPORT/0
export SWITCHBOARD_GRAPH_API_BASE=http://127.0.0.1:$PPORT/v21.0
export SWITCHBOARD_DATA_DIR=$WORK/data
export SWITCHBOARD_WORKERS=1
export SWITCHBOARD_LOG_LEVEL=warn
export SWITCHBOARD_OUTBOUND_RATE_WHATSAPP=100000
export SWITCHBOARD_OUTBOUND_MAX_IN_FLIGHT=100000
SB=${SB:-$BUILD_DIR/switchboard}
[ -x "$SB" ] || { echo "outbound.sh: no switchboard binary at $SB" >&2; exit 1; }
$SERVER "$SB" 2>"$WORK/gateway.log" &
PIDS+=($!)
GW_PID=$!
wait_http "http://127.0.0.1:$GPORT/readyz"

KEY=$("$SB" keys create --org bench)
api() {
    curl -fsS -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
        -X "$1" "http://127.0.0.1:$GPORT$2" ${3:+-d "$3"}
}
json_id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
ASST=$(api POST /orgs/c/assistants '{"name":"bench"}' | json_id)
CONN=$(api POST /orgs/c/connections "{\"provider\":\"whatsapp\",\"credentials\":{\"app_secret\":\"$SECRET\",\"verify_token\":\"v\",\"access_token\":\"bench-token-0123456789\"}}" | json_id)
api POST "/orgs/c/assistants/$ASST/channels" "{\"connection_id\":\"$CONN\",\"external_id\":\"$PNID\"}" >/dev/null

# One inbound message per conversation (a user each); their conversation ids come back in
# the assistant's stream.
python3 - "$GPORT" "$CONN" "$SECRET" "$PNID" "$CONVS" <<'EOF'
import hashlib, hmac, http.client, json, sys, time
port, conn, secret, pnid, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
c = http.client.HTTPConnection("127.0.0.1", int(port))
for i in range(n):
    user = str(15550000000 + i)
    body = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100000", "phone_number_id": pnid},
            "contacts": [{"profile": {"name": "User %d" % i}, "wa_id": user}],
            "messages": [{"from": user, "id": "wamid.outbench.%d" % i,
                          "timestamp": str(int(time.time())), "type": "text",
                          "text": {"body": "hi"}}]}}]}]}
    data = json.dumps(body, separators=(",", ":")).encode()
    sig = "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
    c.request("POST", "/webhooks/whatsapp/" + conn, body=data,
              headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
EOF
redis-cli -p "$RPORT" --raw XRANGE "sb:in:{$ASST}" - + |
    python3 -c '
import json, sys
ids = sorted({json.loads(l)["conversation_id"] for l in sys.stdin if l.startswith("{")})
open(sys.argv[1], "w").write("\n".join(ids) + "\n")' "$WORK/convs"
[ "$(wc -l <"$WORK/convs")" -eq "$CONVS" ] || { echo "outbound.sh: conversations missing" >&2; exit 1; }

# cpu_s PID: utime + stime of process PID in seconds (all threads), from /proc/PID/stat.
cpu_s() {
    awk -v tck="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / tck }' \
        "/proc/$1/stat"
}
# commandstats: INFO commandstats as {"command": {"calls": N, "usec": N}, ...}, without the
# benchmark's own INFO, CONFIG, XLEN and XPENDING calls.
commandstats() {
    redis-cli -p "$RPORT" INFO commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),usec=\([0-9]*\),.*/\1 \2 \3/p' |
        python3 -c '
import json, sys
skip = ("info", "xlen", "xpending")
print(json.dumps({n: {"calls": int(c), "usec": int(u)} for n, c, u in
                  (l.split() for l in sys.stdin)
                  if n not in skip and not n.startswith("config")}))'
}

echo "outbound: $COMMANDS text commands over $CONVS WhatsApp conversations, gateway with 1" \
    "worker${SERVER:+ (and redis-server, curl_loop) on CPU 1}, fake provider${CLIENT:+ on CPU 0}"
echo "per run: the gateway, then bench/curl_loop with as many sends, $CONVS in flight"
printf '%-4s %9s %9s %8s %7s %10s %10s %9s %9s\n' run gw_cmd/s curl/s gw/curl \
    gw_cpu redis_cpu redis_cmd scripts evalsha
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
for run in $(seq "$REPEAT"); do
    # The commands, as one redis-cli pipeline (RESP), then the wait for the last record.
    python3 - "$WORK/convs" "$COMMANDS" "$run" >"$WORK/cmds.resp" <<'EOF'
import json, sys
convs = open(sys.argv[1]).read().split()
n, run = int(sys.argv[2]), sys.argv[3]
out = sys.stdout.buffer
def resp(*args):
    out.write(b"*%d\r\n" % len(args))
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out.write(b"$%d\r\n%s\r\n" % (len(a), a))
for i in range(n):
    cmd = {"id": "r%s-%d" % (run, i), "conversation_id": convs[i % len(convs)],
           "type": "text", "text": "reply number %d" % i}
    resp("XADD", "sb:out", "*", "cmd", json.dumps(cmd, separators=(",", ":")))
EOF
    before=$(redis-cli -p "$RPORT" XLEN "sb:inbox:{bench}")
    target=$((before + COMMANDS))
    redis-cli -p "$RPORT" CONFIG RESETSTAT >/dev/null
    gw0=$(cpu_s "$GW_PID")
    rd0=$(cpu_s "$REDIS_PID")
    start=$(date +%s.%N)
    redis-cli -p "$RPORT" --pipe <"$WORK/cmds.resp" >/dev/null
    while [ "$(redis-cli -p "$RPORT" XLEN "sb:inbox:{bench}")" -lt "$target" ]; do
        sleep 0.02
    done
    end=$(date +%s.%N)
    gw1=$(cpu_s "$GW_PID")
    rd1=$(cpu_s "$REDIS_PID")
    stats=$(commandstats)
    pending=$(redis-cli -p "$RPORT" XPENDING sb:out switchboard | head -1)
    # The bare loop: the same sends to the same provider, on the gateway's core.
    curl_r=$($SERVER "$BUILD_DIR/bench/curl_loop" \
        --url "http://127.0.0.1:$PPORT/v21.0/$PNID/messages" --token bench-token-0123456789 \
        --sends "$COMMANDS" --convs "$CONVS" --in-flight "$CONVS") || true
    python3 - "$COMMANDS" "$start" "$end" "$gw0" "$gw1" "$rd0" "$rd1" "$stats" "$curl_r" \
        "$run" >>"$RESULTS" <<'EOF'
import json, sys
n = int(sys.argv[1])
start, end, gw0, gw1, rd0, rd1 = map(float, sys.argv[2:8])
stats = json.loads(sys.argv[8])
curl = json.loads(sys.argv[9]) if sys.argv[9] else {"rps": 0, "ok": 0, "errors": n}
scripts = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
ev = stats.get("evalsha", {"calls": 0})
print(json.dumps({
    "run": int(sys.argv[10]), "commands": n, "seconds": end - start, "gw_rps": n / (end - start),
    "curl_rps": curl["rps"], "curl_ok": curl["ok"], "curl_errors": curl["errors"],
    "gw_cpu_us": (gw1 - gw0) * 1e6 / n, "redis_cpu_us": (rd1 - rd0) * 1e6 / n,
    "redis_cmd_us": sum(v["usec"] for v in stats.values()) / n,
    "redis_script_us": sum(v["usec"] for k, v in stats.items() if k in scripts) / n,
    "evalsha_us_per_call": ev["usec"] / ev["calls"] if ev["calls"] else None,
    "commandstats": stats}))
EOF
    tail -n 1 "$RESULTS" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
f = lambda v: "-" if v is None else "%.1f" % v
print("%-4d %9.0f %9.0f %8.2f %7s %10s %10s %9s %9s" % (r["run"], r["gw_rps"], r["curl_rps"],
      r["gw_rps"] / r["curl_rps"] if r["curl_rps"] else 0, f(r["gw_cpu_us"]),
      f(r["redis_cpu_us"]), f(r["redis_cmd_us"]), f(r["redis_script_us"]),
      f(r["evalsha_us_per_call"])))'
    [ "$pending" = "0" ] || sleep 0.5
done
echo "(gw_cmd/s: commands sent and recorded per second; curl/s: curl_loop's 200s per second;"
echo " gw_cpu, redis_cpu: utime+stime of the gateway and of redis-server per command; redis_cmd:"
echo " INFO commandstats usec of all commands per command, the XADDs to sb:out included and a"
echo " script's commands counted in the script and again on their own lines; scripts: the"
echo " EVAL/EVALSHA part of it; evalsha: its usec_per_call; all in microseconds)"
status=0
python3 - "$RESULTS" <<'EOF' || status=1
import json, statistics, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
def med(k):
    v = [r[k] for r in rs if r[k] is not None]
    return statistics.median(v) if v else float("nan")
gw, cu = med("gw_rps"), med("curl_rps")
ratio = gw / cu if cu else 0
print("median: gateway %.0f commands/s, curl_loop %.0f sends/s, ratio %.2f" % (gw, cu, ratio))
print("median Redis time per command: %.1f us redis-server CPU, %.1f us commandstats (all"
      " commands), %.1f us scripts, evalsha %.1f us per call"
      % (med("redis_cpu_us"), med("redis_cmd_us"), med("redis_script_us"),
         med("evalsha_us_per_call")))
print("median gateway CPU per command: %.1f us" % med("gw_cpu_us"))
print("target: gateway >= 0.6 x curl_loop: %.2f %s" % (ratio, "met" if ratio >= 0.6 else "NOT MET"))
bad = sum(r["curl_errors"] for r in rs)
if bad:
    print("CHECK FAILED: %d curl_loop sends got an error or a status other than 200" % bad)
    sys.exit(1)
EOF
dead=$(redis-cli -p "$RPORT" XLEN sb:dead)
echo "dead letters: $dead (expected 0)"
if [ "$dead" != 0 ]; then
    echo "CHECK FAILED: commands went to sb:dead"
    status=1
fi
exit $status
