#!/usr/bin/env bash
# Media throughput: one inbound WhatsApp document fetched through the gateway's signed URL
# (media lookup, then the download streamed through h2o) beside the same file downloaded
# straight from the same fake provider, both with curl on loopback.
#
# Starts a private redis-server, a small fake Graph API (python3; GET /v21.0/me for the
# connection check, GET /v21.0/<media id> answering the download URL, GET /dl/<id> serving
# SIZE_MB of bytes from one repeated 1 MiB block with Content-Length), and the gateway with
# one worker. Creates a WhatsApp connection and binding, posts one webhook with a document,
# takes message.media.url from the assistant's stream, then, REPEAT times, downloads the
# file with curl through the gateway and straight from the fake, and prints both rates
# (MB/s, from curl's speed_download), their ratio, and the gateway's CPU time per GB.
#
# On a machine with 2 or more cores the fake and curl run on CPU 0, the gateway and
# redis-server on CPU 1.
#
# Usage: bench/media.sh [--size-mb N] [--repeat N] [--build-dir DIR] [--switchboard BIN]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MB=100
REPEAT=3
BUILD_DIR=""
SB=""
while [ $# -gt 0 ]; do
    case "$1" in
    --size-mb) SIZE_MB=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --switchboard) SB=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "media.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for tool in cmake redis-server redis-cli python3 curl; do
    command -v "$tool" >/dev/null || { echo "media.sh: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sb-mediabench.XXXXXX")
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
        cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSB_TESTS=OFF \
            >/dev/null
    fi
    cmake --build "$BUILD_DIR" -j2 --target switchboard >"$WORK/build.log" 2>&1 ||
        { cat "$WORK/build.log" >&2; exit 1; }
    SB=$BUILD_DIR/switchboard
fi
[ -x "$SB" ] || { echo "media.sh: no switchboard binary at $SB" >&2; exit 1; }

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
    echo "media.sh: $1 did not answer" >&2
    exit 1
}

PNID=109900000000002
SECRET=bench-app-secret-0123456789
TOKEN=bench-media-token-0123456789
MEDIA_ID=880000000000001
RPORT=$(free_port)
PPORT=$(free_port)
GPORT=$(free_port)

$SERVER redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/fake.py" <<'EOF'
import json, socket, sys, threading
port, size, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
block = bytes(range(256)) * 4096  # 1 MiB
def answer(c, status, ctype, body=b"", length=None):
    n = len(body) if length is None else length
    c.sendall(b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
              % (status, ctype.encode(), n) + body)
def serve(c):
    f = c.makefile("rb")
    try:
        while True:
            line = f.readline()
            if not line:
                return
            path = line.split()[1].decode()
            auth = ""
            while True:
                h = f.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                if h.lower().startswith(b"authorization:"):
                    auth = h.split(b":", 1)[1].strip().decode()
            if path.startswith("/dl/"):
                if auth != "Bearer " + token:
                    answer(c, 401, "application/json", b"{}")
                    continue
                answer(c, 200, "application/pdf", length=size)
                mv, left = memoryview(block), size
                while left > 0:
                    n = min(left, len(block))
                    c.sendall(mv[:n])
                    left -= n
            elif path.startswith("/v21.0/me") or path.startswith("/v21.0/1099"):
                answer(c, 200, "application/json", b'{"id":"1","name":"Bench"}')
            elif path.startswith("/v21.0/"):
                mid = path.split("/")[2]
                body = json.dumps({"url": "http://127.0.0.1:%d/dl/%s" % (port, mid),
                                   "mime_type": "application/pdf", "file_size": size,
                                   "id": mid}).encode()
                answer(c, 200, "application/json", body)
            else:
                answer(c, 404, "text/plain", b"no")
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
SIZE=$((SIZE_MB * 1000 * 1000))
$CLIENT python3 "$WORK/fake.py" "$PPORT" "$SIZE" "$TOKEN" >"$WORK/fake.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
wait_http "http://127.0.0.1:$PPORT/v21.0/me"

