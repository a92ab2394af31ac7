//! The semantic cache's verifier: P(two questions ask the same thing), so that a semantic hit is
//! served only when it is right.
//!
//! A fixed cosine threshold on a small embedder is not safe: paraphrase-like pairs that differ
//! in a number, a negation or a name sit at cosine 0.95 and above. The verifier is a logistic
//! regression trained in Rust on labelled question pairs over the two MiniLM embeddings
//! (cosine, |a−b| and a∘b, as in Sentence-BERT's classification head) plus guards on the
//! texts: numbers, negations and capitalised names that differ, word overlap and length ratio.
//! Its threshold is chosen on a validation split for a target precision and stored with it.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::router::{Scorer, TrainOptions};

/// Text guards beside the embedding features.
pub const GUARD_FEATURES: usize = 7;

/// One labelled pair.
#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    /// First question.
    pub text_a: String,
    /// Second question.
    pub text_b: String,
    /// 1 when they ask the same thing.
    pub label: u8,
}

/// Read JSONL pairs (`text_a`, `text_b`, `label`), gzip or plain, at most `limit` of them.
pub fn load_pairs(path: &Path, limit: usize) -> Result<Vec<Pair>, ModelError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        if out.len() >= limit {
            break;
        }
        let line = line.map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let p: Pair = serde_json::from_str(&line)
            .map_err(|e| ModelError::Input(format!("{}:{}: {e}", path.display(), i + 1)))?;
        if !p.text_a.trim().is_empty() && !p.text_b.trim().is_empty() {
            out.push(p);
        }
    }
    Ok(out)
}

