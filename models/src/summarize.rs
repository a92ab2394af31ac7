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

/// Summarise `text` in at most `max_tokens` tokens; `on_progress` is called after each chunk
/// and may return `false` to cancel.
pub fn summarize(
    gen: &mut Generator,
    text: &str,
    max_tokens: usize,
    mut on_progress: impl FnMut(Progress) -> bool,
) -> Result<Summary, ModelError> {
    if text.trim().is_empty() {
        return Err(ModelError::Input("nothing to summarise".to_owned()));
    }
    let params = GenParams {
        max_tokens,
        ..GenParams::default()
    };
    let mut pieces = chunks(gen, text, CHUNK_TOKENS)?;
    let first_round = pieces.len();
    let mut progress = Progress {
        done: 0,
        total: pieces.len(),
    };
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    loop {
        let mut summaries = Vec::with_capacity(pieces.len());
        for piece in &pieces {
            let out = gen.generate(&prompt(piece), &params, |_| true)?;
            prompt_tokens += out.prompt_tokens;
            completion_tokens += out.completion_tokens;
            summaries.push(out.text.trim().to_owned());
            progress.done += 1;
            if !on_progress(progress) {
                return Err(ModelError::Input("summary cancelled".to_owned()));
            }
        }
        if summaries.len() == 1 {
            return Ok(Summary {
                text: summaries.remove(0),
                chunks: first_round,
                prompt_tokens,
                completion_tokens,
            });
        }
        // Reduce: summarise the summaries (in as few chunks as fit).
        pieces = chunks(gen, &summaries.join("\n"), CHUNK_TOKENS)?;
        progress.total += pieces.len();
    }
}
