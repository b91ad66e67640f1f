"""Compares two precompute tables of the same pairs (e.g. the judge on f32 and on bf16).

    python3 scripts/compare_tables.py RUN_A RUN_B

Reads each run's `precompute/scores.parquet` (every candidate the judge scored, per pair) and
`precompute/table.parquet` (the ranked table), and prints: how far the alignment scores
moved (absolute, and against their spread within a pair), the mean Spearman correlation of
each pair's candidate scores, and how often each pair's first-ranked cluster (what serving
answers first) is the same. Needs pyarrow. Not a test: the figures go to BENCHMARKS.md.
"""

import sys
from collections import defaultdict

import pyarrow.parquet as pq


def load(run):
    scores = defaultdict(dict)
    for r in pq.read_table(f"{run}/precompute/scores.parquet").to_pylist():
        # NaN: a cluster the pair's draws never proposed, so the judge did not score it.
        if r["alignment_score"] == r["alignment_score"]:
            scores[(r["c1"], r["c2"])][r["cluster"]] = r["alignment_score"]
    first = {}
    for r in pq.read_table(f"{run}/precompute/table.parquet").to_pylist():
        if r["rank"] == 1:
            first[(r["c1"], r["c2"])] = r["cluster"]
    return scores, first


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va > 0 and vb > 0 else float("nan")


def main():
    (sa, fa), (sb, fb) = load(sys.argv[1]), load(sys.argv[2])
    pairs = sorted(set(sa) & set(sb))
    diffs, rel, rhos, same_set = [], [], [], 0
    for p in pairs:
        common = sorted(set(sa[p]) & set(sb[p]))
        same_set += set(sa[p]) == set(sb[p])
        a = [sa[p][c] for c in common]
        b = [sb[p][c] for c in common]
        diffs += [abs(x - y) for x, y in zip(a, b)]
        if len(a) > 1:
            mean = sum(a) / len(a)
            spread = (sum((x - mean) ** 2 for x in a) / len(a)) ** 0.5
            if spread > 0:
                rel += [abs(x - y) / spread for x, y in zip(a, b)]
            rho = spearman(a, b)
            if rho == rho:
                rhos.append(rho)
    first = sorted(set(fa) & set(fb))
    agree = sum(fa[p] == fb[p] for p in first)
    diffs.sort()
    rel.sort()
    q = lambda xs, f: xs[min(len(xs) - 1, int(f * len(xs)))] if xs else float("nan")
    print(f"pairs in both: {len(pairs)} ({same_set} with the same candidates)")
    print(f"alignment score, |a - b|: mean {sum(diffs) / len(diffs):.2e}, 99th percentile {q(diffs, 0.99):.2e}, max {diffs[-1]:.2e} over {len(diffs)} scores")
    print(f"the same against each pair's score spread (std): mean {sum(rel) / len(rel):.3f}, 99th percentile {q(rel, 0.99):.3f}")
    print(f"Spearman of each pair's candidate scores: mean {sum(rhos) / len(rhos):.4f}, min {min(rhos):.4f} over {len(rhos)} pairs")
    print(f"first-ranked cluster the same: {agree} of {len(first)} pairs ({agree / len(first):.3f})")


if __name__ == "__main__":
    main()
