#!/usr/bin/env bash
# SASRec against RecBole's, on the same split: `wander ingest` (the default profile's
# MovieLens-100K), then wander's `train items` and `eval items`, then RecBole 1.2.1's SASRec
# on the same interactions (scripts/peer_recbole.py checks that every user's validation and
# test item are wander's), once with wander's hyper-parameters and once with RecBole's
# defaults. Prints test NDCG@10 / Recall@10 and the seconds to the best validation epoch.
# Not a test: the figures go to BENCHMARKS.md.
#
#   bash scripts/peer_recbole.sh
#   SETTINGS=wander EPOCHS=10 bash scripts/peer_recbole.sh   # one RecBole run, at most 10 epochs
#
# RecBole and torch come from PyPI, once, into .wander/tools/recbole (about 4 GB).
# First run end to end on 2026-12-07 (BENCHMARKS.md, "SASRec against RecBole's"): about 10
# minutes with wander's settings, about 2 minutes an epoch with RecBole's defaults on 2 cores.
#
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/recbole_venv.sh
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p wander-cli
bin=$target/release/wander
run=${RUN:-runs/peer-recbole}
set_run=(--set "run.dir=\"$run\"")
threads=$(nproc)
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
echo "raw outputs (each RecBole epoch's validation as it ends: $out/SETTINGS/curve.jsonl): $out" >&2
"$bin" "${set_run[@]}" ingest > /dev/null
"$bin" "${set_run[@]}" taxonomy > /dev/null
"$bin" "${set_run[@]}" --json train items --force > "$out/train.json"
"$bin" "${set_run[@]}" --json eval items --force > "$out/eval.json"
"$bin" "${set_run[@]}" config show > "$out/config.toml"
items=$(python3 -c 'import json, sys, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], "rb"))["items"]))' "$out/config.toml")
for settings in ${SETTINGS:-wander recbole}; do
    mkdir -p "$out/$settings"
    (cd "$out/$settings" && "$OLDPWD/$venv/bin/python" "$OLDPWD/scripts/peer_recbole.py" "$OLDPWD/$run" . \
        --settings "$settings" --item-settings "$items" --threads "$threads" \
        ${EPOCHS:+--epochs "$EPOCHS"}) > "$out/recbole-$settings.json"
done
python3 - "$out" "$run" <<'PY'
import glob, json, os, sys
out, run = sys.argv[1], sys.argv[2]
t = json.load(open(f"{out}/train.json"))
e = json.load(open(f"{out}/eval.json"))
hist = json.load(open(os.path.join(run, "train_items", "train_report.json")))
best = hist["best_epoch"]
# The train summary gives the mean seconds of an epoch's training and of its validation.
per_epoch = t["seconds_per_epoch"] + t["eval_seconds_per_epoch"]
to_best = best * per_epoch
s = e["summary"]["methods"]["sasrec"] if "summary" in e else e["methods"]["sasrec"]
print("| system | settings | test NDCG@10 | test Recall@10 | best valid NDCG@10 (epoch) | seconds to best | epochs, seconds in all |")
print("|---|---|---|---|---|---|---|")
print(f"| wander | wander.toml [items] | {s['ndcg_at_10']['mean']:.4f} | {s['recall_at_10']['mean']:.4f} "
      f"| {hist['best_valid_ndcg10']:.4f} ({best}) | {to_best:.0f} "
      f"| {len(hist['epochs'])}, {t['wall_seconds']:.0f} |")
for f in sorted(glob.glob(f"{out}/recbole-*.json")):
    r = json.load(open(f))
    print(f"| RecBole {r['recbole']} (torch {r['torch']}) | {r['settings']} | {r['test_ndcg10']:.4f} "
          f"| {r['test_recall10']:.4f} | {r['best_valid_ndcg10']:.4f} ({r['best_epoch']}) "
          f"| {r['seconds_to_best']:.0f} | {r['epochs']}, {r['seconds']:.0f} |")
    print(f"  {r['settings']}: {r['users_test']} test users, the same split as wander's; {r['config']}",
          file=sys.stderr)
PY
echo "raw outputs: $out" >&2
