#!/usr/bin/env bash
# The conversation list of a big org: GET /orgs/c/conversations on an org of CONVS
# conversations, p50/p99 per query, against the target (a page in under 5 ms p99).
#
# Starts a private redis-server, bench/fake_provider.py as the Graph API (connection
# creation only) and the gateway (one worker). Seeds CONVS WhatsApp conversations through
# the real webhook path (batched bodies of 100 messages from 100 users each, so every
# conversation is written by the enqueue script as in production; one in ten gets a second
# message and one in five is read through the API, so the unread filter has something to
# skip), then sends
# REQUESTS requests of each query one after the other on one keep-alive connection and
# prints p50/p99 as the client sees them (client time included), and per query the time
# Redis spent in scripts per request (INFO commandstats: the auth and the list script), which
# other load on the machine hardly changes.
#
# Queries: the first page (take 20), a page in the middle of the list, take 100, each filter alone
# (channel, connection_id, assistant_id, contact_status, unread=true) and two filters
# combined (channel and unread=true: the count kept for the pair, a walk of the smaller set).
#
# On a machine with 2 or more cores the client runs on CPU 0 and the gateway and
# redis-server on CPU 1.
#
# Usage: bench/inbox.sh [--convs N] [--requests N] [--build-dir DIR] [--switchboard BIN]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONVS=100000
REQUESTS=2000
BUILD_DIR=""
SB=""
while [ $# -gt 0 ]; do
    case "$1" in
    --convs) CONVS=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --switchboard) SB=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "inbox.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for tool in cmake redis-server redis-cli python3 curl; do
    command -v "$tool" >/dev/null || { echo "inbox.sh: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sb-inboxbench.XXXXXX")
BUILD_DIR=${BUILD_DIR:-$WORK/build}
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "$SB" ]; then
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSB_TESTS=OFF >/dev/null
    fi
    cmake --build "$BUILD_DIR" -j"$(nproc)" --target switchboard >"$WORK/build.log" 2>&1 ||
        { cat "$WORK/build.log" >&2; exit 1; }
    SB=$BUILD_DIR/switchboard
fi
[ -x "$SB" ] || { echo "inbox.sh: no switchboard binary at $SB" >&2; exit 1; }

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
    echo "inbox.sh: $1 did not answer" >&2
    exit 1
}

PNID=109900000000002
SECRET=bench-app-secret-0123456789
RPORT=$(free_port)
PPORT=$(free_port)
GPORT=$(free_port)

$SERVER redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
python3 "$ROOT/bench/fake_provider.py" "$PPORT" "$WORK/secret" >"$WORK/provider.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

export SWITCHBOARD_LISTEN=127.0.0.1:$GPORT
export SWITCHBOARD_REDIS_URL=redis://127.0.0.1:$RPORT/0
export SWITCHBOARD_GRAPH_API_BASE=http://127.0.0.1:$PPORT/v21.0
export SWITCHBOARD_DATA_DIR=$WORK/data
export SWITCHBOARD_WORKERS=1
export SWITCHBOARD_LOG_LEVEL=warn
export SWITCHBOARD_API_RATE_LIMIT_PER_MINUTE=1000000
$SERVER "$SB" 2>"$WORK/gateway.log" &
PIDS+=($!)
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

echo "inbox: seeding $CONVS WhatsApp conversations through the webhook path"
SEED_START=$(date +%s.%N)
$CLIENT python3 - "$GPORT" "$CONN" "$SECRET" "$PNID" "$CONVS" "$KEY" <<'EOF'
import hashlib, hmac, http.client, json, sys, time
port, conn, secret, pnid, n, key = sys.argv[1:7]
n = int(n)
c = http.client.HTTPConnection("127.0.0.1", int(port))
now = int(time.time())


def post(msgs):
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550100000", "phone_number_id": pnid},
             "contacts": [{"profile": {"name": "User %s" % m["from"]}, "wa_id": m["from"]}
                          for m in msgs],
             "messages": msgs}
    body = {"object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]}
    data = json.dumps(body, separators=(",", ":")).encode()
    sig = "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
    c.request("POST", "/webhooks/whatsapp/" + conn, body=data,
              headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig})
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status


def msg(i, k):
    user = str(15550000000 + i)
    return {"from": user, "id": "wamid.inboxbench.%d.%d" % (i, k), "timestamp": str(now),
            "type": "text", "text": {"body": "message %d of user %d" % (k, i)}}


