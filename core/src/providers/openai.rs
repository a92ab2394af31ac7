//! OpenAI chat completions wire format (also vLLM, Ollama, Groq, Together, ... by base URL).
//!
//! The internal types follow this format, so encoding is the request with the upstream's model
//! name; decoding parses the JSON body or the SSE stream (`data: {...}` lines, then
//! `data: [DONE]`).

use std::time::Instant;

use secrecy::ExposeSecret;

use super::error::truncate;
use super::http::{
    decode_events, send_for_json, send_for_stream, EventDecoder, WireError, MAX_ERROR_MESSAGE,
};
use super::{ChunkStream, Lease, ProviderError};
use crate::types::{ChatChunk, ChatRequest, ChatResponse, Content, Dialect};

fn request(lease: &Lease, model: &str, req: &ChatRequest, stream: bool) -> reqwest::RequestBuilder {
    let mut body = req.clone();
    body.model = model.to_owned();
    body.stream = stream;
    if stream {
        // Always ask for usage, for accounting; the client sees it only if it asked too.
        let mut opts = match body.stream_options.take() {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        opts.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
        body.stream_options = Some(serde_json::Value::Object(opts));
    }
    if body.dialect != Dialect::OpenAi {
        // Fields of another dialect (e.g. Anthropic's `top_k`, `cache_control`) would be
        // rejected by OpenAI; only OpenAI's own unknown fields pass through.
        body.extra.clear();
        for m in &mut body.messages {
            m.extra.clear();
            if let Some(Content::Parts(parts)) = &mut m.content {
                for p in parts {
                    p.extra.remove("cache_control");
                }
            }
        }
    }
    let mut rb = lease
        .client()
        .post(lease.url("chat/completions"))
        .json(&body);
    if let Some(key) = &lease.spec().api_key {
        rb = rb.bearer_auth(key.expose_secret());
    }
    rb
}

/// One non-streamed call.
pub async fn chat(
    lease: &Lease,
    model: &str,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChatResponse, ProviderError> {
    send_for_json(lease, request(lease, model, req, false), deadline).await
}

/// Start a streamed call; the stream yields chunks until `[DONE]`.
pub async fn chat_stream(
    lease: &Lease,
    model: &str,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChunkStream, ProviderError> {
    let resp = send_for_stream(lease, request(lease, model, req, true), deadline).await?;
    Ok(decode_events(
        lease.spec().name.clone(),
        resp,
        SseDecoder::default(),
    ))
}

/// OpenAI's stream: `data: {chunk}` events until `data: [DONE]`.
#[derive(Default)]
struct SseDecoder {
    done: bool,
    saw_finish_reason: bool,
}

impl EventDecoder for SseDecoder {
    fn event(
        &mut self,
        provider: &str,
        event: &str,
        data: &str,
    ) -> Result<Vec<ChatChunk>, ProviderError> {
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        if event == "error" || data.starts_with("{\"error\"") {
            let message = serde_json::from_str::<WireError>(data)
                .ok()
                .and_then(|w| w.error.message)
                .unwrap_or_else(|| "upstream sent an error event".to_owned());
            return Err(ProviderError::Stream {
                provider: provider.to_owned(),
                message: truncate(&message, MAX_ERROR_MESSAGE),
            });
        }
        let chunk = serde_json::from_str::<ChatChunk>(data).map_err(|e| ProviderError::Decode {
            provider: provider.to_owned(),
            message: truncate(&format!("bad stream chunk: {e}"), MAX_ERROR_MESSAGE),
        })?;
        if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
            self.saw_finish_reason = true;
        }
        Ok(vec![chunk])
    }

    fn finished(&self) -> bool {
        self.done
    }

    fn end(&mut self, provider: &str) -> Result<Vec<ChatChunk>, ProviderError> {
        // Some servers close after the last chunk without `[DONE]`; that is only a cut-off
        // stream if no choice had finished.
        if self.saw_finish_reason {
            return Ok(Vec::new());
        }
        Err(ProviderError::Stream {
            provider: provider.to_owned(),
            message: "stream ended before [DONE]".to_owned(),
        })
    }
}
