//! Sentence embeddings with all-MiniLM-L6-v2 (BERT): mean pooling over real tokens, then L2
//! normalisation, as sentence-transformers does.
//!
//! Batches are sorted by length and padded to their longest member, not to a fixed 128 tokens
//! as the shipped `tokenizer.json` asks: on CPU that is the difference between ~85 and ~145
//! embeddings per second.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;

use crate::bert::{mean_pool_normalised, Bert};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::store::ModelFiles;
use crate::ModelError;

/// Longest input in tokens (sentence-transformers' `max_seq_length` for this model).
pub const MAX_TOKENS: usize = 256;
/// Inputs per forward pass.
pub const BATCH: usize = 32;
/// Smallest batch a call is split into to keep every thread busy.
const MIN_SPLIT: usize = 4;

/// Unit vectors and token counts of a batch.
type Embedded = (Vec<Vec<f32>>, Vec<usize>);

/// A loaded embedding model.
pub struct Embedder {
    model: Bert,
    /// One thread per core. Batches run side by side, one per thread, each multiplying its
    /// matrices alone; a thread with nothing left helps the others' matrix products. This
    /// measured ~15-25% more embeddings per second than splitting every product across cores.
    pool: rayon::ThreadPool,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
}

impl Embedder {
    /// Load from located files (`config.json`, `tokenizer.json`, `model.safetensors`).
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, ModelError> {
        let path = |name: &str| {
            files.get(name).ok_or_else(|| {
                ModelError::Load(format!("model `{}` has no `{name}`", files.model.id))
            })
        };
        let config_path = path("config.json")?;
        let config_text =
            std::fs::read_to_string(config_path).map_err(|source| ModelError::Io {
                path: config_path.to_path_buf(),
                source,
            })?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| ModelError::Load(format!("config.json: {e}")))?;
        let dim = config.hidden_size;
        let mut tokenizer = Tokenizer::from_file(path("tokenizer.json")?)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let weights = path("model.safetensors")?.to_path_buf();
        // Read into memory: memory-mapping needs `unsafe`, which this workspace forbids.
        let vb = VarBuilder::from_buffered_safetensors(
            std::fs::read(&weights).map_err(|source| ModelError::Io {
                path: weights,
                source,
            })?,
            DType::F32,
            device,
        )
        .map_err(|e| ModelError::Load(e.to_string()))?;
        let model = Bert::load(vb, &config).map_err(|e| ModelError::Load(e.to_string()))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(1, usize::from))
            .thread_name(|i| format!("embed-{i}"))
            .build()
            .map_err(|e| ModelError::Load(format!("embedding threads: {e}")))?;
        Ok(Self {
            model,
            pool,
            tokenizer,
            device: device.clone(),
            dim,
        })
    }

    /// Embedding width (384 for MiniLM).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Token count of a text (without padding), for usage accounting.
    pub fn count_tokens(&self, text: &str) -> Result<usize, ModelError> {
        self.tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().len())
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Unit-length embeddings, one per text, in input order, with each text's token count.
    pub fn embed(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Vec<usize>), ModelError> {
        self.embed_head(texts, MAX_TOKENS)
    }

    /// Embeddings of each text's first `window` tokens (with `[CLS]` and `[SEP]`), for callers
    /// that need a bounded time per text more than the whole text: the cost grows with the
    /// tokens, so a 256-token prompt takes ~4× a 64-token window. The counts returned are the
    /// whole texts' (up to `MAX_TOKENS`), so a caller can tell whether the window covered one.
    pub fn embed_head(
        &self,
        texts: &[&str],
        window: usize,
    ) -> Result<(Vec<Vec<f32>>, Vec<usize>), ModelError> {
        self.embed_windows(texts, &vec![window; texts.len()])
    }

    /// [`Embedder::embed_head`] with a window per text (batches from several callers).
    pub fn embed_windows(
        &self,
        texts: &[&str],
        windows: &[usize],
    ) -> Result<(Vec<Vec<f32>>, Vec<usize>), ModelError> {
        if windows.len() != texts.len() {
            return Err(ModelError::Input(format!(
                "{} texts but {} windows",
                texts.len(),
                windows.len()
            )));
        }
        if texts.iter().any(|t| t.is_empty()) {
            return Err(ModelError::Input(
                "inputs must not be empty strings".to_owned(),
            ));
        }
        // Sort by length so each batch pads little; restore the order at the end.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        // Batches of at most BATCH, and at least one per thread when there is enough input.
        let threads = self.pool.current_num_threads().max(1);
        let size = texts.len().div_ceil(threads).clamp(MIN_SPLIT, BATCH);
        let batches: Vec<&[usize]> = order.chunks(size).collect();
        let results: Vec<Result<Embedded, ModelError>> = self.pool.install(|| {
            use rayon::prelude::*;
            batches
                .par_iter()
                .map(|batch| {
                    let inputs: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
                    let windows: Vec<usize> = batch
                        .iter()
                        .map(|&i| windows[i].clamp(3, MAX_TOKENS))
                        .collect();
                    self.embed_batch(&inputs, &windows)
                })
                .collect()
        });
        let mut out = vec![Vec::new(); texts.len()];
        let mut tokens = vec![0; texts.len()];
        for (batch, result) in batches.iter().zip(results) {
            let (vectors, counts) = result?;
            for ((slot, v), n) in batch.iter().zip(vectors).zip(counts) {
                out[*slot] = v;
                tokens[*slot] = n;
            }
        }
        Ok((out, tokens))
    }

    fn embed_batch(&self, texts: &[&str], windows: &[usize]) -> Result<Embedded, ModelError> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let tokens: Vec<usize> = enc
            .iter()
            .map(|e| e.get_attention_mask().iter().filter(|m| **m == 1).count())
            .collect();
        // Each text's first `window - 1` tokens and its closing `[SEP]`, padded to the longest.
        let kept: Vec<usize> = tokens
            .iter()
            .zip(windows)
            .map(|(&n, &w)| n.min(w))
            .collect();
        let width = kept.iter().copied().max().unwrap_or(0);
        let pad = self.tokenizer.get_padding().map_or(0, |p| p.pad_id);
        let mut ids = Vec::with_capacity(enc.len());
        let mut masks = Vec::with_capacity(enc.len());
        for ((e, &n), &keep) in enc.iter().zip(&tokens).zip(&kept) {
            let all = e.get_ids();
            let mut row: Vec<u32> = Vec::with_capacity(width);
            if keep < n {
                row.extend_from_slice(&all[..keep - 1]);
                row.push(all[n - 1]);
            } else {
                row.extend_from_slice(&all[..keep]);
            }
            let mut mask = vec![1u32; keep];
            row.resize(width, pad);
            mask.resize(width, 0);
            ids.push(Tensor::new(row, &self.device)?);
            masks.push(Tensor::new(mask, &self.device)?);
        }
        let ids = Tensor::stack(&ids, 0)?;
        let mask = Tensor::stack(&masks, 0)?;
        let hidden = self.model.forward(&ids, &mask)?;
        // Mean over real tokens only.
        Ok((mean_pool_normalised(&hidden, &mask)?, tokens))
    }
}

/// Cosine similarity of two vectors (dot product when both are unit length).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
