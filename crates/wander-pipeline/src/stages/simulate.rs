//! `wander simulate`: closed-loop A/B experiments on a world derived from the run's data.

use std::collections::HashMap;

use serde_json::json;
use serde_json::Value;
use wander_core::artifact::RunDir;
use wander_core::config::{SimLabelsPeriod, SimSatisfaction};
use wander_sim::effect;
use wander_sim::simulate;
use wander_sim::DayMetrics;
use wander_sim::Strategy;
use wander_sim::World;
use wander_sim::WorldInput;

use crate::artifacts::*;
use crate::common::manifests;
use crate::common::report;
use crate::stages::precompute::read_scores;
use crate::ResultExt;
use crate::StageContext;
use crate::StageId;
use crate::Summary;

type Figure = (&'static str, fn(&DayMetrics) -> f64);

const FIGURES: [Figure; 7] = [
    ("positive_rate", |d| d.positive_rate),
    ("completion_rate", |d| d.completion_rate),
    ("exploration_positive_rate", |d| d.exploration_positive_rate),
    ("exploration_click_positive_rate", |d| {
        d.exploration_click_positive_rate
    }),
    ("active_share", |d| d.active_share),
    ("interests_per_user", |d| d.interests_per_user),
    ("unique_user_clusters_per_user", |d| {
        d.unique_user_clusters_per_user
    }),
];

/// The table of another run for the `baseline_table` arm: it must share this run's
/// taxonomy (the same cluster ids meaning the same clusters).
fn baseline_table(run: &RunDir, baseline: &str) -> crate::Result<HashMap<(u32, u32), Vec<u32>>> {
    if baseline.trim().is_empty() {
        return Ok(HashMap::new());
    }
    let other = RunDir::open(std::path::Path::new(baseline))
        .with_context(|| format!("simulate.baseline_run = {baseline:?}"))?;
    let ours = open(run, StageId::Taxonomy)?;
    let theirs = open(&other, StageId::Taxonomy)
        .with_context(|| format!("simulate.baseline_run = {baseline:?} has no taxonomy"))?;
    if ours.manifest().outputs != theirs.manifest().outputs {
        crate::bail!(
            "simulate.baseline_run = {baseline:?} has another taxonomy than {} (its clusters differ); the baseline table must come from a run on the same data and taxonomy",
            run.root().display()
        );
    }
    let pre = open(&other, StageId::Precompute).with_context(|| {
        format!("simulate.baseline_run = {baseline:?} has no exploration table")
    })?;
    let table = wander_table::ExplorationTable::read(&pre.path(TABLE)?)?;
    Ok(table
        .iter()
        .map(|(a, b, r)| ((a, b), r.iter().map(|c| c.cluster).collect()))
        .collect())
}

/// The inputs of `wander simulate`: this run's upstream manifests and, with a baseline
/// table, the other run's taxonomy and table manifests (a new baseline table reruns it).
fn simulate_inputs(
    ctx: &StageContext,
    run: &RunDir,
) -> crate::Result<std::collections::BTreeMap<String, String>> {
    let mut inputs = manifests(run, StageId::Simulate.inputs())?;
    if ctx.config.simulate.satisfaction == SimSatisfaction::Collective {
        inputs.insert(
            format!("{}/manifest.json", StageId::Feedback.folder()),
            run.manifest_checksum(StageId::Feedback.folder())
                .context("simulate.satisfaction = \"collective\" reads the feedback labels: run `wander feedback` first")?,
        );
    }
    let baseline = &ctx.config.simulate.baseline_run;
    if ctx.config.simulate.arms.contains(&Strategy::BaselineTable) {
        let other = RunDir::open(std::path::Path::new(baseline))
            .with_context(|| format!("simulate.baseline_run = {baseline:?}"))?;
        for stage in [StageId::Taxonomy, StageId::Precompute] {
            let folder = stage.folder();
            let sum = other.manifest_checksum(folder).with_context(|| {
                format!("simulate.baseline_run = {baseline:?} lacks a finished {folder} stage")
            })?;
            inputs.insert(format!("baseline_run/{folder}/manifest.json"), sum);
        }
    }
    Ok(inputs)
}

/// The collective feedback after each history pair in `period`'s labels, as the simulator
/// reads it: `(c1, c2, c)` -> (positive share, engagements).
fn pair_feedback(
    run: &RunDir,
    period: SimLabelsPeriod,
) -> crate::Result<HashMap<(u32, u32, u32), (f64, f64)>> {
    let split = match period {
        SimLabelsPeriod::Train => wander_data::Split::Train,
        SimLabelsPeriod::Validation => wander_data::Split::Valid,
        SimLabelsPeriod::Test => wander_data::Split::Test,
    };
    let labels: Vec<wander_explore::feedback::Label> =
        open(run, StageId::Feedback)?.json(labels(split))?;
    Ok(labels
        .into_iter()
        .map(|l| ((l.c1, l.c2, l.next), (l.rate, l.events as f64)))
        .collect())
}

/// The random stream of the world's user sample, apart from the simulation's own seeds.
const WORLD_SAMPLE_STREAM: u64 = 0x5157_0001;

fn world(
    run: &RunDir,
    cfg: &wander_core::config::SimulateConfig,
    baseline: &str,
    seed: u64,
) -> crate::Result<(World, Option<usize>)> {
    let tax = wander_taxonomy::read(open(run, StageId::Taxonomy)?.reader())?;
    let assign = tax.planner_assign().to_vec();
    let m = tax.planner_clusters().len();
    let ingest = open(run, StageId::Ingest)?;
    let size = wander_data::catalogue_size(ingest.reader())?;
    if assign.len() != size.items {
        crate::bail!(
            "the taxonomy assigns {} items, the catalogue has {}: artifacts of different runs",
            assign.len(),
            size.items
        );
    }
    // Each real user's row in the world, or none outside the drawn users.
    let rows: Vec<u32> = if cfg.world_users > 0 && cfg.world_users < size.users {
        let mut drawn: Vec<u32> = (0..size.users as u32).collect();
        wander_core::rng::Rng::new(seed)
            .fork(WORLD_SAMPLE_STREAM)
            .shuffle(&mut drawn);
        drawn.truncate(cfg.world_users);
        drawn.sort_unstable();
        let mut rows = vec![u32::MAX; size.users];
        for (row, &u) in drawn.iter().enumerate() {
            rows[u as usize] = row as u32;
        }
        rows
    } else {
        (0..size.users as u32).collect()
    };
    let n_rows = rows.iter().filter(|&&r| r != u32::MAX).count();
    let mut item_counts = vec![(0u32, 0u32); size.items];
    let mut ucp = vec![vec![0.0; m]; n_rows];
    let mut uce = vec![vec![0.0; m]; n_rows];
    let mut seqs: Vec<Vec<u32>> = vec![Vec::new(); n_rows];
    // The stream's users and items lie inside the catalogue, whose size `rows` and
    // `assign` have.
    wander_data::for_each_event(ingest.reader(), |e| {
        if e.split != wander_data::Split::Train {
            return;
        }
        let (row, c, i) = (
            rows[e.user as usize],
            assign[e.item as usize],
            e.item as usize,
        );
        item_counts[i].1 += 1;
        if e.positive {
            item_counts[i].0 += 1;
        }
        if row == u32::MAX {
            return;
        }
        let u = row as usize;
        uce[u][c as usize] += 1.0;
        if e.positive {
            ucp[u][c as usize] += 1.0;
            if seqs[u].last() != Some(&c) {
                seqs[u].push(c);
            }
        }
    })?;
    let pre = open(run, StageId::Precompute)?;
    let table = wander_table::ExplorationTable::read(&pre.path(TABLE)?)?;
    let table: HashMap<(u32, u32), Vec<(u32, f32)>> = table
        .iter()
        .map(|(a, b, r)| ((a, b), r.iter().map(|c| (c.cluster, c.alignment)).collect()))
        .collect();
    let novelty = read_scores(&pre.path(SCORES)?, m)?
        .into_iter()
        .map(|(k, (p, _))| (k, p.into_iter().map(|v| v as f32).collect()))
        .collect();
    let all: Vec<wander_explore::transitions::Transition> =
        open(run, StageId::Transitions)?.json(TRANSITIONS)?;
    let mut transitions: HashMap<(u32, u32), HashMap<u32, u32>> = HashMap::new();
    for t in all.iter().filter(|t| t.split == wander_data::Split::Train) {
        *transitions
            .entry((t.c1, t.c2))
            .or_default()
            .entry(t.next)
            .or_default() += 1;
    }
    let sampled_from = (n_rows < size.users).then_some(size.users);
    let world = World::new(
        WorldInput {
            item_cluster: assign,
            item_counts,
            user_cluster_positives: ucp,
            user_cluster_engagements: uce,
            user_sequences: seqs,
            table,
            baseline_table: baseline_table(run, baseline)?,
            novelty,
            transitions,
            pair_feedback: if cfg.satisfaction == SimSatisfaction::Collective {
                pair_feedback(run, cfg.labels_period)?
            } else {
                HashMap::new()
            },
        },
        cfg.rank,
    )?;
    Ok((world, sampled_from))
}

/// What decides a click's positive outcome, in the report's words.
fn satisfaction_text(c: &wander_core::config::SimulateConfig) -> String {
    match c.satisfaction {
        SimSatisfaction::Affinity => "the user's affinity for the cluster".into(),
        SimSatisfaction::Rate => "the user's training positive rate in the cluster, shrunk towards the cluster's".into(),
        SimSatisfaction::Collective => format!("the user's training positive rate in the cluster, shrunk towards the cluster's, shifted by how the user's last two interests change the cluster's collective positive share in the {} period's feedback labels", c.labels_period),
    }
}

/// The configuration `wander simulate` (`aa`: with `--aa`) depends on.
pub(crate) fn simulate_slice(ctx: &StageContext, aa: bool) -> Value {
    let mut slice = json!({"simulate": ctx.config.simulate, "aa": aa, "seed": ctx.config.run.seed});
    if ctx.config.simulate.baseline_run.is_empty() {
        // Absent unless set, so that runs made before the key existed stay fresh.
        if let Some(sim) = slice["simulate"].as_object_mut() {
            sim.remove("baseline_run");
        }
    }
    if let Some(sim) = slice["simulate"].as_object_mut() {
        if ctx.config.simulate.world_users == 0 {
            // Every user, as before the cap existed.
            sim.remove("world_users");
        }
        if ctx.config.simulate.satisfaction == SimSatisfaction::Affinity {
            // Likewise for the choice model every run had before `satisfaction` existed.
            sim.remove("satisfaction");
        }
        if ctx.config.simulate.satisfaction != SimSatisfaction::Collective {
            // Only the collective choice model reads labels.
            sim.remove("labels_period");
        }
    }
    slice
}

/// `wander simulate [--aa]`.
pub fn simulate_stage(ctx: &StageContext, force: bool, aa: bool) -> crate::Result<Summary> {
    let c = &ctx.config.simulate;
    let run = RunDir::open(&ctx.config.run.dir)?;
    let inputs = simulate_inputs(ctx, &run)?;
    let arms: Vec<Strategy> = if aa {
        vec![c.arms[0]; 2]
    } else {
        c.arms.clone()
    };
    let names: Vec<String> = if aa {
        vec![format!("{}_a", c.arms[0]), format!("{}_b", c.arms[0])]
    } else {
        c.arms.iter().map(Strategy::to_string).collect()
    };
    let seed = ctx.config.run.seed;
    let id = if aa {
        StageId::SimulateAa
    } else {
        StageId::Simulate
    };
    let stage = id.folder();
    let slice = simulate_slice(ctx, aa);
    let stage_dir = run.stage_dir(stage);
    let outcome = run.run_stage(stage, slice, inputs, force, |w| -> crate::Result<Value> {
        let baseline = if arms.contains(&Strategy::BaselineTable) { c.baseline_run.as_str() } else { "" };
        let (world, sampled_from) = world(&run, c, baseline, ctx.config.run.seed)?;
        let sampled_note = match sampled_from {
            Some(all) => format!("; {} of the {all} real users, a seeded draw (`simulate.world_users`)", c.world_users),
            None => String::new(),
        };
        let bar = wander_core::progress::bar(c.seeds as u64, "simulate", "seeds");
        let t0 = std::time::Instant::now();
        let mut runs = Vec::new();
        for s in 0..c.seeds {
            runs.push(simulate(&world, c, &arms, seed.wrapping_add(s as u64))?);
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = t0.elapsed().as_secs_f64();
        let mut effects = std::collections::BTreeMap::new();
        let mut md = format!(
            "# Closed-loop simulation\n\nProtocol: {} simulated users over {} days, {} items per session (the first from the exploration strategy, {}; the rest from the user's known interests), {} seeds; users split into arms by a hash of the user id; every {} days the log-trained strategies are refitted on the real plus simulated logs, the same for every arm (co-occurrence counts, cluster popularity){}. Affinities: rank-{} fit of the real user x cluster engagement (training period{}) plus N(0, {}) noise; item quality: smoothed training positive rate; a click's positive outcome: {}. Effects: relative difference of the per-day mean against the control arm `{}`, mean over seeds with a 95% t-interval. {:.1} s in total.\n\n| arm | {} |\n|---|{}\n",
            c.users, c.days, c.slots, match c.exploration { wander_core::config::SimExploration::OutsidePair => "a cluster outside the user's last two interests", wander_core::config::SimExploration::NewToUser => "a cluster new to the user" }, c.seeds, c.refresh_days, if c.refresh_table { ", and every ranked strategy (popular, co-occurrence, the table) re-ranks its top candidates by the exploration feedback observed so far, shrunk towards the pooled rate" } else { "" }, c.rank, sampled_note, c.noise, satisfaction_text(c), names[0], seconds,
            FIGURES.iter().map(|f| f.0).collect::<Vec<_>>().join(" | "), "---|".repeat(FIGURES.len())
        );
        for (a, name) in names.iter().enumerate().skip(1) {
            let mut row = Vec::new();
            let mut e_arm = std::collections::BTreeMap::new();
            for (fname, f) in FIGURES {
                let e = effect(&runs, 0, a, f);
                row.push(format!("{:+.2}% [{:+.2}, {:+.2}]{}", e.relative_pct, e.lo, e.hi, if e.significant { " *" } else { "" }));
                e_arm.insert(fname.to_string(), e);
            }
            md.push_str(&format!("| {name} vs {} | {} |\n", names[0], row.join(" | ")));
            effects.insert(name.clone(), e_arm);
        }
        // Seed-averaged daily series per arm.
        let mut series = serde_json::Map::new();
        for (a, name) in names.iter().enumerate() {
            let mut per = serde_json::Map::new();
            for (fname, f) in FIGURES {
                let v: Vec<f64> = (0..c.days).map(|d| runs.iter().map(|r| f(&r[a][d])).sum::<f64>() / runs.len() as f64).collect();
                per.insert(fname.into(), json!(v));
            }
            let fallback: Vec<f64> = (0..c.days).map(|d| runs.iter().map(|r| r[a][d].exploration_fallback_share).sum::<f64>() / runs.len() as f64).collect();
            per.insert("exploration_fallback_share".into(), json!(fallback));
            series.insert(name.clone(), Value::Object(per));
        }
        let panel = |title: &str, key: &str| wander_explore::plot::Panel {
            title: title.into(),
            x_label: "day".into(),
            log2_x: false,
            series: names.iter().map(|n| (n.clone(), series[n][key].as_array().map(|v| v.iter().enumerate().map(|(d, y)| { let y = y.as_f64().unwrap_or(f64::NAN); (d as f64 + 1.0, y, f64::NAN, f64::NAN) }).collect()).unwrap_or_default())).collect(),
            reference: None,
        };
        let svg = wander_explore::plot::panels(&[panel("positive-engagement rate", "positive_rate"), panel("active users (share)", "active_share"), panel("interests per user", "interests_per_user")]);
        w.write_bytes("daily.svg", svg.as_bytes())?;
        md.push_str("\n`*`: the interval excludes 0. Daily series (seed means) in `daily.json`.\n");
        // Absolute figures of the exploration slot: the fallback share is 0 for a control
        // that never falls back, where a relative effect has no base.
        let mean_of = |a: usize, f: fn(&DayMetrics) -> f64| runs.iter().map(|r| r[a].iter().map(f).sum::<f64>() / r[a].len().max(1) as f64).sum::<f64>() / runs.len().max(1) as f64;
        md.push_str("\nThe exploration slot per arm (means over days and seeds); a strategy with no novel cluster among its candidates falls back to the most popular novel one:\n\n| arm | exploration positive rate | positive rate of exploration clicks | fallback share |\n|---|---|---|---|\n");
        for (a, name) in names.iter().enumerate() {
            md.push_str(&format!("| {name} | {:.4} | {:.4} | {:.4} |\n", mean_of(a, |d| d.exploration_positive_rate), mean_of(a, |d| d.exploration_click_positive_rate), mean_of(a, |d| d.exploration_fallback_share)));
        }
        if !baseline.is_empty() {
            md.push_str(&format!("\n`baseline_table` serves the exploration table of the run `{baseline}` (same taxonomy) on this run's world, refitted and re-ranked like `best_of_n`.\n"));
        }
        md.push_str("\n![daily](daily.svg)\n");
        w.write_bytes("report.md", md.as_bytes())?;
        w.write_json("daily.json", &json!({"arms": names, "series": series, "runs": runs}))?;
        crate::summaries::record(&crate::summaries::SimulateSummary {
            arms: names.clone(),
            users: c.users,
            days: c.days,
            seeds: c.seeds,
            seconds,
            effects,
            report: stage_dir.join("report.md"),
        })
    })
    .context("simulate failed; earlier artifacts in the run directory are unchanged")?;
    Ok(report(id, &outcome))
}
