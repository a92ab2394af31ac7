//! OpenAI chat completions, as the mock speaks it.
//!
//! Replies are deterministic: the given `mock.reply`, or `reply_words` words derived from the
//! last user message. Usage counts whitespace-separated words: `prompt_tokens` over every
//! message's text, `completion_tokens` over the reply, so tests know the exact totals.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::knobs::{Fault, Latency, RequestKnobs};
use super::{json_response, openai_error, Body, Shared};

#[derive(Deserialize)]
struct ChatIn {
    model: String,
    messages: Vec<MessageIn>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    mock: Option<RequestKnobs>,
}

#[derive(Deserialize)]
struct MessageIn {
    role: String,
    #[serde(default)]
    content: Option<Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Words in a message's content (string, or `text` parts).
pub fn content_words(content: Option<&Value>) -> Vec<String> {
    match content {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .flat_map(|t| t.split_whitespace().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The reply's words: the scripted reply, or words from the prompt padded to `n`.
pub fn reply_words(knobs: &RequestKnobs, last_user: &[String], n: usize) -> Vec<String> {
    if let Some(r) = &knobs.reply {
        return r
            .split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let mut words: Vec<String> = ["Mock", "reply", "to:"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    words.extend(last_user.iter().cloned());
    let mut i = 0;
    while words.len() < n {
        words.push(format!("word{i}"));
        i += 1;
    }
    words.truncate(n.max(1));
    words
}

/// What one request will get.
pub struct Plan {
    /// Injected fault, if any.
    pub fault: Option<Fault>,
    /// Delay before a whole answer (or an error).
    pub latency: Duration,
    /// Delay before the first chunk.
    pub ttft: Duration,
    /// Distribution of delays between chunks.
    pub itl: Latency,
    /// `Retry-After` for 429.
    pub retry_after_secs: u64,
    /// Reply words.
    pub words: Vec<String>,
    /// Prompt word count.
    pub prompt_tokens: u64,
    /// Leave out usage.
    pub omit_usage: bool,
}

/// Decide the fate of a request from the instance and request knobs.
pub fn plan(
    shared: &Shared,
    knobs: &RequestKnobs,
    prompt_tokens: u64,
    last_user: &[String],
) -> Plan {
    let cfg = shared.config();
    let mut rng = rand::thread_rng();
    let fault = match knobs.fault {
        Some(f) => Some(f),
        None => cfg.faults.pick(&mut rng),
    };
    let latency = knobs.latency.unwrap_or(cfg.latency).sample(&mut rng);
    let ttft = knobs.ttft.unwrap_or(cfg.ttft).sample(&mut rng);
    Plan {
        fault,
        latency,
        ttft,
        itl: knobs.itl.unwrap_or(cfg.itl),
        retry_after_secs: cfg.retry_after_secs,
        words: reply_words(
            knobs,
            last_user,
            knobs.reply_words.unwrap_or(cfg.reply_words),
        ),
        prompt_tokens,
        omit_usage: knobs.omit_usage,
    }
}

/// The error answer for a status fault, or `None` for other faults.
pub fn status_fault(
    plan: &Plan,
    status_error: fn(StatusCode, &str) -> Response<Body>,
) -> Option<Response<Body>> {
    match plan.fault? {
        Fault::Status500 => Some(status_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "mock: internal error",
        )),
        Fault::Status503 => Some(status_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "mock: overloaded",
        )),
        Fault::Status400 => Some(status_error(
            StatusCode::BAD_REQUEST,
            "mock: invalid request",
        )),
        Fault::Status429 => {
            let mut r = status_error(StatusCode::TOO_MANY_REQUESTS, "mock: rate limit reached");
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(plan.retry_after_secs));
            Some(r)
        }
        Fault::Reset | Fault::Truncate | Fault::Malformed | Fault::Hang => None,
    }
}

/// Apply the faults that are not statuses before answering: latency, hang, reset.
pub async fn pre_answer(plan: &Plan, shared: &Shared) -> Result<(), io::Error> {
    if let Some(f) = plan.fault {
        shared.stats.fault(f);
    }
    // Even a zero sleep waits for the timer wheel's next 1 ms tick.
    if !plan.latency.is_zero() {
        tokio::time::sleep(plan.latency).await;
    }
    match plan.fault {
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            Err(io::Error::other("mock: hung up"))
        }
        Some(Fault::Reset) => Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "mock: reset",
        )),
        _ => Ok(()),
    }
}

/// Counts a stream as cancelled if it is dropped before its last event.
struct CancelGuard {
    shared: Option<Arc<Shared>>,
}

impl CancelGuard {
    fn disarm(&mut self) {
        self.shared = None;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Some(s) = self.shared.take() {
            s.stats.cancelled();
        }
    }
}

