//! `POST /v1/chat/completions`, streamed and not.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};

use super::body::read_request;
use super::AppState;
use crate::error::ApiError;
use crate::providers::chain::{self, Served};
use crate::types::{ChatRequest, Role, Stop};

/// Header that sets a request's overall deadline in milliseconds.
pub const TIMEOUT_HEADER: &str = "x-switchyard-timeout-ms";

/// Check what serde cannot: non-empty conversation, ranges, required content.
pub fn validate(req: &ChatRequest) -> Result<(), ApiError> {
    if req.model.trim().is_empty() {
        return Err(ApiError::param("model", "'model' must not be empty."));
    }
    if req.messages.is_empty() {
        return Err(ApiError::param(
            "messages",
            "'messages' must contain at least one message.",
        ));
    }
    for (i, m) in req.messages.iter().enumerate() {
        let has_content = m.content.as_ref().is_some_and(|c| !c.is_empty());
        match m.role {
            Role::Assistant => {
                if !has_content && m.tool_calls.as_ref().is_none_or(Vec::is_empty) {
                    return Err(ApiError::param(
                        format!("messages[{i}].content"),
                        format!(
                            "messages[{i}]: an assistant message needs 'content' or 'tool_calls'."
                        ),
                    ));
                }
            }
            Role::Tool => {
                if m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                    return Err(ApiError::param(
                        format!("messages[{i}].tool_call_id"),
                        format!("messages[{i}]: a tool message needs 'tool_call_id'."),
                    ));
                }
            }
            Role::System | Role::Developer | Role::User | Role::Function => {
                if m.content.is_none() {
                    return Err(ApiError::param(
                        format!("messages[{i}].content"),
                        format!("messages[{i}]: 'content' is required."),
                    ));
                }
            }
        }
    }
    if let Some(t) = req.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::param(
                "temperature",
                format!("{t} is not in [0, 2]."),
            ));
        }
    }
    if let Some(p) = req.top_p {
        if !(0.0..=1.0).contains(&p) {
            return Err(ApiError::param("top_p", format!("{p} is not in [0, 1].")));
        }
    }
    if let Some(n) = req.n {
        if !(1..=128).contains(&n) {
            return Err(ApiError::param("n", format!("{n} is not in [1, 128].")));
        }
    }
    for (name, v) in [
        ("max_tokens", req.max_tokens),
        ("max_completion_tokens", req.max_completion_tokens),
    ] {
        if v == Some(0) {
            return Err(ApiError::param(
                name,
                format!("'{name}' must be at least 1."),
            ));
        }
    }
    if let Some(Stop::Many(v)) = &req.stop {
        if v.len() > 4 {
            return Err(ApiError::param(
                "stop",
                "at most 4 stop sequences are allowed.",
            ));
        }
    }
    Ok(())
}

/// The request's deadline: the header if present and sane, else the configured default.
pub fn deadline(req: &HttpRequest, default: Duration) -> Result<Instant, ApiError> {
    let timeout = match req.headers().get(TIMEOUT_HEADER) {
        None => default,
        Some(v) => {
            let ms = v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    ApiError::param(
                        TIMEOUT_HEADER,
                        format!("'{TIMEOUT_HEADER}' must be a positive number of milliseconds."),
                    )
                })?;
            Duration::from_millis(ms)
        }
    };
    Ok(Instant::now() + timeout)
}

pub(crate) fn served_headers(resp: &mut actix_web::HttpResponseBuilder, served: &Served) {
    resp.insert_header(("x-switchyard-provider", served.provider.as_str()));
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&served.model) {
        resp.insert_header(("x-switchyard-model", v));
    }
    resp.insert_header(("x-switchyard-attempts", served.attempts));
}

