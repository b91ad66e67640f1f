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
    out.extend(content_words(&item.title).chain(content_words(&item.text)));
    out
}

/// The words of `text` that can describe something: lower-cased, at least three letters,
/// not a number, not a stopword.
fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| {
            w.chars().count() >= 3
                && !w.chars().all(|c| c.is_ascii_digit())
                && !STOPWORDS.contains(&w.as_str())
        })
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

/// The facets of an item: genres and tags (whole, lower-cased) and its release decade
/// (`1990s`).
pub fn item_facets(item: &Item) -> Vec<String> {
    let mut out: Vec<String> = item
        .genres
        .iter()
        .chain(&item.tags)
        .map(|g| g.to_lowercase())
        .filter(|g| !g.trim().is_empty() && g != "unknown" && g != "(no genres listed)")
        .collect();
    if let Some(y) = item.year {
        out.push(format!("{}s", y.div_euclid(10) * 10));
    }
    out
}

/// Share of a cluster's items a title word needs before it may describe the cluster, and
/// the least number of items.
const TITLE_WORD_SHARE: f64 = 0.1;
const TITLE_WORD_ITEMS: f64 = 3.0;

/// Keywords of every cluster from distinctive facets: each facet `t` of cluster `c` scores
/// `p(t|c) * ln(p(t|c) / p(t))` (its share of the cluster's items times how much more
/// common it is there than overall; a facet no more common than overall scores at most 0
/// and ranks last). Title words follow, only those carried by at least max(3, 10%) of the
/// cluster's items (one film's name or a director's does not describe a cluster), ranked
/// the same way. Returns for each cluster its terms ranked, best first.
pub fn ranked_facets(items: &[Item], assign: &[u32], n_clusters: usize) -> Vec<Vec<String>> {
    // Facets and title words are counted apart: "western" the genre and "western" the
    // title word are different evidence.
    let mut per_cluster: [Vec<BTreeMap<String, f64>>; 2] = [
        vec![BTreeMap::new(); n_clusters],
        vec![BTreeMap::new(); n_clusters],
    ];
    let mut overall: [BTreeMap<String, f64>; 2] = [BTreeMap::new(), BTreeMap::new()];
    let mut sizes = vec![0.0f64; n_clusters];
    for (item, &c) in items.iter().zip(assign) {
        sizes[c as usize] += 1.0;
        for (kind, mut terms) in [item_facets(item), content_words(&item.title).collect()]
            .into_iter()
            .enumerate()
        {
            terms.sort();
            terms.dedup();
            for t in terms {
                *per_cluster[kind][c as usize].entry(t.clone()).or_default() += 1.0;
                *overall[kind].entry(t).or_default() += 1.0;
            }
        }
    }
    let n = items.len().max(1) as f64;
    (0..n_clusters)
        .map(|c| {
            let size = sizes[c].max(1.0);
            let rank = |kind: usize, min_items: f64| {
                let mut v: Vec<(String, f64)> = per_cluster[kind][c]
                    .iter()
                    .filter(|(_, &k)| k >= min_items)
                    .map(|(t, &k)| {
                        let p = k / size;
                        (t.clone(), p * (p / (overall[kind][t] / n)).ln())
                    })
                    .collect();
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                v
            };
            let mut out = rank(0, 0.0);
            let titles = rank(1, TITLE_WORD_ITEMS.max(TITLE_WORD_SHARE * size));
            // Informative facets first, then shared title words, then facets no more common
            // here than overall.
            let split = out.iter().position(|x| x.1 <= 0.0).unwrap_or(out.len());
            let tail = out.split_off(split);
            out.extend(titles.into_iter().filter(|x| x.1 > 0.0));
            out.extend(tail);
            let mut seen = std::collections::HashSet::new();
            out.into_iter()
                .map(|(t, _)| t)
                .filter(|t| seen.insert(t.clone()))
                .collect()
        })
        .collect()
}

/// A title as a reader writes it: a trailing article moved to the front ("Lion King, The"
/// -> "The Lion King") and any other comma dropped, so that a title is one keyword.
pub fn display_title(title: &str) -> String {
    let t = title.trim();
    for article in [
        "The", "A", "An", "Les", "La", "Le", "Il", "Das", "Die", "El",
    ] {
        if let Some(head) = t.strip_suffix(&format!(", {article}")) {
            return format!("{article} {}", head.replace(',', ""));
        }
    }
    t.replace(',', "")
}

