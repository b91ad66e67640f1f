#!/usr/bin/env bash
# candle's matrix kernels against OpenBLAS on SmolLM2-135M's projection shapes: the
# `matmul_shapes` example times candle's f32 GEMM and Q8_0 kernel; the same shapes, row
# counts and timing loop then run on the OpenBLAS that NumPy's PyPI wheel bundles, with the
# same thread count. Prints GFLOP/s per row count (1: decode, 16: the samples, 67: a prefill,
# 512: a LoRA batch). Not a test: the figures go to BENCHMARKS.md.
#
#   bash scripts/peer_blas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.wander/tools/blas
if ! "$venv/bin/python" -c "import numpy" 2>/dev/null; then
    echo "installing numpy 2.4.6 (with its OpenBLAS) from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check numpy==2.4.6
fi
threads=$(nproc)
candle=$(cargo run --release -q -p wander-llm --example matmul_shapes)
OPENBLAS_NUM_THREADS=$threads "$venv/bin/python" - "$candle" <<'PY'
import json, sys, time
import numpy as np
shapes = [(576, 576), (576, 192), (576, 1536), (1536, 576)]
rng = np.random.default_rng(0)
def per_call(f, macs):
    f()
    reps = max(3, int(np.ceil(2e8 / macs)))
    t = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t) / reps
candle = {r["rows"]: r for r in map(json.loads, sys.argv[1].splitlines())}
cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
print(f"OpenBLAS: {cfg.get('name')} {cfg.get('version')}, numpy {np.__version__}")
print("| rows | candle f32 GEMM GFLOP/s | candle Q8_0 GFLOP/s | OpenBLAS sgemm GFLOP/s | OpenBLAS / best of candle |")
print("|---|---|---|---|---|")
for m in sorted(candle):
    secs = flops = 0.0
    for k, n in shapes:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32) * 0.05
        secs += per_call(lambda: x @ w.T, m * k * n)
        flops += 2.0 * m * k * n
    blas = flops / secs / 1e9
    c = candle[m]
    best = max(c["candle_f32_gflops"], c["candle_q8_0_gflops"])
    print(f"| {m} | {c['candle_f32_gflops']:.1f} | {c['candle_q8_0_gflops']:.1f} | {blas:.1f} | {blas / best:.2f} |")
PY
