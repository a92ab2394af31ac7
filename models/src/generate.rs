//! Text generation with SmolLM2-135M-Instruct from GGUF (`quantized_llama`): a tokenizer built
//! from the GGUF metadata, the ChatML chat template, greedy or sampled decoding with
//! temperature, top-p, seed, stop sequences and a token budget, incremental UTF-8-safe
//! streaming, and per-token log-probabilities for confidence.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor, D};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::store::ModelFiles;
use crate::ModelError;

/// ChatML markers.
pub const IM_START: &str = "<|im_start|>";
/// End of a ChatML turn.
pub const IM_END: &str = "<|im_end|>";
/// SmolLM2's system prompt when the conversation has none.
pub const DEFAULT_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
/// Longest prompt accepted, in tokens (the model's context is 8k; keep room for output).
pub const MAX_PROMPT_TOKENS: usize = 6144;

/// Decoding settings.
#[derive(Debug, Clone)]
pub struct GenParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// 0 (or `None`) is greedy.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Sampling seed.
    pub seed: u64,
    /// Stop sequences (not included in the output).
    pub stop: Vec<String>,
}

impl Default for GenParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: None,
            top_p: None,
            seed: 299_792_458,
            stop: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn.
    Stop,
    /// The token budget ran out.
    Length,
    /// A stop sequence appeared.
    StopSequence(String),
    /// The consumer stopped listening.
    Cancelled,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct GenOutput {
    /// The text (without stop sequence).
    pub text: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Why it ended.
    pub finish: Finish,
    /// Mean log-probability of the generated tokens (confidence).
    pub mean_logprob: f32,
}

/// Build the byte-level BPE tokenizer the GGUF metadata describes.
pub fn tokenizer_from_gguf(content: &gguf_file::Content) -> Result<Tokenizer, ModelError> {
    let md = |k: &str| {
        content
            .metadata
            .get(k)
            .ok_or_else(|| ModelError::Load(format!("GGUF metadata has no `{k}`")))
    };
    let bad = |k: &str, e: candle_core::Error| ModelError::Load(format!("GGUF `{k}`: {e}"));
    let tokens: Vec<String> = md("tokenizer.ggml.tokens")?
        .to_vec()
        .map_err(|e| bad("tokens", e))?
        .iter()
        .map(|v| v.to_string().cloned())
        .collect::<Result<_, _>>()
        .map_err(|e| bad("tokens", e))?;
    let merges: Vec<(String, String)> = md("tokenizer.ggml.merges")?
        .to_vec()
        .map_err(|e| bad("merges", e))?
        .iter()
        .filter_map(|v| v.to_string().ok())
        .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| bad("token_type", e))?
            .iter()
            .map(|t| t.to_i32().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let vocab: ahash::AHashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::new(bpe);
    // SmolLM's pre-tokenizer: digits one by one, then GPT-2's byte-level split.
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        PreTokenizerWrapper::Digits(Digits::new(true)),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ])));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    // Control (3) and user-defined (4) tokens are special: never split, skipped when decoding.
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, t)| *t == 3 || *t == 4)
        .map(|(s, _)| AddedToken::from(s.clone(), true))
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(tok)
}

/// How the generator's weight matrices are held in memory, whatever the file stores.
///
/// The shipped SmolLM2 file is Q4_1, which candle multiplies with generic (non-SIMD) code.
/// Re-encoding it once at load picks a format whose kernels are fast here; `bench-local.sh`
/// measures each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Q8_0: 8-bit blocks with runtime-detected AVX2/NEON kernels; a quarter of f32's memory
    /// traffic, which is what bounds decoding on CPU. The default.
    #[default]
    Q8,
    /// f32: the gemm crate's kernels; fastest prompt processing, 4x the memory of Q8_0.
    F32,
    /// As stored in the file.
    Stored,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "q8_0" | "q8" => Ok(Self::Q8),
            "f32" => Ok(Self::F32),
            "stored" => Ok(Self::Stored),
            other => Err(format!(
                "unknown precision `{other}` (expected q8_0, f32 or stored)"
            )),
        }
    }
}