batch = []
for i in range(n):
    batch.append(msg(i, 1))
    if i % 10 == 0:
        batch.append(msg(i, 2))
    if len(batch) >= 100:
        post(batch)
        batch = []
if batch:
    post(batch)
EOF
SEED_END=$(date +%s.%N)
LISTED=$(redis-cli -p "$RPORT" ZCARD "sb:convs:{bench}")
[ "$LISTED" -eq "$CONVS" ] || { echo "inbox.sh: $LISTED conversations listed, not $CONVS" >&2; exit 1; }
# One in five read, through POST /read as the inbox does it (on one keep-alive connection):
# the unread set and the counts of the filter combinations follow.
redis-cli -p "$RPORT" --raw ZRANGE "sb:convs:{bench}" 0 -1 | awk 'NR % 5 == 0' |
    $CLIENT python3 -c '
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
h = {"Authorization": "Bearer " + sys.argv[2]}
for cv in sys.stdin.read().split():
    c.request("POST", "/orgs/c/conversations/%s/read" % cv, headers=h)
    r = c.getresponse()
    r.read()
    assert r.status == 200, (cv, r.status)
' "$GPORT" "$KEY"
printf 'seeded in %.1f s; unread: %s\n' "$(python3 -c "print($SEED_END - $SEED_START)")" \
    "$(redis-cli -p "$RPORT" ZCARD "sb:convs:{bench}:unread")"

redis-cli -p "$RPORT" CONFIG RESETSTAT >/dev/null
[ -z "${SLOWLOG:-}" ] || redis-cli -p "$RPORT" CONFIG SET slowlog-log-slower-than 0 >/dev/null
$CLIENT python3 - "$GPORT" "$KEY" "$REQUESTS" "$CONN" "$ASST" "$CONVS" "$RPORT" <<'EOF'
import http.client, json, subprocess, sys, time
port, key, n, conn, asst = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
rport = sys.argv[7]


def redis_us():
    """Redis's time in scripts since the last call, per request (auth + list script)."""
    out = subprocess.run(["redis-cli", "-p", rport, "INFO", "commandstats"], check=True,
                         capture_output=True, text=True).stdout
    subprocess.run(["redis-cli", "-p", rport, "CONFIG", "RESETSTAT"], check=True,
                   capture_output=True)
    usec = sum(int(l.split("usec=")[1].split(",")[0]) for l in out.splitlines()
               if l.startswith(("cmdstat_evalsha:", "cmdstat_eval:")))
    return usec / n
mid = max(1, int(sys.argv[6]) // 40)  # a page in the middle of the list
c = http.client.HTTPConnection("127.0.0.1", int(port))
h = {"Authorization": "Bearer " + key}
queries = [
    ("first page", ""),
    ("page %d" % mid, "?page=%d" % mid),
    ("take 100", "?take=100"),
    ("channel", "?channel=whatsapp"),
    ("connection_id", "?connection_id=" + conn),
    ("assistant_id", "?assistant_id=" + asst),
    ("contact_status", "?contact_status=SUBSCRIBED"),
    ("unread=true", "?unread=true"),
    ("channel+unread", "?channel=whatsapp&unread=true"),
]
print("%-16s %8s %8s %8s %6s %9s" % ("query", "p50_ms", "p99_ms", "max_ms", "p99<5",
                                      "redis_us"))
worst = 0.0
redis_us()
for name, q in queries:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        c.request("GET", "/orgs/c/conversations" + q, headers=h)
        r = c.getresponse()
        body = r.read()
        lat.append((time.perf_counter() - t) * 1000)
        assert r.status == 200, (r.status, body[:200])
    assert json.loads(body), name
    lat.sort()
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]
    if not q.startswith("?take="):  # the target is a page of the default size (20 rows)
        worst = max(worst, p99)
    print("%-16s %8.2f %8.2f %8.2f %6s %9.1f" % (name, p50, p99, lat[-1],
                                              "yes" if p99 < 5 else "NO", redis_us()))
print("target (a page of the default 20 rows in under 5 ms p99, take=100 shown beside it): %s"
      % ("met" if worst < 5 else "NOT met"))
EOF
[ -z "${SLOWLOG:-}" ] || redis-cli -p "$RPORT" SLOWLOG GET 30 > "$WORK/slowlog"
