//! OpenAI chat completions wire format (also vLLM, Ollama, Groq, Together, ... by base URL).
//!
//! The internal types follow this format, so encoding is the request with the upstream's model
//! name; decoding parses the JSON body or the SSE stream (`data: {...}` lines, then
//! `data: [DONE]`).

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::error::truncate;
use super::{ChunkStream, Lease, ProviderError};
use crate::types::{ChatChunk, ChatRequest, ChatResponse};

/// Longest upstream error message passed on to clients and logs.
const MAX_ERROR_MESSAGE: usize = 512;
/// Largest upstream error body read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// OpenAI's error body, for the message.
#[derive(Deserialize)]
struct WireError {
    error: WireErrorInner,
}

#[derive(Deserialize)]
struct WireErrorInner {
    #[serde(default)]
    message: Option<String>,
}

fn request(lease: &Lease, model: &str, req: &ChatRequest, stream: bool) -> reqwest::RequestBuilder {
    let mut body = req.clone();
    body.model = model.to_owned();
    body.stream = stream;
    let url = format!("{}/chat/completions", lease.spec.base_url);
    let mut rb = lease.client.post(url).json(&body);
    if let Some(key) = &lease.spec.api_key {
        rb = rb.bearer_auth(key.expose_secret());
    }
    rb
}

fn remaining(provider: &str, deadline: Instant) -> Result<Duration, ProviderError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ProviderError::Timeout {
            provider: provider.to_owned(),
        });
    }
    Ok(left)
}

/// Map a transport error without leaking URLs with credentials.
pub(crate) fn transport_error(provider: &str, e: &reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout {
            provider: provider.to_owned(),
        }
    } else if e.is_decode() || e.is_body() {
        ProviderError::Stream {
            provider: provider.to_owned(),
            message: source_chain(e),
        }
    } else {
        ProviderError::Connect {
            provider: provider.to_owned(),
            message: source_chain(e),
        }
    }
}

fn source_chain(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    if parts.is_empty() {
        "request failed".to_owned()
    } else {
        truncate(&parts.join(": "), MAX_ERROR_MESSAGE)
    }
}

/// Turn a non-success response into a [`ProviderError::Status`].
pub(crate) async fn status_error(provider: &str, resp: reqwest::Response) -> ProviderError {
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    tracing::debug!(provider, status, body = %String::from_utf8_lossy(&body), "upstream error body");
    let message = serde_json::from_slice::<WireError>(&body)
        .ok()
        .and_then(|w| w.error.message)
        .unwrap_or_else(|| {
            reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_owned()
        });
    ProviderError::Status {
        provider: provider.to_owned(),
        status,
        message: truncate(&message, MAX_ERROR_MESSAGE),
        retry_after,
    }
}

/// `Retry-After` as seconds (the HTTP-date form is rare from APIs and treated as absent), or
/// OpenAI's `retry-after-ms`.
pub(crate) fn parse_retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = h
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_secs_f64(ms / 1000.0));
        }
    }
    let secs = h
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// One non-streamed call.
pub async fn chat(
    lease: &Lease,
    model: &str,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChatResponse, ProviderError> {
    let name = lease.spec.name.as_str();
    let left = remaining(name, deadline)?;
    let resp = request(lease, model, req, false)
        .timeout(left)
        .send()
        .await
        .map_err(|e| transport_error(name, &e))?;
    if !resp.status().is_success() {
        return Err(status_error(name, resp).await);
    }
    let bytes = resp.bytes().await.map_err(|e| transport_error(name, &e))?;
    serde_json::from_slice::<ChatResponse>(&bytes).map_err(|e| ProviderError::Decode {
        provider: name.to_owned(),
        message: truncate(&e.to_string(), MAX_ERROR_MESSAGE),
    })
}

/// Start a streamed call; the stream yields chunks until `[DONE]`.
pub async fn chat_stream(
    lease: &Lease,
    model: &str,
    req: &ChatRequest,
    deadline: Instant,
) -> Result<ChunkStream, ProviderError> {
    let name = lease.spec.name.clone();
    let left = remaining(&name, deadline)?;
    let send = request(lease, model, req, true).send();
    let resp = match tokio::time::timeout(left, send).await {
        Ok(r) => r.map_err(|e| transport_error(&name, &e))?,
        Err(_) => return Err(ProviderError::Timeout { provider: name }),
    };
    if !resp.status().is_success() {
        return Err(status_error(&name, resp).await);
    }
    Ok(decode_sse(name, resp))
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