/// Exemplar descriptions: the first `k - titles` of each cluster's `ranked` facets, then the
/// titles of its `titles` most central items (`central`: member indices, most central first),
/// each a keyword. Unique as long as the titles are; a collision takes the next central item.
pub fn exemplar_descriptions(
    items: &[Item],
    ranked: &[Vec<String>],
    central: &[Vec<usize>],
    k: usize,
    titles: usize,
) -> Vec<(Vec<String>, String)> {
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(ranked.len());
    for (c, (facets, members)) in ranked.iter().zip(central).enumerate() {
        let mut keywords: Vec<String> = facets
            .iter()
            .take(k.saturating_sub(titles))
            .cloned()
            .collect();
        let mut names = members.iter().map(|&i| display_title(&items[i].title));
        let mut added = 0;
        let mut desc = keywords.join(", ");
        while added < titles || taken.contains_key(&normalize(&desc)) || desc.is_empty() {
            match names.next() {
                Some(name) if !name.is_empty() && !keywords.contains(&name) => {
                    keywords.push(name);
                    added += 1;
                }
                Some(_) => continue,
                None => {
                    keywords.push(format!("group {c}"));
                    added = titles;
                }
            }
            desc = keywords.join(", ");
        }
        taken.insert(normalize(&desc), c);
        out.push((keywords, desc));
    }
    out
}

/// Cosine similarity of `v` with each of `centroids` (unit or zero vectors, f64); a zero
/// centroid (a cluster without items) is never nearest.
pub(crate) fn similarities(v: &[f32], centroids: &[Vec<f64>]) -> Vec<f64> {
    let n = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    centroids
        .iter()
        .map(|c| {
            if n == 0.0 || c.iter().all(|&x| x == 0.0) {
                f64::NEG_INFINITY
            } else {
                c.iter().zip(v).map(|(a, &b)| a * f64::from(b)).sum::<f64>() / n
            }
        })
        .collect()
}

/// How much nearer `v` is to cluster `own`'s centroid than to any other cluster's (cosine);
/// positive when `own` is the nearest.
pub fn retrieval_margin(v: &[f32], centroids: &[Vec<f64>], own: usize) -> f64 {
    let sims = similarities(v, centroids);
    let best_other = sims
        .iter()
        .enumerate()
        .filter(|&(o, _)| o != own)
        .map(|(_, &s)| s)
        .fold(f64::NEG_INFINITY, f64::max);
    sims[own] - best_other
}

/// Unit-length mean of each cluster's vectors under `assign` (f64; a cluster without
/// members gets the zero vector).
pub fn unit_centroids(vectors: &[Vec<f32>], assign: &[u32], n_clusters: usize) -> Vec<Vec<f64>> {
    let d = vectors.first().map_or(0, Vec::len);
    let mut sums = vec![vec![0.0f64; d]; n_clusters];
    for (v, &c) in vectors.iter().zip(assign) {
        if let Some(s) = sums.get_mut(c as usize) {
            for (a, &x) in s.iter_mut().zip(v) {
                *a += f64::from(x);
            }
        }
    }
    for s in &mut sums {
        let n = s.iter().map(|x| x * x).sum::<f64>().sqrt();
        if n > 0.0 {
            s.iter_mut().for_each(|x| *x /= n);
        }
    }
    sums
}

/// A sentence model as the description schemes call it: texts in, one vector per text out.
pub type Embed<'a, E> = dyn FnMut(&[String]) -> Result<Vec<Vec<f32>>, E> + 'a;

