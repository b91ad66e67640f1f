#!/usr/bin/env bash
# Loads `wander export`'s PEFT adapters in real transformers + peft and compares their
# next-token log-probabilities with the ones wander wrote into the export's check.json
# (scripts/check_export.py says how, and what the control is). Exports the run first.
#
#   PROFILE=quick bash scripts/check_export.sh      # the quick run
#   bash scripts/check_export.sh                    # the default run
#
# The packages come from PyPI into .wander/tools/peft, shared with scripts/peer_peft.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/peft_venv.sh
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p wander-cli
bin=$target/release/wander
profile=(${PROFILE:+--profile "$PROFILE"})
"$bin" "${profile[@]}" export > /dev/null
run_dir=$("$bin" "${profile[@]}" config show | awk -F' = ' '/^dir = / {gsub(/"/, "", $2); print $2; exit}')
model=$(ls .wander/assets/smollm2/*.q8_0.gguf | head -1)
"$venv/bin/python" scripts/check_export.py "$run_dir/export" "$model"
