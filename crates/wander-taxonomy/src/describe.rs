//! Cluster descriptions by class-based TF-IDF, and the parser from text back to a cluster.

use std::collections::{BTreeMap, HashMap};

use wander_data::Item;

const STOPWORDS: &[&str] = &[
    "a", "an", "and", "the", "of", "in", "on", "at", "to", "for", "from", "with", "by", "is", "it",
    "its", "as", "or", "be", "are", "this", "that", "i", "ii", "iii", "iv", "v", "my", "me", "you",
    "your", "we", "our", "he", "she", "his", "her", "they", "them", "de", "la", "le", "les", "el",
    "il", "du", "des", "und", "der", "die", "das", "l", "s", "t", "d", "no", "not", "all", "but",
    "up", "out", "about", "into", "over", "after", "before", "when", "what", "who", "how", "why",
    "do", "does", "did", "so", "if",
];

/// The metadata terms of an item: genres and tags (whole, lower-cased) and title and text
/// words without stopwords or numbers.
pub fn item_terms(item: &Item) -> Vec<String> {
    let mut out: Vec<String> = item
        .genres
        .iter()
        .chain(&item.tags)
        .map(|g| g.to_lowercase())
        .collect();
    for word in item
        .title
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .chain(item.text.split(|c: char| !c.is_alphanumeric() && c != '\''))
    {
        let w = word.trim_matches('\'').to_lowercase();
        if w.chars().count() >= 3
            && !w.chars().all(|c| c.is_ascii_digit())
            && !STOPWORDS.contains(&w.as_str())
        {
            out.push(w);
        }
    }
    out
}

/// Normalises a description for matching: lower case, punctuation removed except the
/// separating commas, runs of whitespace collapsed.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for part in text.to_lowercase().split(',') {
        let words: Vec<String> = part
            .split(|c: char| {
                c.is_whitespace() || (c.is_ascii_punctuation() && c != '\'' && c != '-')
            })
            .filter(|w| !w.is_empty())
            .map(|w| w.trim_matches(|c: char| c == '\'' || c == '-').to_string())
            .filter(|w| !w.is_empty())
            .collect();
        if words.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&words.join(" "));
    }
    out
}

/// Keywords of every cluster by class-based TF-IDF (Grootendorst, "BERTopic", 2022, eq. 1):
/// `w(t, c) = tf(t, c) / |c| * ln(1 + A / f(t))`, with `tf(t, c)` the number of the
/// cluster's items carrying term `t`, `|c|` the cluster's term count, `A` the mean term count
/// per cluster and `f(t)` the count of `t` over all clusters. Terms carried by a single item
/// of a cluster rank after all shared ones, so that one title's words do not describe a
/// whole cluster. Returns for each cluster its terms ranked, best first.
pub fn ranked_terms(items: &[Item], assign: &[u32], n_clusters: usize) -> Vec<Vec<String>> {
    let mut counts: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); n_clusters];
    let mut total: BTreeMap<String, f64> = BTreeMap::new();
    for (item, &c) in items.iter().zip(assign) {
        let mut terms = item_terms(item);
        terms.sort();
        terms.dedup();
        for t in terms {
            *counts[c as usize].entry(t.clone()).or_default() += 1.0;
            *total.entry(t).or_default() += 1.0;
        }
    }
    let sizes: Vec<f64> = counts.iter().map(|m| m.values().sum::<f64>()).collect();
    let mean = sizes.iter().sum::<f64>() / n_clusters.max(1) as f64;
    counts
        .iter()
        .zip(&sizes)
        .map(|(m, &size)| {
            let mut scored: Vec<(String, bool, f64)> = m
                .iter()
                .map(|(t, &tf)| {
                    (
                        t.clone(),
                        tf >= 2.0,
                        tf / size.max(1.0) * (1.0 + mean / total[t]).ln(),
                    )
                })
                .collect();
            scored.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.total_cmp(&a.2)).then(a.0.cmp(&b.0)));
            scored.into_iter().map(|(t, _, _)| t).collect()
        })
        .collect()
}

/// Picks `k` keywords per cluster and makes the descriptions unique: a colliding cluster
/// (the later id) takes further keywords from its ranking, in order, until it is unique; as a
/// last resort its id is appended. Deterministic.
pub fn unique_descriptions(ranked: &[Vec<String>], k: usize) -> Vec<(Vec<String>, String)> {
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(ranked.len());
    for (c, terms) in ranked.iter().enumerate() {
        let mut n = k.min(terms.len());
        let mut keywords: Vec<String> = terms[..n].to_vec();
        let mut desc = keywords.join(", ");
        while taken.contains_key(&normalize(&desc)) || desc.is_empty() {
            if n < terms.len() && keywords.len() < k + 3 {
                keywords.push(terms[n].clone());
                n += 1;
            } else {
                keywords.push(format!("group {c}"));
            }
            desc = keywords.join(", ");
        }
        taken.insert(normalize(&desc), c);
        out.push((keywords, desc));
    }
    out
}

/// Maps a text back to its cluster by exact match after [`normalize`].
#[derive(Debug, Clone, Default)]
pub struct DescriptionIndex {
    by_text: HashMap<String, u32>,
}

impl DescriptionIndex {
    /// Index over `(cluster id, description)` pairs.
    pub fn new<'a>(descriptions: impl IntoIterator<Item = (u32, &'a str)>) -> Self {
        DescriptionIndex {
            by_text: descriptions
                .into_iter()
                .map(|(id, d)| (normalize(d), id))
                .collect(),
        }
    }

    /// The cluster whose description `text` is, if any.
    pub fn parse(&self, text: &str) -> Option<u32> {
        self.by_text.get(&normalize(text)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalisation_ignores_case_spacing_and_punctuation() {
        assert_eq!(normalize("  Drama,  ROMANCE ,war."), "drama, romance, war");
        assert_eq!(normalize("sci-fi, children's"), "sci-fi, children's");
        let idx = DescriptionIndex::new([(3, "sci-fi, space, aliens")]);
        assert_eq!(idx.parse("Sci-Fi,space , Aliens!"), Some(3));
        assert_eq!(idx.parse("sci-fi, space"), None);
    }

    #[test]
    fn collisions_are_resolved_deterministically() {
        let ranked = vec![
            vec!["drama".to_string(), "war".into(), "love".into()],
            vec!["drama".to_string(), "war".into(), "peace".into()],
            vec!["drama".to_string(), "war".into()],
        ];
        let d = unique_descriptions(&ranked, 2);
        assert_eq!(d[0].1, "drama, war");
        assert_eq!(d[1].1, "drama, war, peace");
        assert_eq!(d[2].1, "drama, war, group 2");
    }

    proptest! {
        #[test]
        fn every_description_parses_back_to_its_cluster(terms in proptest::collection::vec(proptest::collection::vec("[a-z]{1,6}", 1..5), 1..30)) {
            let d = unique_descriptions(&terms, 3);
            let idx = DescriptionIndex::new(d.iter().enumerate().map(|(i, (_, s))| (i as u32, s.as_str())));
            for (i, (_, s)) in d.iter().enumerate() {
                prop_assert_eq!(idx.parse(s), Some(i as u32));
            }
        }

        #[test]
        fn normalize_is_idempotent(s in "\\PC{0,60}") {
            let n = normalize(&s);
            prop_assert_eq!(normalize(&n), n);
        }
    }
}
