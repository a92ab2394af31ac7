//! HTTP plumbing shared by the wire formats: deadlines, transport errors, error bodies and
//! `Retry-After`.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;

use super::error::truncate;
use super::{ChunkStream, ProviderError};
use crate::types::ChatChunk;

/// Longest upstream error message passed on to clients and logs.
pub(crate) const MAX_ERROR_MESSAGE: usize = 512;
/// Largest upstream error body read.
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;

/// The error body of OpenAI, Anthropic and Gemini alike: `{"error": {"message": ...}}`.
#[derive(Deserialize)]
pub(crate) struct WireError {
    pub(crate) error: WireErrorInner,
}

#[derive(Deserialize)]
pub(crate) struct WireErrorInner {
    #[serde(default)]
    pub(crate) message: Option<String>,
}

/// Time left before `deadline`, or a timeout error if none.
pub(crate) fn remaining(provider: &str, deadline: Instant) -> Result<Duration, ProviderError> {
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

/// Send a request whose whole answer must arrive before `deadline`; note rate-limit headers;
/// turn a non-success status into [`ProviderError::Status`]; parse the JSON body as `T`.
pub(crate) async fn send_for_json<T: serde::de::DeserializeOwned>(
    lease: &super::Lease,
    rb: reqwest::RequestBuilder,
    deadline: Instant,
) -> Result<T, ProviderError> {
    let name = lease.spec().name.as_str();
    let left = remaining(name, deadline)?;
    let resp = crate::telemetry::with_traceparent(rb)
        .timeout(left)
        .send()
        .await
        .map_err(|e| transport_error(name, &e))?;
    lease.observe_headers(resp.headers());
    if !resp.status().is_success() {
        return Err(status_error(name, resp).await);
    }
    let bytes = resp.bytes().await.map_err(|e| transport_error(name, &e))?;
    serde_json::from_slice::<T>(&bytes).map_err(|e| ProviderError::Decode {
        provider: name.to_owned(),
        message: truncate(&e.to_string(), MAX_ERROR_MESSAGE),
    })
}

/// Send a streaming request: only the response head must arrive before `deadline` (the body
/// is read, and timed, by the caller). Rate-limit headers and error statuses as above.
pub(crate) async fn send_for_stream(
    lease: &super::Lease,
    rb: reqwest::RequestBuilder,
    deadline: Instant,
) -> Result<reqwest::Response, ProviderError> {
    let name = lease.spec().name.as_str();
    let left = remaining(name, deadline)?;
    let rb = crate::telemetry::with_traceparent(rb);
    let resp = match tokio::time::timeout(left, rb.send()).await {
        Ok(r) => r.map_err(|e| transport_error(name, &e))?,
        Err(_) => {
            return Err(ProviderError::Timeout {
                provider: name.to_owned(),
            })
        }
    };
    lease.observe_headers(resp.headers());
    if !resp.status().is_success() {
        return Err(status_error(name, resp).await);
    }
    Ok(resp)
}

/// Turns one provider's server-sent events into internal chunks.
pub(crate) trait EventDecoder: Send + 'static {
    /// Chunks for one event (`event` is the SSE event name, empty when none was sent).
    fn event(
        &mut self,
        provider: &str,
        event: &str,
        data: &str,
    ) -> Result<Vec<ChatChunk>, ProviderError>;
    /// The protocol's own end marker has been seen: stop reading.
    fn finished(&self) -> bool;
    /// The body ended before the end marker: last chunks, or the error of a cut-off stream.
    fn end(&mut self, provider: &str) -> Result<Vec<ChatChunk>, ProviderError>;
}

struct Decoding<D> {
    events: futures_util::stream::BoxStream<'static, Result<eventsource_stream::Event, String>>,
    decoder: D,
    queue: std::collections::VecDeque<Result<ChatChunk, ProviderError>>,
    provider: String,
    done: bool,
}

/// The chunk stream of an SSE response, decoded by `decoder`. After an error nothing more is
/// read; the stream ends.
pub(crate) fn decode_events<D: EventDecoder>(
    provider: String,
    resp: reqwest::Response,
    decoder: D,
) -> ChunkStream {
    use eventsource_stream::Eventsource;
    let events = resp
        .bytes_stream()
        .eventsource()
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    let state = Decoding {
        events,
        decoder,
        queue: std::collections::VecDeque::new(),
        provider,
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.queue.pop_front() {
                return Some((item, st));
            }
            if st.done || st.decoder.finished() {
                return None;
            }
            match st.events.next().await {
                None => {
                    st.done = true;
                    match st.decoder.end(&st.provider) {
                        Ok(chunks) => st.queue.extend(chunks.into_iter().map(Ok)),
                        Err(e) => st.queue.push_back(Err(e)),
                    }
                }
                Some(Err(message)) => {
                    st.done = true;
                    st.queue.push_back(Err(ProviderError::Stream {
                        provider: st.provider.clone(),
                        message: truncate(&message, MAX_ERROR_MESSAGE),
                    }));
                }
                Some(Ok(ev)) => {
                    if ev.data.trim().is_empty() {
                        continue;
                    }
                    match st.decoder.event(&st.provider, &ev.event, ev.data.trim()) {
                        Ok(chunks) => st.queue.extend(chunks.into_iter().map(Ok)),
                        Err(e) => {
                            st.done = true;
                            st.queue.push_back(Err(e));
                        }
                    }
                }
            }
        }
    })
    .boxed()
}