/// Re-encode the weight matrices of a GGUF file as `precision`, returning an in-memory GGUF.
/// Norm vectors and tensors that are already in the target format are copied as they are.
fn reencode_gguf<R: std::io::Read + std::io::Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
    precision: Precision,
) -> Result<Vec<u8>, ModelError> {
    let target = match precision {
        Precision::Q8 => GgmlDType::Q8_0,
        Precision::F32 => GgmlDType::F32,
        Precision::Stored => {
            return Err(ModelError::Load(
                "nothing to re-encode for stored weights".to_owned(),
            ))
        }
    };
    let cpu = Device::Cpu;
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(content.tensor_infos.len());
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let q = content
            .tensor(reader, name, &cpu)
            .map_err(|e| ModelError::Load(format!("GGUF tensor `{name}`: {e}")))?;
        let dims = q.shape().dims().to_vec();
        let block = target.block_size();
        let convert =
            q.dtype() != target && dims.len() == 2 && dims.last().is_some_and(|k| k % block == 0);
        let q = if convert {
            let f = q.dequantize(&cpu)?;
            QTensor::quantize(&f, target)?
        } else {
            q
        };
        tensors.push((name.clone(), q));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs)?;
    Ok(out.into_inner())
}

/// A loaded generative model. Clone it for a fresh worker: weights are shared.
#[derive(Clone)]
pub struct Generator {
    model: ModelWeights,
    tokenizer: Tokenizer,
    device: Device,
    eos: Vec<u32>,
}

impl Generator {
    /// Load the GGUF file of a located model.
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, ModelError> {
        Self::load_as(files, device, Precision::default())
    }

    /// Load the GGUF file of a located model with its matrices held as `precision`.
    pub fn load_as(
        files: &ModelFiles,
        device: &Device,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let path = files.paths.first().ok_or_else(|| {
            ModelError::Load(format!("model `{}` lists no files", files.model.id))
        })?;
        Self::load_gguf(path, device, precision)
    }

