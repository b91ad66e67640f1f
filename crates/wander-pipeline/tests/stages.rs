//! The stages as a library, on a tiny synthetic log: each stage that needs no LLM and no
//! embedding model runs for real through the `Stage` trait and is checked through its
//! typed artifacts and summary. The taxonomy is built from the log's behavioural embeddings
//! (PPMI + SVD, the taxonomy stage's own second half) and the exploration table is written
//! by hand, since the stages that make them need MiniLM and SmolLM2; the CLI's end-to-end
//! test runs those.

use std::path::Path;

use wander_core::artifact::RunDir;
use wander_core::config::Strategy;
use wander_core::config::{Config, DataFormat, Sources};
use wander_data::synth::{Layout, SynthConfig};
use wander_data::Split;
use wander_pipeline::artifacts::{self, open};
use wander_pipeline::stages;
use wander_pipeline::{Stage, StageContext, StageId};
use wander_table::{Choice, ExplorationTable};

/// The configuration a stage recorded in its manifest is the slice it declares.
fn records_its_slice(ctx: &StageContext, stage: &dyn Stage) {
    let run = RunDir::open(&ctx.config.run.dir).unwrap();
    let manifest = run.read_manifest(stage.id().folder()).unwrap();
    assert_eq!(
        manifest.config,
        stage.config_slice(ctx).unwrap(),
        "{}",
        stage.id()
    );
}

fn tiny_world(root: &Path) -> StageContext {
    wander_data::synth::generate(
        &SynthConfig {
            users: 150,
            items: 80,
            clusters: 4,
            interactions: 6000,
            item_skew: 0.8,
            user_skew: 0.5,
            focus: 0.8,
            seed: 11,
            layout: Layout::Generic,
        },
        &root.join("data"),
    )
    .unwrap();
    // The per-cluster head's baseline (configs/head.toml): the cheapest alignment model,
    // for the plumbing these tests check; the candidate reader, the default, has its own
    // tests below that set it up as the default does.
    let mut cfg = Config::load(&Sources {
        profile: Some("head".into()),
        ..Sources::default()
    })
    .unwrap();
    cfg.run.dir = root.join("run");
    cfg.data.format = DataFormat::Generic;
    cfg.data.path = root.join("data").display().to_string();
    cfg.data.interactions = "interactions.parquet".into();
    cfg.data.items = "items.parquet".into();
    cfg.taxonomy.coarse_clusters = 2;
    cfg.taxonomy.fine_clusters = 6;
    cfg.taxonomy.behaviour_dim = 8;
    cfg.feedback.min_users = 2;
    cfg.items.dim = 16;
    cfg.items.heads = 2;
    cfg.items.layers = 1;
    cfg.items.max_len = 20;
    cfg.items.max_epochs = 2;
    cfg.items.batch_size = 64;
    cfg.precompute.n = 4;
    cfg.precompute.scaling_n = vec![1, 4];
    cfg.precompute.scaling_draws = 10;
    cfg.precompute.bootstrap_rounds = 50;
    cfg.simulate.users = 60;
    cfg.simulate.days = 3;
    cfg.simulate.seeds = 2;
    cfg.validate().unwrap();
    StageContext::new(cfg)
}

/// The taxonomy stage's clustering on the log's behavioural embeddings, committed as the
/// `taxonomy` folder.
fn behavioural_taxonomy(ctx: &StageContext) {
    let run = RunDir::open(&ctx.config.run.dir).unwrap();
    let ds = wander_data::read_dataset(open(&run, StageId::Ingest).unwrap().reader()).unwrap();
    let cfg = &ctx.config.taxonomy;
    let ppmi = wander_taxonomy::behaviour::ppmi(&ds, cfg.window);
    let vectors = wander_taxonomy::behaviour::embeddings(&ppmi, cfg.behaviour_dim, 5);
    let tax = wander_taxonomy::build(&ds, &vectors, cfg, 5).unwrap();
    let w = run.begin(StageId::Taxonomy.folder()).unwrap();
    wander_taxonomy::write(&w, &tax, &ds).unwrap();
    // Its report, with the behavioural vectors standing in for the text embeddings.
    let (_, markdown) = wander_taxonomy::report(
        &ds,
        &wander_taxonomy::train_interactions(&ds),
        &tax,
        &vectors,
        &vectors,
        5,
    );
    artifacts::report_md(StageId::Taxonomy)
        .write(&w, markdown.as_bytes())
        .unwrap();
    w.commit(
        serde_json::json!({"behaviour_only": true}),
        Default::default(),
        serde_json::json!({}),
    )
    .unwrap();
}

/// A hand-written `precompute` folder: every pair's table row (its first two other
/// clusters), and `scores.parquet` with a proposal distribution over the other clusters
/// (more mass on higher ids) and alignment scores, as the LLM stages would write them.
fn table_by_hand(ctx: &StageContext, n_clusters: u32) {
    let run = RunDir::open(&ctx.config.run.dir).unwrap();
    let mut table = ExplorationTable::new(n_clusters, 2);
    for c1 in 0..n_clusters {
        for c2 in (0..n_clusters).filter(|&c| c != c1) {
            let choices = (0..n_clusters)
                .filter(|c| *c != c1 && *c != c2)
                .take(2)
                .map(|cluster| Choice {
                    cluster,
                    alignment: 0.5 + cluster as f32 / 100.0,
                    novelty_prob: 0.5,
                    frequency: 1,
                })
                .collect();
            table.set(c1, c2, choices).unwrap();
        }
    }
    let (mut c1s, mut c2s, mut cls, mut nov, mut al) = (vec![], vec![], vec![], vec![], vec![]);
    for c1 in 0..n_clusters {
        for c2 in (0..n_clusters).filter(|&c| c != c1) {
            let others: Vec<u32> = (0..n_clusters).filter(|c| *c != c1 && *c != c2).collect();
            let mass: u32 = others.iter().map(|c| c + 1).sum();
            for &c in &others {
                c1s.push(c1);
                c2s.push(c2);
                cls.push(c);
                nov.push((c + 1) as f32 / mass as f32);
                al.push(((c * 7 + c1 * 3 + c2) % 10) as f32 / 10.0);
            }
        }
    }
    let w = run.begin(StageId::Precompute.folder()).unwrap();
    artifacts::TABLE.write(&w, &table.to_bytes()).unwrap();
    stages::precompute::write_scores(
        &artifacts::SCORES.path_in(&w).unwrap(),
        c1s,
        c2s,
        cls,
        nov,
        al,
    )
    .unwrap();
    let summary = wander_pipeline::summaries::PrecomputeSummary {
        pairs: table.pairs(),
        clusters: n_clusters as usize,
        mode: ctx.config.precompute.mode,
        n: ctx.config.precompute.n,
        temperature: ctx.config.precompute.temperature,
        top_k: 2,
        fallbacks: 0,
        compute_seconds: 0.0,
        alignment_seconds: None,
        pairs_per_s: 0.0,
        model_checksums: Default::default(),
        table: artifacts::TABLE.file().into(),
        normalize: None,
        valid_share_mean: None,
        prior_weight: None,
        score: None,
        scored_per_pair: None,
        server: None,
        reuse: None,
    };
    w.commit(
        serde_json::json!({"by_hand": true}),
        Default::default(),
        serde_json::to_value(summary).unwrap(),
    )
    .unwrap();
}

