//! Seeded k-means++ with restarts, on L2-normalised vectors.

use wander_core::rng::Rng;

/// A clustering of a subset of points.
#[derive(Debug, Clone)]
pub struct Clustering {
    /// Centroids, one per cluster.
    pub centroids: Vec<Vec<f32>>,
    /// Cluster of each point of the subset, in subset order.
    pub assign: Vec<usize>,
    /// Sum of squared distances to the assigned centroids.
    pub inertia: f64,
}

fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

/// `f` over `0..n` on every core, in contiguous chunks, results in index order. Each value
/// depends only on its index, so the result is the same on any number of threads (the
/// clustering is bit for bit the single-threaded one); at 200k items the distance passes
/// are most of the taxonomy stage's time.
fn par_map<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(n / 1024)
        .max(1);
    if threads == 1 {
        return (0..n).map(f).collect();
    }
    let chunk = n.div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let parts: Vec<_> = (0..threads)
            .map(|t| {
                let range = (t * chunk).min(n)..((t + 1) * chunk).min(n);
                scope.spawn(move || range.map(f).collect::<Vec<T>>())
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("a k-means worker panicked"))
            .collect()
    })
}

/// The nearest centroid of `p` (the first on ties) and its squared distance.
fn nearest(p: &[f32], centroids: &[Vec<f32>]) -> (usize, f64) {
    let mut best = 0;
    let mut best_d = f64::INFINITY;
    for (c, cen) in centroids.iter().enumerate() {
        let d = dist2(p, cen);
        if d < best_d {
            best_d = d;
            best = c;
        }
    }
    (best, best_d)
}

/// k-means++ initialisation then Lloyd iterations, best of `restarts` by inertia. A cluster
/// that empties is re-seeded with the point farthest from its centroid, so no cluster is
/// empty when `k <= points.len()`.
pub fn kmeans(
    points: &[&[f32]],
    k: usize,
    restarts: usize,
    max_iter: usize,
    rng: &mut Rng,
) -> Clustering {
    let n = points.len();
    let k = k.min(n).max(1);
    let mut best: Option<Clustering> = None;
    for _ in 0..restarts.max(1) {
        let c = lloyd(points, init_plus_plus(points, k, rng), max_iter);
        if best.as_ref().is_none_or(|b| c.inertia < b.inertia) {
            best = Some(c);
        }
    }
    best.expect("at least one restart")
}

fn init_plus_plus(points: &[&[f32]], k: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let n = points.len();
    let mut centroids = vec![points[rng.below(n)].to_vec()];
    let mut d: Vec<f64> = points.iter().map(|p| dist2(p, &centroids[0])).collect();
    while centroids.len() < k {
        let total: f64 = d.iter().sum();
        let next = if total <= 0.0 {
            rng.below(n)
        } else {
            let mut u = rng.next_f64() * total;
            let mut pick = n - 1;
            for (i, &di) in d.iter().enumerate() {
                u -= di;
                if u <= 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        };
        centroids.push(points[next].to_vec());
        let newest = centroids.last().expect("pushed");
        d = par_map(n, |i| d[i].min(dist2(points[i], newest)));
    }
    centroids
}

fn lloyd(points: &[&[f32]], mut centroids: Vec<Vec<f32>>, max_iter: usize) -> Clustering {
    let (n, k) = (points.len(), centroids.len());
    let dim = points.first().map(|p| p.len()).unwrap_or(0);
    let mut assign = vec![usize::MAX; n];
    for _ in 0..max_iter.max(1) {
        let nearest_now = par_map(n, |i| nearest(points[i], &centroids).0);
        let changed = nearest_now != assign;
        assign = nearest_now;
        let mut changed = changed;
        let mut sums = vec![vec![0.0f64; dim]; k];
        let mut counts = vec![0usize; k];
        for (i, p) in points.iter().enumerate() {
            counts[assign[i]] += 1;
            for (s, &x) in sums[assign[i]].iter_mut().zip(p.iter()) {
                *s += x as f64;
            }
        }
        for c in 0..k {
            if counts[c] == 0 {
                // Re-seed an empty cluster with the worst-served point.
                let far = (0..n)
                    .max_by(|&a, &b| {
                        dist2(points[a], &centroids[assign[a]])
                            .total_cmp(&dist2(points[b], &centroids[assign[b]]))
                            .then(b.cmp(&a))
                    })
                    .expect("points");
                centroids[c] = points[far].to_vec();
                assign[far] = c;
                changed = true;
            } else {
                centroids[c] = sums[c]
                    .iter()
                    .map(|s| (s / counts[c] as f64) as f32)
                    .collect();
            }
        }
        if !changed {
            break;
        }
    }
    // Summed in point order, so the total is the single-threaded one.
    let inertia = par_map(n, |i| dist2(points[i], &centroids[assign[i]]))
        .into_iter()
        .sum();
    Clustering {
        centroids,
        assign,
        inertia,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_obvious_blobs_and_never_leaves_a_cluster_empty() {
        let mut rng = Rng::new(3);
        let mut pts: Vec<Vec<f32>> = Vec::new();
        for c in 0..3 {
            for _ in 0..20 {
                pts.push(vec![
                    c as f32 * 10.0 + rng.normal() as f32 * 0.1,
                    rng.normal() as f32 * 0.1,
                ]);
            }
        }
        let refs: Vec<&[f32]> = pts.iter().map(|p| p.as_slice()).collect();
        let c = kmeans(&refs, 3, 3, 50, &mut Rng::new(1));
        for blob in 0..3 {
            let first = c.assign[blob * 20];
            assert!(c.assign[blob * 20..blob * 20 + 20]
                .iter()
                .all(|&a| a == first));
        }
        let c = kmeans(&refs, 60, 1, 10, &mut Rng::new(1));
        let mut counts = vec![0; 60];
        for a in c.assign {
            counts[a] += 1;
        }
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    }
}