    /// Load from a GGUF file.
    pub fn load_gguf(
        path: &Path,
        device: &Device,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let mut file = std::fs::File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let content =
            gguf_file::Content::read(&mut file).map_err(|e| ModelError::Load(e.to_string()))?;
        let tokenizer = tokenizer_from_gguf(&content)?;
        let eos: Vec<u32> = [IM_END, "<|endoftext|>"]
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        let model = if precision == Precision::Stored {
            ModelWeights::from_gguf(content, &mut file, device)
        } else {
            let bytes = reencode_gguf(&content, &mut file, precision)?;
            let mut cursor = std::io::Cursor::new(bytes);
            let content = gguf_file::Content::read(&mut cursor)
                .map_err(|e| ModelError::Load(e.to_string()))?;
            ModelWeights::from_gguf(content, &mut cursor, device)
        }
        .map_err(|e| ModelError::Load(e.to_string()))?;
        Ok(Self {
            model,
            tokenizer,
            device: device.clone(),
            eos,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids of a text (special tokens recognised).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// The ChatML prompt for a conversation of `(role, text)` turns, ending with the assistant's
    /// turn opened.
    pub fn chat_prompt<'a>(turns: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        let turns: Vec<(&str, &str)> = turns.into_iter().collect();
        let mut out = String::new();
        if turns.first().is_none_or(|(r, _)| *r != "system") {
            out.push_str(&format!("{IM_START}system\n{DEFAULT_SYSTEM}{IM_END}\n"));
        }
        for (role, text) in turns {
            out.push_str(&format!("{IM_START}{role}\n{text}{IM_END}\n"));
        }
        out.push_str(&format!("{IM_START}assistant\n"));
        out
    }

    /// Mean log-probability per token the model gives `text` (teacher-forced, from its second
    /// token on): how well it predicts the text, to compare weight formats or score a candidate
    /// answer.
    pub fn mean_logprob(&mut self, text: &str) -> Result<f32, ModelError> {
        let ids = self.encode(text)?;
        if ids.len() < 2 || ids.len() > MAX_PROMPT_TOKENS {
            return Err(ModelError::Input(format!(
                "score 2 to {MAX_PROMPT_TOKENS} tokens, not {}",
                ids.len()
            )));
        }
        self.model.clear_kv_cache();
        let mut total = 0f32;
        for (pos, pair) in ids.windows(2).enumerate() {
            let input = Tensor::new(&pair[..1], &self.device)?.unsqueeze(0)?;
            let logits = self.model.forward(&input, pos)?.squeeze(0)?;
            total += candle_nn::ops::log_softmax(&logits, D::Minus1)?
                .get(pair[1] as usize)?
                .to_scalar::<f32>()?;
        }
        Ok(total / (ids.len() - 1) as f32)
    }

    /// Generate a continuation of `prompt`. `on_text` receives each new piece of text as soon
    /// as it is safe to show (whole UTF-8 characters, never part of a stop sequence); returning
    /// `false` cancels.
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &GenParams,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<GenOutput, ModelError> {
        let prompt_ids = self.encode(prompt)?;
        if prompt_ids.is_empty() {
            return Err(ModelError::Input("the prompt is empty".to_owned()));
        }
        if prompt_ids.len() > MAX_PROMPT_TOKENS {
            return Err(ModelError::Input(format!(
                "the prompt has {} tokens; the local model takes at most {MAX_PROMPT_TOKENS}",
                prompt_ids.len()
            )));
        }
        self.model.clear_kv_cache();
        let sampling = match (params.temperature, params.top_p) {
            (None, _) => Sampling::ArgMax,
            (Some(t), _) if t <= 0.0 => Sampling::ArgMax,
            (Some(temperature), None) => Sampling::All { temperature },
            (Some(temperature), Some(p)) => Sampling::TopP { p, temperature },
        };
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
        let mut generated: Vec<u32> = Vec::new();
        let mut text = String::new();
        let mut shown = 0usize;
        let mut logprob_sum = 0f32;
        let mut finish = Finish::Length;
        let mut input = Tensor::new(prompt_ids.as_slice(), &self.device)?.unsqueeze(0)?;
        let mut pos = 0;
        while generated.len() < params.max_tokens {
            let logits = self.model.forward(&input, pos)?.squeeze(0)?;
            pos += input.dim(1)?;
            let next = sampler.sample(&logits)?;
            let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)?
                .get(next as usize)?
                .to_scalar::<f32>()?;
            if self.eos.contains(&next) {
                finish = Finish::Stop;
                break;
            }
            logprob_sum += lp;
            generated.push(next);
            text = self
                .tokenizer
                .decode(&generated, true)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            // A stop sequence ends it; text that could be the start of one is held back.
            if let Some((at, stop)) = params
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| text.find(s.as_str()).map(|i| (i, s)))
                .min_by_key(|(i, _)| *i)
            {
                let stop = stop.clone();
                text.truncate(at);
                if at > shown && !on_text(&text[shown..at]) {
                    finish = Finish::Cancelled;
                    break;
                }
                shown = at;
                finish = Finish::StopSequence(stop);
                break;
            }
            let mut safe = text.len();
            if text.ends_with('\u{FFFD}') {
                safe = text.trim_end_matches('\u{FFFD}').len();
            }
            for s in &params.stop {
                for k in (1..s.len()).rev() {
                    if s.is_char_boundary(k) && text[..safe].ends_with(&s[..k]) {
                        safe = safe.min(safe - k);
                        break;
                    }
                }
            }
            if safe > shown {
                if !on_text(&text[shown..safe]) {
                    finish = Finish::Cancelled;
                    break;
                }
                shown = safe;
            }
            input = Tensor::new(&[next], &self.device)?.unsqueeze(0)?;
        }
        if finish != Finish::Cancelled && shown < text.len() {
            let rest = text[shown..].trim_end_matches('\u{FFFD}').to_owned();
            if !rest.is_empty() && !on_text(&rest) {
                finish = Finish::Cancelled;
            }
        }
        let n = generated.len();
        Ok(GenOutput {
            text: text.trim_end_matches('\u{FFFD}').to_owned(),
            prompt_tokens: prompt_ids.len(),
            completion_tokens: n,
            finish,
            mean_logprob: if n == 0 { 0.0 } else { logprob_sum / n as f32 },
        })
    }
}
