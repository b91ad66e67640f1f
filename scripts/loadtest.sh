#!/usr/bin/env bash
# Load test of `wander serve` on loopback with wrk (apt-get install wrk), on the default run
# directory (run the pipeline first; PROFILE=quick serves the quick run instead).
# Usage: scripts/loadtest.sh [seconds] [connections]
# Prints wrk's summary, then repeats the run while reloading the artifacts every second.
# ITEMS=0 asks for clusters only (the table lookup without the item policy).
# Last, the ceiling: an axum service that only parses the same bodies and answers JSON
# (crates/wander-serve/examples/ceiling.rs), under the same wrk settings; the ratio of the
# steady figures is printed. CEILING=0 skips it.
set -euo pipefail
secs=${1:-20}
conns=${2:-32}
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/wander
port=18080
export WANDER_ADMIN_TOKEN=loadtest
# The service reads the serving bundle; a run from before `wander bundle` existed gets one here.
"$bin" ${PROFILE:+--profile "$PROFILE"} bundle > /dev/null
"$bin" ${PROFILE:+--profile "$PROFILE"} --set serve.bind="\"127.0.0.1:$port\"" serve 2> /tmp/wander-serve.log &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break; sleep 0.2; done
echo "== steady load: ${secs}s, $conns connections, 2 wrk threads"
wrk -t2 -c"$conns" -d"${secs}s" --latency -s scripts/loadtest.lua "http://127.0.0.1:$port/" | tee /tmp/wander-loadtest.txt
echo "== the same load with a reload every second"
( for _ in $(seq 1 "$secs"); do sleep 1; curl -sf -X POST -H "Authorization: Bearer loadtest" "http://127.0.0.1:$port/admin/reload" > /dev/null || echo "reload failed"; done ) &
reloads=$!
wrk -t2 -c"$conns" -d"${secs}s" --latency -s scripts/loadtest.lua "http://127.0.0.1:$port/"
# Only the reload loop: a bare `wait` would also wait for the server.
wait $reloads
curl -s "http://127.0.0.1:$port/metrics" | grep -E "wander_reloads_total|wander_requests_total"
if [ "${CEILING:-1}" != 0 ]; then
    kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
    cargo build --release -q -p wander-serve --example ceiling
    "$target"/release/examples/ceiling "127.0.0.1:$port" 2> /tmp/wander-ceiling.log &
    pid=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.2; done
    echo "== the ceiling (parse the body, answer JSON), the same steady load"
    wrk -t2 -c"$conns" -d"${secs}s" --latency -s scripts/loadtest.lua "http://127.0.0.1:$port/" | tee /tmp/wander-ceiling.txt
    rate() { awk '/^Requests\/sec/ {print $2}' "$1"; }
    echo "wander / ceiling: $(rate /tmp/wander-loadtest.txt) / $(rate /tmp/wander-ceiling.txt) req/s = $(awk -v a="$(rate /tmp/wander-loadtest.txt)" -v b="$(rate /tmp/wander-ceiling.txt)" 'BEGIN {printf "%.2f", a / b}')"
fi