/// Discriminative descriptions: each cluster's first `facets` ranked facets, then `titles`
/// exemplar titles from its `candidates`, chosen one at a time so that the description
/// tells the cluster apart from the others in the sentence model's space. At each step every
/// cluster's still-unused candidates are appended in turn to its description so far, all of
/// them embedded in one call of `embed`, and the one with the largest [`retrieval_margin`]
/// over `centroids` (the clusters' unit mean item-text embeddings, [`unit_centroids`]) is
/// kept; ties go to the earlier (more central) candidate. Exemplars picked by centrality
/// alone name what a cluster shares with its neighbours (its most typical items are also
/// typical of the next cluster); this picks what sets it apart. A description equal to an
/// earlier cluster's takes its next unused candidate, as a last resort `group <id>`.
/// Deterministic for a deterministic `embed`.
pub fn discriminative_descriptions<E>(
    ranked_facets: &[Vec<String>],
    candidates: &[Vec<String>],
    centroids: &[Vec<f64>],
    facets: usize,
    titles: usize,
    embed: &mut Embed<'_, E>,
) -> Result<Vec<(Vec<String>, String)>, E> {
    let n = ranked_facets.len();
    let mut keywords: Vec<Vec<String>> = ranked_facets
        .iter()
        .map(|f| f.iter().take(facets).cloned().collect())
        .collect();
    for _ in 0..titles {
        // (cluster, candidate) of each text to embed.
        let mut trials: Vec<(usize, usize)> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        for c in 0..n {
            for (j, cand) in candidates[c].iter().enumerate() {
                if cand.is_empty() || keywords[c].contains(cand) {
                    continue;
                }
                let mut kw = keywords[c].clone();
                kw.push(cand.clone());
                trials.push((c, j));
                texts.push(kw.join(", "));
            }
        }
        if texts.is_empty() {
            break;
        }
        let vectors = embed(&texts)?;
        let mut best: Vec<Option<(f64, usize)>> = vec![None; n];
        for (&(c, j), v) in trials.iter().zip(&vectors) {
            let m = retrieval_margin(v, centroids, c);
            let m = if m.is_finite() { m } else { f64::NEG_INFINITY };
            if best[c].is_none_or(|(b, _)| m > b) {
                best[c] = Some((m, j));
            }
        }
        for (c, b) in best.into_iter().enumerate() {
            if let Some((_, j)) = b {
                keywords[c].push(candidates[c][j].clone());
            }
        }
    }
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(n);
    for (c, mut kw) in keywords.into_iter().enumerate() {
        let mut spare = candidates[c].iter().filter(|t| !t.is_empty());
        let mut desc = kw.join(", ");
        while desc.is_empty() || taken.contains_key(&normalize(&desc)) {
            match spare.next() {
                Some(t) if kw.contains(t) => continue,
                Some(t) => kw.push(t.clone()),
                None => kw.push(format!("group {c}")),
            }
            desc = kw.join(", ");
        }
        taken.insert(normalize(&desc), c);
        out.push((kw, desc));
    }
    Ok(out)
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

    fn film(title: &str, year: i32, genres: &[&str]) -> Item {
        Item {
            id: title.into(),
            title: title.into(),
            year: Some(year),
            genres: genres.iter().map(|g| g.to_string()).collect(),
            tags: vec![],
            text: String::new(),
        }
    }

    #[test]
    fn facets_rank_what_is_distinctive_and_skip_one_off_title_words() {
        let items = vec![
            film("Star Trek: First Contact", 1996, &["Sci-Fi", "Drama"]),
            film("Star Trek: Generations", 1994, &["Sci-Fi", "Drama"]),
            film("Star Trek VI", 1991, &["Sci-Fi"]),
            film("Denise Calls Up", 1995, &["Drama"]),
            film("Casablanca", 1942, &["Drama", "Romance"]),
            film("Notorious", 1946, &["Drama", "Romance"]),
            film("Rebecca", 1940, &["Drama"]),
        ];
        let assign = [0, 0, 0, 0, 1, 1, 1];
        let ranked = ranked_facets(&items, &assign, 2);
        // Sci-fi and the 1990s mark cluster 0; drama (everywhere) comes after them; "star"
        // and "trek" (three items) are kept, "denise" (one) is not.
        assert_eq!(&ranked[0][..2], ["1990s", "sci-fi"]);
        assert!(ranked[0].contains(&"trek".to_string()));
        assert!(!ranked[0].iter().any(|t| t == "denise" || t == "calls"));
        assert!(
            ranked[0].iter().position(|t| t == "drama")
                > ranked[0].iter().position(|t| t == "trek")
        );
        assert_eq!(&ranked[1][..2], ["1940s", "romance"]);
        let mut seen = std::collections::HashSet::new();
        assert!(ranked[0].iter().all(|t| seen.insert(t)), "no term twice");
    }

    #[test]
    fn exemplar_descriptions_name_central_titles_and_stay_unique() {
        assert_eq!(display_title("Lion King, The"), "The Lion King");
        assert_eq!(
            display_title("Good, the Bad and the Ugly"),
            "Good the Bad and the Ugly"
        );
        let items = vec![
            film("Aladdin", 1992, &["Animation"]),
            film("Lion King, The", 1994, &["Animation"]),
            film("Aladdin", 1992, &["Animation"]),
            film("Heat", 1995, &["Action"]),
        ];
        let ranked = vec![vec!["animation".to_string()], vec!["animation".to_string()]];
        let d = exemplar_descriptions(&items, &ranked, &[vec![0, 1], vec![2, 3]], 3, 2);
        assert_eq!(d[0].1, "animation, Aladdin, The Lion King");
        assert_eq!(d[1].1, "animation, Aladdin, Heat");
        // The same facets and titles would collide: the next central item breaks the tie.
        let d = exemplar_descriptions(&items, &ranked, &[vec![0, 1], vec![2, 1, 3]], 3, 2);
        assert_eq!(d[1].1, "animation, Aladdin, The Lion King, Heat");
        let idx =
            DescriptionIndex::new(d.iter().enumerate().map(|(c, x)| (c as u32, x.1.as_str())));
        assert_eq!(idx.parse(&d[1].1), Some(1));
    }

    /// A bag of words over a four-word vocabulary: enough geometry to tell what is shared
    /// from what is distinctive.
    fn bag_of_words(texts: &[String]) -> Result<Vec<Vec<f32>>, std::convert::Infallible> {
        const VOCABULARY: [&str; 4] = ["common", "alpha", "beta", "drama"];
        Ok(texts
            .iter()
            .map(|t| {
                let t = t.to_lowercase();
                VOCABULARY
                    .iter()
                    .map(|w| {
                        t.split(|c: char| !c.is_alphanumeric())
                            .filter(|x| x == w)
                            .count() as f32
                    })
                    .collect()
            })
            .collect())
    }

    #[test]
    fn discriminative_titles_are_the_ones_that_set_a_cluster_apart() {
        let unit = |v: [f64; 4]| {
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<f64>>()
        };
        // Both clusters' most central title is "Common"; only "Alpha" / "Beta" tell them
        // apart.
        let centroids = vec![unit([1.0, 1.0, 0.0, 0.0]), unit([1.0, 0.0, 1.0, 0.0])];
        let facets = vec![vec!["drama".to_string()]; 2];
        let candidates = vec![
            vec!["Common".to_string(), "Alpha".into()],
            vec!["Common".to_string(), "Beta".into()],
        ];
        let margin_of = |text: &str, own| {
            retrieval_margin(&bag_of_words(&[text.into()]).unwrap()[0], &centroids, own)
        };
        assert!(
            margin_of("drama, Common", 0).abs() < 1e-9,
            "a shared title names neither"
        );
        assert!(margin_of("drama, Beta", 1) > 0.3);
        let d =
            discriminative_descriptions(&facets, &candidates, &centroids, 1, 1, &mut bag_of_words)
                .unwrap();
        assert_eq!(d[0].1, "drama, Alpha");
        assert_eq!(d[1].1, "drama, Beta");
        assert_eq!(
            d,
            discriminative_descriptions(&facets, &candidates, &centroids, 1, 1, &mut bag_of_words)
                .unwrap(),
            "deterministic"
        );

        // Clusters 0 and 2 look alike and both settle on "Alpha" (ties go to the earlier
        // candidate): the later one takes its next unused candidate.
        let centroids = vec![
            unit([1.0, 1.0, 0.0, 0.0]),
            unit([1.0, 0.0, 1.0, 0.0]),
            unit([1.0, 1.0, 0.0, 0.0]),
        ];
        let facets = vec![vec!["drama".to_string()]; 3];
        let candidates = vec![
            vec!["Alpha".to_string(), "Common".into()],
            vec!["Beta".to_string()],
            vec!["Alpha".to_string(), "Gamma".into()],
        ];
        let d =
            discriminative_descriptions(&facets, &candidates, &centroids, 1, 1, &mut bag_of_words)
                .unwrap();
        assert_eq!(d[0].1, "drama, Alpha");
        assert_eq!(d[2].1, "drama, Alpha, Gamma");
        let idx =
            DescriptionIndex::new(d.iter().enumerate().map(|(c, x)| (c as u32, x.1.as_str())));
        for (c, x) in d.iter().enumerate() {
            assert_eq!(idx.parse(&x.1), Some(c as u32));
        }
        // Two titles from one candidate each: the second step has nothing left for cluster 1.
        let d =
            discriminative_descriptions(&facets, &candidates, &centroids, 1, 2, &mut bag_of_words)
                .unwrap();
        assert_eq!(d[1].1, "drama, Beta");
    }

    #[test]
    fn unit_centroids_average_members_and_leave_empty_clusters_at_zero() {
        let c = unit_centroids(
            &[vec![2.0, 0.0], vec![0.0, 2.0], vec![3.0, 4.0]],
            &[0, 0, 2],
            3,
        );
        let h = 0.5f64.sqrt();
        assert!((c[0][0] - h).abs() < 1e-12 && (c[0][1] - h).abs() < 1e-12);
        assert_eq!(c[1], vec![0.0, 0.0]);
        assert!((c[2][0] - 0.6).abs() < 1e-12 && (c[2][1] - 0.8).abs() < 1e-12);
        // An empty cluster is never nearest.
        assert!(retrieval_margin(&[1.0, 1.0], &c, 0) > 0.0);
        assert_eq!(retrieval_margin(&[1.0, 1.0], &c, 1), f64::NEG_INFINITY);
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
