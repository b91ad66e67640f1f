#!/usr/bin/env bash
# The log stages in memory against the same stages on the SQL engine (issue 22): a synthetic
# log of N interactions (default 5 million) in the generic layout, ingested once, then
# `wander taxonomy`, `wander transitions` and `wander feedback` run with
# `engine.log_stages = "memory"` and again with `"engine"` (embedded DataFusion), one after
# the other, each under /usr/bin/time -v. Prints one JSON object per stage and path (wall
# seconds, peak resident MiB) and checks that both paths wrote the same artifacts (the
# checksums in each stage's manifest).
#
#   scripts/log_stages_bench.sh [interactions | movielens] [work folder]
#
# `movielens` runs the same on the default data (MovieLens-100K) instead of a synthetic log.
# USERS (default N / 50), ITEMS (default 5000) and CLUSTERS (default 100) size the log;
# WANDER_BIN names an already built wander with the engine (default: build it). The
# taxonomy embeds every item with MiniLM (the default assets; `wander fetch` first).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-5000000}"
WORK="${2:-target/log-stages-bench}"
ITEMS="${ITEMS:-5000}"
CLUSTERS="${CLUSTERS:-100}"
W="${WANDER_BIN:-}"
if [ -z "$W" ]; then
  cargo build --release -p wander-cli --features engine
  W=target/release/wander
fi
W="$(realpath "$W")"
mkdir -p "$WORK"
WORK="$(realpath "$WORK")"
settings=(--set "run.dir=\"$WORK/run\"" --set "engine.spill_dir=\"$WORK/spill\"")
if [ "$N" != movielens ]; then
  USERS="${USERS:-$((N / 50))}"
  if [ ! -f "$WORK/data/items.parquet" ] || [ "$(cat "$WORK/data/.rows" 2>/dev/null)" != "$N" ]; then
    rm -rf "$WORK/data" "$WORK/run"
    "$W" --json synth --layout generic --out "$WORK/data" --interactions "$N" --users "$USERS" \
      --items "$ITEMS" --clusters "$CLUSTERS" > "$WORK/synth.json"
    echo "$N" > "$WORK/data/.rows"
  fi
  settings+=(--set 'data.format="generic"' --set "data.path=\"$WORK/data\""
    --set 'data.interactions="interactions.parquet"' --set 'data.items="items.parquet"')
fi
/usr/bin/time -v -o "$WORK/ingest.time" "$W" --json "${settings[@]}" ingest > "$WORK/ingest.json"
peak() { awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$1"; }
wall() { awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$1"; }
echo "{\"stage\": \"ingest\", \"interactions\": \"$N\", \"wall\": \"$(wall "$WORK/ingest.time")\", \"peak_mib\": $(peak "$WORK/ingest.time")}"
# The taxonomy once first, so that both measured runs read the item embeddings from the
# cache and their difference is the mining.
"$W" --json "${settings[@]}" taxonomy > "$WORK/taxonomy-warm.json"
for path in memory engine; do
  for stage in taxonomy transitions feedback; do
    /usr/bin/time -v -o "$WORK/$stage-$path.time" "$W" --json "${settings[@]}" \
      --set "engine.log_stages=\"$path\"" "$stage" --force > "$WORK/$stage-$path.json"
    python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["outputs"], sort_keys=True))' \
      "$WORK/run/$stage/manifest.json" > "$WORK/$stage-$path.outputs"
    echo "{\"stage\": \"$stage\", \"log_stages\": \"$path\", \"wall\": \"$(wall "$WORK/$stage-$path.time")\", \"peak_mib\": $(peak "$WORK/$stage-$path.time")}"
  done
done
for stage in taxonomy transitions feedback; do
  if cmp -s "$WORK/$stage-memory.outputs" "$WORK/$stage-engine.outputs"; then
    echo "{\"stage\": \"$stage\", \"same_artifacts\": true}"
  else
    echo "{\"stage\": \"$stage\", \"same_artifacts\": false}"
    exit 1
  fi
done
