//! A small, fast, deterministic random number generator (xoshiro256**, seeded by SplitMix64).
//!
//! wander's results must be byte-identical for a seed across platforms and dependency
//! upgrades, so the generator is ours rather than a crate's whose streams may change.

/// xoshiro256** by Blackman and Vigna; not cryptographic.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose stream is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// An independent generator for sub-task `stream` (e.g. one per user or per pair).
    pub fn fork(&self, stream: u64) -> Self {
        Rng::new(self.s[0] ^ stream.wrapping_mul(0xD605_BBB5_8C8A_BBCB))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n); `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        // Lemire's multiply-shift; the bias is below 2^-64 * n, irrelevant here.
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal deviate (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma deviate of shape `shape` > 0 and scale 1 (Marsaglia and Tsang, 2000; shapes
    /// below 1 by boosting: Gamma(a) = Gamma(a + 1) U^(1/a)).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        assert!(shape > 0.0 && shape.is_finite(), "Rng::gamma({shape})");
        if shape < 1.0 {
            let u = self.next_f64().max(f64::MIN_POSITIVE);
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.next_f64();
            if u < 1.0 - 0.0331 * x.powi(4)
                || u.max(f64::MIN_POSITIVE).ln() < 0.5 * x * x + d * (1.0 - v + v.ln())
            {
                return d * v;
            }
        }
    }

    /// Binomial deviate: successes in `trials` independent trials of probability `p`
    /// (clamped to [0, 1]). Exact, in O(log trials) steps: Knuth's algorithm B (TAOCP vol. 2,
    /// 3.4.1): the a-th smallest of the trials' uniforms is Beta(a, trials + 1 - a); the
    /// trials on the far side of `p` from it are set aside and the rest recurse, until few
    /// enough remain to draw one by one.
    pub fn binomial(&mut self, trials: u64, p: f64) -> u64 {
        let (mut t, mut p, mut found) = (trials, p.clamp(0.0, 1.0), 0u64);
        while t > 32 {
            let a = 1 + t / 2;
            let b = t + 1 - a;
            let ga = self.gamma(a as f64);
            let gb = self.gamma(b as f64);
            let x = ga / (ga + gb);
            if x >= p {
                // Every success is among the a - 1 uniforms below x, uniform on [0, x).
                t = a - 1;
                p /= x;
            } else {
                // The a smallest are all successes; the b - 1 above x are uniform on (x, 1].
                found += a;
                t = b - 1;
                p = (p - x) / (1.0 - x);
            }
            p = p.clamp(0.0, 1.0);
        }
        found + (0..t).filter(|_| self.next_f64() < p).count() as u64
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_different_seeds_differ() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(8);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// Mean and variance of many deviates against the distribution's, for small and large
    /// trial counts (the recursion and the one-by-one tail) and p near both ends.
    #[test]
    fn binomial_moments_match_n_p_and_n_p_q() {
        let mut r = Rng::new(11);
        for &(n, p) in &[
            (10u64, 0.3),
            (33, 0.5),
            (1_000, 0.02),
            (1_000_000, 0.4),
            (50_000_000, 0.999),
        ] {
            let draws: Vec<f64> = (0..20_000).map(|_| r.binomial(n, p) as f64).collect();
            assert!(draws.iter().all(|&k| k <= n as f64));
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let var =
                draws.iter().map(|k| (k - mean).powi(2)).sum::<f64>() / (draws.len() - 1) as f64;
            let (m, v) = (n as f64 * p, n as f64 * p * (1.0 - p));
            // Four standard errors of the mean; the sample variance within 5%.
            assert!(
                (mean - m).abs() < 4.0 * (v / draws.len() as f64).sqrt(),
                "n {n} p {p}: mean {mean} vs {m}"
            );
            assert!(
                (var / v - 1.0).abs() < 0.05,
                "n {n} p {p}: variance {var} vs {v}"
            );
        }
        assert_eq!(r.binomial(1_000, 0.0), 0);
        assert_eq!(r.binomial(1_000, 1.0), 1_000);
        assert_eq!(r.binomial(0, 0.5), 0);
    }

    /// The whole distribution for 40 trials (above the one-by-one threshold) against the
    /// binomial probabilities: chi-square over the cells with at least 5 expected.
    #[test]
    fn binomial_matches_the_probabilities_of_forty_trials() {
        let (n, p, draws) = (40u64, 0.35, 200_000usize);
        let mut r = Rng::new(5);
        let mut seen = vec![0usize; n as usize + 1];
        for _ in 0..draws {
            seen[r.binomial(n, p) as usize] += 1;
        }
        let ln_choose =
            |k: u64| -> f64 { (1..=k).map(|i| ((n - k + i) as f64 / i as f64).ln()).sum() };
        let (mut chi2, mut cells) = (0.0, 0);
        for k in 0..=n {
            let expected = draws as f64
                * (ln_choose(k) + k as f64 * p.ln() + (n - k) as f64 * (1.0 - p).ln()).exp();
            if expected >= 5.0 {
                chi2 += (seen[k as usize] as f64 - expected).powi(2) / expected;
                cells += 1;
            }
        }
        // The 99.9th percentile of chi-square with about 25 degrees of freedom is 52.6.
        assert!(
            cells > 20 && chi2 < 55.0,
            "chi-square {chi2} over {cells} cells"
        );
    }

    #[test]
    fn gamma_mean_and_variance_equal_the_shape() {
        let mut r = Rng::new(3);
        for &shape in &[0.5, 1.0, 2.5, 40.0, 5e6] {
            let draws: Vec<f64> = (0..40_000).map(|_| r.gamma(shape)).collect();
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            let var =
                draws.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (draws.len() - 1) as f64;
            assert!(
                (mean / shape - 1.0).abs() < 4.0 / (shape * draws.len() as f64).sqrt(),
                "shape {shape}: mean {mean}"
            );
            assert!(
                (var / shape - 1.0).abs() < 0.06,
                "shape {shape}: variance {var}"
            );
        }
    }

    #[test]
    fn uniform_mean_and_below_range() {
        let mut r = Rng::new(1);
        let n = 100_000;
        let mean: f64 = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let mut counts = [0usize; 5];
        for _ in 0..n {
            counts[r.below(5)] += 1;
        }
        for c in counts {
            assert!((c as f64 - n as f64 / 5.0).abs() < 1000.0, "{counts:?}");
        }
    }
}
