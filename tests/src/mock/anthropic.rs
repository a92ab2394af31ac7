//! Anthropic Messages, as the mock speaks it: `POST /v1/messages`, whole or as the event stream.
//!
//! Text blocks marked with `cache_control` are reported as read from the prompt cache, so tests
//! can follow cached-token accounting end to end.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::knobs::RequestKnobs;
use super::plan::{pieces, pre_answer, prepare, respond, status_fault, Prepared};
use super::{json_response, Body, Shared};

#[derive(Deserialize)]
struct MessagesIn {
    model: String,
    #[serde(default)]
    max_tokens: Option<u64>,
    messages: Vec<MessageIn>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    mock: Option<RequestKnobs>,
}

#[derive(Deserialize)]
struct MessageIn {
    role: String,
    content: Value,
}

/// An Anthropic error answer; the mock's 503 fault is Anthropic's 529 "overloaded".
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    let (status, kind) = match status.as_u16() {
        400 => (status, "invalid_request_error"),
        429 => (status, "rate_limit_error"),
        503 => (
            StatusCode::from_u16(529).unwrap_or(status),
            "overloaded_error",
        ),
        _ => (status, "api_error"),
    };
    json_response(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// Texts of a content value, and how many words sit in blocks marked for caching.
fn texts(content: &Value) -> (Vec<String>, u64) {
    match content {
        Value::String(s) => (vec![s.clone()], 0),
        Value::Array(blocks) => {
            let mut out = Vec::new();
            let mut cached = 0;
            for b in blocks {
                let t = match b["type"].as_str() {
                    Some("text") => b["text"].as_str().unwrap_or("").to_owned(),
                    Some("tool_result") => texts(&b["content"]).0.join(" "),
                    _ => continue,
                };
                if b.get("cache_control").is_some() {
                    cached += t.split_whitespace().count() as u64;
                }
                out.push(t);
            }
            (out, cached)
        }
        _ => (Vec::new(), 0),
    }
}

fn event(name: &str, data: &Value) -> Bytes {
    let mut out = format!("event: {name}\ndata: ").into_bytes();
    out.extend(serde_json::to_vec(data).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Handle `POST /v1/messages/count_tokens`: the words of the system prompt and the messages
/// (the mock's token), refusing generation settings as Anthropic does.
pub fn count_tokens(body: &Bytes, shared: &Arc<Shared>) -> Response<Body> {
    shared.stats.request();
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            shared.stats.bad_request();
            return error(StatusCode::BAD_REQUEST, &format!("mock: bad request: {e}"));
        }
    };
    for k in ["max_tokens", "stream", "temperature"] {
        if req.get(k).is_some() {
            shared.stats.bad_request();
            return error(
                StatusCode::BAD_REQUEST,
                &format!("{k}: Extra inputs are not permitted"),
            );
        }
    }
    let Some(messages) = req["messages"].as_array().filter(|m| !m.is_empty()) else {
        shared.stats.bad_request();
        return error(StatusCode::BAD_REQUEST, "mock: messages are required");
    };
    let mut all = texts(&req["system"]).0;
    for m in messages {
        all.extend(texts(&m["content"]).0);
    }
    let n: usize = all.iter().map(|t| t.split_whitespace().count()).sum();
    json_response(StatusCode::OK, &json!({"input_tokens": n}))
}

/// Handle `POST /v1/messages`.
pub async fn messages(body: &Bytes, shared: &Arc<Shared>) -> Result<Response<Body>, io::Error> {
    shared.stats.request();
    let req: MessagesIn = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            shared.stats.bad_request();
            return Ok(error(
                StatusCode::BAD_REQUEST,
                &format!("mock: bad request: {e}"),
            ));
        }
    };
    if req.messages.is_empty() || req.max_tokens.is_none() {
        shared.stats.bad_request();
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "mock: messages and max_tokens are required",
        ));
    }
    let mut all = Vec::new();
    let mut cached = 0;
    if let Some(s) = &req.system {
        let (t, c) = texts(s);
        all.extend(t);
        cached += c;
    }
    for m in &req.messages {
        let (t, c) = texts(&m.content);
        all.extend(t);
        cached += c;
    }
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| texts(&m.content).0.join(" "))
        .unwrap_or_default();
    let Prepared { plan, knobs } = prepare(shared, req.mock.clone(), &all, &last_user, body);
    pre_answer(&plan, shared).await?;
    if let Some(mut r) = status_fault(&plan, error) {
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut().insert(
                "anthropic-ratelimit-requests-remaining",
                HeaderValue::from_static("0"),
            );
        }
        return Ok(r);
    }
    let id = format!("msg_mock_{}", shared.next_id());
    let output = plan.words.len() as u64;
    let usage = json!({
        "input_tokens": plan.prompt_tokens - cached.min(plan.prompt_tokens),
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    });
    let tool_id = format!("toolu_mock_{}", shared.next_id());
    let (content, stop_reason) = match &knobs.tool_call {
        Some(tc) => (
            json!([{"type": "tool_use", "id": tool_id, "name": tc.name, "input": tc.arguments}]),
            "tool_use",
        ),
        None => (
            json!([{"type": "text", "text": plan.words.join(" ")}]),
            "end_turn",
        ),
    };
    let whole = json!({
        "id": id, "type": "message", "role": "assistant", "model": req.model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
    });
    let mut events = Vec::new();
    if req.stream {
        let mut start_usage = usage.clone();
        start_usage["output_tokens"] = json!(1);
        events.push(event(
            "message_start",
            &json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
                "model": req.model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
        ));
        events.push(event("ping", &json!({"type": "ping"})));
        match &knobs.tool_call {
            Some(tc) => {
                events.push(event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": 0,
                            "content_block": {"type": "tool_use", "id": tool_id, "name": tc.name, "input": {}}}),
                ));
                for piece in pieces(&tc.arguments.to_string(), 3) {
                    events.push(event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": 0,
                                "delta": {"type": "input_json_delta", "partial_json": piece}}),
                    ));
                }
            }
            None => {
                events.push(event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                ));
                for (i, w) in plan.words.iter().enumerate() {
                    let text = if i == 0 { w.clone() } else { format!(" {w}") };
                    events.push(event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}),
                    ));
                }
            }
        }
        events.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(event(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                    "usage": {"output_tokens": output}}),
        ));
        events.push(event("message_stop", &json!({"type": "message_stop"})));
    }
    Ok(respond(shared, &plan, req.stream, &whole, events))
}