const NEGATIONS: &[&str] = &[
    "not",
    "no",
    "never",
    "without",
    "cannot",
    "can't",
    "don't",
    "doesn't",
    "isn't",
    "aren't",
    "wasn't",
    "won't",
    "shouldn't",
    "didn't",
    "nor",
    "none",
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '.' || c == ','))
        .map(|w| w.trim_matches(|c: char| c == '.' || c == ',' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn numbers(ws: &[String]) -> BTreeSet<String> {
    ws.iter()
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
        .map(|w| w.replace(',', ""))
        .collect()
}

fn names(ws: &[String]) -> BTreeSet<String> {
    // Capitalised words past the first: a cheap stand-in for named entities.
    ws.iter()
        .skip(1)
        .filter(|w| w.chars().next().is_some_and(char::is_uppercase) && w.len() > 1)
        .filter(|w| w.to_lowercase() != "i")
        .map(|w| w.to_lowercase())
        .collect()
}

fn lower_set(ws: &[String]) -> BTreeSet<String> {
    ws.iter().map(|w| w.to_lowercase()).collect()
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f32 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f32 / union as f32
}

/// Guards on two texts: differing numbers, differing negation, name overlap, word overlap,
/// words only one side has, length ratio, and whether the numbers are exactly equal.
pub fn guard_features(a: &str, b: &str) -> [f32; GUARD_FEATURES] {
    let (wa, wb) = (words(a), words(b));
    let (na, nb) = (numbers(&wa), numbers(&wb));
    let (la, lb) = (lower_set(&wa), lower_set(&wb));
    let neg = |s: &BTreeSet<String>| NEGATIONS.iter().filter(|n| s.contains(**n)).count();
    let (ea, eb) = (names(&wa), names(&wb));
    let only_one = la.symmetric_difference(&lb).count() as f32;
    let (ca, cb) = (
        a.chars().count().max(1) as f32,
        b.chars().count().max(1) as f32,
    );
    [
        na.symmetric_difference(&nb).count() as f32,
        f32::from(u8::from(neg(&la) != neg(&lb))),
        if ea.is_empty() && eb.is_empty() {
            1.0
        } else {
            jaccard(&ea, &eb)
        },
        jaccard(&la, &lb),
        only_one.ln_1p(),
        ca.min(cb) / ca.max(cb),
        f32::from(u8::from(na == nb)),
    ]
}

/// The verifier's input for a pair of unit embeddings and their texts.
pub fn pair_features(ea: &[f32], ta: &str, eb: &[f32], tb: &str) -> Vec<f32> {
    // Measured: the 769-wide Sentence-BERT head (|a−b|, a∘b) overfits a few thousand pairs and
    // is badly calibrated where it matters (the top); the cosine with the text guards and their
    // interactions is not.
    let cos: f32 = ea.iter().zip(eb).map(|(x, y)| x * y).sum();
    let g = guard_features(ta, tb);
    let mut x = Vec::with_capacity(4 + GUARD_FEATURES);
    x.push(cos);
    x.push(cos * cos);
    x.push((1.0 - cos).max(0.0).sqrt());
    x.push(cos * g[3]);
    x.extend_from_slice(&g);
    x
}

/// A trained verifier and its operating threshold. Stored as versioned JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verifier {
    /// File format version.
    pub version: u32,
    /// The logistic regression over [`pair_features`].
    pub head: Scorer,
    /// Probability at or above which a pair counts as the same question.
    pub threshold: f32,
    /// Precision the threshold was chosen for, on validation pairs.
    pub target_precision: f32,
}

/// Precision and recall of scores against labels at a threshold.
pub fn precision_recall(scores: &[f32], labels: &[u8], threshold: f32) -> (f64, f64) {
    let (mut tp, mut fp, mut pos) = (0u64, 0u64, 0u64);
    for (s, l) in scores.iter().zip(labels) {
        pos += u64::from(*l);
        if *s >= threshold {
            if *l == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
        }
    }
    let precision = if tp + fp == 0 {
        1.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let recall = if pos == 0 {
        0.0
    } else {
        tp as f64 / pos as f64
    };
    (precision, recall)
}

/// The lowest threshold (most recall) whose precision on these scores is at least `target`,
/// counting only thresholds that accept at least `min_accepted` pairs (so a handful of lucky
/// pairs cannot set it).
pub fn threshold_for_precision(
    scores: &[f32],
    labels: &[u8],
    target: f64,
    min_accepted: usize,
) -> Option<f32> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut best = None;
    for (n, &i) in idx.iter().enumerate() {
        if labels[i] == 1 {
            tp += 1;
        } else {
            fp += 1;
        }
        let next_differs = idx.get(n + 1).is_none_or(|&j| scores[j] < scores[i]);
        if next_differs && n + 1 >= min_accepted && tp as f64 / (tp + fp) as f64 >= target {
            best = Some(scores[i]);
        }
    }
    best
}

impl Verifier {
    /// Fit the head on `xs` (rows of [`pair_features`]) and labels, then pick the threshold
    /// for `target_precision` on the validation rows.
    pub fn train(
        xs: &[Vec<f32>],
        ys: &[u8],
        val_x: &[Vec<f32>],
        val_y: &[u8],
        target_precision: f32,
        l2: f32,
    ) -> Result<Self, ModelError> {
        let yf: Vec<f32> = ys.iter().map(|y| f32::from(*y)).collect();
        let mut head = Scorer::train(
            xs,
            &yf,
            TrainOptions {
                l2,
                ..TrainOptions::default()
            },
        )?;
        head.inputs = format!("minilm-pair+guards{GUARD_FEATURES}");
        let scores: Vec<f32> = val_x.iter().map(|x| head.score(x)).collect();
        let threshold = threshold_for_precision(
            &scores,
            val_y,
            f64::from(target_precision),
            (val_y.len() / 100).max(10),
        )
        .unwrap_or(1.0);
        Ok(Self {
            version: 1,
            head,
            threshold,
            target_precision,
        })
    }

    /// P(same question) for a pair.
    pub fn probability(&self, ea: &[f32], ta: &str, eb: &[f32], tb: &str) -> f32 {
        self.head.score(&pair_features(ea, ta, eb, tb))
    }

    /// Whether a pair counts as the same question at this verifier's threshold (or `threshold`
    /// when given).
    pub fn accepts(&self, p: f32, threshold: Option<f32>) -> bool {
        p >= threshold.unwrap_or(self.threshold)
    }

    /// Write as JSON.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let text = serde_json::to_vec(self).map_err(|e| ModelError::Input(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))
    }

    /// Read a file written by [`Verifier::save`].
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))?;
        Self::from_json(&bytes).map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))
    }

    /// Parse and check a verifier.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let v: Self =
            serde_json::from_slice(bytes).map_err(|e| ModelError::Input(e.to_string()))?;
        let dim = v.head.weights.len();
        if v.version != 1 || dim != v.head.mean.len() || dim != v.head.std.len() {
            return Err(ModelError::Input(
                "not a version-1 cache verifier".to_owned(),
            ));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_see_numbers_negations_and_names() {
        let g = guard_features(
            "How do I get to Paris in 3 days?",
            "How do I get to Rome in 5 days?",
        );
        assert_eq!(g[0], 2.0, "3 and 5 differ");
        assert!(g[2] < 1.0, "different names");
        assert_eq!(g[6], 0.0);
        let g = guard_features("Is coffee bad for you?", "Is coffee not bad for you?");
        assert_eq!(g[1], 1.0);
        let g = guard_features("What is love?", "what is love");
        assert_eq!(g[0], 0.0);
        assert_eq!(g[3], 1.0);
        assert_eq!(g[6], 1.0);
    }

    #[test]
    fn the_threshold_meets_the_precision_it_was_chosen_for() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
        let labels = [1, 1, 0, 1, 0, 0];
        let t = threshold_for_precision(&scores, &labels, 0.75, 1).unwrap();
        assert_eq!(t, 0.6);
        let (p, r) = precision_recall(&scores, &labels, t);
        assert_eq!((p, r), (0.75, 1.0));
        assert_eq!(threshold_for_precision(&scores, &labels, 1.0, 3), None);
    }
}