/// A body that sends `events` with the plan's delays, then ends (or breaks off if `truncate`).
/// A body dropped before its end (the client went away) counts as cancelled.
pub fn timed_body(
    shared: &Arc<Shared>,
    events: Vec<Bytes>,
    ttft: Duration,
    itl: Latency,
    truncate_after: Option<usize>,
) -> Body {
    let guard = CancelGuard {
        shared: Some(Arc::clone(shared)),
    };
    let total = events.len();
    let state = (
        events.into_iter().enumerate(),
        ttft,
        itl,
        truncate_after,
        guard,
    );
    let stream = futures_util::stream::unfold(
        state,
        move |(mut it, ttft, itl, cut, mut guard)| async move {
            let Some((i, ev)) = it.next() else {
                guard.disarm();
                return None;
            };
            if cut == Some(usize::MAX) {
                guard.disarm();
                return None;
            }
            if cut == Some(i) {
                // Let what went before reach the wire first, as it would over a real network.
                tokio::time::sleep(Duration::from_millis(20)).await;
                guard.disarm();
                return Some((
                    Err(io::Error::other("mock: stream truncated")),
                    (it, ttft, itl, Some(usize::MAX), guard),
                ));
            }
            let delay = if i == 0 {
                ttft
            } else {
                itl.sample(&mut rand::thread_rng())
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if i + 1 == total {
                guard.disarm();
            }
            Some((Ok(Frame::data(ev)), (it, ttft, itl, cut, guard)))
        },
    );
    BodyExt::boxed(StreamBody::new(stream))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Handle `POST /v1/chat/completions`.
pub async fn chat(body: &Bytes, shared: &Arc<Shared>) -> Result<Response<Body>, io::Error> {
    shared.stats.request();
    let req: ChatIn = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            shared.stats.bad_request();
            return Ok(openai_error(
                StatusCode::BAD_REQUEST,
                &format!("mock: bad request: {e}"),
            ));
        }
    };
    if req.messages.is_empty() {
        shared.stats.bad_request();
        return Ok(openai_error(
            StatusCode::BAD_REQUEST,
            "mock: messages must not be empty",
        ));
    }
    let knobs = req.mock.clone().unwrap_or_default();
    let prompt_tokens: u64 = req
        .messages
        .iter()
        .map(|m| content_words(m.content.as_ref()).len() as u64)
        .sum();
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| content_words(m.content.as_ref()))
        .unwrap_or_default();
    let mut plan = plan(shared, &knobs, prompt_tokens, &last_user);
    if knobs.echo {
        plan.words = vec![String::from_utf8_lossy(body).into_owned()];
    }
    pre_answer(&plan, shared).await?;
    if let Some(r) = status_fault(&plan, openai_error) {
        return Ok(r);
    }
    let id = format!("chatcmpl-mock-{}", shared.next_id());
    let created = now();
    let completion_tokens = plan.words.len() as u64;
    let usage = json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": plan.prompt_tokens + completion_tokens,
    });

    if !req.stream {
        let mut answer = json!({
            "id": id, "object": "chat.completion", "created": created, "model": req.model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": plan.words.join(" ")},
                         "logprobs": null, "finish_reason": "stop"}],
        });
        if !plan.omit_usage {
            answer["usage"] = usage;
        }
        let bytes = Bytes::from(serde_json::to_vec(&answer).unwrap_or_default());
        return Ok(match plan.fault {
            Some(Fault::Malformed) => {
                let cut = bytes.slice(..bytes.len() / 2);
                let mut r = Response::new(super::full(cut));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            Some(Fault::Truncate) => {
                let len = bytes.len();
                let half = bytes.slice(..len / 2);
                let mut r = Response::new(timed_body(
                    shared,
                    vec![half, Bytes::new()],
                    Duration::ZERO,
                    Latency::Fixed(0),
                    Some(1),
                ));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(len));
                r
            }
            _ => {
                shared.stats.ok(false);
                json_response(StatusCode::OK, &answer)
            }
        });
    }

    let chunk = |delta: Value, finish: Value| {
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": req.model,
                       "system_fingerprint": "fp_mock",
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        sse(&v)
    };
    let mut events = Vec::with_capacity(plan.words.len() + 4);
    events.push(chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    for (i, w) in plan.words.iter().enumerate() {
        let text = if i == 0 { w.clone() } else { format!(" {w}") };
        events.push(chunk(json!({"content": text}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    if include_usage && !plan.omit_usage {
        events.push(sse(
            &json!({"id": id, "object": "chat.completion.chunk", "created": created,
                                "model": req.model, "choices": [], "usage": usage}),
        ));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let truncate_at = match plan.fault {
        Some(Fault::Truncate) => Some(events.len() / 2),
        Some(Fault::Malformed) => {
            let at = events.len() / 2;
            events.insert(
                at,
                Bytes::from_static(b"data: {\"id\": \"broken\", \"choices\": [\n\n"),
            );
            None
        }
        _ => {
            shared.stats.ok(true);
            None
        }
    };
    let mut r = Response::new(timed_body(shared, events, plan.ttft, plan.itl, truncate_at));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// One SSE `data:` event.
pub fn sse(v: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    out.extend(serde_json::to_vec(v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