/// Handle a chat completion.
#[tracing::instrument(skip_all, fields(model, stream, provider))]
pub async fn completions(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (_principal, chat): (_, ChatRequest) = read_request(&state, &req, payload).await?;
    validate(&chat)?;
    let span = tracing::Span::current();
    span.record("model", chat.model.as_str());
    span.record("stream", chat.stream);
    if let Some(local) = state
        .local
        .chat
        .as_ref()
        .filter(|_| is_local_chat(&chat.model))
    {
        return local_completion(local, &chat).await;
    }
    let routes = state.models.resolve(&chat.model)?;
    let deadline = deadline(&req, state.config.server.request_timeout)?;

    let chain_result = if chat.stream {
        chain::stream(&routes, &chat, deadline)
            .await
            .map(Either::Stream)
    } else {
        chain::complete(&routes, &chat, deadline)
            .await
            .map(|(a, s)| Either::Whole(a, s))
    };
    let answer = match chain_result {
        Ok(a) => a,
        Err(e) => {
            return match last_resort(&state, &req, &chat.model, &e) {
                Some(local) => {
                    tracing::warn!(error = %e, "every upstream failed; answering with the local model");
                    local_completion(local, &chat).await
                }
                None => Err(e),
            }
        }
    };
    match answer {
        Either::Stream(start) => {
            span.record("provider", start.served.provider.as_str());
            let mut resp = HttpResponse::Ok();
            resp.content_type("text/event-stream")
                .insert_header(("cache-control", "no-cache"))
                .insert_header(("x-accel-buffering", "no"));
            served_headers(&mut resp, &start.served);
            Ok(resp.streaming(super::sse::openai_stream(start, include_usage(&chat))))
        }
        Either::Whole(answer, served) => {
            span.record("provider", served.provider.as_str());
            let mut resp = HttpResponse::Ok();
            served_headers(&mut resp, &served);
            Ok(resp.json(answer))
        }
    }
}

/// Whether a model name means the local chat model.
pub fn is_local_chat(model: &str) -> bool {
    model == crate::local::CHAT_MODEL || model == "smollm2"
}

/// Whether the client asked for the usage chunk.
fn include_usage(chat: &ChatRequest) -> bool {
    chat.stream_options
        .as_ref()
        .and_then(|o| o.get("include_usage"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// Answer with the local chat model (asked for by name, or as the last resort).
async fn local_completion(
    local: &crate::local::GenService,
    chat: &ChatRequest,
) -> Result<HttpResponse, ApiError> {
    let served = crate::local::generate::served();
    if chat.stream {
        let start = local.stream(chat).await?;
        let mut resp = HttpResponse::Ok();
        resp.content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .insert_header(("x-accel-buffering", "no"));
        served_headers(&mut resp, &served);
        Ok(resp.streaming(super::sse::openai_stream(start, include_usage(chat))))
    } else {
        let (answer, confidence) = local.complete(chat).await?;
        let mut resp = HttpResponse::Ok();
        served_headers(&mut resp, &served);
        resp.insert_header(("x-switchyard-confidence", format!("{confidence:.4}")));
        Ok(resp.json(answer))
    }
}

/// What the chain produced.
enum Either {
    Stream(chain::StreamStart),
    Whole(crate::types::ChatResponse, Served),
}

/// Header with which a request opts out of the local last resort.
pub const LOCAL_FALLBACK_HEADER: &str = "x-switchyard-local-fallback";

/// The local model, when this failure of every upstream may be answered by it: the model is
/// configured for it, the request did not opt out, the local model is ready, and the failure
/// is the upstreams' (not a bad request).
pub fn last_resort<'a>(
    state: &'a AppState,
    req: &HttpRequest,
    model: &str,
    err: &ApiError,
) -> Option<&'a crate::local::GenService> {
    let upstream_failure = matches!(
        err,
        ApiError::BadGateway(_)
            | ApiError::Unavailable(_)
            | ApiError::Timeout(_)
            | ApiError::RateLimited { .. }
    );
    let opted_out = req
        .headers()
        .get(LOCAL_FALLBACK_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("off"));
    let local = state.local.chat.as_deref()?;
    (upstream_failure
        && !opted_out
        && state.models.local_fallback(model)
        && local.state() == crate::local::ModelState::Ready)
        .then_some(local)
}