export SWITCHBOARD_LISTEN=127.0.0.1:$GPORT
export SWITCHBOARD_REDIS_URL=redis://127.0.0.1:$RPORT/0
export SWITCHBOARD_GRAPH_API_BASE=http://127.0.0.1:$PPORT/v21.0
export SWITCHBOARD_PUBLIC_URL=http://127.0.0.1:$GPORT
export SWITCHBOARD_DATA_DIR=$WORK/data
export SWITCHBOARD_WORKERS=1
export SWITCHBOARD_LOG_LEVEL=warn
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
CONN=$(api POST /orgs/c/connections "{\"provider\":\"whatsapp\",\"credentials\":{\"app_secret\":\"$SECRET\",\"verify_token\":\"v\",\"access_token\":\"$TOKEN\"}}" | json_id)
api POST "/orgs/c/assistants/$ASST/channels" "{\"connection_id\":\"$CONN\",\"external_id\":\"$PNID\"}" >/dev/null

python3 - "$GPORT" "$CONN" "$SECRET" "$PNID" "$MEDIA_ID" <<'EOF'
import hashlib, hmac, http.client, json, sys
port, conn, secret, pnid, mid = sys.argv[1:6]
body = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
    "field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550100000", "phone_number_id": pnid},
        "contacts": [{"profile": {"name": "User"}, "wa_id": "15550000001"}],
        "messages": [{"from": "15550000001", "id": "wamid.mediabench", "timestamp": "1779012345",
                      "type": "document", "document": {"id": mid, "mime_type": "application/pdf",
                                                       "filename": "bench.pdf"}}]}}]}]}
data = json.dumps(body, separators=(",", ":")).encode()
sig = "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
c = http.client.HTTPConnection("127.0.0.1", int(port))
c.request("POST", "/webhooks/whatsapp/" + conn, body=data,
          headers={"Content-Type": "application/json", "X-Hub-Signature-256": sig})
r = c.getresponse()
r.read()
assert r.status == 200, r.status
EOF
URL=""
for _ in $(seq 100); do
    URL=$(redis-cli -p "$RPORT" --raw XRANGE "sb:in:{$ASST}" - + |
        python3 -c 'import json,sys
for l in sys.stdin:
    if l.startswith("{"): print(json.loads(l)["message"]["media"]["url"])' | tail -1)
    [ -n "$URL" ] && break
    sleep 0.05
done
[ -n "$URL" ] || { echo "media.sh: no event with a media URL" >&2; exit 1; }
DIRECT="http://127.0.0.1:$PPORT/dl/$MEDIA_ID"

cpu_s() {
    awk -v tck="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / tck }' \
        "/proc/$1/stat"
}
fetch() { # URL [header]: prints "bytes speed" (speed in bytes/s)
    $CLIENT curl -fsS -o /dev/null ${2:+-H "$2"} -w '%{size_download} %{speed_download}\n' "$1"
}

echo "media: one ${SIZE_MB} MB WhatsApp document, gateway with 1 worker" \
    "${SERVER:+(and redis-server) on CPU 1}, fake provider and curl${CLIENT:+ on CPU 0}"
printf '%-4s %12s %12s %8s %12s\n' run gateway_MB/s direct_MB/s ratio gw_cpu_s/GB
for run in $(seq "$REPEAT"); do
    c0=$(cpu_s "$GW_PID")
    read -r gbytes gspeed < <(fetch "$URL")
    c1=$(cpu_s "$GW_PID")
    read -r dbytes dspeed < <(fetch "$DIRECT" "Authorization: Bearer $TOKEN")
    [ "$gbytes" -eq "$SIZE" ] && [ "$dbytes" -eq "$SIZE" ] ||
        { echo "media.sh: short download ($gbytes, $dbytes of $SIZE)" >&2; exit 1; }
    python3 -c 'import sys
g, d, c0, c1, size = map(float, sys.argv[1:6])
print("%-4s %12.1f %12.1f %8.2f %12.2f" % (sys.argv[6], g / 1e6, d / 1e6, g / d,
                                          (c1 - c0) / (size / 1e9)))' \
        "$gspeed" "$dspeed" "$c0" "$c1" "$SIZE" "$run"
done
