#!/usr/bin/env bash
# The stages that stream the ingested log (issue 22) on a synthetic log of N interactions
# (default 20 million): `wander ingest`, `taxonomy`, `transitions`, `feedback`, `eval drift`,
# then SASRec with its user caps (`train items`, `eval items`), each under /usr/bin/time -v.
# Prints one JSON object per stage: wall time and peak resident memory (MiB).
#
#   scripts/streamed_log_bench.sh [interactions] [work folder]
#
# USERS (default N / 50), ITEMS (default 5000) and CLUSTERS (default 100) size the log;
# USERS_PER_EPOCH (20000), VALID_USERS (2000), EVAL_USERS (20000), EPOCHS (2) and LOSS
# (full; `sampled` for catalogues of many thousands of items) set the item model; WANDER_BIN
# names an already built wander (default: build it). The taxonomy embeds every item with
# MiniLM (the default assets; `wander assets fetch` first): at 200,000 items that alone is
# long.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-20000000}"
WORK="${2:-target/streamed-log-bench}"
ITEMS="${ITEMS:-5000}"
CLUSTERS="${CLUSTERS:-100}"
USERS="${USERS:-$((N / 50))}"
W="${WANDER_BIN:-}"
if [ -z "$W" ]; then
  cargo build --release -p wander-cli
  W=target/release/wander
fi
W="$(realpath "$W")"
mkdir -p "$WORK"
WORK="$(realpath "$WORK")"
if [ ! -f "$WORK/data/items.parquet" ] || [ "$(cat "$WORK/data/.rows" 2>/dev/null)" != "$N" ]; then
  rm -rf "$WORK/data" "$WORK/run"
  "$W" --json synth --layout generic --out "$WORK/data" --interactions "$N" --users "$USERS" \
    --items "$ITEMS" --clusters "$CLUSTERS" > "$WORK/synth.json"
  echo "$N" > "$WORK/data/.rows"
fi
settings=(--set "run.dir=\"$WORK/run\"" --set 'data.format="generic"'
  --set "data.path=\"$WORK/data\"" --set 'data.interactions="interactions.parquet"'
  --set 'data.items="items.parquet"'
  --set "items.users_per_epoch=${USERS_PER_EPOCH:-20000}"
  --set "items.valid_users=${VALID_USERS:-2000}" --set "items.eval_users=${EVAL_USERS:-20000}"
  --set "items.max_epochs=${EPOCHS:-2}" --set "items.loss=\"${LOSS:-full}\"")
peak() { awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$1"; }
wall() { awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$1"; }
for stage in ingest taxonomy transitions feedback "eval drift" "train items" "eval items"; do
  name="${stage// /_}"
  /usr/bin/time -v -o "$WORK/$name.time" "$W" --json "${settings[@]}" $stage --force \
    > "$WORK/$name.json"
  echo "{\"stage\": \"$stage\", \"interactions\": $N, \"wall\": \"$(wall "$WORK/$name.time")\", \"peak_mib\": $(peak "$WORK/$name.time")}"
done
