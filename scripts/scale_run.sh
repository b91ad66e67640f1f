#!/usr/bin/env bash
# Issue 22's scale run: a synthetic log of N interactions (default 50 million; N/50 users,
# ITEMS items (default 200,000), CLUSTERS latent clusters (default 128)), then `wander run`
# on it with configs/scale.toml, under /usr/bin/time -v. Prints the run's wall time and peak
# resident memory, then each step's wall time and peak (the run's JSON summary measures
# each step's own peak: Linux lets a process reset its high-water mark).
#
#   scripts/scale_run.sh [interactions] [work folder]
#
# WANDER_BIN names an already built wander (default: build it). Needs the default assets
# (`wander assets fetch`) and about 3 GB of disk per 50M interactions. The item embeddings
# go to a cache in the work folder: a second run reuses them (delete it for a cold run).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-50000000}"
WORK="${2:-target/scale-run}"
ITEMS="${ITEMS:-200000}"
CLUSTERS="${CLUSTERS:-128}"
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
/usr/bin/time -v -o "$WORK/run.time" "$W" --json --config configs/scale.toml \
  --set "run.dir=\"$WORK/run\"" --set "data.path=\"$WORK/data\"" \
  --set "taxonomy.cache_dir=\"$WORK/cache\"" run > "$WORK/run.json" 2> "$WORK/run.log"
python3 - "$WORK" <<'PY'
import json, re, sys
work = sys.argv[1]
summary = json.load(open(f"{work}/run.json"))
time = open(f"{work}/run.time").read()
wall = re.search(r"Elapsed \(wall clock\).*: (.*)", time).group(1)
peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", time).group(1)) / 1024
print(json.dumps({"interactions": int(open(f"{work}/data/.rows").read()), "wall": wall,
                  "peak_mib": round(peak)}))
for step, seconds in summary["step_wall_seconds"].items():
    mib = summary.get("step_peak_rss_mib", {}).get(step)
    print(json.dumps({"step": step, "seconds": round(seconds, 1),
                      "peak_mib": None if mib is None else round(mib)}))
PY
