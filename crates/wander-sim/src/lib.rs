//! A closed-loop simulator of interest exploration, in the spirit of RecSim's interest
//! exploration environment, built so that its world is consistent with the real logs.
//!
//! - **Users** have a latent affinity for *every* cluster: a low-rank reconstruction of the
//!   real user x cluster engagement matrix (so clusters a user never touched get a value
//!   predicted from similar users), standardised, plus per-user noise. Simulated users are
//!   copies of real users with fresh noise.
//! - **Items** have a quality: their smoothed positive rate in the training period.
//! - **Sessions**: each simulated day an active user sees `slots` items: one exploration slot
//!   from the strategy under test (a novel cluster for the user's last two interests), the
//!   rest from the item policy inside the user's known interests. For each shown item the
//!   user clicks or not (a no-click option), and a click is positive engagement and then a
//!   completion with probabilities rising with quality and, by `simulate.satisfaction`,
//!   with the same affinity (`affinity`) or with the user's own positive rate in the cluster,
//!   shrunk towards the cluster's (`rate`): how much a user engages with a cluster and how
//!   much they like what they see there are different things, and held-out collective
//!   feedback measures the second.
//! - **Interests grow**: positive engagement with a new cluster adds it to the interests and
//!   moves the user's last-two state.
//! - **Return**: the probability that a user comes back the next day rises with the recent
//!   satisfaction (an exponential moving average of the positive rate).
//! - **Feedback loop, the same for every arm**: every `refresh_days` the strategies that
//!   learn from logs are refitted on the real training logs plus the simulated logs so far
//!   (the co-occurrence recommender's transition counts, the popular strategy's cluster
//!   popularity), and with `refresh_table` every ranked strategy (popular, co-occurrence,
//!   the exploration table) re-ranks its top candidates by the exploration feedback observed
//!   so far with one rule, so no arm learns from the loop in a way another cannot.
//!
//! A/B experiments split the population by a hash of the user id; several seeds give the
//! intervals of the effects.
#![deny(missing_docs)]

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use wander_core::rng::Rng;

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Invalid world or settings.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias for [`SimError`].
pub type Result<T, E = SimError> = std::result::Result<T, E>;

/// The real data the world is derived from.
#[derive(Debug, Clone)]
pub struct WorldInput {
    /// Planner cluster of every item.
    pub item_cluster: Vec<u32>,
    /// Positive and total training interactions of every item.
    pub item_counts: Vec<(u32, u32)>,
    /// Per real user: positive training engagements per cluster.
    pub user_cluster_positives: Vec<Vec<f64>>,
    /// Per real user: all training engagements per cluster, positive or not (the
    /// denominator of `simulate.satisfaction = "rate"`).
    pub user_cluster_engagements: Vec<Vec<f64>>,
    /// Per real user: their positively engaged clusters in time order (repeats collapsed).
    pub user_sequences: Vec<Vec<u32>>,
    /// Exploration table: for each (c1, c2), clusters best first with alignment scores.
    pub table: HashMap<(u32, u32), Vec<(u32, f32)>>,
    /// Another run's table for the `baseline_table` arm: for each (c1, c2), clusters best
    /// first (empty when no arm serves one).
    pub baseline_table: HashMap<(u32, u32), Vec<u32>>,
    /// Novelty-model proposal probabilities per (c1, c2) over all clusters.
    pub novelty: HashMap<(u32, u32), Vec<f32>>,
    /// Training transition counts (c1, c2) -> next -> count.
    pub transitions: HashMap<(u32, u32), HashMap<u32, u32>>,
    /// Collective feedback after a history pair, `(c1, c2, c)` -> (positive share, number
    /// of engagements), from the period `simulate.labels_period` names: the history-conditional
    /// part of satisfaction with `simulate.satisfaction = "collective"` (empty otherwise).
    pub pair_feedback: HashMap<(u32, u32, u32), (f64, f64)>,
}

/// Simulation settings: the `[simulate]` section (`arms` and `seeds` are used by the
/// caller that runs the experiment; `rank` by [`World::new`]).
pub use wander_core::config::SimulateConfig as SimConfig;

pub use wander_core::config::SimExploration as Exploration;
pub use wander_core::config::SimSatisfaction as Satisfaction;
pub use wander_core::config::Strategy;

/// One arm's figures for one day.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DayMetrics {
    /// Users who had a session.
    pub active_users: usize,
    /// Share of the arm's users who had a session (arms differ slightly in size).
    pub active_share: f64,
    /// Items shown.
    pub impressions: usize,
    /// Positive engagements / impressions.
    pub positive_rate: f64,
    /// Completions / impressions.
    pub completion_rate: f64,
    /// Positive engagements in the exploration slot / exploration impressions.
    pub exploration_positive_rate: f64,
    /// Positive engagements in the exploration slot / clicks on it: satisfaction among the
    /// users who engaged, the counterpart of held-out collective feedback (a rate over the
    /// users who made a transition, not over everyone shown it). 0 before it existed.
    #[serde(default)]
    pub exploration_click_positive_rate: f64,
    /// Exploration slots where the strategy had no cluster new to the user among its
    /// candidates (a table row, the observed successors, a proposal distribution) and the
    /// fallback served: how much of an arm's figures are its own. 0 before it existed.
    #[serde(default)]
    pub exploration_fallback_share: f64,
    /// Mean number of interest clusters per user of the arm.
    pub interests_per_user: f64,
    /// Distinct (user, cluster) pairs with positive engagement so far.
    pub unique_user_clusters: usize,
    /// The same per user of the arm.
    pub unique_user_clusters_per_user: f64,
}

