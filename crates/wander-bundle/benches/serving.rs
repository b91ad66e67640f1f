//! The item half of one `/v1/explore` request at MovieLens-100K scale with the default
//! SASRec shape (dim 64, 2 blocks, 2 heads, 50 positions): the user vector for a 20-item
//! history (the load test's mean) and a 50-item one (the longest read), and the top 10
//! items of two clusters. Weights are random: the cost does not depend on their values.

use criterion::{criterion_group, criterion_main, Criterion};
use wander_bundle::retrieve::{Index, Retriever};
use wander_bundle::sasrec::{weight_shapes, CpuSasRec, SasRecConfig};
use wander_bundle::BundleError;

fn bench(c: &mut Criterion) {
    let cfg = SasRecConfig {
        vocab: 1683,
        max_len: 50,
        dim: 64,
        layers: 2,
        heads: 2,
        dropout: 0.0,
    };
    let mut rng = wander_core::rng::Rng::new(7);
    let sizes: std::collections::HashMap<String, usize> = weight_shapes(&cfg)
        .into_iter()
        .map(|(n, s)| (n, s.iter().product()))
        .collect();
    let model = CpuSasRec::from_named(cfg, |name| -> Result<Vec<f32>, BundleError> {
        Ok((0..sizes[name])
            .map(|_| 0.1 * rng.normal() as f32)
            .collect())
    })
    .expect("weights of the right shapes");
    let cluster_of: Vec<u32> = (0..cfg.vocab).map(|_| rng.below(64) as u32).collect();
    let retriever = Retriever::new(model.item.clone(), cfg.dim, &cluster_of, 64);
    for len in [20usize, 50] {
        let history: Vec<u32> = (0..len).map(|_| 1 + rng.below(1682) as u32).collect();
        c.bench_function(&format!("user_vector_{len}_items"), |b| {
            b.iter(|| model.user_vector(std::hint::black_box(&history)))
        });
    }
    let history: Vec<u32> = (0..20).map(|_| 1 + rng.below(1682) as u32).collect();
    let mut seen = history.clone();
    seen.sort_unstable();
    seen.dedup();
    let user = model.user_vector(&history);
    c.bench_function("top10_in_2_clusters_exact", |b| {
        b.iter(|| retriever.top_n(&user, &[3, 17], &seen, 10, Index::Exact))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
