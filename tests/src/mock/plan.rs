//! What a request will get: the fault, the delays and the reply, decided once per request
//! from the instance knobs, the request's `mock` object and `#mock{...}` directives in its text.
//! Shared by every wire format the mock speaks.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde_json::Value;

use super::knobs::{Fault, Latency, RequestKnobs};
use super::{Body, Shared};

/// Knobs from a `#mock{...}` directive in any text of the request, so every wire format (and
/// every client) can script the mock through the gateway.
pub fn directive(texts: &[String]) -> Option<RequestKnobs> {
    for t in texts {
        if let Some(pos) = t.find("#mock{") {
            let rest = &t[pos + "#mock".len()..];
            let mut de = serde_json::Deserializer::from_str(rest).into_iter::<RequestKnobs>();
            if let Some(Ok(k)) = de.next() {
                return Some(k);
            }
        }
    }
    None
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

/// Everything a format handler needs about one request, decided up front.
pub struct Prepared {
    /// The plan.
    pub plan: Plan,
    /// The knobs in force.
    pub knobs: RequestKnobs,
}

/// Decide a request's fate from its knobs (body `mock` object, else a `#mock{}` directive),
/// its texts (for usage) and its last user turn (for the reply).
pub fn prepare(
    shared: &Shared,
    body_knobs: Option<RequestKnobs>,
    texts: &[String],
    last_user: &str,
    raw: &Bytes,
) -> Prepared {
    let knobs = body_knobs.or_else(|| directive(texts)).unwrap_or_default();
    let prompt_tokens = texts
        .iter()
        .map(|t| t.split_whitespace().count() as u64)
        .sum();
    let last: Vec<String> = last_user.split_whitespace().map(str::to_owned).collect();
    let mut plan = plan(shared, &knobs, prompt_tokens, &last);
    if knobs.echo {
        plan.words = vec![String::from_utf8_lossy(raw).into_owned()];
    }
    Prepared { plan, knobs }
}

/// Send the answer: whole JSON or SSE events, with the plan's truncation or malformation.
pub fn respond(
    shared: &Arc<Shared>,
    plan: &Plan,
    stream: bool,
    whole: &Value,
    mut events: Vec<Bytes>,
) -> Response<Body> {
    use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
    if !stream {
        let bytes = Bytes::from(serde_json::to_vec(whole).unwrap_or_default());
        let len = bytes.len();
        let body = match plan.fault {
            Some(Fault::Malformed) => super::full(bytes.slice(..len / 2)),
            Some(Fault::Truncate) => timed_body(
                shared,
                vec![bytes.slice(..len / 2), Bytes::new()],
                Duration::ZERO,
                Latency::Fixed(0),
                Some(1),
            ),
            _ => {
                shared.stats.ok(false);
                super::full(bytes)
            }
        };
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if plan.fault == Some(Fault::Truncate) {
            r.headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        return r;
    }
    let truncate_at = match plan.fault {
        Some(Fault::Truncate) => Some(events.len() / 2),
        Some(Fault::Malformed) => {
            let at = events.len() / 2;
            events.insert(at, Bytes::from_static(b"data: {\"broken\": [\n\n"));
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
    r
}

/// Split a string into `n` roughly equal pieces (for streaming tool-call arguments).
pub fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let size = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
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
