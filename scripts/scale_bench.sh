#!/usr/bin/env bash
# The scale benchmark of `wander aggregate` (issue #10): generates a synthetic log of N
# interactions (default 50 million) in the events layout, aggregates it with the embedded
# DataFusion engine, then runs the same SQL on DuckDB (a PyPI package, installed into
# target/bench-venv) over the same files in the same run, and writes one JSON report.
#
#   scripts/scale_bench.sh [interactions] [work folder]
#
# Both engines get the same threads (all cores) and memory limit (engine.memory_limit_mb,
# default 2048 MiB; override with WANDER__ENGINE__MEMORY_LIMIT_MB) and spill to the work
# folder. Needs ~3 GB of disk per 50M interactions.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-50000000}"
WORK="${2:-target/scale-bench}"
USERS="${USERS:-$((N / 50))}"
ITEMS="${ITEMS:-200000}"
CLUSTERS="${CLUSTERS:-500}"
MEM_MB="${WANDER__ENGINE__MEMORY_LIMIT_MB:-2048}"
THREADS="$(nproc)"
mkdir -p "$WORK"
# WANDER_BIN: an already built wander with the engine (e.g. the one `cargo test --workspace
# --release --features engine` leaves in target/release), to skip the build.
W="${WANDER_BIN:-}"
if [ -z "$W" ]; then
  cargo build --release -p wander-cli --features engine
  W=target/release/wander
fi
if [ ! -f "$WORK/data/clusters.parquet" ] || [ "$(cat "$WORK/data/.rows" 2>/dev/null)" != "$N" ]; then
  rm -rf "$WORK/data"
  $W --json synth --layout events --out "$WORK/data" --interactions "$N" --users "$USERS" \
    --items "$ITEMS" --clusters "$CLUSTERS" > "$WORK/synth.json"
  echo "$N" > "$WORK/data/.rows"
fi
$W --json aggregate --print-sql > "$WORK/queries.json"
echo "embedded DataFusion ..." >&2
/usr/bin/time -v -o "$WORK/wander.time" $W --json --set run.dir="$WORK/run" \
  --set engine.memory_limit_mb="$MEM_MB" --set engine.spill_dir="$WORK/spill" \
  aggregate --events "$WORK/data/events" --clusters "$WORK/data/clusters.parquet" --force \
  > "$WORK/wander.json"
if [ ! -x target/bench-venv/bin/python ]; then
  python3 -m venv target/bench-venv
  target/bench-venv/bin/pip install --quiet "duckdb==1.*" || target/bench-venv/bin/pip install --quiet duckdb
fi
echo "DuckDB ..." >&2
target/bench-venv/bin/python scripts/duckdb_aggregate.py --events "$WORK/data/events" \
  --clusters "$WORK/data/clusters.parquet" --sql "$WORK/queries.json" --out "$WORK/duckdb" \
  --threads "$THREADS" --memory-limit-mb "$MEM_MB" --temp-dir "$WORK/spill-duckdb" > "$WORK/duckdb.json"
target/bench-venv/bin/python - "$WORK" <<'PY'
import json, sys, re
import duckdb
work = sys.argv[1]
w = json.load(open(f"{work}/wander.json"))
d = json.load(open(f"{work}/duckdb.json"))
t = open(f"{work}/wander.time").read()
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
dq = {q["name"]: q for q in d["queries"]}
# Same rows, not just the same counts: both result sets, cast to one type, differ nowhere.
con = duckdb.connect()
con.execute("SET threads = 2")
cols = {"transitions": "split::BIGINT, c1::BIGINT, c2::BIGINT, next::BIGINT, n::BIGINT",
        "label_parts": "split::BIGINT, c1::BIGINT, c2::BIGINT, next::BIGINT, s::DOUBLE, n::BIGINT, users::BIGINT",
        "co_consumption": "a::BIGINT, b::BIGINT, n::BIGINT"}
identical = {}
for name, c in cols.items():
    a = f"SELECT {c} FROM read_parquet('{work}/run/aggregate/{name}.parquet')"
    b = f"SELECT {c} FROM read_parquet('{work}/duckdb/{name}.parquet')"
    diff = con.execute(f"SELECT (SELECT COUNT(*) FROM ({a} EXCEPT ALL {b})) + (SELECT COUNT(*) FROM ({b} EXCEPT ALL {a}))").fetchone()[0]
    identical[name] = diff == 0
report = {"interactions": w["events"], "wander": w, "duckdb": d,
          "wander_peak_rss_bytes_time_v": rss_kb * 1024,
          "ratio_events_per_second_wander_over_duckdb": w["events_per_second"] / d["events_per_second"],
          "identical_results": identical}
json.dump(report, open(f"{work}/report.json", "w"), indent=2)
print(f"{'query':16} {'wander s':>10} {'duckdb s':>10} {'rows':>12}  identical")
for a in w["queries"]:
    b = dq[a["name"]]
    rows = str(a["rows"]) if a["rows"] == b["rows"] else f"{a['rows']} vs {b['rows']}"
    print(f"{a['name']:16} {a['seconds']:10.1f} {b['seconds']:10.1f} {rows:>12}  {identical[a['name']]}")
print(f"events/s  wander {w['events_per_second']:,.0f}  duckdb {d['events_per_second']:,.0f}  ratio {report['ratio_events_per_second_wander_over_duckdb']:.2f}")
print(f"peak RSS  wander {rss_kb/1024:,.0f} MiB  duckdb {d['peak_rss_bytes']/2**20:,.0f} MiB")
print(f"report: {work}/report.json")
PY
