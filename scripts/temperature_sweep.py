#!/usr/bin/env python3
"""The novelty model's proposal distribution across temperatures and normalisations.

For each normalisation (token: the trie-constrained sampler's; answer: P2's "sample, drop
invalid outputs, renormalise") and temperature, reruns `wander precompute` and `wander eval
scaling` in a copy of a finished run (the upstream stages are shared, not recomputed) and
prints one table: the share of unconstrained samples that are valid (answer only), and for
a single proposal (n = 1, `novelty_only_1`) and for best-of-n at the largest n: relevance
(hit@1 on the test period), held-out feedback, novelty and diversity (bits).

    python3 scripts/temperature_sweep.py runs/quick [--profile quick] [--t 0.7,1.0,1.5,2.0]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

UPSTREAM = ["ingest", "taxonomy", "transitions", "train_novelty", "feedback", "train_alignment"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run directory where `wander run` finished")
    ap.add_argument("--profile", default=None, help="the profile that run used (e.g. quick)")
    ap.add_argument("--t", default="0.7,1.0,1.5,2.0", help="temperatures, comma-separated")
    ap.add_argument("--normalize", default="token,answer")
    ap.add_argument("--wander", default="target/release/wander")
    ap.add_argument("--out", default=None, help="where the copies go (default: RUN-sweep)")
    args = ap.parse_args()
    out = args.out or args.run.rstrip("/") + "-sweep"
    rows = []
    for norm in args.normalize.split(","):
        for t in [float(x) for x in args.t.split(",")]:
            d = os.path.join(out, f"{norm}-t{t}")
            os.makedirs(d, exist_ok=True)
            for s in UPSTREAM:
                if not os.path.isdir(os.path.join(d, s)):
                    shutil.copytree(os.path.join(args.run, s), os.path.join(d, s))
            base = [args.wander, "--json"]
            if args.profile:
                base += ["--profile", args.profile]
            base += ["--set", f'run.dir="{d}"', "--set", f"precompute.temperature={t}",
                     "--set", f'precompute.normalize="{norm}"']

            def stage(*words):
                p = subprocess.run(base + list(words), capture_output=True, text=True)
                if p.returncode != 0:
                    sys.exit(f"{' '.join(words)} failed ({norm}, T={t}):\n{p.stderr}")
                return json.loads(p.stdout)

            pre = stage("precompute")
            sc = stage("eval", "scaling")
            strategies = sc["strategies"]
            ns = sorted(int(k.split("_")[-1]) for k in strategies if k.startswith("best_of_"))
            one, best = strategies["novelty_only_1"], strategies[f"best_of_{ns[-1]}"]
            rows.append((norm, t, pre.get("valid_share_mean"), pre["compute_seconds"], one, best, ns[-1],
                         strategies["cooccurrence"]))
            print(f"done: {norm} T={t}", file=sys.stderr)
    m = lambda e, k: e[k]["mean"] if isinstance(e[k], dict) else e[k]
    print("| normalise | T | valid share (unconstrained) | n = 1: hit@1 | n = 1: held-out feedback | n = 1: novelty (bits) | n = 1: diversity (bits) | best-of-n: hit@1 | best-of-n: held-out feedback | best-of-n: novelty | best-of-n: diversity | precompute s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for norm, t, valid, secs, one, best, n, cooc in rows:
        v = "-" if valid is None else f"{valid:.3f}"
        print(f"| {norm} | {t} | {v} | {m(one,'hit_at_1'):.3f} | {m(one,'heldout_feedback'):.3f} | {m(one,'novelty_bits'):.2f} | {m(one,'diversity_bits'):.2f} | {m(best,'hit_at_1'):.3f} | {m(best,'heldout_feedback'):.3f} | {m(best,'novelty_bits'):.2f} | {m(best,'diversity_bits'):.2f} | {secs:.0f} |")
    c = rows[0][7]
    print(f"\nbest-of-n at n = {rows[0][6]}; co-occurrence: hit@1 {m(c,'hit_at_1'):.3f}, held-out feedback {m(c,'heldout_feedback'):.3f}, novelty {m(c,'novelty_bits'):.2f} bits, diversity {m(c,'diversity_bits'):.2f} bits")


if __name__ == "__main__":
    main()
