#!/usr/bin/env bash
# Times the precompute alone on the replay's child run (scripts/replay_refresh.sh makes it):
# a copy of runs/replay/m2, its busiest PAIRS pairs, nothing from the store, with the
# binary BIN (default target/release/wander), so that two builds compare on one workload.
# Prints the stage's compute and judge seconds and the peak RSS; the table stays in OUT.
#
#   bash scripts/time_precompute.sh                     # 200 pairs, into runs/time-precompute
#   BIN=target/base/release/wander OUT=runs/tp-base PAIRS=200 bash scripts/time_precompute.sh
#   PRODUCTS=f32 OUT=runs/tp-f32 bash scripts/time_precompute.sh   # alignment.products (default bf16)
#
# Not a test: the figures go to BENCHMARKS.md with the command.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-target/release/wander}
out=${OUT:-runs/time-precompute}
pairs=${PAIRS:-200}
products=${PRODUCTS:-bf16}
m1=runs/replay/m1
m2=runs/replay/m2
test -d "$m2/train_alignment" || { echo "time_precompute: run scripts/replay_refresh.sh first ($m2)"; exit 1; }
rm -rf "$out"
cp -r "$m2" "$out"
rm -rf "$out/.work"
/usr/bin/time -f "%e s wall, %M KB peak RSS" "$bin" --json --set run.dir="\"$out\"" \
    --set novelty.prompt='"retrieval"' --set precompute.pairs='"traffic"' \
    --set "precompute.max_pairs=$pairs" --set run.parent="\"$m1\"" \
    --set novelty.warm_start="\"$m1\"" --set alignment.warm_start="\"$m1\"" \
    --set novelty.steps=50 --set novelty.warmup_steps=5 --set alignment.steps=20 \
    --set alignment.warmup_steps=2 --set precompute.retrieve_from='"validation"' \
    --set precompute.reuse=false --set alignment.products="\"$products\"" precompute --force > "$out.json" 2> "$out.err"
tail -1 "$out.err"
python3 -c "
import json, sys
s = json.load(open(sys.argv[1]))
print(f\"{s['pairs']} pairs: computing {s['compute_seconds']:.1f} s, of which the judge {s['alignment_seconds']:.1f} s; {s['pairs_per_s']:.2f} pairs/s\")
" "$out.json"
