//! OpenAI chat completions, as the mock speaks it.
//!
//! Replies are deterministic: the given `mock.reply`, or `reply_words` words derived from the
//! last user message. Usage counts whitespace-separated words: `prompt_tokens` over every
//! message's text, `completion_tokens` over the reply, so tests know the exact totals.

use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::knobs::RequestKnobs;
use super::plan::{content_words, pieces, pre_answer, prepare, respond, status_fault, Prepared};
use super::{openai_error, Body, Shared};

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

/// Unix seconds.
pub fn now() -> u64 {
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
    let texts: Vec<String> = req
        .messages
        .iter()
        .map(|m| content_words(m.content.as_ref()).join(" "))
        .collect();
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| content_words(m.content.as_ref()).join(" "))
        .unwrap_or_default();
    let Prepared { plan, knobs } = prepare(shared, req.mock.clone(), &texts, &last_user, body);
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
    let call_id = format!("call_mock_{}", shared.next_id());
    let (message, finish) = match &knobs.tool_call {
        Some(tc) => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": call_id, "type": "function",
                   "function": {"name": tc.name, "arguments": tc.arguments.to_string()}}]}),
            "tool_calls",
        ),
        None => (
            json!({"role": "assistant", "content": plan.words.join(" ")}),
            "stop",
        ),
    };
    let mut whole = json!({
        "id": id, "object": "chat.completion", "created": created, "model": req.model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if !plan.omit_usage {
        whole["usage"] = usage.clone();
    }

    let chunk = |delta: Value, finish: Value| {
        let v = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": req.model,
                       "system_fingerprint": "fp_mock",
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        sse(&v)
    };
    let mut events = Vec::with_capacity(plan.words.len() + 4);
    if req.stream {
        events.push(chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        ));
        match &knobs.tool_call {
            Some(tc) => {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                           "function": {"name": tc.name, "arguments": ""}}]}),
                    Value::Null,
                ));
                for piece in pieces(&tc.arguments.to_string(), 3) {
                    events.push(chunk(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ));
                }
            }
            None => {
                for (i, w) in plan.words.iter().enumerate() {
                    let text = if i == 0 { w.clone() } else { format!(" {w}") };
                    events.push(chunk(json!({"content": text}), Value::Null));
                }
            }
        }
        events.push(chunk(json!({}), json!(finish)));
        let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        if include_usage && !plan.omit_usage {
            events.push(sse(
                &json!({"id": id, "object": "chat.completion.chunk", "created": created,
                                    "model": req.model, "choices": [], "usage": usage}),
            ));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    }
    Ok(respond(shared, &plan, req.stream, &whole, events))
}

/// One SSE `data:` event.
pub fn sse(v: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    out.extend(serde_json::to_vec(v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
