//! Summarisation with the local LLM: long inputs are cut into token-sized chunks, each chunk
//! is summarised (map), and the partial summaries are summarised again until one fits (reduce).
//! Progress is reported per chunk.

use crate::generate::{GenParams, Generator};
use crate::ModelError;

/// Tokens of source text per chunk.
pub const CHUNK_TOKENS: usize = 1200;

/// Progress of a summary: chunks done out of chunks planned (the plan grows with each reduce
/// round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Chunks summarised so far.
    pub done: usize,
    /// Chunks planned so far.
    pub total: usize,
}

/// A finished summary.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The text.
    pub text: String,
    /// Source chunks (first round).
    pub chunks: usize,
    /// Prompt tokens over every call.
    pub prompt_tokens: usize,
    /// Generated tokens over every call.
    pub completion_tokens: usize,
}

fn prompt(text: &str) -> String {
    Generator::chat_prompt([
        (
            "system",
            "You write short, factual summaries. Keep names, numbers and dates.",
        ),
        (
            "user",
            &format!("Summarise the following text in two or three sentences.\n\n{text}"),
        ),
    ])
}

/// Split `text` into pieces of at most `max_tokens` tokens, at whitespace.
pub fn chunks(gen: &Generator, text: &str, max_tokens: usize) -> Result<Vec<String>, ModelError> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut current_tokens = 0;
    for para in text.split_inclusive(['\n', '.']) {
        let n = gen.encode(para)?.len();
        if current_tokens + n > max_tokens && !current.is_empty() {
            out.push(std::mem::take(&mut current));
            current_tokens = 0;
        }
        if n > max_tokens {
            // One very long sentence: cut it by words.
            for word in para.split_inclusive(' ') {
                let w = gen.encode(word)?.len();
                if current_tokens + w > max_tokens && !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                    current_tokens = 0;
                }
                current.push_str(word);
                current_tokens += w;
            }
        } else {
            current.push_str(para);
            current_tokens += n;
        }
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// A summary in progress, one chunk at a time: the caller decides what runs between chunks
/// (other requests for the same model, so a long document cannot starve them).
pub struct Summarizing {
    pieces: Vec<String>,
    next: usize,
    summaries: Vec<String>,
    progress: Progress,
    first_round: usize,
    prompt_tokens: usize,
    completion_tokens: usize,
    params: GenParams,
}

impl Summarizing {
    /// Cut `text` into chunks; nothing is generated yet.
    pub fn start(gen: &Generator, text: &str, max_tokens: usize) -> Result<Self, ModelError> {
        if text.trim().is_empty() {
            return Err(ModelError::Input("nothing to summarise".to_owned()));
        }
        let pieces = chunks(gen, text, CHUNK_TOKENS)?;
        Ok(Self {
            first_round: pieces.len(),
            progress: Progress {
                done: 0,
                total: pieces.len(),
            },
            pieces,
            next: 0,
            summaries: Vec::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            params: GenParams {
                max_tokens,
                ..GenParams::default()
            },
        })
    }

    /// Chunks done and planned so far.
    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// Summarise the next chunk (starting a reduce round when a round ends); the summary once
    /// the last round leaves one.
    pub fn step(&mut self, gen: &mut Generator) -> Result<Option<Summary>, ModelError> {
        let Some(piece) = self.pieces.get(self.next) else {
            return Err(ModelError::Input(
                "the summary is already finished".to_owned(),
            ));
        };
        let out = gen.generate(&prompt(piece), &self.params, |_| true)?;
        self.prompt_tokens += out.prompt_tokens;
        self.completion_tokens += out.completion_tokens;
        self.summaries.push(out.text.trim().to_owned());
        self.progress.done += 1;
        self.next += 1;
        if self.next < self.pieces.len() {
            return Ok(None);
        }
        if self.summaries.len() == 1 {
            return Ok(Some(Summary {
                text: self.summaries.remove(0),
                chunks: self.first_round,
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.completion_tokens,
            }));
        }
        // Reduce: summarise the summaries (in as few chunks as fit).
        self.pieces = chunks(gen, &self.summaries.join("\n"), CHUNK_TOKENS)?;
        self.summaries.clear();
        self.next = 0;
        self.progress.total += self.pieces.len();
        Ok(None)
    }
}

/// Summarise `text` in at most `max_tokens` tokens; `on_progress` is called after each chunk
/// and may return `false` to cancel.
pub fn summarize(
    gen: &mut Generator,
    text: &str,
    max_tokens: usize,
    mut on_progress: impl FnMut(Progress) -> bool,
) -> Result<Summary, ModelError> {
    let mut run = Summarizing::start(gen, text, max_tokens)?;
    loop {
        let done = run.step(gen)?;
        if !on_progress(run.progress()) {
            return Err(ModelError::Input("summary cancelled".to_owned()));
        }
        if let Some(summary) = done {
            return Ok(summary);
        }
    }
}
