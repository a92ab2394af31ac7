//! The routing scorer: P(a request needs the strong tier), from the request's MiniLM embedding
//! plus cheap text features, and its evaluation (APGR, as in the RouteLLM paper).
//!
//! Two learners are measured, both trained in Rust: logistic regression (standardised inputs,
//! L2, full-batch Adam) and k-nearest-neighbours over the unit embeddings. The label is "the
//! strong model is right where the weak one is not", so a higher score means more to gain by
//! escalating.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// Cheap features beside the embedding.
pub const CHEAP_FEATURES: usize = 8;

/// Tokens of a prompt the scorer's embedding reads: the head of a prompt says what it is about
/// (the subject, the kind of task), and a bounded window keeps the embedding's time bounded.
pub const PROMPT_WINDOW: usize = 64;

/// One labelled example: a prompt and whether each tier answered it correctly.
#[derive(Debug, Clone, Deserialize)]
pub struct Example {
    /// The prompt.
    pub prompt: String,
    /// The weak tier was right.
    pub weak_correct: bool,
    /// The strong tier was right.
    pub strong_correct: bool,
}

/// Read a JSONL file of examples (`prompt`, `weak_correct`, `strong_correct`; other fields
/// are ignored).
pub fn load_examples(path: &Path) -> Result<Vec<Example>, ModelError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| ModelError::Input(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Length, digits, maths and code markers, line and option structure: signals of difficulty
/// that an embedding of the topic does not carry.
pub fn cheap_features(text: &str) -> [f32; CHEAP_FEATURES] {
    let chars = text.chars().count().max(1) as f32;
    let count = |f: &dyn Fn(char) -> bool| text.chars().filter(|c| f(*c)).count() as f32;
    let digits = count(&|c| c.is_ascii_digit());
    let maths = count(&|c| "=+-*/^<>()[]{}|√∑∫π".contains(c));
    let code = [
        "def ", "return", "{", "};", "#include", "()", "=>", "print(",
    ]
    .iter()
    .filter(|m| text.contains(*m))
    .count() as f32;
    let lines = text.lines().count() as f32;
    let words = text.split_whitespace().count().max(1) as f32;
    let long_words = text.split_whitespace().filter(|w| w.len() >= 10).count() as f32;
    [
        chars.ln(),
        digits / chars,
        maths / chars,
        code,
        lines.ln_1p(),
        words.ln(),
        long_words / words,
        count(&|c| c == '?'),
    ]
}

/// The scorer's input for one request.
pub fn features(embedding: &[f32], text: &str) -> Vec<f32> {
    let mut x = Vec::with_capacity(embedding.len() + CHEAP_FEATURES);
    x.extend_from_slice(embedding);
    x.extend_from_slice(&cheap_features(text));
    x
}

/// The training label: escalating would turn a wrong answer into a right one.
pub fn label(e: &Example) -> f32 {
    f32::from(u8::from(e.strong_correct && !e.weak_correct))
}

/// Trained logistic regression over [`features`]. Stored as versioned JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scorer {
    /// File format version.
    pub version: u32,
    /// What the inputs are (`minilm+cheap8`).
    pub inputs: String,
    /// Per-input mean used for standardising.
    pub mean: Vec<f32>,
    /// Per-input standard deviation used for standardising.
    pub std: Vec<f32>,
    /// Weights.
    pub weights: Vec<f32>,
    /// Bias.
    pub bias: f32,
    /// How it was trained (when, on what), for whoever finds the file later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained: Option<String>,
    /// Tokens of the prompt its embedding input read (files from before the window existed
    /// read whole prompts).
    #[serde(default = "whole_prompt")]
    pub window: usize,
    /// A second head over the same inputs whose probability is subtracted: with it the score
    /// is `(P(strong right) − P(weak right) + 1) / 2`, the expected gain of escalating mapped
    /// to 0..1 (measured better than predicting "only the strong one is right" directly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minus: Option<Head>,
}

/// One linear head over a scorer's standardised inputs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Head {
    /// Weights.
    pub weights: Vec<f32>,
    /// Bias.
    pub bias: f32,
}

