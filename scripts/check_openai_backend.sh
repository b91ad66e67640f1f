#!/usr/bin/env bash
# The openai backend (`llm.backend = "openai"`) against a real server: llama-cpp-python's
# OpenAI-compatible server (llama.cpp, built from PyPI's source package into
# .wander/tools/llamacpp), started and stopped here, serving the run's novelty model (the
# base GGUF with `wander export`'s GGUF LoRA adapter). Run by .ci/run after the quick start.
#
#   1. `wander eval backend`: on the same prompts, the server's proposal distribution
#      against wander's runtime (total variation distance) and the greedy answers. The
#      two compute the same function (below), so the distance must be small and every
#      greedy answer the same.
#   2. The whole table through the server (mode = "sample": n completions per pair, the
#      invalid ones dropped), interrupted once and resumed: the rerun must start from the
#      chunks already written.
#
# The server runs the function `wander eval backend` computes on its side: the base
# dequantised to F32 (wander's Q8_0 repack, exactly) with the adapter (`--lora_path`) and an
# f32 key/value cache. On the Q8_0 weights llama.cpp quantises activations to 8 bits and
# wander's table runtime mixes precisions, so there the two differ a little more
# (BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p wander-cli
bin=$(pwd)/$target/release/wander
profile=(${PROFILE:+--profile "$PROFILE"})
pairs=${PAIRS:-4}
n=${N:-2}
port=${PORT:-18765}
source scripts/llamacpp_venv.sh

"$bin" "${profile[@]}" export > /dev/null
run_dir=$("$bin" "${profile[@]}" config show | awk -F' = ' '/^dir = / {gsub(/"/, "", $2); print $2; exit}')
q8=$(ls .wander/assets/smollm2/*.q8_0.gguf | head -1)
work=$(mktemp -d)
server_pid=
# A trap's failing command would become the script's exit status under `set -e`: the
# server's own exit status (143 after the kill) must not.
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

f32="$work/base-f32.gguf"
"$venv/bin/python" - "$q8" "$f32" <<'EOF'
import sys
sys.path.insert(0, "scripts")
from check_export_llamacpp import copy_gguf, dequantised
copy_gguf(sys.argv[1], sys.argv[2], dequantised)
EOF

# type_k / type_v 0 is GGML_TYPE_F32.
"$venv/bin/python" -m llama_cpp.server --model "$f32" --lora_path "$run_dir/export/novelty/adapter.gguf" \
    --model_alias novelty --host 127.0.0.1 --port "$port" --n_threads "$(nproc)" --n_ctx 2048 \
    --type_k 0 --type_v 0 > "$work/server.log" 2>&1 &
server_pid=$!
endpoint="http://127.0.0.1:$port/v1"
for _ in $(seq 1 120); do
    curl -sf "$endpoint/models" > /dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { tail -20 "$work/server.log"; echo "check_openai_backend: the server exited" >&2; exit 1; }
    sleep 1
done
curl -sf "$endpoint/models" > /dev/null || { tail -20 "$work/server.log"; echo "check_openai_backend: the server did not start" >&2; exit 1; }

# No cache: the figures are the server's, not the disk's. llama-cpp-python answers one
# request at a time.
remote=(--set "llm.openai.endpoint=$endpoint" --set llm.openai.model_name=novelty
        --set llm.openai.concurrency=1 --set llm.openai.cache_dir=)
started=$(date +%s)
"$bin" "${profile[@]}" "${remote[@]}" --json eval backend --pairs "$pairs" > "$work/backend.json"
echo "check_openai_backend: eval backend in $(( $(date +%s) - started )) s"
python3 - "$work/backend.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
s = s[-1] if isinstance(s, list) else s
print(f"  {s['pairs']} pairs: total variation {s['tvd_mean']:.5f} mean, {s['tvd_max']:.5f} max; "
      f"same top answer {s['top1_agreement']:.2f}; greedy identical {s['greedy_identical']}/{s['pairs']}; "
      f"pairs/s wander {s['wander_pairs_per_s']:.2f}, server {s['server_pairs_per_s']:.3f}")
bad = []
if not s["tvd_max"] < 0.02:
    bad.append(f"total variation {s['tvd_max']:.4f} >= 0.02")
if s["greedy_identical"] != s["pairs"]:
    bad.append(f"greedy answers differ in {s['pairs'] - s['greedy_identical']} pairs")
if bad:
    sys.exit("check_openai_backend: the server and wander's runtime disagree: " + "; ".join(bad))
EOF

# The table through the server, in a copy of the run (the run's own table stays). At
# temperature 1: the default 2 is for the trie-constrained sampler, and unconstrained at 2
# almost no completion is a valid answer (README, "P2's own proposal distribution").
cp -r "$run_dir" "$work/run"
table=(--set "run.dir=$work/run" --set llm.backend=openai --set precompute.mode=sample
       --set precompute.normalize=answer --set precompute.temperature=1.0
       --set "precompute.n=$n" --set precompute.chunk_pairs=16)
timeout 30 "$bin" "${profile[@]}" "${remote[@]}" "${table[@]}" precompute > /dev/null 2>&1 || true
started=$(date +%s)
"$bin" "${profile[@]}" "${remote[@]}" "${table[@]}" --json precompute > "$work/table.json" 2> "$work/table.log"
echo "check_openai_backend: the resumed table in $(( $(date +%s) - started )) s"
grep "chunks already done" "$work/table.log" | sed 's/^/  /'
grep -q "([1-9][0-9]* chunks already done)" "$work/table.log" ||
    { echo "check_openai_backend: the rerun did not resume from the interrupted one's chunks" >&2; exit 1; }
python3 - "$work/table.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
s = s[-1] if isinstance(s, list) else s
srv = s["server"]
print(f"  {s['pairs']} pairs, n = {s['n']}: {srv['sampled']} completions, {srv['invalid']} invalid "
      f"(valid share {s['valid_share_mean']:.3f}), {s['fallbacks']} fallbacks, {s['pairs_per_s']:.2f} pairs/s")
if srv["sampled"] != s["pairs"] * s["n"]:
    sys.exit(f"check_openai_backend: {srv['sampled']} completions for {s['pairs']} pairs at n = {s['n']}")
EOF
echo "check_openai_backend: passed"