#[test]
fn log_stages_item_policy_and_serving_bundle_on_a_tiny_log() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tiny_world(tmp.path());

    let ingest = stages::Ingest.run(&ctx, false).unwrap();
    assert_eq!(ingest.id(), StageId::Ingest);
    assert_eq!(ingest.fields()["interactions"], 6000, "{ingest}");
    assert_eq!(ingest.fields()["skipped_rows"], 0);
    assert!(
        stages::Ingest.run(&ctx, false).unwrap().skipped(),
        "unchanged: skipped"
    );

    behavioural_taxonomy(&ctx);
    let run = RunDir::open(&ctx.config.run.dir).unwrap();
    let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy).unwrap().reader()).unwrap();
    let n_clusters = tax.planner_clusters().len() as u32;
    assert!(n_clusters >= 2);

    // Transitions: every mined transition goes to a cluster outside its history pair, and
    // the summary counts what the artifact holds.
    let tr = stages::Transitions.run(&ctx, false).unwrap();
    assert!(tr.to_string().starts_with("transitions: train "), "{tr}");
    let transitions = open(&run, StageId::Transitions)
        .unwrap()
        .json(artifacts::TRANSITIONS)
        .unwrap();
    assert!(!transitions.is_empty());
    assert!(transitions
        .iter()
        .all(|t| t.next != t.c1 && t.next != t.c2 && t.c1 != t.c2 && t.next < n_clusters));
    let train = transitions
        .iter()
        .filter(|t| t.split == Split::Train)
        .count();
    assert_eq!(tr.fields()["train"]["transitions"], train as u64, "{tr}");

    // Feedback: labels in [0, 1] for candidates outside the pair, per period.
    let fb = stages::Feedback.run(&ctx, false).unwrap();
    let feedback = open(&run, StageId::Feedback).unwrap();
    for split in [Split::Train, Split::Valid, Split::Test] {
        let labels = feedback.json(artifacts::labels(split)).unwrap();
        assert!(labels
            .iter()
            .all(|l| (0.0..=1.0).contains(&l.label) && l.next != l.c1 && l.next != l.c2));
    }
    let train_labels = feedback.json(artifacts::LABELS_TRAIN).unwrap();
    assert_eq!(
        fb.fields()["train"]["labels"],
        train_labels.len() as u64,
        "{fb}"
    );
    // A file of another stage is not read from this one.
    assert!(feedback.json(artifacts::TRANSITIONS).is_err());

    // The item policy trains and is evaluated against popularity.
    let ti = stages::TrainItems.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::TrainItemsSummary =
        wander_pipeline::summaries::read(StageId::TrainItems, ti.fields()).unwrap();
    assert_eq!(typed.epochs, 2);
    assert_eq!(ti.fields()["epochs"], 2, "{ti}");
    let ei = stages::EvalItems.run(&ctx, false).unwrap();
    assert_eq!(ei.fields()["retrieval"]["violations"], 0, "{ei}");
    let ndcg = ei.fields()["methods"]["sasrec"]["ndcg_at_10"]["mean"]
        .as_f64()
        .unwrap();
    assert!((0.0..=1.0).contains(&ndcg));
    assert!(ei.fields().get("sampled_from").is_none(), "{ei}");
    // A sample of the test users, said so in the summary and the report.
    let mut sampled = ctx.clone();
    sampled.config.items.eval_users = 40;
    let es = stages::EvalItems.run(&sampled, false).unwrap();
    let all_users = ei.fields()["users"].as_u64().unwrap();
    assert!(all_users > 40, "{ei}");
    assert_eq!(es.fields()["users"], 40, "{es}");
    assert_eq!(es.fields()["sampled_from"], all_users, "{es}");
    let md = std::fs::read_to_string(ctx.config.run.dir.join("eval_items/report.md")).unwrap();
    assert!(
        md.contains(&format!("40 test users, a seeded sample of {all_users}")),
        "{md}"
    );
    records_its_slice(&sampled, &stages::EvalItems);
    // Capped epochs and a validation sample, said so in the summary.
    sampled.config.items.users_per_epoch = 30;
    sampled.config.items.valid_users = 20;
    let capped = stages::TrainItems.run(&sampled, false).unwrap();
    let typed: wander_pipeline::summaries::TrainItemsSummary =
        wander_pipeline::summaries::read(StageId::TrainItems, capped.fields()).unwrap();
    assert_eq!(
        (typed.users_per_epoch, typed.valid_users),
        (Some(30), Some(20)),
        "{capped}"
    );
    assert!(
        capped.to_string().contains("on 20 sampled users"),
        "{capped}"
    );
    records_its_slice(&sampled, &stages::TrainItems);
    let uncapped = stages::TrainItems.run(&ctx, false).unwrap();
    assert!(uncapped.fields().get("valid_users").is_none(), "{uncapped}");
    stages::EvalItems.run(&ctx, false).unwrap();

    // The serving bundle, read by the service's own loader, answers a request from the table.
    table_by_hand(&ctx, n_clusters);
    let b = stages::Bundle.run(&ctx, false).unwrap();
    for summary in [&ingest, &tr, &fb, &ti, &b] {
        let line = summary.to_string();
        assert!(
            !line.contains("unreadable") && !line.contains("NaN"),
            "{line}"
        );
    }
    assert_eq!(b.fields()["clusters"], n_clusters as u64, "{b}");
    assert_eq!(b.fields()["items"], ingest.fields()["items"]);
    let served =
        wander_serve::artifacts::Artifacts::load(&ctx.config.run.dir, &ctx.config).unwrap();
    assert_eq!(served.n_clusters(), n_clusters as usize);
    let history = served.example_history();
    assert_eq!(history.len(), 2, "two popular clusters give a history pair");
    let request: wander_serve::ExploreRequest =
        serde_json::from_value(serde_json::json!({"history": history, "clusters": 2, "items": 3}))
            .unwrap();
    let limits = wander_serve::Limits {
        max_history: 10,
        max_clusters: 5,
        max_items: 10,
    };
    let answer = served.explore(&request, &limits).unwrap();
    assert!(answer.fallback.is_none(), "{answer:?}");
    assert_eq!(answer.clusters.len(), 2);
    assert_eq!(answer.items.len(), 3);
    let chosen: Vec<u32> = answer.clusters.iter().map(|c| c.id).collect();
    assert!(answer.items.iter().all(|i| chosen.contains(&i.cluster)));
    assert_eq!(
        answer.table_version,
        run.manifest_checksum(StageId::Precompute.folder()).unwrap()
    );

    let ran: [&dyn Stage; 4] = [
        &stages::Ingest,
        &stages::TrainItems,
        &stages::EvalItems,
        &stages::Bundle,
    ];
    for stage in ran {
        records_its_slice(&ctx, stage);
    }
    // Fresh while its inputs are unchanged; a new precompute makes it stale.
    assert!(stages::Bundle.run(&ctx, false).unwrap().skipped());
    table_by_hand(&ctx, n_clusters);
    assert!(!stages::Bundle.run(&ctx, false).unwrap().skipped());
}

/// `engine.log_stages = "engine"`: `wander transitions` and `wander feedback` mine the
/// ingested Parquet on the embedded SQL engine and write the in-memory miners' artifacts,
/// byte for byte, for both signals the engine computes.
#[cfg(feature = "engine")]
#[test]
fn log_stages_on_the_engine_write_the_in_memory_artifacts() {
    use wander_core::config::{FeedbackSignal, LogStages};
    let tmp = tempfile::tempdir().unwrap();
    let mut ctx = tiny_world(tmp.path());
    stages::Ingest.run(&ctx, false).unwrap();
    behavioural_taxonomy(&ctx);
    let run = RunDir::open(&ctx.config.run.dir).unwrap();
    let outputs = |stage: StageId| run.read_manifest(stage.folder()).unwrap().outputs;
    for signal in [FeedbackSignal::Positive, FeedbackSignal::Value] {
        ctx.config.feedback.signal = signal;
        ctx.config.engine.log_stages = LogStages::Memory;
        let memory = [
            stages::Transitions.run(&ctx, true).unwrap(),
            stages::Feedback.run(&ctx, true).unwrap(),
        ];
        let in_memory = [outputs(StageId::Transitions), outputs(StageId::Feedback)];
        assert!(memory.iter().all(|s| s.fields().get("engine").is_none()));
        ctx.config.engine.log_stages = LogStages::Engine;
        // The engine's choice is not in the stages' slices: the same artifacts either way.
        assert!(stages::Transitions.run(&ctx, false).unwrap().skipped());
        let engine = [
            stages::Transitions.run(&ctx, true).unwrap(),
            stages::Feedback.run(&ctx, true).unwrap(),
        ];
        for (summary, before) in engine.iter().zip(&memory) {
            assert_eq!(
                summary.fields()["engine"]["engine"],
                "embedded",
                "{summary}"
            );
            assert_eq!(summary.fields()["engine"]["events"], 6000, "{summary}");
            assert!(
                summary.to_string().contains("mined on embedded"),
                "{summary}"
            );
            let figures = |fields: &serde_json::Value| {
                let mut fields = fields.clone();
                let map = fields.as_object_mut().unwrap();
                map.remove("engine");
                map.remove("wall_seconds");
                fields
            };
            assert_eq!(
                figures(summary.fields()),
                figures(before.fields()),
                "{signal:?}"
            );
        }
        let on_engine = [outputs(StageId::Transitions), outputs(StageId::Feedback)];
        assert_eq!(on_engine, in_memory, "{signal:?}: artifacts differ");
        assert!(memory[1].fields()["train"]["labels"].as_u64().unwrap() > 10);
        // Nothing of the engine's scratch work is left behind.
        assert!(!run.root().join(".work/log_stages/transitions").exists());
        assert!(!run.root().join(".work/log_stages/feedback").exists());
    }
    ctx.config.feedback.signal = FeedbackSignal::Mixed;
    let e = wander_pipeline::chain(&stages::Feedback.run(&ctx, true).unwrap_err());
    assert!(e.contains("mixed") && e.contains("log_stages"), "{e}");
}