/// The world: affinities, qualities and cluster item lists.
pub struct World {
    n_clusters: usize,
    affinity: Vec<Vec<f64>>,
    /// Per real user and cluster: standardised log-odds of the positive rate, shrunk towards
    /// the cluster's rate (`simulate.satisfaction = "rate"`).
    liking: Vec<Vec<f64>>,
    /// `(c1, c2, c)` -> how much the history pair shifts the liking of `c`, in the units of
    /// `liking` (`simulate.satisfaction = "collective"`).
    conditional: HashMap<(u32, u32, u32), f64>,
    quality: Vec<f64>,
    cluster_items: Vec<Vec<u32>>,
    popular: Vec<u32>,
    /// Positive training engagements per cluster (what `popular` orders by).
    cluster_positives: Vec<f64>,
    /// Candidates a ranked strategy re-ranks by feedback: the table's row length.
    rerank_depth: usize,
    input: WorldInput,
}

/// Pseudo-engagements at the cluster's positive rate that a user's own rate in the cluster
/// is shrunk towards (`simulate.satisfaction = "rate"`).
const LIKING_PRIOR: f64 = 5.0;

/// The users' liking of each cluster and the scale it is measured in.
#[derive(Debug)]
struct Liking {
    /// Per user and cluster: standardised log-odds of the shrunk positive rate.
    per_user: Vec<Vec<f64>>,
    /// Per cluster: its positive rate, shrunk towards the pooled one.
    cluster_rate: Vec<f64>,
    /// Standard deviation of the log-odds before standardising.
    sd: f64,
}

fn logit(r: f64) -> f64 {
    let r = r.clamp(1e-4, 1.0 - 1e-4);
    (r / (1.0 - r)).ln()
}

/// Each user's positive rate per cluster, shrunk towards the cluster's rate by
/// [`LIKING_PRIOR`] pseudo-engagements, as standardised log-odds. Positives above engagements,
/// or rows of another length, are an error.
fn liking(positives: &[Vec<f64>], engagements: &[Vec<f64>], m: usize) -> Result<Liking> {
    if engagements.len() != positives.len() || engagements.iter().any(|r| r.len() != m) {
        return Err(SimError::Invalid(format!(
            "the simulator needs every user's engagements per cluster: {} rows for {} users",
            engagements.len(),
            positives.len()
        )));
    }
    let (mut pos, mut all) = (vec![0.0; m], vec![0.0; m]);
    for (p, e) in positives.iter().zip(engagements) {
        for c in 0..m {
            if !(p[c] >= 0.0 && p[c] <= e[c]) {
                return Err(SimError::Invalid(format!(
                    "cluster {c}: {} positive engagements of {}",
                    p[c], e[c]
                )));
            }
            pos[c] += p[c];
            all[c] += e[c];
        }
    }
    let total = all.iter().sum::<f64>();
    let pooled = if total > 0.0 {
        pos.iter().sum::<f64>() / total
    } else {
        0.5
    };
    // A cluster nobody engaged with takes the pooled rate, itself shrunk like a user's.
    let cluster_rate: Vec<f64> = (0..m)
        .map(|c| (pos[c] + LIKING_PRIOR * pooled) / (all[c] + LIKING_PRIOR))
        .collect();
    let logits: Vec<Vec<f64>> = positives
        .iter()
        .zip(engagements)
        .map(|(p, e)| {
            (0..m)
                .map(|c| logit((p[c] + LIKING_PRIOR * cluster_rate[c]) / (e[c] + LIKING_PRIOR)))
                .collect()
        })
        .collect();
    let flat: Vec<f64> = logits.iter().flatten().copied().collect();
    let mean = flat.iter().sum::<f64>() / flat.len().max(1) as f64;
    let sd = (flat.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / flat.len().max(1) as f64)
        .sqrt()
        .max(1e-9);
    Ok(Liking {
        per_user: logits
            .into_iter()
            .map(|r| r.into_iter().map(|v| (v - mean) / sd).collect())
            .collect(),
        cluster_rate,
        sd,
    })
}

/// The history-conditional part of liking: for each `(c1, c2, c)` with collective feedback,
/// the log-odds of its positive share (shrunk towards the cluster's rate by [`LIKING_PRIOR`]
/// pseudo-engagements) minus the cluster's, in the liking's standard units. Shares outside
/// [0, 1], negative counts or clusters out of range are an error.
fn conditional(
    pair_feedback: &HashMap<(u32, u32, u32), (f64, f64)>,
    liking: &Liking,
) -> Result<HashMap<(u32, u32, u32), f64>> {
    let m = liking.cluster_rate.len();
    pair_feedback
        .iter()
        .map(|(&(c1, c2, c), &(share, n))| {
            if [c1, c2, c].iter().any(|&x| x as usize >= m)
                || !(0.0..=1.0).contains(&share)
                || !(n >= 0.0 && n.is_finite())
            {
                return Err(SimError::Invalid(format!(
                    "collective feedback after ({c1}, {c2}) for cluster {c}: share {share} of {n} engagements (clusters below {m}, a share in [0, 1] and a finite count needed)"
                )));
            }
            let base = liking.cluster_rate[c as usize];
            let shrunk = (share * n + LIKING_PRIOR * base) / (n + LIKING_PRIOR);
            Ok(((c1, c2, c), (logit(shrunk) - logit(base)) / liking.sd))
        })
        .collect()
}

