//! OpenAI chat completions wire format (also vLLM, Ollama, Groq, Together, ... by base URL).
//!
//! The internal types follow this format, so encoding is the request with the upstream's model
//! name; decoding parses the JSON body or the SSE stream (`data: {...}` lines, then
//! `data: [DONE]`).

use std::time::Instant;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use secrecy::ExposeSecret;

use super::error::truncate;
use super::http::{send_for_json, send_for_stream, WireError, MAX_ERROR_MESSAGE};
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
    let url = format!("{}/chat/completions", lease.spec().base_url);
    let mut rb = lease.client().post(url).json(&body);
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
    Ok(decode_sse(lease.spec().name.clone(), resp))
}

struct SseState {
    events: futures_util::stream::BoxStream<'static, Result<eventsource_stream::Event, String>>,
    provider: String,
    finished: bool,
    saw_finish_reason: bool,
}

fn decode_sse(provider: String, resp: reqwest::Response) -> ChunkStream {
    let events = resp
        .bytes_stream()
        .eventsource()
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    let state = SseState {
        events,
        provider,
        finished: false,
        saw_finish_reason: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        loop {
            let Some(next) = st.events.next().await else {
                st.finished = true;
                if st.saw_finish_reason {
                    return None;
                }
                let err = ProviderError::Stream {
                    provider: st.provider.clone(),
                    message: "stream ended before [DONE]".to_owned(),
                };
                return Some((Err(err), st));
            };
            let event = match next {
                Ok(ev) => ev,
                Err(message) => {
                    st.finished = true;
                    let err = ProviderError::Stream {
                        provider: st.provider.clone(),
                        message: truncate(&message, MAX_ERROR_MESSAGE),
                    };
                    return Some((Err(err), st));
                }
            };
            let data = event.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                return None;
            }
            if event.event == "error" || data.starts_with("{\"error\"") {
                st.finished = true;
                let message = serde_json::from_str::<WireError>(data)
                    .ok()
                    .and_then(|w| w.error.message)
                    .unwrap_or_else(|| "upstream sent an error event".to_owned());
                let err = ProviderError::Stream {
                    provider: st.provider.clone(),
                    message: truncate(&message, MAX_ERROR_MESSAGE),
                };
                return Some((Err(err), st));
            }
            return match serde_json::from_str::<ChatChunk>(data) {
                Ok(chunk) => {
                    if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
                        st.saw_finish_reason = true;
                    }
                    Some((Ok(chunk), st))
                }
                Err(e) => {
                    st.finished = true;
                    let err = ProviderError::Decode {
                        provider: st.provider.clone(),
                        message: truncate(&format!("bad stream chunk: {e}"), MAX_ERROR_MESSAGE),
                    };
                    Some((Err(err), st))
                }
            };
        }
    })
    .boxed()
}