/// Without the engine compiled in, asking for it is refused by name, not ignored.
#[cfg(not(feature = "engine"))]
#[test]
fn log_stages_on_the_engine_need_the_engine_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ctx = tiny_world(tmp.path());
    stages::Ingest.run(&ctx, false).unwrap();
    behavioural_taxonomy(&ctx);
    ctx.config.engine.log_stages = wander_core::config::LogStages::Engine;
    for stage in [&stages::Transitions as &dyn Stage, &stages::Feedback] {
        let e = wander_pipeline::chain(&stage.run(&ctx, false).unwrap_err());
        assert!(e.contains("--features engine"), "{e}");
    }
}

#[test]
fn a_stage_whose_input_is_missing_says_which_stage_to_run() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tiny_world(tmp.path());
    stages::Ingest.run(&ctx, false).unwrap();
    let err = stages::Transitions.run(&ctx, false).unwrap_err();
    let msg = wander_pipeline::chain(&err);
    assert!(
        msg.contains("taxonomy") && msg.contains("has not been run"),
        "{msg}"
    );
}

#[test]
fn evaluation_stages_simulator_and_report_on_a_tiny_log() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tiny_world(tmp.path());
    stages::Ingest.run(&ctx, false).unwrap();
    behavioural_taxonomy(&ctx);
    let run = RunDir::open(&ctx.config.run.dir).unwrap();
    let tax = wander_taxonomy::read(open(&run, StageId::Taxonomy).unwrap().reader()).unwrap();
    let n_clusters = tax.planner_clusters().len() as u32;
    stages::Transitions.run(&ctx, false).unwrap();
    stages::Feedback.run(&ctx, false).unwrap();
    table_by_hand(&ctx, n_clusters);

    // Every strategy under one protocol; the oracle serves the actual next cluster.
    let eval = stages::Eval.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::EvalSummary =
        wander_pipeline::summaries::read(StageId::Eval, eval.fields()).unwrap();
    assert!(typed.events > 0, "{eval}");
    assert_eq!(typed.strategies["oracle"].hit_at_1.mean, 1.0);
    for (name, s) in &typed.strategies {
        assert!((0.0..=1.0).contains(&s.hit_at_1.mean), "{name}");
        assert!(s.hit_at_1.mean <= s.hit_at_k.mean + 1e-12, "{name}");
        // The fixed yardstick is reported for every strategy (NaN only without any triple).
        let raw = s
            .heldout_feedback_raw
            .as_ref()
            .expect("the fixed yardstick");
        assert!(
            raw.mean.is_nan() || (0.0..=1.0).contains(&raw.mean),
            "{name}"
        );
    }

    // best-of-n for n in {1, 4}: n = 1 of the table's scores is the novelty distribution.
    let scaling = stages::EvalScaling.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::EvalScalingSummary =
        wander_pipeline::summaries::read(StageId::EvalScaling, scaling.fields()).unwrap();
    for name in [
        "best_of_1",
        "best_of_4",
        "novelty_only_1",
        "novelty_only_4",
        "cooccurrence",
        // The largest n ranked with the candidate's global rate partly or wholly taken out.
        "best_of_4_prior_weight_0.5",
        "best_of_4_prior_weight_0",
    ] {
        assert!(typed.strategies.contains_key(name), "{name}: {scaling}");
        let h = typed.strategies[name].hit_at_1.mean;
        assert!((0.0..=1.0).contains(&h), "{name}: {h}");
    }
    assert!(typed.claim.hit_at_1_gain.is_finite(), "{scaling}");
    assert!(tmp.path().join("run/eval_scaling/scaling.svg").is_file());
    let md = std::fs::read_to_string(tmp.path().join("run/eval_scaling/report.md")).unwrap();
    match &typed.prior_weight_choice {
        Some(c) => {
            assert!(md.contains("chosen on the validation period"), "{md}");
            assert!([1.0, 0.5, 0.25, 0.1, 0.0].contains(&c.weight), "{scaling}");
            assert!(
                c.events > 0 && c.cooccurrence_diversity.is_finite(),
                "{scaling}"
            );
        }
        None => assert!(md.contains("no prior weight was chosen"), "{md}"),
    }

    // The closed loop: the control and two treatment arms, effects for each figure.
    let sim = stages::Simulate::default().run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::SimulateSummary =
        wander_pipeline::summaries::read(StageId::Simulate, sim.fields()).unwrap();
    assert_eq!((typed.users, typed.days, typed.seeds), (60, 3, 2));
    assert_eq!(typed.effects.len(), typed.arms.len() - 1, "{sim}");
    let sim_arms = typed.arms.clone();

    // The report gathers them, with the figures inlined.
    let report = stages::Report.run(&ctx, false).unwrap();
    let ran: [&dyn Stage; 4] = [
        &stages::Eval,
        &stages::EvalScaling,
        &stages::Simulate::default(),
        &stages::Report,
    ];
    for stage in ran {
        records_its_slice(&ctx, stage);
    }
    let html = std::fs::read_to_string(tmp.path().join("run/report/report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("Novelty-relevance frontier"),
        "{report}"
    );
    assert!(!html.contains("missing figure"));
    // The simulator's ordering of the strategies against their held-out feedback.
    let typed: wander_pipeline::summaries::ReportSummary =
        wander_pipeline::summaries::read(StageId::Report, report.fields()).unwrap();
    let cal = typed.calibration.expect("eval and simulate ran");
    let treated = sim_arms.iter().filter(|a| a.as_str() != "none").count();
    assert_eq!(cal.strategies.len(), treated, "{report}");
    assert_eq!(cal.heldout_feedback.len(), treated);
    assert!(cal
        .simulated_exploration_positive_rate
        .iter()
        .all(|r| (0.0..=1.0).contains(r)));
    assert!(
        treated < 2 || (-1.0..=1.0).contains(&cal.kendall_tau),
        "{report}"
    );
    // And the like-for-like rate: positives among the exploration slot's clicks.
    let clicks = cal
        .simulated_exploration_click_positive_rate
        .expect("this simulation has the series");
    assert!(clicks.iter().all(|r| (0.0..=1.0).contains(r)), "{clicks:?}");
    for (click, shown) in clicks.iter().zip(&cal.simulated_exploration_positive_rate) {
        assert!(
            click >= shown,
            "a rate over clicks is at least the rate over impressions"
        );
    }
    assert!(
        treated < 2
            || cal
                .kendall_tau_clicks
                .is_some_and(|t| (-1.0..=1.0).contains(&t)),
        "{report}"
    );
    // The simulator against the validation period wherever the evaluation has that
    // period's figures (the same condition as the validation-to-held-out figure).
    assert_eq!(
        cal.kendall_tau_clicks_valid_labels.is_some(),
        cal.kendall_tau_valid_heldout.is_some(),
        "{report}"
    );
    assert!(cal
        .kendall_tau_clicks_valid_labels
        .is_none_or(|t| treated < 2 || (-1.0..=1.0).contains(&t)));
    assert!(html.contains("Simulator calibration"));
    for summary in [&eval, &scaling, &sim, &report] {
        let line = summary.to_string();
        assert!(!line.contains("unreadable"), "{line}");
    }

    // Another run's table as an arm: here the run's own, so the taxonomy check passes.
    let mut with_baseline = ctx.clone();
    with_baseline.config.simulate.arms = vec![Strategy::BestOfN, Strategy::BaselineTable];
    with_baseline.config.simulate.baseline_run = ctx.config.run.dir.display().to_string();
    with_baseline.config.validate().unwrap();
    let sim = stages::Simulate::default()
        .run(&with_baseline, false)
        .unwrap();
    let typed: wander_pipeline::summaries::SimulateSummary =
        wander_pipeline::summaries::read(StageId::Simulate, sim.fields()).unwrap();
    assert_eq!(typed.arms, ["best_of_n", "baseline_table"], "{sim}");
    assert!(typed.effects["baseline_table"]["positive_rate"]
        .relative_pct
        .is_finite());
    records_its_slice(&with_baseline, &stages::Simulate::default());
    // A baseline that is not a run is refused, naming the key.
    with_baseline.config.simulate.baseline_run = tmp.path().join("nowhere").display().to_string();
    let e = stages::Simulate::default()
        .run(&with_baseline, true)
        .unwrap_err();
    assert!(format!("{e:#}").contains("simulate.baseline_run"), "{e:#}");

    // A world of 50 of the real users: the report says so.
    let mut drawn = ctx.clone();
    drawn.config.simulate.world_users = 50;
    let sim = stages::Simulate::default().run(&drawn, false).unwrap();
    assert!(!sim.to_string().contains("NaN"), "{sim}");
    let md = std::fs::read_to_string(ctx.config.run.dir.join("simulate/report.md")).unwrap();
    assert!(
        md.contains("50 of the ") && md.contains(" real users, a seeded draw"),
        "{md}"
    );
    records_its_slice(&drawn, &stages::Simulate::default());
}