/// Pseudo-impressions at the pooled exploration positive rate that a candidate's observed
/// feedback is shrunk towards when ranked strategies re-rank by feedback.
const RERANK_PRIOR: f64 = 10.0;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl World {
    /// Builds the world: a rank-`rank` reconstruction of log(1 + positives) per user and
    /// cluster (eigen-decomposition of the cluster Gram matrix), standardised; item quality
    /// from the smoothed positive rate, standardised.
    pub fn new(input: WorldInput, rank: usize) -> Result<Self> {
        let m = input.user_cluster_positives.first().map_or(0, Vec::len);
        if m < 3 || input.user_cluster_positives.is_empty() {
            return Err(SimError::Invalid(
                "the simulator needs at least 3 clusters and 1 user".into(),
            ));
        }
        let e: Vec<Vec<f64>> = input
            .user_cluster_positives
            .iter()
            .map(|r| r.iter().map(|v| v.ln_1p()).collect())
            .collect();
        let mut gram = vec![0.0; m * m];
        for r in &e {
            for i in 0..m {
                for j in 0..m {
                    gram[i * m + j] += r[i] * r[j];
                }
            }
        }
        let (_, vecs) = wander_core::linalg::symmetric_eigen(&gram, m);
        let k = rank.clamp(1, m);
        let recon: Vec<Vec<f64>> = e
            .iter()
            .map(|r| {
                let proj: Vec<f64> = (0..k)
                    .map(|c| (0..m).map(|i| r[i] * vecs[i * m + c]).sum())
                    .collect();
                (0..m)
                    .map(|i| (0..k).map(|c| proj[c] * vecs[i * m + c]).sum())
                    .collect()
            })
            .collect();
        let all: Vec<f64> = recon.iter().flatten().copied().collect();
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        let sd = (all.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / all.len() as f64)
            .sqrt()
            .max(1e-9);
        let affinity = recon
            .into_iter()
            .map(|r| r.into_iter().map(|v| (v - mean) / sd).collect())
            .collect();
        let raw: Vec<f64> = input
            .item_counts
            .iter()
            .map(|&(p, n)| {
                ((p as f64 + 1.0) / (n as f64 + 2.0)).ln()
                    - ((n as f64 - p as f64 + 1.0) / (n as f64 + 2.0)).ln()
            })
            .collect();
        let qm = raw.iter().sum::<f64>() / raw.len().max(1) as f64;
        let qs = (raw.iter().map(|v| (v - qm).powi(2)).sum::<f64>() / raw.len().max(1) as f64)
            .sqrt()
            .max(1e-9);
        let quality = raw.iter().map(|v| (v - qm) / qs).collect();
        let liking = liking(
            &input.user_cluster_positives,
            &input.user_cluster_engagements,
            m,
        )?;
        let conditional = conditional(&input.pair_feedback, &liking)?;
        let mut cluster_items = vec![Vec::new(); m];
        for (i, &c) in input.item_cluster.iter().enumerate() {
            if (c as usize) < m {
                cluster_items[c as usize].push(i as u32);
            }
        }
        let mut pop = vec![0.0; m];
        for r in &input.user_cluster_positives {
            for (c, v) in r.iter().enumerate() {
                pop[c] += v;
            }
        }
        let mut popular: Vec<u32> = (0..m as u32).collect();
        popular.sort_by(|a, b| pop[*b as usize].total_cmp(&pop[*a as usize]).then(a.cmp(b)));
        let rerank_depth = input.table.values().map(Vec::len).max().unwrap_or(1).max(1);
        Ok(World {
            n_clusters: m,
            affinity,
            liking: liking.per_user,
            conditional,
            quality,
            cluster_items,
            popular,
            cluster_positives: pop,
            rerank_depth,
            input,
        })
    }
}

struct SimUser {
    affinity: Vec<f64>,
    /// What decides a click's positive outcome: `affinity` again, or the user's liking.
    satisfying: Vec<f64>,
    interests: Vec<u32>,
    interest_set: HashSet<u32>,
    last2: (u32, u32),
    satisfaction: f64,
    active: bool,
    seen: HashSet<u32>,
}

/// Arm of a user: a hash of the user id (splitmix64), so assignment is stable across seeds.
pub fn arm_of(user: u64, arms: usize) -> usize {
    let mut z = user.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) % arms as u64) as usize
}

struct Learned {
    /// (c1, c2) -> next -> count, from the logs (real training ones plus simulated).
    transitions: HashMap<(u32, u32), HashMap<u32, u32>>,
    /// (c1, c2, c) -> (positives, impressions) observed in exploration slots.
    feedback: HashMap<(u32, u32, u32), (u32, u32)>,
    /// Positive engagements per cluster (real training ones plus simulated).
    positives: Vec<f64>,
    /// Snapshots used by the strategies until the next refresh.
    cooc_best: HashMap<(u32, u32), Vec<u32>>,
    popular: Vec<u32>,
    /// Whether ranked strategies re-rank by feedback, and the snapshot they read.
    rerank: bool,
    feedback_seen: HashMap<(u32, u32, u32), (u32, u32)>,
    /// Pooled exploration positive rate at the snapshot (the re-ranking prior).
    base_rate: f64,
}

