#!/usr/bin/env bash
# Installs what is missing, builds switchboard (release) and runs it on built-in defaults
# (or the arguments given, e.g. --config conf/switchboard.json). When no Redis answers at
# the configured URL it starts a local redis-server (data in ./data) and stops it again when
# the gateway stops; a Redis that was already running is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "run.sh: checking the build dependencies (scripts/deps.sh)" >&2
scripts/deps.sh
echo "run.sh: building build/switchboard (the first build takes a minute or two)" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSB_TESTS=OFF -DSB_BENCH=OFF >/dev/null
cmake --build build -j"$(nproc)" --target switchboard

url="${SWITCHBOARD_REDIS_URL:-redis://127.0.0.1:6379/0}"
redis_pid=""
stop_redis() {
    if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
        echo "run.sh: stopping the redis-server it started (pid $redis_pid; the data stays in ./data)" >&2
        redis-cli -u "$url" shutdown >/dev/null 2>&1 || kill "$redis_pid" 2>/dev/null || true
    fi
}
trap stop_redis EXIT

if ! redis-cli -u "$url" ping >/dev/null 2>&1; then
    hostport="${url#redis://}"; hostport="${hostport##*@}"; hostport="${hostport%%/*}"
    port="${hostport##*:}"; [ "$port" = "$hostport" ] && port=6379
    mkdir -p data
    echo "run.sh: no Redis at $url: starting redis-server on port $port (data in ./data)" >&2
    redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/data" --appendonly yes \
        --daemonize yes --logfile "$PWD/data/redis.log" --pidfile "$PWD/data/redis.pid"
    for _ in $(seq 100); do redis-cli -u "$url" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis_pid="$(cat data/redis.pid)"
fi

echo "run.sh: starting build/switchboard $* (Ctrl-C stops it)" >&2
build/switchboard "$@" &
gateway=$!
# Ctrl-C and SIGTERM go to the gateway, which shuts down cleanly; then Redis is stopped.
trap 'kill -TERM "$gateway" 2>/dev/null || true' INT TERM
status=0
while :; do
    if wait "$gateway"; then status=0; else status=$?; fi
    kill -0 "$gateway" 2>/dev/null || break
done
exit "$status"
