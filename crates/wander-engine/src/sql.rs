//! The aggregation queries, as SQL text that DataFusion, Ballista and DuckDB all run.
//!
//! The inputs are two tables: `events` (`user`, `item`, `seq`, `positive`, `split`, and
//! optionally a numeric feedback column) in each user's time order by `seq`, and `clusters`
//! (`item`, `cluster`). The sequential rules of the in-memory miners (a user's interest state
//! is the last two distinct clusters of positive engagement) are expressed with running
//! window aggregates over `(user, seq)` and no self-joins: a monotone key packs "which change
//! of state" with "what the state is", so a running `MAX` recovers the latest state. Every
//! window shares one partitioning and order, so an engine sorts the log once and streams.

// Only exact arithmetic below 2^53 is used in divisions: DuckDB's `/` is a float division.

/// Cluster ids are packed in 20 bits; this value marks "no cluster" in a packed state.
pub const NO_CLUSTER: i64 = (1 << 20) - 1;
const CLUSTER_SPACE: i64 = 1 << 20;
const STATE_SPACE: i64 = 1 << 40;

/// Largest cluster id the packed keys can hold.
pub const MAX_CLUSTER: i64 = NO_CLUSTER - 1;

/// What a feedback label aggregates (mirrors `feedback.signal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The positive flag (the label is a positive rate).
    Positive,
    /// The mean of this numeric column of `events`; non-finite values are skipped.
    Value(String),
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The shared prefix: every engagement with its cluster and the interest state before it.
///
/// Columns of `state_rows`: `u, seq, c, positive, split, sig, chg, s1, s2` where `chg = 1` marks a positive
/// engagement that moves the state on, and `(s1, s2)` is the state before the row (`s1` is
/// [`NO_CLUSTER`] while the user has only one positive cluster so far).
fn state_ctes(signal: &Signal) -> String {
    let w = "PARTITION BY u ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND";
    let (value, sig) = match signal {
        Signal::Positive => (
            "CAST(NULL AS DOUBLE)".to_string(),
            "CASE WHEN positive THEN 1.0 ELSE 0.0 END".to_string(),
        ),
        Signal::Value(col) => (format!("CAST(e.{} AS DOUBLE)", quote(col)), "v".to_string()),
    };
    format!(
        "ev AS (
  SELECT CAST(e.\"user\" AS BIGINT) AS u, CAST(e.seq AS BIGINT) AS seq,
         CAST(k.cluster AS BIGINT) AS c, e.positive AS positive,
         CAST(e.split AS BIGINT) AS split, {value} AS v
  FROM events e JOIN clusters k ON e.item = k.item
),
running AS (
  SELECT u, seq, c, positive, split, {sig} AS sig,
         SUM(CASE WHEN positive THEN 1 ELSE 0 END) OVER ({w} CURRENT ROW) AS pn
  FROM ev
),
last_positive AS (
  SELECT u, seq, c, positive, split, sig,
         MAX(CASE WHEN positive THEN pn * {CLUSTER_SPACE} + c END) OVER ({w} 1 PRECEDING) AS lp
  FROM running
),
changes AS (
  SELECT u, seq, c, positive, split, sig, lp,
         CASE WHEN positive AND (lp IS NULL OR lp % {CLUSTER_SPACE} <> c) THEN 1 ELSE 0 END AS chg
  FROM last_positive
),
numbered AS (
  SELECT u, seq, c, positive, split, sig, lp, chg,
         SUM(chg) OVER ({w} CURRENT ROW) AS cn
  FROM changes
),
states AS (
  SELECT u, seq, c, positive, split, sig, chg,
         MAX(CASE WHEN chg = 1
                  THEN cn * {STATE_SPACE} + COALESCE(lp % {CLUSTER_SPACE}, {NO_CLUSTER}) * {CLUSTER_SPACE} + c
             END) OVER ({w} 1 PRECEDING) AS st
  FROM numbered
),
state_rows AS (
  SELECT u, seq, c, positive, split, sig, chg,
         CAST((st % {STATE_SPACE} - st % {CLUSTER_SPACE}) / {CLUSTER_SPACE} AS BIGINT) AS s1,
         st % {CLUSTER_SPACE} AS s2
  FROM states WHERE st IS NOT NULL
)"
    )
}

/// Transition counts: `split, c1, c2, next, n` — every run of three distinct consecutive
/// clusters of a user's collapsed positive sequence whose third is new to the first two.
pub fn transitions() -> String {
    format!(
        "WITH {}
SELECT split, s1 AS c1, s2 AS c2, c AS next, COUNT(*) AS n
FROM state_rows
WHERE chg = 1 AND s1 <> {NO_CLUSTER} AND c <> s1
GROUP BY split, s1, s2, c",
        state_ctes(&Signal::Positive)
    )
}

