//! Train / validation / test splits.

/// Which period an interaction belongs to. Serialised as its byte (0, 1, 2), as the
/// Parquet columns and the JSON artifacts store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Split {
    /// Training period.
    Train = 0,
    /// Validation period.
    Valid = 1,
    /// Held-out test period.
    Test = 2,
}

impl serde::Serialize for Split {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(*self as u8)
    }
}

impl<'de> serde::Deserialize<'de> for Split {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = u8::deserialize(deserializer)?;
        Split::from_u8(v).ok_or_else(|| {
            serde::de::Error::custom(format!("split {v} is not 0 (train), 1 (valid) or 2 (test)"))
        })
    }
}

impl Split {
    /// From the stored byte; unknown values are `None`.
    pub fn from_u8(v: u8) -> Option<Split> {
        match v {
            0 => Some(Split::Train),
            1 => Some(Split::Valid),
            2 => Some(Split::Test),
            _ => None,
        }
    }
}

/// Global temporal split by timestamp quantiles.
///
/// With `q_v` the timestamp at quantile `1 - valid - test` and `q_t` the one at `1 - test`
/// (nearest rank on the sorted timestamps), an interaction is train if `t < q_v`, valid if
/// `q_v <= t < q_t` and test if `t >= q_t`. Interactions in the same second always share a
/// period, so no period sees part of a simultaneous batch. Fractions are therefore targets;
/// ties can move the realised shares slightly.
pub fn temporal_split(timestamps: &[i64], valid: f64, test: f64) -> Vec<Split> {
    let n = timestamps.len();
    if n == 0 {
        return Vec::new();
    }
    let mut sorted = timestamps.to_vec();
    sorted.sort_unstable();
    let cuts = cut_values(|rank| sorted[rank as usize], n as u64, valid, test);
    timestamps.iter().map(|&t| split_at(t, cuts)).collect()
}

/// The 0-based rank, among `n` sorted timestamps, of the nearest-rank quantile `q`.
pub(crate) fn cut_rank(n: u64, q: f64) -> u64 {
    ((n as f64 * q).floor() as u64).min(n.saturating_sub(1))
}

/// The cuts `(q_v, q_t)` of [`temporal_split`] from the timestamp at each rank (`at`).
pub(crate) fn cut_values(
    mut at: impl FnMut(u64) -> i64,
    n: u64,
    valid: f64,
    test: f64,
) -> (i64, i64) {
    let q_t = if test > 0.0 {
        at(cut_rank(n, 1.0 - test))
    } else {
        i64::MAX
    };
    let q_v = if valid > 0.0 {
        at(cut_rank(n, 1.0 - valid - test))
    } else {
        q_t
    };
    (q_v, q_t)
}

/// The temporal split of a timestamp at the cuts `(q_v, q_t)`.
pub(crate) fn split_at(ts: i64, (q_v, q_t): (i64, i64)) -> Split {
    if ts >= q_t {
        Split::Test
    } else if ts >= q_v {
        Split::Valid
    } else {
        Split::Train
    }
}

/// Leave-last-out: for each user with at least three interactions, the last (by time) is
/// test and the second last is validation; users with fewer stay entirely in train.
/// `users` must be grouped by user and ordered by time within a user, as in
/// [`crate::Interactions`].
pub fn leave_last_out(users: &[u32]) -> Vec<Split> {
    let mut out = vec![Split::Train; users.len()];
    let mut start = 0;
    while start < users.len() {
        let mut end = start;
        while end < users.len() && users[end] == users[start] {
            end += 1;
        }
        if end - start >= 3 {
            out[end - 1] = Split::Test;
            out[end - 2] = Split::Valid;
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_split_is_stored_as_its_byte_and_an_unknown_byte_is_an_error() {
        let all = [Split::Train, Split::Valid, Split::Test];
        assert_eq!(serde_json::to_string(&all).unwrap(), "[0,1,2]");
        let back: Vec<Split> = serde_json::from_str("[2,0,1]").unwrap();
        assert_eq!(back, vec![Split::Test, Split::Train, Split::Valid]);
        let err = serde_json::from_str::<Split>("3").unwrap_err().to_string();
        assert!(
            err.contains("split 3 is not 0 (train), 1 (valid) or 2 (test)"),
            "{err}"
        );
    }

    #[test]
    fn loo_hand_example() {
        let s = leave_last_out(&[0, 0, 0, 1, 1, 2, 2, 2, 2]);
        use Split::*;
        assert_eq!(
            s,
            vec![Train, Valid, Test, Train, Train, Train, Train, Valid, Test]
        );
    }

    #[test]
    fn temporal_hand_example() {
        let ts: Vec<i64> = (0..10).collect();
        let s = temporal_split(&ts, 0.2, 0.1);
        use Split::*;
        assert_eq!(
            s,
            vec![Train, Train, Train, Train, Train, Train, Train, Valid, Valid, Test]
        );
    }

    proptest! {
        #[test]
        fn temporal_split_is_monotone_in_time(ts in proptest::collection::vec(0i64..50, 1..200), v in 0.0f64..0.4, t in 0.0f64..0.4) {
            let s = temporal_split(&ts, v, t);
            for i in 0..ts.len() {
                for j in 0..ts.len() {
                    if ts[i] < ts[j] { prop_assert!(s[i] <= s[j]); }
                    if ts[i] == ts[j] { prop_assert_eq!(s[i], s[j]); }
                }
            }
        }

        #[test]
        fn loo_has_at_most_one_test_per_user(mut users in proptest::collection::vec(0u32..20, 0..200)) {
            users.sort();
            let s = leave_last_out(&users);
            for u in 0..20u32 {
                let tests = users.iter().zip(&s).filter(|(x, sp)| **x == u && **sp == Split::Test).count();
                let n = users.iter().filter(|x| **x == u).count();
                prop_assert_eq!(tests, usize::from(n >= 3));
            }
        }
    }
}
