//! Cluster-restricted retrieval for one request at MovieLens-100K scale: the user vector
//! from a 50-item history and the top 10 items of two clusters.

use criterion::{criterion_group, criterion_main, Criterion};
use wander_items::model::{SasRec, SasRecConfig};
use wander_items::retrieve::{Index, Retriever};

fn bench(c: &mut Criterion) {
    let cfg = SasRecConfig {
        vocab: 1683,
        max_len: 50,
        dim: 64,
        layers: 2,
        heads: 2,
        dropout: 0.0,
    };
    let model = SasRec::new(cfg, 1).unwrap().to_cpu().unwrap();
    let mut rng = wander_core::rng::Rng::new(3);
    let cluster_of: Vec<u32> = (0..cfg.vocab).map(|_| rng.below(64) as u32).collect();
    let r = Retriever::new(model.item.clone(), cfg.dim, &cluster_of, 64);
    let history: Vec<u32> = (0..50).map(|_| 1 + rng.below(1682) as u32).collect();
    let mut seen = history.clone();
    seen.sort_unstable();
    seen.dedup();
    c.bench_function("user_vector_50_items", |b| {
        b.iter(|| model.user_vector(&history))
    });
    let user = model.user_vector(&history);
    c.bench_function("top10_in_2_clusters_exact", |b| {
        b.iter(|| r.top_n(&user, &[3, 17], &seen, 10, Index::Exact))
    });
    c.bench_function("request_history50_top10", |b| {
        b.iter(|| {
            let u = model.user_vector(&history);
            r.top_n(&u, &[3, 17], &seen, 10, Index::Exact)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
