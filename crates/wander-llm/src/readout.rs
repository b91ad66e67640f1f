//! How a judging model turns a prompt into a label: a scalar head on the last hidden state,
//! or the label written as text (P2 rounds labels to a fixed interval and trains the LLM to
//! write the rounded value). A text label is read as the expected value of the levels under
//! the model's distribution over the level answers, so that candidates still rank by a
//! continuous score.

use serde::{Deserialize, Serialize};

use crate::model::ScoreHead;
use crate::{LlmError, Result};

/// The values a label can take when the model writes it as text: each level's value and its
/// answer tokens (the label's text, then the end token), in increasing order of value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelLevels {
    values: Vec<f32>,
    texts: Vec<String>,
    answers: Vec<Vec<u32>>,
}

impl LabelLevels {
    /// Levels from `(value, text, answer tokens)`: at least two, with finite strictly
    /// increasing values and distinct non-empty answers.
    pub fn new(levels: Vec<(f32, String, Vec<u32>)>) -> Result<Self> {
        if levels.len() < 2 {
            return Err(LlmError::Invalid(format!(
                "a text label needs at least two levels, not {}",
                levels.len()
            )));
        }
        for w in levels.windows(2) {
            if !(w[0].0.is_finite() && w[1].0.is_finite() && w[0].0 < w[1].0) {
                return Err(LlmError::Invalid(format!(
                    "label levels must be finite and increasing: {} then {}",
                    w[0].0, w[1].0
                )));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (v, text, answer) in &levels {
            if answer.is_empty() || !seen.insert(answer.clone()) {
                return Err(LlmError::Invalid(format!(
                    "label level {v} (`{text}`) has an empty or repeated answer"
                )));
            }
        }
        let mut out = LabelLevels {
            values: Vec::with_capacity(levels.len()),
            texts: Vec::with_capacity(levels.len()),
            answers: Vec::with_capacity(levels.len()),
        };
        for (v, text, answer) in levels {
            out.values.push(v);
            out.texts.push(text);
            out.answers.push(answer);
        }
        Ok(out)
    }

    /// The levels' values, increasing.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The levels' texts as the model writes them.
    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// The levels' answer tokens (text, then the end token).
    pub fn answers(&self) -> &[Vec<u32>] {
        &self.answers
    }

    /// The level nearest to `label` (the lower one on a tie); labels outside the range
    /// take the end level.
    pub fn nearest(&self, label: f32) -> usize {
        let mut best = 0;
        for (i, v) in self.values.iter().enumerate() {
            if (v - label).abs() < (self.values[best] - label).abs() {
                best = i;
            }
        }
        best
    }

    /// The expected value of the levels under `logprobs` (one per level, normalised here
    /// so that they need only be right up to a constant). Non-finite input is an error.
    pub fn expected(&self, logprobs: &[f64]) -> Result<f64> {
        if logprobs.len() != self.values.len() {
            return Err(LlmError::Invalid(format!(
                "{} log-probabilities for {} label levels",
                logprobs.len(),
                self.values.len()
            )));
        }
        let max = logprobs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            return Err(LlmError::Invalid(format!(
                "label level log-probabilities have no finite maximum ({max})"
            )));
        }
        let weights: Vec<f64> = logprobs.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mean = weights
            .iter()
            .zip(&self.values)
            .map(|(w, v)| w * f64::from(*v))
            .sum::<f64>()
            / total;
        if !mean.is_finite() {
            return Err(LlmError::Invalid(
                "the expected text label is not finite".into(),
            ));
        }
        Ok(mean)
    }
}

/// What reads a judging model's prompt out as a label.
#[derive(Debug, Clone)]
pub enum Readout {
    /// A scoring head on the last hidden state.
    Head(ScoreHead),
    /// The label written as text: the expected value of the levels.
    Text(LabelLevels),
}

impl Readout {
    /// The scoring head, or an error naming what was trained instead.
    pub fn head(&self) -> Result<&ScoreHead> {
        match self {
            Readout::Head(h) => Ok(h),
            Readout::Text(_) => Err(LlmError::Invalid(
                "this model writes its label as text and has no scoring head".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels() -> LabelLevels {
        LabelLevels::new(vec![
            (0.0, "0.0".into(), vec![1, 9]),
            (0.5, "0.5".into(), vec![2, 9]),
            (1.0, "1.0".into(), vec![3, 9]),
        ])
        .unwrap()
    }

    #[test]
    fn nearest_level_and_expected_value() {
        let l = levels();
        assert_eq!(l.nearest(0.2), 0);
        assert_eq!(l.nearest(0.25), 0);
        assert_eq!(l.nearest(0.3), 1);
        assert_eq!(l.nearest(7.0), 2);
        assert_eq!(l.nearest(-3.0), 0);
        // Unnormalised log-probabilities: only their differences matter.
        let e = l.expected(&[5.0, 5.0, f64::NEG_INFINITY]).unwrap();
        assert!((e - 0.25).abs() < 1e-12);
        let e = l
            .expected(&[(0.2f64).ln(), (0.3f64).ln(), (0.5f64).ln()])
            .unwrap();
        assert!((e - 0.65).abs() < 1e-12);
    }

    #[test]
    fn bad_levels_and_inputs_are_errors() {
        assert!(LabelLevels::new(vec![(0.0, "0".into(), vec![1])]).is_err());
        assert!(
            LabelLevels::new(vec![(0.5, "a".into(), vec![1]), (0.5, "b".into(), vec![2])]).is_err()
        );
        assert!(
            LabelLevels::new(vec![(0.0, "a".into(), vec![1]), (1.0, "b".into(), vec![1])]).is_err()
        );
        assert!(
            LabelLevels::new(vec![(0.0, "a".into(), vec![]), (1.0, "b".into(), vec![1])]).is_err()
        );
        assert!(LabelLevels::new(vec![
            (0.0, "a".into(), vec![1]),
            (f32::NAN, "b".into(), vec![2])
        ])
        .is_err());
        let l = levels();
        assert!(l.expected(&[0.0, 0.0]).is_err());
        assert!(l.expected(&[f64::NEG_INFINITY; 3]).is_err());
        assert!(l.expected(&[f64::NAN, 0.0, 0.0]).is_err());
        assert!(Readout::Text(l).head().is_err());
    }
}