/// Runs one simulation: `arms[a]` is the strategy of arm a. Returns `[arm][day]` metrics.
pub fn simulate(
    world: &World,
    cfg: &SimConfig,
    arms: &[Strategy],
    seed: u64,
) -> Result<Vec<Vec<DayMetrics>>> {
    if arms.is_empty() || cfg.users == 0 || cfg.days == 0 || cfg.slots == 0 {
        return Err(SimError::Invalid(
            "simulate: need at least one arm, user, day and slot".into(),
        ));
    }
    if arms.contains(&Strategy::BaselineTable) && world.input.baseline_table.is_empty() {
        return Err(SimError::Invalid(
            "simulate: the baseline_table arm has no baseline table (simulate.baseline_run)".into(),
        ));
    }
    let m = world.n_clusters;
    let real = world.affinity.len();
    let mut rng = Rng::new(seed);
    let mut users: Vec<SimUser> = (0..cfg.users)
        .map(|u| {
            let src = (u * 7919 + (seed as usize % 97)) % real;
            let mut r = Rng::new(seed).fork(u as u64 + 1);
            let affinity: Vec<f64> = world.affinity[src]
                .iter()
                .map(|a| a + cfg.noise * r.normal())
                .collect();
            let satisfying = match cfg.satisfaction {
                Satisfaction::Affinity => affinity.clone(),
                Satisfaction::Rate | Satisfaction::Collective => world.liking[src]
                    .iter()
                    .map(|a| a + cfg.noise * r.normal())
                    .collect(),
            };
            let seq = &world.input.user_sequences[src];
            let mut interests: Vec<u32> = seq.clone();
            interests.dedup();
            let interest_set: HashSet<u32> = interests.iter().copied().collect();
            let last2 = match seq.len() {
                0 => (world.popular[0], world.popular[1]),
                1 => (
                    world
                        .popular
                        .iter()
                        .copied()
                        .find(|&c| c != seq[0])
                        .unwrap_or(0),
                    seq[0],
                ),
                n => (seq[n - 2], seq[n - 1]),
            };
            SimUser {
                affinity,
                satisfying,
                interests,
                interest_set,
                last2,
                satisfaction: 0.5,
                active: true,
                seen: HashSet::new(),
            }
        })
        .collect();
    let arm_users: Vec<usize> = (0..cfg.users)
        .map(|u| arm_of(u as u64, arms.len()))
        .collect();
    let mut learned = Learned {
        transitions: world.input.transitions.clone(),
        feedback: HashMap::new(),
        positives: world.cluster_positives.clone(),
        cooc_best: HashMap::new(),
        popular: world.popular.clone(),
        rerank: cfg.refresh_table,
        feedback_seen: HashMap::new(),
        base_rate: 0.0,
    };
    refresh(&mut learned);
    let mut out = vec![Vec::with_capacity(cfg.days); arms.len()];
    let mut engaged: Vec<HashSet<(usize, u32)>> = vec![HashSet::new(); arms.len()];
    for day in 0..cfg.days {
        if day > 0 && cfg.refresh_days > 0 && day % cfg.refresh_days == 0 {
            refresh(&mut learned);
        }
        let mut day_m: Vec<DayMetrics> = vec![DayMetrics::default(); arms.len()];
        let mut pos = vec![0usize; arms.len()];
        let mut comp = vec![0usize; arms.len()];
        let (mut exp_pos, mut exp_n) = (vec![0usize; arms.len()], vec![0usize; arms.len()]);
        let mut exp_clicks = vec![0usize; arms.len()];
        let mut exp_fallbacks = vec![0usize; arms.len()];
        for (u, user) in users.iter_mut().enumerate() {
            let a = arm_users[u];
            if !user.active {
                user.active = rng.next_f64()
                    < sigmoid(
                        cfg.return_base + cfg.return_satisfaction * (user.satisfaction - 0.5),
                    );
                if !user.active {
                    continue;
                }
            }
            day_m[a].active_users += 1;
            let mut session_pos = 0;
            for slot in 0..cfg.slots {
                let explore = slot == 0 && arms[a] != Strategy::None;
                let mut fell_back = false;
                let cluster = if explore {
                    let (c, f) = choose_novel(world, cfg, &learned, arms[a], user, &mut rng);
                    fell_back = f;
                    c
                } else {
                    // The item policy: a known interest, by affinity.
                    let w: Vec<f64> = user
                        .interests
                        .iter()
                        .map(|&c| user.affinity[c as usize].exp())
                        .collect();
                    if w.is_empty() {
                        world.popular[0]
                    } else {
                        user.interests[pick(&w, &mut rng)]
                    }
                };
                let items = &world.cluster_items[cluster as usize];
                if items.is_empty() {
                    continue;
                }
                // The item: the best-quality unseen of a few random draws (a crude ranker).
                let mut item = items[rng.below(items.len())];
                for _ in 0..3 {
                    let cand = items[rng.below(items.len())];
                    if !user.seen.contains(&cand)
                        && (user.seen.contains(&item)
                            || world.quality[cand as usize] > world.quality[item as usize])
                    {
                        item = cand;
                    }
                }
                user.seen.insert(item);
                day_m[a].impressions += 1;
                let aff = user.affinity[cluster as usize];
                let q = world.quality[item as usize];
                let mut sat = user.satisfying[cluster as usize];
                if cfg.satisfaction == Satisfaction::Collective {
                    sat += world
                        .conditional
                        .get(&(user.last2.0, user.last2.1, cluster))
                        .copied()
                        .unwrap_or(0.0);
                }
                let clicked = rng.next_f64() < sigmoid(0.8 * aff + 0.4 * q - 0.5);
                let positive = clicked && rng.next_f64() < sigmoid(1.2 * sat + 0.5 * q + 0.3);
                let completed = positive && rng.next_f64() < sigmoid(0.8 * sat + 0.8 * q);
                if explore {
                    exp_n[a] += 1;
                    exp_fallbacks[a] += usize::from(fell_back);
                    exp_clicks[a] += usize::from(clicked);
                    let f = learned
                        .feedback
                        .entry((user.last2.0, user.last2.1, cluster))
                        .or_default();
                    f.1 += 1;
                    if positive {
                        exp_pos[a] += 1;
                        f.0 += 1;
                    }
                }
                if positive {
                    pos[a] += 1;
                    session_pos += 1;
                    learned.positives[cluster as usize] += 1.0;
                    engaged[a].insert((u, cluster));
                    if completed {
                        comp[a] += 1;
                    }
                    if cluster != user.last2.1 {
                        if cluster != user.last2.0 {
                            *learned
                                .transitions
                                .entry(user.last2)
                                .or_default()
                                .entry(cluster)
                                .or_default() += 1;
                        }
                        user.last2 = (user.last2.1, cluster);
                    }
                    if user.interest_set.insert(cluster) {
                        user.interests.push(cluster);
                    }
                }
            }
            let rate = session_pos as f64 / cfg.slots as f64;
            user.satisfaction = 0.7 * user.satisfaction + 0.3 * rate;
            user.active = rng.next_f64()
                < sigmoid(cfg.return_base + cfg.return_satisfaction * (user.satisfaction - 0.5));
        }
        for a in 0..arms.len() {
            let d = &mut day_m[a];
            let n = d.impressions.max(1) as f64;
            d.positive_rate = pos[a] as f64 / n;
            d.completion_rate = comp[a] as f64 / n;
            d.exploration_positive_rate = exp_pos[a] as f64 / exp_n[a].max(1) as f64;
            d.exploration_click_positive_rate = exp_pos[a] as f64 / exp_clicks[a].max(1) as f64;
            d.exploration_fallback_share = exp_fallbacks[a] as f64 / exp_n[a].max(1) as f64;
            let members: Vec<&SimUser> = users
                .iter()
                .enumerate()
                .filter(|(u, _)| arm_users[*u] == a)
                .map(|(_, s)| s)
                .collect();
            d.interests_per_user = members
                .iter()
                .map(|s| s.interests.len() as f64)
                .sum::<f64>()
                / members.len().max(1) as f64;
            d.unique_user_clusters = engaged[a].len();
            d.active_share = d.active_users as f64 / members.len().max(1) as f64;
            d.unique_user_clusters_per_user =
                d.unique_user_clusters as f64 / members.len().max(1) as f64;
            out[a].push(d.clone());
        }
    }
    let _ = m;
    Ok(out)
}

