//! Building a taxonomy on a small synthetic catalogue (no model needed).

use wander_core::config::Config;
use wander_core::rng::Rng;
use wander_data::{Dataset, Interactions, Item};

/// 120 items in 6 latent topics, each with topic words in its title and genre.
fn synthetic() -> (Dataset, Vec<Vec<f32>>) {
    let topics = [
        ("space", "Sci-Fi"),
        ("ghost", "Horror"),
        ("love", "Romance"),
        ("cowboy", "Western"),
        ("robot", "Sci-Fi"),
        ("detective", "Mystery"),
    ];
    let mut rng = Rng::new(4);
    let mut items = Vec::new();
    let mut vecs = Vec::new();
    for i in 0..120 {
        let (word, genre) = topics[i % 6];
        items.push(Item {
            id: format!("i{i}"),
            title: format!("The {word} story part {}", i / 6),
            genres: vec![genre.into()],
            ..Default::default()
        });
        let mut v: Vec<f32> = (0..16)
            .map(|d| if d == i % 6 { 1.0 } else { 0.1 } + 0.05 * rng.normal() as f32)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        vecs.push(v);
    }
    let ds = Dataset {
        users: vec![],
        items,
        feedback_columns: vec![],
        interactions: Interactions::default(),
    };
    (ds, vecs)
}

fn cfg() -> wander_core::config::TaxonomyConfig {
    let mut c = Config::default_config().taxonomy;
    c.coarse_clusters = 3;
    c.fine_clusters = 6;
    c
}

#[test]
fn levels_nest_no_cluster_is_empty_and_descriptions_parse_back() {
    let (ds, vecs) = synthetic();
    let tax = wander_taxonomy::build(&ds, &vecs, &cfg(), 1).unwrap();
    assert_eq!(tax.coarse.len(), 3);
    assert_eq!(tax.fine.len(), 6);
    for (i, &f) in tax.item_fine.iter().enumerate() {
        assert_eq!(
            tax.fine[f as usize].parent,
            Some(tax.item_coarse[i]),
            "fine clusters nest in coarse ones"
        );
    }
    assert!(tax.fine.iter().all(|c| c.size > 0));
    assert_eq!(tax.fine.iter().map(|c| c.size).sum::<usize>(), 120);
    // The six topics are recovered: each fine cluster holds one topic.
    for c in &tax.fine {
        let topics: std::collections::HashSet<usize> = (0..120)
            .filter(|&i| tax.item_fine[i] == c.id)
            .map(|i| i % 6)
            .collect();
        assert_eq!(
            topics.len(),
            1,
            "cluster {} mixes topics {topics:?}",
            c.description
        );
    }
    let idx = tax.index();
    for c in tax.planner_clusters() {
        assert_eq!(idx.parse(&c.description), Some(c.id));
        assert!((3..=9).contains(&c.keywords.len()), "{:?}", c.keywords);
    }
    let (report, md) = wander_taxonomy::report(
        &ds,
        &wander_taxonomy::train_interactions(&ds),
        &tax,
        &vecs,
        &vecs,
        1,
    );
    assert!(report.descriptions_unique);
    assert!(report.coherence_text > 1.5 * report.coherence_text_random);
    assert!(md.contains("| fine | coarse |"));
}

#[test]
fn same_seed_same_artifacts() {
    let (ds, vecs) = synthetic();
    let a = wander_taxonomy::build(&ds, &vecs, &cfg(), 9).unwrap();
    let b = wander_taxonomy::build(&ds, &vecs, &cfg(), 9).unwrap();
    assert_eq!(
        serde_json::to_vec(&a).unwrap(),
        serde_json::to_vec(&b).unwrap()
    );
}

#[test]
fn too_few_items_is_a_clear_error() {
    let (ds, vecs) = synthetic();
    let mut c = cfg();
    c.fine_clusters = 500;
    let err = wander_taxonomy::build(&ds, &vecs, &c, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fine_clusters"), "{err}");
}

#[test]
fn items_that_all_look_alike_are_a_clear_error_not_a_panic() {
    let (ds, vecs) = synthetic();
    let same = vec![vecs[0].clone(); vecs.len()];
    let err = wander_taxonomy::build(&ds, &same, &cfg(), 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("only 1 of the 120 items have distinct embeddings"),
        "{err}"
    );
    // Fewer distinct items than clusters still builds when the config asks for few enough.
    let mut few = vecs.clone();
    for v in few.iter_mut().skip(6) {
        *v = vecs[0].clone();
    }
    let mut c = cfg();
    c.coarse_clusters = 2;
    c.fine_clusters = 4;
    assert!(wander_taxonomy::build(&ds, &few, &c, 1).is_ok());
}

#[test]
fn a_non_finite_embedding_names_the_item() {
    let (ds, mut vecs) = synthetic();
    vecs[7][3] = f32::NAN;
    let err = wander_taxonomy::build(&ds, &vecs, &cfg(), 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("item i7 (row 7) is not finite"), "{err}");
}
