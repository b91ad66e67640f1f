#!/usr/bin/env bash
# LoRA SFT throughput against PyTorch + peft, side by side on the same cores: `wander bench
# llm` writes its LoRA figure's exact workload (token ids, batch, rank, alpha, targets, lr;
# the Q8_0 SmolLM2 weights) and trains on it; scripts/peer_peft.py trains PyTorch + peft on
# the same file. Rounds alternate the two. Not a test: the figures go to BENCHMARKS.md.
#
#   bash scripts/peer_peft.sh              # 3 rounds of 8 steps
#   ROUNDS=1 STEPS=4 bash scripts/peer_peft.sh
#
# The packages (torch, transformers, peft, gguf; about 4 GB with torch's CUDA libraries,
# which PyPI's torch wheel depends on) are installed once into .wander/tools/peft.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/peft_venv.sh
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p wander-cli
bin=$target/release/wander
threads=$(nproc)
out=$(mktemp -d)
for round in $(seq 1 "${ROUNDS:-3}"); do
    "$bin" --json bench llm --train-steps "${STEPS:-8}" --sft-workload "$out/workload.json" \
        > "$out/wander.json"
    OMP_NUM_THREADS=$threads "$venv/bin/python" scripts/peer_peft.py "$out/workload.json" \
        --threads "$threads" > "$out/peer.json"
    python3 - "$out" "$round" <<'PY'
import json, sys
out, round_ = sys.argv[1], sys.argv[2]
b = json.load(open(f"{out}/wander.json"))
w = b["lora_train_tokens_per_s"]
p = json.load(open(f"{out}/peer.json"))
# Before any update both compute the same function on the same batch.
print(f"round {round_}: first-step loss: wander {b['lora_losses'][0]:.4f}, pytorch+peft {p['losses'][0]:.4f}")
print(f"round {round_}: LoRA SFT tokens/s: wander {w:.1f}, pytorch+peft {p['tokens_per_s']:.1f} "
      f"(torch {p['torch']}, {p['threads']} threads); wander / peer = {w / p['tokens_per_s']:.2f}")
PY
done
rm -rf "$out"