/// A random-weight Llama of SmolLM2's layout with a byte-level tokenizer, written as a real
/// GGUF file, so that the LLM stages run here in seconds and without downloads.
/// The run's exploration table, after checking that every row is non-empty and holds
/// novel clusters only.
fn every_row_novel(run: &RunDir) -> wander_table::ExplorationTable {
    let table = wander_table::ExplorationTable::read(
        &open(run, StageId::Precompute)
            .unwrap()
            .path(artifacts::TABLE)
            .unwrap(),
    )
    .unwrap();
    for (c1, c2, row) in table.iter() {
        assert!(!row.is_empty() && row.iter().all(|c| c.cluster != c1 && c.cluster != c2));
    }
    table
}

fn tiny_llm(ctx: &mut StageContext, root: &Path) {
    let path = root.join("tiny-llama.gguf");
    let cfg = wander_llm::gguf::LlamaConfig {
        n_layer: 2,
        n_head: 4,
        n_kv_head: 2,
        hidden: 32,
        ffn: 64,
        vocab: 0,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        max_seq: 2048,
    };
    wander_llm::gguf::write_tiny_model(&path, &cfg, 3).unwrap();
    let c = &mut ctx.config;
    c.llm.model = path.display().to_string();
    c.novelty.examples = 16;
    c.novelty.eval_examples = 4;
    c.novelty.steps = 2;
    c.novelty.batch_size = 4;
    c.novelty.warmup_steps = 1;
    c.novelty.eval_every = 1;
    c.novelty.checkpoint_every = 1;
    c.novelty.eval_events = 8;
    c.novelty.eval_samples = 1;
    c.novelty.bootstrap_rounds = 50;
    c.alignment.steps = 2;
    c.alignment.batch_size = 4;
    c.alignment.warmup_steps = 1;
    c.alignment.eval_every = 1;
    c.alignment.eval_prompts = 8;
    c.alignment.bootstrap_rounds = 50;
    c.precompute.chunk_pairs = 8;
    c.validate().unwrap();
}

/// The tiny world with the tiny model, its log stages run up to the transitions: where
/// every LLM stage test that keeps the default label settings starts.
/// The default's alignment model (the candidate reader, scoring only the proposals) at the
/// tiny world's scale: two proposals per pair.
fn the_reader_scoring_two_proposals(ctx: &mut StageContext) {
    use wander_core::config::{AlignmentArch, ScoreSet};
    ctx.config.alignment.arch = AlignmentArch::Candidate;
    ctx.config.precompute.score = ScoreSet::Proposals;
    ctx.config.precompute.n = 2;
    ctx.config.precompute.scaling_n = vec![1, 2];
}

fn tiny_llm_world_with_transitions(root: &Path) -> StageContext {
    let mut ctx = tiny_world(root);
    tiny_llm(&mut ctx, root);
    stages::Ingest.run(&ctx, false).unwrap();
    behavioural_taxonomy(&ctx);
    stages::Transitions.run(&ctx, false).unwrap();
    ctx
}

