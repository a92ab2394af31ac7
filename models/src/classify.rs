//! Classification on MiniLM embeddings: zero-shot by similarity to label descriptions (and
//! examples), and a small trainable head (multinomial logistic regression, trained in-process
//! with candle-nn) that can be saved and loaded.
//!
//! Scores are softmax probabilities; the zero-shot temperature turns cosine similarities
//! (which for MiniLM sit in a narrow band) into usable probabilities. The margin between the
//! two best scores is the confidence a router can act on.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::embed::Embedder;
use crate::ModelError;

/// Softmax temperature for zero-shot similarities.
pub const ZERO_SHOT_TEMPERATURE: f32 = 0.05;

/// A candidate label.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Label {
    /// Name returned to the caller.
    pub name: String,
    /// What the label means (embedded instead of the bare name when given).
    #[serde(default)]
    pub description: Option<String>,
    /// Example texts of this label (their embeddings join the description's).
    #[serde(default)]
    pub examples: Vec<String>,
}

/// One text's result.
#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    /// Best label.
    pub label: String,
    /// Probability per label, in the labels' order.
    pub scores: Vec<(String, f32)>,
    /// Best minus second-best probability.
    pub margin: f32,
}

fn softmax(xs: &[f32], temperature: f32) -> Vec<f32> {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = xs.iter().map(|x| ((x - max) / temperature).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

fn result(names: &[String], probs: Vec<f32>) -> Classification {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
    let best = order.first().copied().unwrap_or(0);
    let margin = match order.get(1) {
        Some(&second) => probs[best] - probs[second],
        None => 1.0,
    };
    Classification {
        label: names.get(best).cloned().unwrap_or_default(),
        scores: names.iter().cloned().zip(probs).collect(),
        margin,
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Zero-shot classification of `texts` among `labels`.
pub fn zero_shot(
    embedder: &Embedder,
    texts: &[&str],
    labels: &[Label],
) -> Result<(Vec<Classification>, usize), ModelError> {
    ZeroShot::new(embedder, labels)?.classify(embedder, texts)
}

/// A label set with its centroids embedded once, for classifying many texts against it.
pub struct ZeroShot {
    labels: Vec<Label>,
    centroids: Vec<Vec<f32>>,
}

impl ZeroShot {
    /// Embed the labels' descriptions and examples.
    pub fn new(embedder: &Embedder, labels: &[Label]) -> Result<Self, ModelError> {
        if labels.len() < 2 {
            return Err(ModelError::Input("give at least two labels".to_owned()));
        }
        // One vector per label: the mean of its description (or name) and its examples.
        let (texts_of_labels, owner) = label_texts(labels);
        let (label_vecs, _) = embedder.embed(&texts_of_labels)?;
        Ok(Self {
            labels: labels.to_vec(),
            centroids: centroids(labels.len(), &label_vecs, &owner),
        })
    }

    /// Classify texts; also returns the tokens they took.
    pub fn classify(
        &self,
        embedder: &Embedder,
        texts: &[&str],
    ) -> Result<(Vec<Classification>, usize), ModelError> {
        let (vecs, tokens) = embedder.embed(texts)?;
        Ok((
            score(&self.labels, &vecs, &self.centroids),
            tokens.iter().sum(),
        ))
    }
}

/// The texts [`zero_shot`] embeds to describe `labels`, and which label each belongs to.
pub fn label_texts(labels: &[Label]) -> (Vec<&str>, Vec<usize>) {
    let mut texts: Vec<&str> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        texts.push(l.description.as_deref().unwrap_or(&l.name));
        owner.push(i);
        for e in &l.examples {
            texts.push(e);
            owner.push(i);
        }
    }
    (texts, owner)
}

/// Unit-length centroid per label from the embeddings of [`label_texts`].
pub fn centroids(n_labels: usize, label_vecs: &[Vec<f32>], owner: &[usize]) -> Vec<Vec<f32>> {
    let dim = label_vecs.first().map_or(0, Vec::len);
    let mut out = vec![vec![0f32; dim]; n_labels];
    for (v, i) in label_vecs.iter().zip(owner) {
        for (c, x) in out[*i].iter_mut().zip(v) {
            *c += x;
        }
    }
    out.iter_mut().for_each(|c| normalise(c));
    out
}

/// Score embedded texts against label centroids.
pub fn score(
    labels: &[Label],
    text_vecs: &[Vec<f32>],
    centroids: &[Vec<f32>],
) -> Vec<Classification> {
    let names: Vec<String> = labels.iter().map(|l| l.name.clone()).collect();
    text_vecs
        .iter()
        .map(|v| {
            let sims: Vec<f32> = centroids
                .iter()
                .map(|c| c.iter().zip(v).map(|(a, b)| a * b).sum())
                .collect();
            result(&names, softmax(&sims, ZERO_SHOT_TEMPERATURE))
        })
        .collect()
}

/// A trained linear head over embeddings.
pub struct LinearHead {
    labels: Vec<String>,
    varmap: VarMap,
    linear: candle_nn::Linear,
    device: Device,
}

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainParams {
    /// Passes over the data.
    pub epochs: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            epochs: 300,
            learning_rate: 0.05,
            weight_decay: 0.01,
        }
    }
}

impl LinearHead {
    fn build(labels: Vec<String>, dim: usize, device: &Device) -> Result<Self, ModelError> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let linear = candle_nn::linear(dim, labels.len(), vb.pp("head"))?;
        Ok(Self {
            labels,
            varmap,
            linear,
            device: device.clone(),
        })
    }

    /// Train on `(text, label)` examples (full-batch AdamW on cross-entropy).
    pub fn train(
        embedder: &Embedder,
        examples: &[(&str, &str)],
        params: &TrainParams,
    ) -> Result<Self, ModelError> {
        let mut labels: Vec<String> = examples.iter().map(|(_, l)| (*l).to_owned()).collect();
        labels.sort();
        labels.dedup();
        if labels.len() < 2 {
            return Err(ModelError::Input(
                "training needs examples of at least two labels".to_owned(),
            ));
        }
        let texts: Vec<&str> = examples.iter().map(|(t, _)| *t).collect();
        let (vecs, _) = embedder.embed(&texts)?;
        let device = Device::Cpu;
        let head = Self::build(labels, embedder.dim(), &device)?;
        let flat: Vec<f32> = vecs.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (vecs.len(), embedder.dim()), &device)?;
        let y: Vec<u32> = examples
            .iter()
            .map(|(_, l)| head.labels.iter().position(|n| n == l).unwrap_or(0) as u32)
            .collect();
        let y = Tensor::new(y.as_slice(), &device)?;
        let mut opt = candle_nn::AdamW::new(
            head.varmap.all_vars(),
            candle_nn::ParamsAdamW {
                lr: params.learning_rate,
                weight_decay: params.weight_decay,
                ..Default::default()
            },
        )?;
        for _ in 0..params.epochs {
            let logits = head.linear.forward(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            opt.backward_step(&loss)?;
        }
        Ok(head)
    }

    /// Labels, in score order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Classify embedded texts.
    pub fn predict(&self, embeddings: &[Vec<f32>]) -> Result<Vec<Classification>, ModelError> {
        let dim = embeddings.first().map_or(0, Vec::len);
        let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (embeddings.len(), dim), &self.device)?;
        let probs =
            candle_nn::ops::softmax(&self.linear.forward(&x)?, D::Minus1)?.to_vec2::<f32>()?;
        Ok(probs.into_iter().map(|p| result(&self.labels, p)).collect())
    }

    /// Save as `<path>` (safetensors) and `<path>.labels.json`.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        self.varmap.save(path)?;
        let labels =
            serde_json::to_vec(&self.labels).map_err(|e| ModelError::Load(e.to_string()))?;
        let lp = path.with_extension("labels.json");
        std::fs::write(&lp, labels).map_err(|source| ModelError::Io { path: lp, source })
    }

    /// Load what [`LinearHead::save`] wrote.
    pub fn load(path: &Path, dim: usize) -> Result<Self, ModelError> {
        let lp = path.with_extension("labels.json");
        let text = std::fs::read(&lp).map_err(|source| ModelError::Io { path: lp, source })?;
        let labels: Vec<String> =
            serde_json::from_slice(&text).map_err(|e| ModelError::Load(e.to_string()))?;
        let mut head = Self::build(labels, dim, &Device::Cpu)?;
        head.varmap.load(path)?;
        Ok(head)
    }
}