fn whole_prompt() -> usize {
    crate::embed::MAX_TOKENS
}

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// L2 penalty.
    pub l2: f32,
    /// Adam steps over the full batch.
    pub epochs: usize,
    /// Step size.
    pub lr: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            l2: 1e-2,
            epochs: 300,
            lr: 0.05,
        }
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl Scorer {
    /// Fit on `xs` (rows of [`features`]) and 0/1 labels `ys`.
    pub fn train(xs: &[Vec<f32>], ys: &[f32], opt: TrainOptions) -> Result<Self, ModelError> {
        let n = xs.len();
        let d = xs.first().map_or(0, Vec::len);
        if n == 0 || d == 0 || ys.len() != n || xs.iter().any(|x| x.len() != d) {
            return Err(ModelError::Input(
                "training needs equal-length rows and one label per row".to_owned(),
            ));
        }
        let mut mean = vec![0f32; d];
        for x in xs {
            for (m, v) in mean.iter_mut().zip(x) {
                *m += v / n as f32;
            }
        }
        let mut std = vec![0f32; d];
        for x in xs {
            for ((s, v), m) in std.iter_mut().zip(x).zip(&mean) {
                *s += (v - m) * (v - m) / n as f32;
            }
        }
        for s in &mut std {
            *s = s.sqrt().max(1e-6);
        }
        let z: Vec<Vec<f32>> = xs
            .iter()
            .map(|x| {
                x.iter()
                    .zip(&mean)
                    .zip(&std)
                    .map(|((v, m), s)| (v - m) / s)
                    .collect()
            })
            .collect();
        let (mut w, mut b) = (vec![0f32; d], 0f32);
        let (mut mw, mut vw) = (vec![0f32; d], vec![0f32; d]);
        let (mut mb, mut vb) = (0f32, 0f32);
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let mut grad = vec![0f32; d];
        for t in 1..=opt.epochs {
            grad.iter_mut().for_each(|g| *g = 0.0);
            let mut gb = 0f32;
            for (x, y) in z.iter().zip(ys) {
                let p = sigmoid(x.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + b);
                let err = p - y;
                for (g, v) in grad.iter_mut().zip(x) {
                    *g += err * v;
                }
                gb += err;
            }
            let inv = 1.0 / n as f32;
            for i in 0..d {
                let g = grad[i] * inv + opt.l2 * w[i];
                mw[i] = b1 * mw[i] + (1.0 - b1) * g;
                vw[i] = b2 * vw[i] + (1.0 - b2) * g * g;
                let mh = mw[i] / (1.0 - b1.powi(t as i32));
                let vh = vw[i] / (1.0 - b2.powi(t as i32));
                w[i] -= opt.lr * mh / (vh.sqrt() + eps);
            }
            let g = gb * inv;
            mb = b1 * mb + (1.0 - b1) * g;
            vb = b2 * vb + (1.0 - b2) * g * g;
            b -= opt.lr * (mb / (1.0 - b1.powi(t as i32)))
                / ((vb / (1.0 - b2.powi(t as i32))).sqrt() + eps);
        }
        Ok(Self {
            version: 1,
            inputs: format!("minilm+cheap{CHEAP_FEATURES}"),
            mean,
            std,
            weights: w,
            bias: b,
            trained: None,
            window: PROMPT_WINDOW,
            minus: None,
        })
    }

    /// The gain scorer: one head for P(the strong model is right), one for P(the weak one
    /// is right), from the same rows.
    pub fn train_gain(
        xs: &[Vec<f32>],
        strong: &[f32],
        weak: &[f32],
        opt: TrainOptions,
    ) -> Result<Self, ModelError> {
        let mut s = Self::train(xs, strong, opt)?;
        let w = Self::train(xs, weak, opt)?;
        s.inputs = format!("{} gain", s.inputs);
        s.minus = Some(Head {
            weights: w.weights,
            bias: w.bias,
        });
        Ok(s)
    }

    /// P(escalating helps) for one row of [`features`] (the expected gain, for a gain scorer).
    pub fn score(&self, x: &[f32]) -> f32 {
        let linear = |weights: &[f32], bias: f32| {
            let z: f32 = x
                .iter()
                .zip(&self.mean)
                .zip(&self.std)
                .zip(weights)
                .map(|(((v, m), s), w)| (v - m) / s * w)
                .sum();
            sigmoid(z + bias)
        };
        let p = linear(&self.weights, self.bias);
        match &self.minus {
            Some(h) => (p - linear(&h.weights, h.bias) + 1.0) / 2.0,
            None => p,
        }
    }

    /// Write as JSON.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let text = serde_json::to_vec(self).map_err(|e| ModelError::Input(e.to_string()))?;
        std::fs::write(path, text)
            .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))
    }

    /// Read a file written by [`Scorer::save`].
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path)
            .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))?;
        let s: Self = serde_json::from_slice(&bytes)
            .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))?;
        if s.version != 1
            || s.weights.len() != s.mean.len()
            || s.std.len() != s.mean.len()
            || s.minus
                .as_ref()
                .is_some_and(|h| h.weights.len() != s.mean.len())
        {
            return Err(ModelError::Input(format!(
                "{}: not a version-1 routing scorer",
                path.display()
            )));
        }
        Ok(s)
    }
}

