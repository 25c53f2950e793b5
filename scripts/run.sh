#!/usr/bin/env bash
# Installs what is missing, builds switchboard (release) and runs it on built-in defaults
# (or the arguments given, e.g. --config conf/switchboard.json). Starts a local
# redis-server when none answers at the configured URL.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSB_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)" --target switchboard >/dev/null

url="${SWITCHBOARD_REDIS_URL:-redis://127.0.0.1:6379/0}"
if ! redis-cli -u "$url" ping >/dev/null 2>&1; then
    hostport="${url#redis://}"; hostport="${hostport##*@}"; hostport="${hostport%%/*}"
    port="${hostport##*:}"; [ "$port" = "$hostport" ] && port=6379
    mkdir -p data
    echo "no Redis at $url: starting redis-server on port $port (data in ./data)" >&2
    redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/data" --appendonly yes \
        --daemonize yes --logfile "$PWD/data/redis.log" --pidfile "$PWD/data/redis.pid"
    for _ in $(seq 100); do redis-cli -u "$url" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
exec build/switchboard "$@"
