#!/usr/bin/env bash
# Loads `wander export`'s adapters in the peers and compares their next-token
# log-probabilities with the ones wander wrote into the export's check.json: the PEFT
# adapters in real transformers + peft (scripts/check_export.py), and the GGUF LoRA adapters
# in real llama.cpp (scripts/check_export_llamacpp.py). Each script says how, and what its
# control is. Exports the run first.
#
#   PROFILE=quick bash scripts/check_export.sh      # the quick run, both peers
#   PEERS=llamacpp PROFILE=quick bash scripts/check_export.sh
#   bash scripts/check_export.sh                    # the default run
#
# The packages come from PyPI: transformers + peft into .wander/tools/peft (shared with
# scripts/peer_peft.sh), llama-cpp-python into .wander/tools/llamacpp (shared with
# scripts/peer_llamacpp.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p wander-cli
bin=$target/release/wander
profile=(${PROFILE:+--profile "$PROFILE"})
"$bin" "${profile[@]}" export > /dev/null
run_dir=$("$bin" "${profile[@]}" config show | awk -F' = ' '/^dir = / {gsub(/"/, "", $2); print $2; exit}')
model=$(ls .wander/assets/smollm2/*.q8_0.gguf | head -1)
status=0
for peer in ${PEERS:-peft llamacpp}; do
    case $peer in
        peft)
            source scripts/peft_venv.sh
            "$venv/bin/python" scripts/check_export.py "$run_dir/export" "$model" || status=1 ;;
        llamacpp)
            source scripts/llamacpp_venv.sh
            "$venv/bin/python" scripts/check_export_llamacpp.py "$run_dir/export" "$model" ||
                status=1 ;;
        *) echo "check_export: unknown peer $peer (peft, llamacpp)" >&2; exit 2 ;;
    esac
done
exit $status
