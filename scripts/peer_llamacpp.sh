#!/usr/bin/env bash
# LLM inference against llama.cpp, side by side on the same cores: `wander bench llm` writes
# its inference figures' exact workload (prompt and allowed-answer token ids, sample counts;
# the Q8_0 SmolLM2 weights) and measures it; scripts/peer_llamacpp.py runs the same workload
# on llama.cpp. Rounds alternate the two. Not a test: the figures go to BENCHMARKS.md.
#
#   bash scripts/peer_llamacpp.sh                    # the bench's prompt, 64 answers, 3 rounds
#   FROM_RUN=1 PROFILE=quick bash scripts/peer_llamacpp.sh   # a run's precompute prompt and clusters
#   ROUNDS=1 bash scripts/peer_llamacpp.sh
#
# llama-cpp-python is built from PyPI's source package once, into .wander/tools/llamacpp.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/llamacpp_venv.sh
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p wander-cli
bin=$target/release/wander
args=(--json)
[ -n "${PROFILE:-}" ] && args+=(--profile "$PROFILE")
bench=(bench llm --train-steps 1)
[ -n "${FROM_RUN:-}" ] && bench+=(--from-run)
threads=$(nproc)
out=$(mktemp -d)
for round in $(seq 1 "${ROUNDS:-3}"); do
    "$bin" "${args[@]}" "${bench[@]}" --decode-workload "$out/workload.json" > "$out/wander.json"
    "$venv/bin/python" scripts/peer_llamacpp.py "$out/workload.json" --threads "$threads" \
        > "$out/peer.json"
    python3 - "$out" "$round" <<'PY'
import json, math, sys
out, round_ = sys.argv[1], sys.argv[2]
w = json.load(open(f"{out}/wander.json"))
p = json.load(open(f"{out}/peer.json"))
work = json.load(open(f"{out}/workload.json"))
same = next((i for i, (a, b) in enumerate(zip(w["greedy_tokens"], p["greedy_tokens"])) if a != b),
            len(w["greedy_tokens"]))
diff = max(abs(a - b) for a, b in zip(w["candidate_logprobs"], p["candidate_logprobs"]))
# The total variation distance between the two answer distributions (exact, not sampled).
tv = 0.5 * sum(abs(math.exp(a) - math.exp(b))
               for a, b in zip(w["candidate_logprobs"], p["candidate_logprobs"]))
print(f"round {round_}: {len(work['prompt'])}-token prompt, {len(work['answers'])} answers; "
      f"llama-cpp-python {p['llama_cpp_python']}, {p['threads']} threads")
print(f"round {round_}: greedy tokens identical for the first {same} of {len(w['greedy_tokens'])}; "
      f"answer log-probabilities differ by at most {diff:.4f} "
      f"(total variation between the answer distributions {tv:.4f})")
rows = [
    ("prefill tokens/s", "prefill_tokens_per_s", True),
    ("single-stream decode tokens/s", "decode_tokens_per_s_single", True),
    ("16 unconstrained samples, generated tokens/s", "unconstrained16_tokens_per_s", True),
    ("16 constrained samples, seconds", "constrained16_seconds", False),
    ("exact scores of every answer, seconds", "score_candidates_seconds", False),
]
for label, key, higher in rows:
    a, b = w[key], p[key]
    ratio = a / b if higher else b / a
    print(f"round {round_}: {label}: wander {a:.3f}, llama.cpp {b:.3f}; wander speed / llama.cpp = {ratio:.2f}")
PY
done
rm -rf "$out"