/// Every transition, one row per engagement that made it: `user, seq, c1, c2, next, split`
/// (the rows behind [`transitions`]' counts; `seq` orders them as the log does).
pub fn transition_events() -> String {
    format!(
        "WITH {}
SELECT u AS \"user\", seq, s1 AS c1, s2 AS c2, c AS next, split
FROM state_rows
WHERE chg = 1 AND s1 <> {NO_CLUSTER} AND c <> s1",
        state_ctes(&Signal::Positive)
    )
}

/// Feedback events per period: `split, events, positive` — every engagement (positive or
/// not, with or without a feedback value) with a cluster outside the user's two-cluster
/// interest state.
pub fn feedback_counts() -> String {
    format!(
        "WITH {}
SELECT split, COUNT(*) AS events, SUM(CASE WHEN positive THEN 1 ELSE 0 END) AS positive
FROM state_rows
WHERE s1 <> {NO_CLUSTER} AND c <> s1 AND c <> s2
GROUP BY split",
        state_ctes(&Signal::Positive)
    )
}

/// Feedback label parts: `split, c1, c2, next, s, n, users` — for each engagement triple, how
/// many users had a per-user signal sum `s` over `n` engagements. Labels (mean over users of
/// each user's mean) are computed from these exactly, in a fixed order, by the caller.
pub fn label_parts(signal: &Signal) -> String {
    let finite = match signal {
        Signal::Positive => "",
        // x - x = 0 holds for finite x only (NaN and infinities give NaN).
        Signal::Value(_) => " AND sig - sig = 0.0",
    };
    format!(
        "WITH {},
per_user AS (
  SELECT split, s1, s2, c, u, SUM(sig) AS s, COUNT(*) AS n
  FROM state_rows
  WHERE s1 <> {NO_CLUSTER} AND c <> s1 AND c <> s2{finite}
  GROUP BY split, s1, s2, c, u
)
SELECT split, s1 AS c1, s2 AS c2, c AS next, s, n, COUNT(*) AS users
FROM per_user
GROUP BY split, s1, s2, c, s, n",
        state_ctes(signal)
    )
}

/// Co-consumption counts: `a, b, n` — how often items `a` and `b` (distinct) were consumed
/// positively within `window` positions of each other in a user's training sequence, counted
/// in both directions.
pub fn co_consumption(window: usize) -> String {
    let window = window.max(1);
    let leads: String = (1..=window)
        .map(|d| format!(",\n         LEAD(item, {d}) OVER (PARTITION BY u ORDER BY seq) AS b{d}"))
        .collect();
    let offsets: String = (1..=2 * window)
        .map(|d| format!("({d})"))
        .collect::<Vec<_>>()
        .join(", ");
    let partner: String = (1..=window)
        .map(|d| format!(" WHEN {d} THEN b{d} WHEN {} THEN b{d}", d + window))
        .collect();
    format!(
        "WITH p AS (
  SELECT CAST(\"user\" AS BIGINT) AS u, CAST(seq AS BIGINT) AS seq, CAST(item AS BIGINT) AS item
  FROM events WHERE positive AND split = 0
),
w AS (
  SELECT item{leads}
  FROM p
),
pairs AS (
  SELECT item, o.d AS d, CASE o.d{partner} END AS other
  FROM w CROSS JOIN (VALUES {offsets}) AS o(d)
)
SELECT CASE WHEN d <= {window} THEN item ELSE other END AS a,
       CASE WHEN d <= {window} THEN other ELSE item END AS b,
       COUNT(*) AS n
FROM pairs
WHERE other IS NOT NULL AND other <> item
GROUP BY CASE WHEN d <= {window} THEN item ELSE other END,
         CASE WHEN d <= {window} THEN other ELSE item END"
    )
}

/// Each item's interactions (positive or not) in the training period: `item, n` (items with
/// none are absent).
pub fn item_train_interactions() -> String {
    "SELECT CAST(item AS BIGINT) AS item, COUNT(*) AS n FROM events WHERE split = 0 GROUP BY item"
        .to_string()
}

/// The named queries of one aggregation run, in run order.
pub fn all(signal: &Signal, window: usize) -> Vec<(&'static str, String)> {
    vec![
        ("transitions", transitions()),
        ("label_parts", label_parts(signal)),
        ("co_consumption", co_consumption(window)),
    ]
}