fn pick(weights: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

fn refresh(l: &mut Learned) {
    l.cooc_best = l
        .transitions
        .iter()
        .map(|(k, next)| {
            let mut v: Vec<(u32, u32)> = next.iter().map(|(&c, &n)| (c, n)).collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            (*k, v.into_iter().map(|(c, _)| c).collect())
        })
        .collect();
    let mut popular: Vec<u32> = (0..l.positives.len() as u32).collect();
    popular.sort_by(|a, b| {
        l.positives[*b as usize]
            .total_cmp(&l.positives[*a as usize])
            .then(a.cmp(b))
    });
    l.popular = popular;
    if l.rerank {
        l.feedback_seen = l.feedback.clone();
        let (p, n) = l.feedback.values().fold((0u64, 0u64), |(p, n), &(a, b)| {
            (p + u64::from(a), n + u64::from(b))
        });
        l.base_rate = if n > 0 { p as f64 / n as f64 } else { 0.0 };
    }
}

/// The first of a ranked strategy's candidates, or with re-ranking the best of its top
/// `depth` by observed exploration feedback shrunk towards the pooled rate (ties keep the
/// strategy's order). The same rule for every ranked strategy.
fn first_ranked(
    l: &Learned,
    pair: (u32, u32),
    ranked: impl Iterator<Item = u32>,
    depth: usize,
) -> Option<u32> {
    if !l.rerank {
        return ranked.into_iter().next();
    }
    let mut best: Option<(u32, f64)> = None;
    for c in ranked.take(depth) {
        let (p, n) = l
            .feedback_seen
            .get(&(pair.0, pair.1, c))
            .copied()
            .unwrap_or((0, 0));
        let score = (RERANK_PRIOR * l.base_rate + f64::from(p)) / (RERANK_PRIOR + f64::from(n));
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// The exploration slot's cluster for `user` under strategy `s`, and whether the strategy
/// had nothing novel to offer and the fallback served instead. Novel: outside the user's
/// last two interests, and with `simulate.exploration = "new_to_user"` outside all their
/// interests (outside the last two alone once every cluster is one). Ranked strategies that
/// run out fall back to the most popular novel cluster, all alike.
fn choose_novel(
    world: &World,
    cfg: &SimConfig,
    l: &Learned,
    s: Strategy,
    user: &SimUser,
    rng: &mut Rng,
) -> (u32, bool) {
    let m = world.n_clusters as u32;
    let (c1, c2) = user.last2;
    let outside_pair = |c: u32| c != c1 && c != c2;
    let new_left = cfg.exploration == Exploration::NewToUser
        && (0..m).any(|c| outside_pair(c) && !user.interest_set.contains(&c));
    let novel = |c: u32| outside_pair(c) && !(new_left && user.interest_set.contains(&c));
    let allowed: Vec<u32> = (0..m).filter(|&c| novel(c)).collect();
    let random = |rng: &mut Rng| allowed[rng.below(allowed.len())];
    let depth = world.rerank_depth;
    let popular_novel = || {
        l.popular
            .iter()
            .copied()
            .find(|&c| novel(c))
            .unwrap_or(allowed[0])
    };
    let ranked = |v: Option<Vec<u32>>| match v
        .and_then(|v| first_ranked(l, (c1, c2), v.into_iter().filter(|&c| novel(c)), depth))
    {
        Some(c) => (c, false),
        None => (popular_novel(), true),
    };
    match s {
        Strategy::None | Strategy::Random => (random(rng), false),
        Strategy::Popular => ranked(Some(l.popular.clone())),
        Strategy::Cooccurrence => ranked(l.cooc_best.get(&(c1, c2)).cloned()),
        Strategy::NoveltyOnly => {
            let w: Vec<f64> = match world.input.novelty.get(&(c1, c2)) {
                Some(p) => p
                    .iter()
                    .enumerate()
                    .map(|(c, &v)| if novel(c as u32) { v as f64 } else { 0.0 })
                    .collect(),
                None => Vec::new(),
            };
            if w.iter().sum::<f64>() > 0.0 {
                (pick(&w, rng) as u32, false)
            } else {
                (random(rng), true)
            }
        }
        Strategy::BestOfN => ranked(
            world
                .input
                .table
                .get(&(c1, c2))
                .map(|v| v.iter().map(|x| x.0).collect()),
        ),
        Strategy::BaselineTable => ranked(world.input.baseline_table.get(&(c1, c2)).cloned()),
    }
}

/// A difference between two arms over seeds: mean and 95% t-interval. Undefined figures
/// (a control of zero) are NaN, written as JSON `null` and read back as NaN.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Effect {
    /// Mean over seeds of (treatment - control) / control, in percent.
    #[serde(deserialize_with = "wander_core::float::nan_if_null")]
    pub relative_pct: f64,
    /// Lower end of the 95% interval.
    #[serde(deserialize_with = "wander_core::float::nan_if_null")]
    pub lo: f64,
    /// Upper end.
    #[serde(deserialize_with = "wander_core::float::nan_if_null")]
    pub hi: f64,
    /// Whether the interval excludes zero.
    pub significant: bool,
}

/// Two-sided 97.5% quantile of Student's t for `df` degrees of freedom (table; normal above 30).
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    if df == 0 {
        f64::INFINITY
    } else {
        T.get(df - 1).copied().unwrap_or(1.96)
    }
}

/// Effect of arm `t` against arm `c` for one per-day figure, averaged over days per seed.
pub fn effect(
    runs: &[Vec<Vec<DayMetrics>>],
    c: usize,
    t: usize,
    f: impl Fn(&DayMetrics) -> f64,
) -> Effect {
    let diffs: Vec<f64> = runs
        .iter()
        .map(|r| {
            let mean = |a: usize| r[a].iter().map(&f).sum::<f64>() / r[a].len().max(1) as f64;
            let base = mean(c);
            if base.abs() < 1e-12 {
                0.0
            } else {
                100.0 * (mean(t) - base) / base
            }
        })
        .collect();
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n.max(1.0);
    let sd = if diffs.len() > 1 {
        (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        f64::INFINITY
    };
    let half = t975(diffs.len().saturating_sub(1)) * sd / n.max(1.0).sqrt();
    Effect {
        relative_pct: mean,
        lo: mean - half,
        hi: mean + half,
        significant: mean - half > 0.0 || mean + half < 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> World {
        let m = 8;
        let users = 60;
        let mut rng = Rng::new(1);
        let item_cluster: Vec<u32> = (0..160).map(|i| (i % m) as u32).collect();
        let item_counts = (0..160)
            .map(|_| {
                let n = 5 + rng.below(20) as u32;
                (rng.below(n as usize) as u32, n)
            })
            .collect();
        let user_cluster_positives: Vec<Vec<f64>> = (0..users)
            .map(|u| {
                (0..m)
                    .map(|c| if (u + c) % 3 == 0 { 3.0 } else { 0.0 })
                    .collect()
            })
            .collect();
        let user_sequences = (0..users)
            .map(|u| vec![(u % m) as u32, ((u + 3) % m) as u32])
            .collect();
        let mut table = HashMap::new();
        let mut novelty = HashMap::new();
        for a in 0..m as u32 {
            for b in 0..m as u32 {
                if a != b {
                    table.insert((a, b), vec![((a + b + 1) % m as u32, 0.7f32)]);
                    novelty.insert((a, b), vec![1.0f32 / m as f32; m]);
                }
            }
        }
        World::new(
            WorldInput {
                item_cluster,
                item_counts,
                user_cluster_engagements: user_cluster_positives
                    .iter()
                    .map(|r| r.iter().map(|v| v * 2.0).collect())
                    .collect(),
                user_cluster_positives,
                user_sequences,
                baseline_table: table
                    .iter()
                    .map(|(k, v)| (*k, v.iter().map(|x| x.0).collect()))
                    .collect(),
                table,
                novelty,
                transitions: HashMap::new(),
                pair_feedback: HashMap::new(),
            },
            3,
        )
        .unwrap()
    }

    fn cfg() -> SimConfig {
        SimConfig {
            users: 2000,
            days: 10,
            slots: 4,
            rank: 3,
            noise: 0.5,
            refresh_days: 3,
            refresh_table: true,
            return_base: 0.5,
            return_satisfaction: 3.0,
            seeds: 1,
            arms: Vec::new(),
            baseline_run: String::new(),
            satisfaction: Satisfaction::Affinity,
            labels_period: wander_core::config::SimLabelsPeriod::Validation,
            exploration: Exploration::OutsidePair,
            world_users: 0,
        }
    }

    #[test]
    fn a_baseline_table_equal_to_the_table_serves_what_best_of_n_serves() {
        let w = toy();
        let same = simulate(&w, &cfg(), &[Strategy::Random, Strategy::BestOfN], 5).unwrap();
        let baseline =
            simulate(&w, &cfg(), &[Strategy::Random, Strategy::BaselineTable], 5).unwrap();
        assert_eq!(same, baseline);
        // Without a baseline table the arm is an error, not a silent random arm.
        let mut bare = toy();
        bare.input.baseline_table.clear();
        assert!(simulate(&bare, &cfg(), &[Strategy::BaselineTable], 5).is_err());
    }

    #[test]
    fn aa_test_shows_no_significant_effect() {
        let w = toy();
        let runs: Vec<_> = (0..6)
            .map(|s| simulate(&w, &cfg(), &[Strategy::Random, Strategy::Random], s).unwrap())
            .collect();
        for (name, f) in [
            (
                "positive_rate",
                Box::new(|d: &DayMetrics| d.positive_rate) as Box<dyn Fn(&DayMetrics) -> f64>,
            ),
            ("active_share", Box::new(|d: &DayMetrics| d.active_share)),
            (
                "unique_pairs",
                Box::new(|d: &DayMetrics| d.unique_user_clusters_per_user),
            ),
            ("interests", Box::new(|d: &DayMetrics| d.interests_per_user)),
        ] {
            let e = effect(&runs, 0, 1, f);
            assert!(!e.significant, "A/A {name}: {e:?}");
        }
    }

    #[test]
    fn deterministic_and_sane() {
        let w = toy();
        let a = simulate(&w, &cfg(), &[Strategy::None, Strategy::Popular], 3).unwrap();
        let b = simulate(&w, &cfg(), &[Strategy::None, Strategy::Popular], 3).unwrap();
        assert_eq!(a, b);
        for arm in &a {
            assert_eq!(arm.len(), 10);
            for d in arm {
                assert!(
                    (0.0..=1.0).contains(&d.positive_rate) && d.completion_rate <= d.positive_rate
                );
            }
            // Interests only grow.
            assert!(arm
                .windows(2)
                .all(|w| w[1].interests_per_user >= w[0].interests_per_user));
        }
        // Exploration adds interests faster than none.
        assert!(a[1].last().unwrap().interests_per_user > a[0].last().unwrap().interests_per_user);
        let counts = (0..1000).fold([0usize; 2], |mut c, u| {
            c[arm_of(u, 2)] += 1;
            c
        });
        assert!(counts[0] > 400 && counts[1] > 400);
        assert!(simulate(&w, &cfg(), &[], 1).is_err());
    }

    #[test]
    fn liking_is_the_shrunk_positive_rate_and_refuses_impossible_counts() {
        // Cluster 0: user 0 liked all 10 engagements, user 1 none of 10, user 2 never went.
        let positives = vec![
            vec![10.0, 1.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 1.0, 0.0],
        ];
        let engagements = vec![
            vec![10.0, 2.0, 0.0],
            vec![10.0, 2.0, 0.0],
            vec![0.0, 2.0, 0.0],
        ];
        let l = liking(&positives, &engagements, 3).unwrap().per_user;
        assert!(l[0][0] > l[2][0] && l[2][0] > l[1][0], "{l:?}");
        // Users who never engaged with a cluster get its rate: the same value.
        assert_eq!(l[2][2], l[0][2]);
        assert!(l.iter().flatten().all(|v| v.is_finite()));
        let mut bad = positives.clone();
        bad[1][1] = 3.0;
        let e = liking(&bad, &engagements, 3).unwrap_err().to_string();
        assert!(
            e.contains("cluster 1") && e.contains("3 positive engagements of 2"),
            "{e}"
        );
        assert!(liking(&positives, &engagements[..2], 3).is_err());
    }

    #[test]
    fn satisfaction_by_rate_counts_positives_among_clicks() {
        let w = toy();
        let mut c = cfg();
        c.satisfaction = Satisfaction::Rate;
        let arms = [Strategy::Cooccurrence, Strategy::BestOfN];
        let by_rate = simulate(&w, &c, &arms, 5).unwrap();
        assert_eq!(by_rate, simulate(&w, &c, &arms, 5).unwrap());
        assert_ne!(by_rate, simulate(&w, &cfg(), &arms, 5).unwrap());
        for d in by_rate.iter().flatten() {
            assert!((0.0..=1.0).contains(&d.exploration_click_positive_rate));
            assert!(d.exploration_click_positive_rate >= d.exploration_positive_rate);
        }
    }

    fn learned(rerank: bool) -> Learned {
        Learned {
            transitions: HashMap::new(),
            feedback: HashMap::new(),
            positives: vec![5.0, 1.0, 3.0, 0.0, 2.0],
            cooc_best: HashMap::new(),
            popular: Vec::new(),
            rerank,
            feedback_seen: HashMap::new(),
            base_rate: 0.0,
        }
    }

    #[test]
    fn every_ranked_strategy_refreshes_by_one_rule() {
        // Popularity is refitted from the pooled positives at each refresh.
        let mut l = learned(true);
        refresh(&mut l);
        assert_eq!(l.popular, vec![0, 2, 4, 1, 3]);
        l.positives[3] = 9.0;
        refresh(&mut l);
        assert_eq!(l.popular[0], 3);
        // Exploration feedback: cluster 3 after (0, 1) disappointed 20 times, cluster 5 did
        // well; the pooled rate is the prior.
        l.feedback.insert((0, 1, 3), (0, 20));
        l.feedback.insert((0, 1, 5), (15, 20));
        // Before the next refresh the strategies still read the old snapshot.
        assert_eq!(first_ranked(&l, (0, 1), [3, 5, 7].into_iter(), 3), Some(3));
        refresh(&mut l);
        assert!((l.base_rate - 15.0 / 40.0).abs() < 1e-12);
        assert_eq!(first_ranked(&l, (0, 1), [3, 5, 7].into_iter(), 3), Some(5));
        // Only the top `depth` are candidates; another pair's feedback does not count.
        assert_eq!(first_ranked(&l, (0, 1), [3, 7, 5].into_iter(), 2), Some(7));
        assert_eq!(first_ranked(&l, (2, 1), [3, 5, 7].into_iter(), 3), Some(3));
        // Without re-ranking, the strategy's own first choice.
        let mut plain = learned(false);
        plain.feedback = l.feedback.clone();
        refresh(&mut plain);
        assert_eq!(
            first_ranked(&plain, (0, 1), [3, 5, 7].into_iter(), 3),
            Some(3)
        );
        assert_eq!(first_ranked(&plain, (0, 1), std::iter::empty(), 3), None);
    }

    fn user(last2: (u32, u32), interests: &[u32]) -> SimUser {
        SimUser {
            affinity: vec![0.0; 8],
            satisfying: vec![0.0; 8],
            interests: interests.to_vec(),
            interest_set: interests.iter().copied().collect(),
            last2,
            satisfaction: 0.5,
            active: true,
            seen: HashSet::new(),
        }
    }

    #[test]
    fn the_exploration_slot_serves_a_new_interest_when_asked_and_counts_fallbacks() {
        let w = toy();
        let mut l = learned(false);
        l.positives = vec![9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0];
        l.cooc_best.insert((0, 1), vec![2, 3, 4]);
        refresh(&mut l);
        l.cooc_best.insert((0, 1), vec![2, 3, 4]);
        let mut rng = Rng::new(3);
        let strategies = [
            Strategy::Random,
            Strategy::Popular,
            Strategy::Cooccurrence,
            Strategy::NoveltyOnly,
            Strategy::BestOfN,
            Strategy::BaselineTable,
        ];
        let known = user((0, 1), &[0, 1, 2, 3, 4]);
        let mut c = cfg();
        c.exploration = Exploration::NewToUser;
        for s in strategies {
            for _ in 0..20 {
                let (cl, _) = choose_novel(&w, &c, &l, s, &known, &mut rng);
                assert!(cl >= 5, "{s:?} served {cl}, a known interest");
            }
        }
        // Co-occurrence's successors are all known: it falls back to the most popular new one.
        assert_eq!(
            choose_novel(&w, &c, &l, Strategy::Cooccurrence, &known, &mut rng),
            (5, true)
        );
        // Outside the pair is enough by default: the first successor is served.
        let (cl, fell_back) =
            choose_novel(&w, &cfg(), &l, Strategy::Cooccurrence, &known, &mut rng);
        assert_eq!((cl, fell_back), (2, false));
        // A user with every cluster among the interests still gets one outside the pair.
        let everything = user((0, 1), &[0, 1, 2, 3, 4, 5, 6, 7]);
        for s in strategies {
            let (cl, _) = choose_novel(&w, &c, &l, s, &everything, &mut rng);
            assert!(cl >= 2, "{s:?} served {cl} of the pair");
        }
        // The share of fallbacks reaches the daily figures.
        c.users = 300;
        let days = simulate(&w, &c, &[Strategy::Cooccurrence, Strategy::Random], 2).unwrap();
        assert!(days[0].iter().any(|d| d.exploration_fallback_share > 0.0));
        assert!(days[1].iter().all(|d| d.exploration_fallback_share == 0.0));
    }

    #[test]
    fn collective_satisfaction_follows_the_history_pair() {
        // After (0, 1) users liked cluster 2 far more than the cluster's rate; after (1, 0),
        // far less. The conditional shift has the labels' sign and nothing else moves.
        let mut w = toy();
        let mut input = w.input.clone();
        input.pair_feedback.insert((0, 1, 2), (1.0, 200.0));
        input.pair_feedback.insert((1, 0, 2), (0.0, 200.0));
        w = World::new(input, 3).unwrap();
        assert!(w.conditional[&(0, 1, 2)] > 1.0);
        assert!(w.conditional[&(1, 0, 2)] < -1.0);
        let mut bad = w.input.clone();
        bad.pair_feedback.insert((0, 1, 99), (0.5, 3.0));
        let e = World::new(bad, 3)
            .err()
            .expect("cluster out of range")
            .to_string();
        assert!(e.contains("cluster 99"), "{e}");
        let mut c = cfg();
        c.satisfaction = Satisfaction::Collective;
        let arms = [Strategy::Cooccurrence, Strategy::BestOfN];
        let collective = simulate(&w, &c, &arms, 5).unwrap();
        c.satisfaction = Satisfaction::Rate;
        assert_ne!(collective, simulate(&w, &c, &arms, 5).unwrap());
    }
}