/// k-nearest-neighbours over unit embeddings: the mean label of the `k` most similar training
/// prompts.
pub fn knn_scores(train: &[Vec<f32>], labels: &[f32], queries: &[Vec<f32>], k: usize) -> Vec<f32> {
    knn_weighted(train, labels, queries, k, None)
}

/// As [`knn_scores`], with neighbours weighted by `exp(similarity / temperature)` when given.
pub fn knn_weighted(
    train: &[Vec<f32>],
    labels: &[f32],
    queries: &[Vec<f32>],
    k: usize,
    temperature: Option<f32>,
) -> Vec<f32> {
    let k = k.clamp(1, train.len().max(1));
    queries
        .iter()
        .map(|q| {
            let mut best: Vec<(f32, f32)> = Vec::with_capacity(k + 1);
            for (t, y) in train.iter().zip(labels) {
                let sim: f32 = q.iter().zip(t).map(|(a, b)| a * b).sum();
                if best.len() < k || sim > best[best.len() - 1].0 {
                    let pos = best.partition_point(|(s, _)| *s >= sim);
                    best.insert(pos, (sim, *y));
                    best.truncate(k);
                }
            }
            match temperature {
                None => best.iter().map(|(_, y)| y).sum::<f32>() / best.len().max(1) as f32,
                Some(t) => {
                    let top = best.first().map_or(0.0, |(s, _)| *s);
                    let (num, den) = best.iter().fold((0f32, 0f32), |(n, d), (s, y)| {
                        let w = ((s - top) / t).exp();
                        (n + w * y, d + w)
                    });
                    num / den.max(f32::MIN_POSITIVE)
                }
            }
        })
        .collect()
}

/// How well a score routes: the RouteLLM measures.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct RoutingQuality {
    /// Area under performance-gap-recovered vs share of strong calls (0.5 for random).
    pub apgr: f64,
    /// Least share of strong calls that keeps 95% of the strong tier's accuracy.
    pub strong_share_for_95: f64,
    /// Accuracy of the weak tier alone.
    pub weak_accuracy: f64,
    /// Accuracy of the strong tier alone.
    pub strong_accuracy: f64,
}

/// Evaluate `scores` (higher = escalate first) on examples' outcomes: send the top share to the
/// strong tier, for every share from 0 to 1.
pub fn routing_quality(scores: &[f32], examples: &[&Example]) -> RoutingQuality {
    let n = scores.len().min(examples.len());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let weak: f64 = examples.iter().take(n).filter(|e| e.weak_correct).count() as f64;
    let strong: f64 = examples.iter().take(n).filter(|e| e.strong_correct).count() as f64;
    let gap = (strong - weak).max(1.0);
    // correct(k) = weak + sum over the first k escalated of (strong - weak).
    let mut correct = weak;
    let mut pgr = Vec::with_capacity(n + 1);
    let mut share_95 = None;
    pgr.push(0.0);
    if weak >= 0.95 * strong {
        share_95 = Some(0.0);
    }
    for (k, &i) in order.iter().enumerate() {
        let e = examples[i];
        correct += f64::from(u8::from(e.strong_correct)) - f64::from(u8::from(e.weak_correct));
        pgr.push((correct - weak) / gap);
        if share_95.is_none() && correct >= 0.95 * strong {
            share_95 = Some((k + 1) as f64 / n as f64);
        }
    }
    // Trapezoid over shares 0, 1/n, ..., 1.
    let area = pgr.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum::<f64>() / n.max(1) as f64;
    RoutingQuality {
        apgr: area,
        strong_share_for_95: share_95.unwrap_or(1.0),
        weak_accuracy: weak / n.max(1) as f64,
        strong_accuracy: strong / n.max(1) as f64,
    }
}

