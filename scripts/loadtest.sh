#!/usr/bin/env bash
# Load test of `wander serve` on loopback with wrk (apt-get install wrk), on the default run
# directory (run the pipeline first; PROFILE=quick serves the quick run instead).
# Usage: scripts/loadtest.sh [seconds] [connections]
# Prints wrk's summary, then repeats the run while reloading the artifacts every second.
# ITEMS=0 asks for clusters only (the table lookup without the item policy).
set -euo pipefail
secs=${1:-20}
conns=${2:-32}
cd "$(dirname "$0")/.."
bin=target/release/wander
port=18080
export WANDER_ADMIN_TOKEN=loadtest
# The service reads the serving bundle; a run from before `wander bundle` existed gets one here.
"$bin" ${PROFILE:+--profile "$PROFILE"} bundle > /dev/null
"$bin" ${PROFILE:+--profile "$PROFILE"} --set serve.bind="\"127.0.0.1:$port\"" serve 2> /tmp/wander-serve.log &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break; sleep 0.2; done
echo "== steady load: ${secs}s, $conns connections, 2 wrk threads"
wrk -t2 -c"$conns" -d"${secs}s" --latency -s scripts/loadtest.lua "http://127.0.0.1:$port/"
echo "== the same load with a reload every second"
( for _ in $(seq 1 "$secs"); do sleep 1; curl -sf -X POST -H "Authorization: Bearer loadtest" "http://127.0.0.1:$port/admin/reload" > /dev/null || echo "reload failed"; done ) &
wrk -t2 -c"$conns" -d"${secs}s" --latency -s scripts/loadtest.lua "http://127.0.0.1:$port/"
wait
curl -s "http://127.0.0.1:$port/metrics" | grep -E "wander_reloads_total|wander_requests_total"