#[test]
fn llm_stages_on_a_tiny_model_and_log() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tiny_llm_world_with_transitions(tmp.path());
    stages::Feedback.run(&ctx, false).unwrap();
    let run = RunDir::open(&ctx.config.run.dir).unwrap();
    let n_clusters = wander_taxonomy::read(open(&run, StageId::Taxonomy).unwrap().reader())
        .unwrap()
        .planner_clusters()
        .len();

    let tn = stages::TrainNovelty.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::TrainNoveltySummary =
        wander_pipeline::summaries::read(StageId::TrainNovelty, tn.fields()).unwrap();
    assert_eq!(typed.steps, 2, "{tn}");
    assert!(typed.final_loss.is_some_and(f64::is_finite));
    assert!(open(&run, StageId::TrainNovelty)
        .unwrap()
        .path(artifacts::NOVELTY_ADAPTER)
        .unwrap()
        .is_file());
    let en = stages::EvalNovelty.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::EvalNoveltySummary =
        wander_pipeline::summaries::read(StageId::EvalNovelty, en.fields()).unwrap();
    for m in [
        "fine_tuned",
        "zero_shot",
        "cooccurrence",
        "random",
        "popularity",
    ] {
        assert!(typed.methods.contains_key(m), "{m}: {en}");
    }
    // Two constrained samples agree with probability Σ p²: at least 1 / (clusters - 2).
    for m in ["fine_tuned", "zero_shot"] {
        let agree = typed.methods[m]
            .repeat_agreement
            .expect("LLM methods have it")
            .mean;
        assert!(
            agree >= 1.0 / (n_clusters - 2) as f64 - 1e-9 && agree <= 1.0,
            "{m}: {agree}"
        );
    }
    assert!(typed.methods["random"].repeat_agreement.is_none());

    let ta = stages::TrainAlignment.run(&ctx, false).unwrap();
    assert_eq!(ta.fields()["steps"], 2, "{ta}");
    let ea = stages::EvalAlignment.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::EvalAlignmentSummary =
        wander_pipeline::summaries::read(StageId::EvalAlignment, ea.fields()).unwrap();
    assert_eq!(typed.methods.len(), 4, "{ea}");
    // A memorised training label is the global rate where a triple has none; with
    // shrinkage k it lies between the two, so it cannot leave the labels' range.
    let memory = &typed.methods["triple_train_label"];
    assert!(
        memory.mae.mean.is_finite() && memory.mae.mean <= 1.0,
        "{ea}"
    );
    assert!(memory.within_pair_gain.is_some(), "{ea}");
    // The global rate knows nothing about the history: its history-conditional part is 0.
    let relative = |m: &str| typed.methods[m].spearman_relative.unwrap();
    assert_eq!(relative("cluster_global_rate").mean, 0.0);
    assert!(relative("alignment_llm").mean.is_finite());

    // The table: every ordered pair, each row of novel clusters only.
    let pre = stages::Precompute::default().run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::PrecomputeSummary =
        wander_pipeline::summaries::read(StageId::Precompute, pre.fields()).unwrap();
    assert_eq!(typed.pairs, n_clusters * (n_clusters - 1), "{pre}");
    every_row_novel(&run);
    assert!(stages::Precompute::default()
        .run(&ctx, false)
        .unwrap()
        .skipped());
    let ran: [&dyn Stage; 7] = [
        &stages::Transitions,
        &stages::Feedback,
        &stages::TrainNovelty,
        &stages::EvalNovelty,
        &stages::TrainAlignment,
        &stages::EvalAlignment,
        &stages::Precompute::default(),
    ];
    for stage in ran {
        records_its_slice(&ctx, stage);
    }
    for summary in [&tn, &en, &ta, &ea, &pre] {
        let line = summary.to_string();
        assert!(!line.contains("unreadable"), "{line}");
    }

    // The adapters in PEFT's layout: every tensor, q and k rows in Hugging Face's order, the
    // scalar head beside the alignment adapter, the training data as JSONL.
    let ex = stages::Export.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::ExportSummary =
        wander_pipeline::summaries::read(StageId::Export, ex.fields()).unwrap();
    // 2 layers x 4 targets (q, k, v, o) x (A, B)
    assert_eq!(
        (typed.novelty_tensors, typed.alignment_tensors),
        (16, 16),
        "{ex}"
    );
    assert_eq!(typed.alignment_readout, "score_head.safetensors");
    let exported = open(&run, StageId::Export).unwrap();
    for f in [
        "novelty/adapter_config.json",
        "novelty/adapter_model.safetensors",
        "novelty/adapter.gguf",
        "novelty/train.jsonl",
        "alignment/adapter.gguf",
        "alignment/adapter_config.json",
        "alignment/score_head.safetensors",
        "alignment/train.jsonl",
        "README.md",
        "check.json",
    ] {
        assert!(exported.reader().path(f).is_ok(), "{f}");
    }
    // The agreement check: the three models' log-probabilities at the union of their top 8.
    let check: serde_json::Value = serde_json::from_slice(
        &std::fs::read(exported.reader().path("check.json").unwrap()).unwrap(),
    )
    .unwrap();
    let tokens = check["tokens"].as_array().unwrap().len();
    assert!(tokens >= 8, "{check}");
    assert!(!check["prompt_tokens"].as_array().unwrap().is_empty());
    for model in ["base", "novelty", "alignment"] {
        let lp = check[model].as_array().unwrap();
        assert_eq!(lp.len(), tokens, "{model}");
        assert!(
            lp.iter().all(|v| v.as_f64().is_some_and(|v| v <= 0.0)),
            "{model}: {check}"
        );
    }
    assert_ne!(
        check["base"], check["novelty"],
        "the trained adapter changes nothing"
    );
    let peft = candle_core::safetensors::load(
        exported
            .reader()
            .path("novelty/adapter_model.safetensors")
            .unwrap(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let ours = candle_core::safetensors::load(
        open(&run, StageId::TrainNovelty)
            .unwrap()
            .path(artifacts::NOVELTY_ADAPTER)
            .unwrap(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let q_b = &peft["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"];
    let expected = wander_llm::export::gguf_rows_to_hf(&ours["blk.0.q.lora_b"], 4).unwrap();
    assert_eq!(flat(q_b), flat(&expected));
    assert_eq!(
        flat(&peft["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"]),
        flat(&ours["blk.1.v.lora_a"])
    );

    // The same vocabulary given as a tokenizer.json (`llm.tokenizer`): the file is an input
    // of the stage, so it reruns, and the same ids train the same adapter, byte for byte.
    let adapter = |run: &RunDir| {
        std::fs::read(
            open(run, StageId::TrainNovelty)
                .unwrap()
                .path(artifacts::NOVELTY_ADAPTER)
                .unwrap(),
        )
        .unwrap()
    };
    let before = adapter(&run);
    let gguf =
        wander_llm::gguf::GgufFile::open(std::path::Path::new(&ctx.config.llm.model)).unwrap();
    let json = tmp.path().join("tokenizer.json");
    std::fs::write(
        &json,
        wander_llm::tokenizer::Tokenizer::from_gguf(&gguf)
            .unwrap()
            .to_json(),
    )
    .unwrap();
    let mut with_file = ctx.clone();
    with_file.config.llm.tokenizer = json.display().to_string();
    let again = stages::TrainNovelty.run(&with_file, false).unwrap();
    assert!(!again.skipped(), "a new tokenizer input reruns the stage");
    assert_eq!(adapter(&run), before);
    with_file.config.llm.tokenizer = tmp.path().join("missing.json").display().to_string();
    let err = stages::TrainNovelty
        .run(&with_file, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing.json") && err.contains("llm.tokenizer"),
        "{err}"
    );
    // A GPU asked of a build without the `cuda` feature: refused, saying how to build one.
    // The device is how a stage runs, not what it computes, so it is no stage input.
    let mut on_gpu = ctx.clone();
    on_gpu.config.llm.device = "cuda".into();
    if !wander_llm::device::CUDA_BUILT {
        let err = stages::TrainNovelty.run(&on_gpu, true).unwrap_err();
        let err = wander_pipeline::chain(&err);
        assert!(err.contains("--features cuda"), "{err}");
        assert_eq!(adapter(&run), before, "the refused run wrote nothing");
    }
}

/// The candidate-reading alignment model end to end on tiny data: mixed, shrunk labels; the
/// shared-prefix trainer; a table that scores only each pair's proposals and keeps them;
/// the evaluation of best-of-n on subsets of those proposals, and its refusal of an n
/// larger than the proposals kept.
#[test]
fn retrieval_prompts_from_the_fine_tuning_set_to_the_table() {
    use wander_core::config::{NoveltyPrompt, RetrievalSource};
    let tmp = tempfile::tempdir().unwrap();
    let mut ctx = tiny_world(tmp.path());
    tiny_llm(&mut ctx, tmp.path());
    ctx.config.novelty.prompt = NoveltyPrompt::Retrieval;
    ctx.config.novelty.retrieval_k = 2;
    ctx.config.validate().unwrap();
    stages::Ingest.run(&ctx, false).unwrap();
    behavioural_taxonomy(&ctx);
    stages::Transitions.run(&ctx, false).unwrap();
    records_its_slice(&ctx, &stages::Transitions);
    stages::Feedback.run(&ctx, false).unwrap();
    let run = RunDir::open(&ctx.config.run.dir).unwrap();
    // The chat export is written in the retrieval shape: every pair of the fine-tuning set
    // was seen in training, so every line names its frequent next clusters.
    let chat = std::fs::read_to_string(run.root().join("transitions/sft_train.jsonl")).unwrap();
    assert!(chat.lines().count() > 0);
    assert!(chat.lines().all(|l| l.contains("Often next: ")), "{chat}");
    stages::TrainNovelty.run(&ctx, false).unwrap();
    records_its_slice(&ctx, &stages::TrainNovelty);
    let manifest = open(&run, StageId::TrainNovelty)
        .unwrap()
        .manifest()
        .clone();
    assert_eq!(manifest.config["prompt"]["k"], 2, "{}", manifest.config);
    let en = stages::EvalNovelty.run(&ctx, false).unwrap();
    assert!(
        en.fields()["methods"]["fine_tuned_recent_retrieval"]["hit_at_5"]["mean"].is_number(),
        "{en}"
    );
    stages::TrainAlignment.run(&ctx, false).unwrap();
    stages::Precompute::default().run(&ctx, false).unwrap();
    let stale = every_row_novel(&run);
    for (_, _, row) in stale.iter() {
        assert!(row.iter().all(|c| c.alignment.is_finite()));
    }
    // F1's refresh inside the run's own periods: the same models, the prompts naming the
    // validation period's next clusters first. The manifest says where the names came from,
    // and the proposal probabilities move where the named clusters changed.
    ctx.config.precompute.retrieve_from = RetrievalSource::Validation;
    stages::Precompute::default().run(&ctx, false).unwrap();
    let slice = open(&run, StageId::Precompute)
        .unwrap()
        .manifest()
        .config
        .clone();
    assert_eq!(
        slice["precompute"]["retrieve_from"], "validation",
        "{slice}"
    );
    let refreshed = every_row_novel(&run);
    let moved = stale
        .iter()
        .zip(refreshed.iter())
        .filter(|((_, _, a), (_, _, b))| {
            a.iter()
                .map(|c| c.novelty_prob)
                .ne(b.iter().map(|c| c.novelty_prob))
        })
        .count();
    assert!(
        moved > 0,
        "no pair's proposals moved with the validation period's successors"
    );
    // A table that retrieves from a refresh needs one.
    ctx.config.precompute.retrieve_from = RetrievalSource::Refresh;
    let e = stages::Precompute::default()
        .run(&ctx, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wander refresh"), "{e}");
}

/// F1's refresh several times a week reruns the table with prompts naming recent next
/// clusters: the run's store (`precompute.reuse`) gives back what the same models computed
/// for the same prompts, so a rerun computes nothing again and a refresh only the pairs
/// whose prompt changed and the candidates never scored, and the table is the one a run
/// without the store writes.
#[test]
fn a_refreshed_table_reuses_the_models_work_and_equals_a_full_rerun() {
    use wander_core::config::{NoveltyPrompt, RetrievalSource};
    let tmp = tempfile::tempdir().unwrap();
    let mut ctx = tiny_world(tmp.path());
    tiny_llm(&mut ctx, tmp.path());
    ctx.config.novelty.prompt = NoveltyPrompt::Retrieval;
    ctx.config.novelty.retrieval_k = 2;
    the_reader_scoring_two_proposals(&mut ctx);
    ctx.config.precompute.draws = 4;
    ctx.config.validate().unwrap();
    stages::Ingest.run(&ctx, false).unwrap();
    behavioural_taxonomy(&ctx);
    stages::Transitions.run(&ctx, false).unwrap();
    stages::Feedback.run(&ctx, false).unwrap();
    stages::TrainNovelty.run(&ctx, false).unwrap();
    stages::TrainAlignment.run(&ctx, false).unwrap();
    let run = RunDir::open(&ctx.config.run.dir).unwrap();
    let precompute = |ctx: &StageContext, force: bool| {
        let s = stages::Precompute::default().run(ctx, force).unwrap();
        let typed: wander_pipeline::summaries::PrecomputeSummary =
            wander_pipeline::summaries::read(StageId::Precompute, s.fields()).unwrap();
        let files: Vec<Vec<u8>> = [artifacts::TABLE.file(), artifacts::SCORES.file()]
            .iter()
            .map(|f| std::fs::read(run.root().join("precompute").join(f)).unwrap())
            .collect();
        (typed, files)
    };
    let (first, stale) = precompute(&ctx, false);
    let r = first.reuse.unwrap();
    assert_eq!((r.novelty_reused, r.novelty_computed), (0, first.pairs));
    assert_eq!(r.alignment_reused, 0);
    assert!(r.alignment_computed > 0);
    // Forced again: everything from the store, the same bytes.
    let (again, files) = precompute(&ctx, true);
    let r = again.reuse.unwrap();
    assert_eq!((r.novelty_reused, r.novelty_computed), (again.pairs, 0));
    assert_eq!(
        (r.alignment_reused, r.alignment_computed),
        (first.reuse.unwrap().alignment_computed, 0)
    );
    assert!(files == stale, "a rerun from the store changed the table");
    // The refresh: prompts name the validation period's next clusters first. Pairs whose
    // prompt moved go to the novelty model again; candidates scored before are not scored
    // again (the alignment prompt holds no retrieval).
    ctx.config.precompute.retrieve_from = RetrievalSource::Validation;
    let (refreshed, files) = precompute(&ctx, false);
    let r = refreshed.reuse.unwrap();
    assert_eq!(r.novelty_reused + r.novelty_computed, refreshed.pairs);
    assert!(r.novelty_computed > 0, "{r:?}");
    assert!(r.alignment_reused > 0, "{r:?}");
    assert!(files != stale, "the refresh changed nothing");
    // Without the store, from scratch: the same table and scores, byte for byte.
    ctx.config.precompute.reuse = false;
    let (scratch, scratch_files) = precompute(&ctx, true);
    let r = scratch.reuse.unwrap();
    assert_eq!((r.novelty_reused, r.alignment_reused), (0, 0));
    assert!(
        files == scratch_files,
        "the table reusing the store is not the table computed from scratch"
    );
}

/// The run as it is now, copied into `<dir>/parent`: the parent of a warm start.
fn copy_as_parent(ctx: &StageContext, dir: &Path) -> std::path::PathBuf {
    let parent = dir.join("parent");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&ctx.config.run.dir)
        .arg(&parent)
        .status()
        .unwrap();
    assert!(status.success());
    parent
}

/// F1's monthly refresh continues from the deployed model: `novelty.warm_start` loads a
/// parent run's adapter before the first step (a fresh adapter's first loss is the base
/// model's; a warm one's is not), records it, and refuses a parent of another shape.
#[test]
fn novelty_fine_tuning_warm_starts_from_a_parent_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ctx = tiny_llm_world_with_transitions(tmp.path());
    stages::TrainNovelty.run(&ctx, false).unwrap();
    let parent = copy_as_parent(&ctx, tmp.path());
    // One step at a negligible rate: the first loss shows where the adapter started.
    ctx.config.novelty.steps = 1;
    ctx.config.novelty.warmup_steps = 0;
    ctx.config.novelty.lr = 1e-9;
    let first_loss = |ctx: &StageContext| {
        let s = stages::TrainNovelty.run(ctx, true).unwrap();
        let typed: wander_pipeline::summaries::TrainNoveltySummary =
            wander_pipeline::summaries::read(StageId::TrainNovelty, s.fields()).unwrap();
        (typed.first_loss.unwrap(), typed.warm_start)
    };
    let (fresh, none) = first_loss(&ctx);
    assert!(none.is_none());
    ctx.config.novelty.warm_start = parent.display().to_string();
    let (warm, from) = first_loss(&ctx);
    assert!(fresh.is_finite() && warm.is_finite());
    assert!(
        (warm - fresh).abs() > 1e-6,
        "a warm start begins where the parent ended, not at the base model: {warm} vs {fresh}"
    );
    assert!(from.is_some_and(|p| p.starts_with(&parent)));
    // The parent's checksum is an input: the same setting again is fresh.
    assert!(
        stages::TrainNovelty.run(&ctx, false).unwrap().fields()["skipped"]
            .as_bool()
            .unwrap()
    );
    // Another LoRA shape, or no such run, is refused with the key and the reason.
    ctx.config.llm.lora.rank *= 2;
    let e = stages::TrainNovelty
        .run(&ctx, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("novelty.warm_start") && e.contains("[llm.lora]"),
        "{e}"
    );
    ctx.config.llm.lora.rank /= 2;
    ctx.config.novelty.warm_start = tmp.path().join("nowhere").display().to_string();
    let e = stages::TrainNovelty
        .run(&ctx, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such run directory"), "{e}");
}

/// The alignment model warm-starts like the novelty model (`alignment.warm_start`): the
/// parent's adapter and its scalar head (bias included) are where training begins; the
/// parent is recorded and is an input; a parent of another architecture is refused.
#[test]
fn alignment_training_warm_starts_from_a_parent_run() {
    use wander_core::config::AlignmentArch;
    let tmp = tempfile::tempdir().unwrap();
    let mut ctx = tiny_llm_world_with_transitions(tmp.path());
    the_reader_scoring_two_proposals(&mut ctx);
    stages::Feedback.run(&ctx, false).unwrap();
    stages::TrainAlignment.run(&ctx, false).unwrap();
    let parent = copy_as_parent(&ctx, tmp.path());
    let head = |root: &Path| {
        let run = RunDir::open(root).unwrap();
        let h = wander_llm::model::ScoreHead::load(
            &open(&run, StageId::TrainAlignment)
                .unwrap()
                .path(artifacts::ALIGNMENT_HEAD)
                .unwrap(),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let mut v: Vec<f32> = h.w.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        v.extend(h.b.as_tensor().to_vec1::<f32>().unwrap());
        v
    };
    let parents_head = head(&parent);
    // One step at a negligible rate: the first loss and the saved head show the start.
    ctx.config.alignment.steps = 1;
    ctx.config.alignment.warmup_steps = 0;
    ctx.config.alignment.lr = 1e-9;
    ctx.config.alignment.head_lr = 1e-9;
    let first_loss = |ctx: &StageContext| {
        let s = stages::TrainAlignment.run(ctx, true).unwrap();
        let typed: wander_pipeline::summaries::TrainAlignmentSummary =
            wander_pipeline::summaries::read(StageId::TrainAlignment, s.fields()).unwrap();
        (typed.first_loss.unwrap(), typed.warm_start)
    };
    let (fresh, none) = first_loss(&ctx);
    assert!(none.is_none());
    let gap = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    assert!(
        gap(&head(&ctx.config.run.dir), &parents_head) > 1e-3,
        "a fresh head starts at zero weights, not at the parent's"
    );
    ctx.config.alignment.warm_start = parent.display().to_string();
    let (warm, from) = first_loss(&ctx);
    assert!(fresh.is_finite() && warm.is_finite());
    assert!(
        (warm - fresh).abs() > 1e-6,
        "a warm start begins where the parent ended: {warm} vs {fresh}"
    );
    assert!(from.is_some_and(|p| p.starts_with(&parent)));
    assert!(
        gap(&head(&ctx.config.run.dir), &parents_head) < 1e-5,
        "the warm head is the parent's after one negligible step"
    );
    assert!(
        stages::TrainAlignment.run(&ctx, false).unwrap().fields()["skipped"]
            .as_bool()
            .unwrap(),
        "the same parent again is fresh"
    );
    ctx.config.alignment.arch = AlignmentArch::ClusterHead;
    let e = stages::TrainAlignment
        .run(&ctx, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("alignment.warm_start") && e.contains("alignment.arch"),
        "{e}"
    );
}

#[test]
fn candidate_alignment_and_a_proposals_only_table_on_a_tiny_model() {
    use wander_core::config::{AlignmentArch, FeedbackSignal, ScoreSet};
    let tmp = tempfile::tempdir().unwrap();
    let mut ctx = tiny_world(tmp.path());
    tiny_llm(&mut ctx, tmp.path());
    ctx.config.feedback.signal = FeedbackSignal::Mixed;
    ctx.config.feedback.shrinkage = 2.0;
    the_reader_scoring_two_proposals(&mut ctx);
    ctx.config.validate().unwrap();
    stages::Ingest.run(&ctx, false).unwrap();
    behavioural_taxonomy(&ctx);
    stages::Transitions.run(&ctx, false).unwrap();
    let fb = stages::Feedback.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::FeedbackSummary =
        wander_pipeline::summaries::read(StageId::Feedback, fb.fields()).unwrap();
    assert_eq!(
        (typed.value_weight, typed.shrinkage),
        (Some(0.5), Some(2.0))
    );
    assert!(typed.train.labels > 0, "{fb}");
    let run = RunDir::open(&ctx.config.run.dir).unwrap();
    let labels: Vec<wander_explore::feedback::Label> = open(&run, StageId::Feedback)
        .unwrap()
        .json(artifacts::LABELS_TRAIN)
        .unwrap();
    // Mixed labels are in [0, 1]; shrinkage moved some of them off their raw rate.
    assert!(labels.iter().all(|l| (0.0..=1.0).contains(&l.label)));
    assert!(labels.iter().any(|l| (l.label - l.rate).abs() > 1e-3));
    let n_clusters = wander_taxonomy::read(open(&run, StageId::Taxonomy).unwrap().reader())
        .unwrap()
        .planner_clusters()
        .len();

    stages::TrainNovelty.run(&ctx, false).unwrap();
    let ta = stages::TrainAlignment.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::TrainAlignmentSummary =
        wander_pipeline::summaries::read(StageId::TrainAlignment, ta.fields()).unwrap();
    assert_eq!(typed.arch(), AlignmentArch::Candidate);
    // One prompt per label, trained one history pair at a time.
    assert_eq!(typed.prompts, Some(typed.labels), "{ta}");
    assert!(typed.final_loss.is_some_and(f64::is_finite), "{ta}");
    stages::EvalAlignment.run(&ctx, false).unwrap();

    let pre = stages::Precompute::default().run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::PrecomputeSummary =
        wander_pipeline::summaries::read(StageId::Precompute, pre.fields()).unwrap();
    assert_eq!(typed.score, Some(ScoreSet::Proposals));
    let scored = typed.scored_per_pair.unwrap();
    // Two draws give at most two distinct proposals; only a pair whose draws were all its
    // history clusters scores every novel cluster.
    assert!(scored >= 1.0 && scored < (n_clusters - 2) as f64, "{pre}");
    for (_, _, row) in every_row_novel(&run).iter() {
        assert!(row.iter().all(|c| c.alignment.is_finite()));
    }
    records_its_slice(&ctx, &stages::Precompute::default());
    // Every pair keeps its two draws, and every novel one of them has a score.
    let draws = open(&run, StageId::Precompute)
        .unwrap()
        .json(artifacts::DRAWS)
        .unwrap();
    assert_eq!(draws.len(), typed.pairs, "one entry per pair");
    let scores = wander_pipeline::stages::precompute::read_scores(
        &open(&run, StageId::Precompute)
            .unwrap()
            .path(artifacts::SCORES)
            .unwrap(),
        n_clusters,
    )
    .unwrap();
    for d in &draws {
        assert_eq!(d.draws.len(), 2);
        for &c in d.draws.iter().filter(|&&c| c != d.c1 && c != d.c2) {
            assert!(scores[&(d.c1, d.c2)].1[c as usize].is_finite(), "{d:?}");
        }
    }
    // The evaluations of best-of-n take their proposal sets from those draws.
    let sc = stages::EvalScaling.run(&ctx, false).unwrap();
    assert!(
        sc.fields()["strategies"]["best_of_2"]["hit_at_1"]["mean"].is_number(),
        "{sc}"
    );
    let md = std::fs::read_to_string(run.root().join("eval_scaling/report.md")).unwrap();
    assert!(md.contains("kept its 2 draws"), "{md}");
    stages::Eval.run(&ctx, false).unwrap();
    // An n beyond the draws kept is refused with the reason.
    ctx.config.precompute.scaling_n = vec![1, 2, 4];
    let e = stages::EvalScaling.run(&ctx, true).unwrap_err();
    let text = wander_pipeline::chain(&e);
    assert!(
        text.contains("best-of-4") && text.contains("kept 2"),
        "{text}"
    );
    ctx.config.precompute.scaling_n = vec![1, 2];
    // More draws than n: the table still chooses among its first n (or, when those hold
    // nothing novel, among every novel cluster, all of them scored).
    ctx.config.precompute.draws = 8;
    let pre = stages::Precompute::default().run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::PrecomputeSummary =
        wander_pipeline::summaries::read(StageId::Precompute, pre.fields()).unwrap();
    assert!(typed.scored_per_pair.unwrap() > scored, "{pre}");
    for (_, _, row) in every_row_novel(&run).iter() {
        assert!(row.iter().all(|c| c.alignment.is_finite()));
    }
    let draws = open(&run, StageId::Precompute)
        .unwrap()
        .json(artifacts::DRAWS)
        .unwrap();
    assert!(draws.iter().all(|d| d.draws.len() == 8));
    stages::EvalScaling.run(&ctx, true).unwrap();

    // The same model writing its rounded label as text (P2's variant): trained by SFT on
    // the label's level, scored by the levels' expected value, wherever the scalar head was.
    ctx.config.alignment.output = wander_core::config::AlignmentOutput::Text;
    ctx.config.validate().unwrap();
    let ta = stages::TrainAlignment.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::TrainAlignmentSummary =
        wander_pipeline::summaries::read(StageId::TrainAlignment, ta.fields()).unwrap();
    assert_eq!(
        typed.output(),
        wander_core::config::AlignmentOutput::Text,
        "{ta}"
    );
    assert_eq!(typed.head, "levels.json");
    assert!(typed.final_loss.is_some_and(f64::is_finite), "{ta}");
    let levels = open(&run, StageId::TrainAlignment)
        .unwrap()
        .json(artifacts::ALIGNMENT_LEVELS)
        .unwrap();
    assert!(levels.values().len() >= 2);
    assert!(
        levels.texts().iter().all(|t| t.contains('.')),
        "{:?}",
        levels.texts()
    );
    records_its_slice(&ctx, &stages::TrainAlignment);
    let ea = stages::EvalAlignment.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::EvalAlignmentSummary =
        wander_pipeline::summaries::read(StageId::EvalAlignment, ea.fields()).unwrap();
    assert!(typed.methods["alignment_llm"].mae.mean.is_finite(), "{ea}");
    stages::Precompute::default().run(&ctx, false).unwrap();
    for (_, _, row) in every_row_novel(&run).iter() {
        // Expected levels lie within the levels' range.
        let (lo, hi) = (levels.values()[0], *levels.values().last().unwrap());
        assert!(row
            .iter()
            .all(|c| c.alignment >= lo - 1e-4 && c.alignment <= hi + 1e-4));
    }

    // The export carries the text readout's levels beside the alignment adapter.
    let ex = stages::Export.run(&ctx, false).unwrap();
    assert_eq!(ex.fields()["alignment_readout"], "levels.json", "{ex}");
    let exported = open(&run, StageId::Export).unwrap();
    assert!(exported.reader().path("alignment/levels.json").is_ok());

    // The scalar head trained on what the history adds to each candidate's global rate
    // (`alignment.prior = "offset"`): the rates are kept beside the head and added back
    // wherever it scores.
    ctx.config.alignment.output = wander_core::config::AlignmentOutput::Scalar;
    ctx.config.alignment.prior = wander_core::config::AlignmentPrior::Offset;
    ctx.config.validate().unwrap();
    let ta = stages::TrainAlignment.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::TrainAlignmentSummary =
        wander_pipeline::summaries::read(StageId::TrainAlignment, ta.fields()).unwrap();
    assert_eq!(
        typed.prior(),
        wander_core::config::AlignmentPrior::Offset,
        "{ta}"
    );
    records_its_slice(&ctx, &stages::TrainAlignment);
    let offsets = open(&run, StageId::TrainAlignment)
        .unwrap()
        .json(artifacts::ALIGNMENT_OFFSETS)
        .unwrap();
    assert_eq!(offsets.len(), n_clusters);
    let ea = stages::EvalAlignment.run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::EvalAlignmentSummary =
        wander_pipeline::summaries::read(StageId::EvalAlignment, ea.fields()).unwrap();
    // The baselines beside it: the global rate has no gain over itself; the memorised
    // training label and the model are compared with it pair by pair.
    assert!(typed.methods["cluster_global_rate"]
        .within_pair_gain
        .is_none());
    assert!(typed.methods.contains_key("triple_train_label"), "{ea}");
    assert!(typed.memory_shrinkage.is_some_and(|k| k >= 0.0), "{ea}");
    let preds: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(run.root().join("eval_alignment/predictions.json")).unwrap(),
    )
    .unwrap();
    // The offsets are the global-rate baseline itself, and the model's score is that rate
    // plus a residual trained around zero (without the offsets it would sit near 0).
    let (mut llm, mut rate) = (0.0, 0.0);
    for p in &preds {
        let next = p["next"].as_u64().unwrap() as usize;
        let global = p["cluster_global_rate"].as_f64().unwrap();
        assert!((global - offsets[next]).abs() < 1e-9, "{p}");
        llm += p["alignment_llm"].as_f64().unwrap();
        rate += global;
    }
    let n = preds.len() as f64;
    assert!(
        rate / n > 0.2,
        "labels in [0, 1] with positives: {}",
        rate / n
    );
    assert!(
        (llm / n - rate / n).abs() < 0.15,
        "llm {} against rate {}",
        llm / n,
        rate / n
    );
    stages::Precompute::default().run(&ctx, false).unwrap();
    for (_, _, row) in every_row_novel(&run).iter() {
        assert!(row.iter().all(|c| c.alignment.is_finite()));
    }
    let whole = stages::EvalScaling.run(&ctx, false).unwrap();
    let whole: wander_pipeline::summaries::EvalScalingSummary =
        wander_pipeline::summaries::read(StageId::EvalScaling, whole.fields()).unwrap();
    // A table ranked by what the history adds alone (`precompute.prior_weight = 0`): its
    // summary says so, its rows are ordered by that score, and the evaluation reads it.
    ctx.config.precompute.prior_weight = 0.0;
    ctx.config.validate().unwrap();
    let pre = stages::Precompute::default().run(&ctx, false).unwrap();
    let typed: wander_pipeline::summaries::PrecomputeSummary =
        wander_pipeline::summaries::read(StageId::Precompute, pre.fields()).unwrap();
    assert_eq!(typed.prior_weight, Some(0.0), "{pre}");
    records_its_slice(&ctx, &stages::Precompute::default());
    for (_, _, row) in every_row_novel(&run).iter() {
        assert!(row.iter().all(|c| c.alignment.is_finite()));
        assert!(row.windows(2).all(|w| w[0].alignment >= w[1].alignment));
    }
    // The residual is centred on zero where the whole score sat near the rates.
    let mean_kept = {
        let t = every_row_novel(&run);
        let v: Vec<f32> = t
            .iter()
            .flat_map(|(_, _, r)| r.iter().map(|c| c.alignment).collect::<Vec<_>>())
            .collect();
        v.iter().sum::<f32>() / v.len() as f32
    };
    assert!(mean_kept.abs() < 0.15, "{mean_kept}");
    let sc = stages::EvalScaling.run(&ctx, false).unwrap();
    // The table's own weight is its `best_of_n` rows; P2's ranking by the whole score comes
    // back from it by adding the offsets again, and serves what the whole-score table served.
    assert!(
        sc.fields()["strategies"]
            .get("best_of_2_prior_weight_0")
            .is_none(),
        "{sc}"
    );
    let typed: wander_pipeline::summaries::EvalScalingSummary =
        wander_pipeline::summaries::read(StageId::EvalScaling, sc.fields()).unwrap();
    let rebuilt = &typed.strategies["best_of_2_prior_weight_1"];
    let served = &whole.strategies["best_of_2"];
    for (a, b) in [
        (rebuilt.hit_at_1.mean, served.hit_at_1.mean),
        (rebuilt.novelty_bits.mean, served.novelty_bits.mean),
        (rebuilt.diversity_bits, served.diversity_bits),
    ] {
        assert!((a - b).abs() < 1e-6, "{a} against {b}: {sc}");
    }
    let (a, b) = (
        typed.strategies["best_of_2"].hit_at_1.mean,
        whole.strategies["best_of_2_prior_weight_0"].hit_at_1.mean,
    );
    assert!((a - b).abs() < 1e-6, "{a} against {b}: {sc}");
    // The weight chosen on validation is one of those measured there, by the same rule on
    // either table.
    if let Some(c) = &typed.prior_weight_choice {
        assert_eq!(c.points.len(), 5, "{sc}");
        assert!(c.points.iter().any(|p| p.weight == c.weight), "{sc}");
        assert_eq!(
            whole.prior_weight_choice.as_ref().map(|w| w.weight),
            Some(c.weight),
            "{sc}"
        );
    }
    ctx.config.precompute.prior_weight = 1.0;
    let ex = stages::Export.run(&ctx, false).unwrap();
    assert_eq!(ex.fields()["alignment_readout"], "score_head.safetensors");
    let exported = open(&run, StageId::Export).unwrap();
    assert!(exported.reader().path("alignment/offsets.json").is_ok());
}
