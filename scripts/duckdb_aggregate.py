#!/usr/bin/env python3
"""Runs wander's aggregation queries on DuckDB over the same Parquet files that
`wander aggregate --events ... --clusters ...` reads, writing each result to Parquet like
wander does, and prints one JSON object: events, per-query seconds and rows, events/s and
peak resident memory. The SQL comes from `wander aggregate --print-sql`, so both engines run
the same text."""
import argparse
import json
import os
import resource
import time

import duckdb


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", required=True, help="folder of events part-*.parquet")
    ap.add_argument("--clusters", required=True, help="clusters.parquet")
    ap.add_argument("--sql", required=True, help="JSON object name -> SQL (wander aggregate --print-sql)")
    ap.add_argument("--out", required=True, help="folder for the result files")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--memory-limit-mb", type=int, default=2048)
    ap.add_argument("--temp-dir", default=None)
    a = ap.parse_args()
    with open(a.sql) as f:
        queries = json.load(f)
    os.makedirs(a.out, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    con.execute(f"SET memory_limit = '{a.memory_limit_mb}MB'")
    if a.temp_dir:
        con.execute(f"SET temp_directory = '{a.temp_dir}'")
    # wander's engine makes no ordering promise either.
    con.execute("SET preserve_insertion_order = false")
    events = os.path.join(a.events, "*.parquet") if os.path.isdir(a.events) else a.events
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{events}')")
    con.execute(f"CREATE VIEW clusters AS SELECT * FROM read_parquet('{a.clusters}')")
    n_events = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    runs = []
    for name, sql in queries.items():
        path = os.path.join(a.out, f"{name}.parquet")
        start = time.perf_counter()
        con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
        seconds = time.perf_counter() - start
        rows = con.execute(f"SELECT COUNT(*) FROM read_parquet('{path}')").fetchone()[0]
        runs.append({"name": name, "rows": rows, "seconds": seconds,
                     "events_per_second": n_events / max(seconds, 1e-9)})
    total = sum(r["seconds"] for r in runs)
    print(json.dumps({
        "engine": f"duckdb {duckdb.__version__}",
        "events": n_events,
        "queries": runs,
        "seconds": total,
        "events_per_second": n_events * len(runs) / max(total, 1e-9),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "threads": a.threads,
        "memory_limit_mb": a.memory_limit_mb,
    }))


if __name__ == "__main__":
    main()