/// A deterministic shuffle of `0..n` (xorshift), so splits are reproducible without a
/// random-number crate.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(weak: bool, strong: bool) -> Example {
        Example {
            prompt: "q".to_owned(),
            weak_correct: weak,
            strong_correct: strong,
        }
    }

    #[test]
    fn apgr_of_oracle_random_and_reverse() {
        // Four questions only the strong tier gets right, four both get right.
        let examples: Vec<Example> = (0..8).map(|i| ex(i >= 4, true)).collect();
        let refs: Vec<&Example> = examples.iter().collect();
        let oracle: Vec<f32> = examples.iter().map(label).collect();
        let reverse: Vec<f32> = oracle.iter().map(|s| 1.0 - s).collect();
        let o = routing_quality(&oracle, &refs);
        let r = routing_quality(&reverse, &refs);
        // Perfect order recovers the gap over the first half: 1 - 0.5 / 2.
        assert!((o.apgr - 0.75).abs() < 1e-9, "{o:?}");
        assert!((r.apgr - 0.25).abs() < 1e-9, "{r:?}");
        assert_eq!(o.strong_share_for_95, 0.5);
        assert_eq!(o.weak_accuracy, 0.5);
    }

    #[test]
    fn logistic_regression_learns_a_separable_rule() {
        let xs: Vec<Vec<f32>> = (0..200).map(|i| vec![i as f32 / 200.0, 1.0]).collect();
        let ys: Vec<f32> = (0..200).map(|i| f32::from(u8::from(i >= 100))).collect();
        let s = Scorer::train(&xs, &ys, TrainOptions::default()).unwrap();
        assert!(s.score(&[0.9, 1.0]) > 0.8);
        assert!(s.score(&[0.1, 1.0]) < 0.2);
        let dir = std::env::temp_dir().join(format!("scorer-{}.json", std::process::id()));
        s.save(&dir).unwrap();
        assert_eq!(Scorer::load(&dir).unwrap(), s);
        let _ = std::fs::remove_file(dir);
    }

    #[test]
    fn gain_scorer_ranks_by_expected_gain_and_round_trips() {
        // x0 high: the strong model is right; x1 high: the weak one is right too.
        let xs: Vec<Vec<f32>> = (0..400)
            .map(|i| vec![(i % 20) as f32 / 20.0, (i / 20) as f32 / 20.0])
            .collect();
        let strong: Vec<f32> = xs.iter().map(|x| f32::from(u8::from(x[0] > 0.5))).collect();
        let weak: Vec<f32> = xs.iter().map(|x| f32::from(u8::from(x[1] > 0.5))).collect();
        let s = Scorer::train_gain(&xs, &strong, &weak, TrainOptions::default()).unwrap();
        let (gain, none, loss) = (
            s.score(&[0.9, 0.1]),
            s.score(&[0.9, 0.9]),
            s.score(&[0.1, 0.9]),
        );
        assert!(
            gain > 0.85 && (0.3..0.7).contains(&none) && loss < 0.15,
            "{gain} {none} {loss}"
        );
        let path = std::env::temp_dir().join(format!("gain-{}.json", std::process::id()));
        s.save(&path).unwrap();
        assert_eq!(Scorer::load(&path).unwrap(), s);
        // A file from before windows and gain heads reads whole prompts with one head.
        let mut old: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        old.as_object_mut().unwrap().remove("window");
        old.as_object_mut().unwrap().remove("minus");
        std::fs::write(&path, old.to_string()).unwrap();
        let old = Scorer::load(&path).unwrap();
        assert_eq!(
            (old.window, old.minus.is_none()),
            (crate::embed::MAX_TOKENS, true)
        );
        // A gain head of the wrong width is refused, not a panic later.
        let mut bad = s.clone();
        bad.minus = Some(Head {
            weights: vec![1.0],
            bias: 0.0,
        });
        bad.save(&path).unwrap();
        assert!(Scorer::load(&path).is_err());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn splits_are_reproducible_permutations() {
        let a = shuffled(100, 7);
        assert_eq!(a, shuffled(100, 7));
        assert_ne!(a, shuffled(100, 8));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }
}
